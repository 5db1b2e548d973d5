//! Bad input gets exit 3, a message naming file:line:col and what is wrong, and no host
//! is contacted. The cases live in tests/invalid/cases.yml; each overlays a few files
//! on the small valid site below.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    #[serde(default)]
    args: Vec<String>,
    files: BTreeMap<String, String>,
    /// Roles of this repository (with their templates) to add to the site, so that the
    /// shipped roles' variable types are tested too.
    #[serde(default)]
    shipped_roles: Vec<String>,
    error: String,
}

const ROLE: &str = "\
description: A test site's web page.
variables:
  greeting: {description: What the page says., type: string}
  listen_port: {description: The port it listens on., default: 80, type: port}
  site_domain: {description: The site's domain., default: club.example, type: domain}
  members: {description: Who may edit it., default: [], type: list, unique: true}
tasks:
  - name: Write the page.
    file: {path: /etc/web-page, template: web/page.hbs, mode: \"0644\"}
    notify: reload web
handlers:
  - name: reload web
    service: {name: nginx, state: reloaded}
";

// `greeting` is global, so that cases replacing the role do not also trip over it.
const INVENTORY: &str =
    "vars: {greeting: hi}\nhosts:\n  web: {address: 127.0.0.1, port: PORT, roles: [web]}\n";

/// A listener standing in for the host: any connection attempt shows up in `accept`.
struct Host {
    listener: TcpListener,
}

impl Host {
    fn new() -> Host {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("nonblocking");
        Host { listener }
    }

    fn port(&self) -> u16 {
        self.listener.local_addr().expect("address").port()
    }

    fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

fn write_site(dir: &Path, port: u16, overlay: &BTreeMap<String, String>, shipped_roles: &[String]) {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    for role in shipped_roles {
        fs::create_dir_all(dir.join("roles")).expect("create roles/");
        fs::copy(
            repository.join(format!("roles/{role}.yml")),
            dir.join(format!("roles/{role}.yml")),
        )
        .expect("copy a shipped role");
        let templates = repository.join("templates").join(role);
        fs::create_dir_all(dir.join("templates").join(role)).expect("create the templates folder");
        for entry in fs::read_dir(&templates)
            .expect("the role's templates")
            .flatten()
        {
            fs::copy(
                entry.path(),
                dir.join("templates").join(role).join(entry.file_name()),
            )
            .expect("copy a template");
        }
    }
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    files.insert("roles/web.yml".into(), ROLE.into());
    files.insert(
        "templates/web/page.hbs".into(),
        "<h1>{{greeting}}</h1>\n".into(),
    );
    files.insert("inventory.yml".into(), INVENTORY.into());
    files.extend(overlay.clone());
    for (name, text) in files {
        let path = dir.join(&name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        fs::write(path, text.replace("PORT", &port.to_string())).expect("write a site file");
    }
}

fn plan(dir: &Path, args: &[String]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_placard"))
        .current_dir(dir)
        .args(["plan", "-i", "inventory.yml", "--known-hosts", "/dev/null"])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run placard")
}

#[test]
fn the_valid_site_reaches_the_host() {
    // The control case: without a defect, placard does contact the listener, so the
    // cases below really show that a defect stops it first.
    let host = Host::new();
    let dir = tempfile::tempdir().expect("a temporary folder");
    write_site(dir.path(), host.port(), &BTreeMap::new(), &[]);
    let output = plan(dir.path(), &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the listener is no SSH server: {output:?}"
    );
    assert!(host.was_contacted());
}

#[test]
fn malformed_input_exits_3_with_a_position_and_contacts_no_host() {
    let cases: Vec<Case> =
        serde_yaml::from_str(include_str!("invalid/cases.yml")).expect("the cases parse");
    assert!(cases.len() >= 20, "the corpus keeps at least 20 cases");
    let mut failures = Vec::new();
    for case in &cases {
        let host = Host::new();
        let dir = tempfile::tempdir().expect("a temporary folder");
        write_site(dir.path(), host.port(), &case.files, &case.shipped_roles);
        let output = plan(dir.path(), &case.args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut problems = Vec::new();
        if output.status.code() != Some(3) {
            problems.push(format!("exit {:?}, not 3", output.status.code()));
        }
        if !stderr.contains(&case.error) {
            problems.push(format!("no `{}` in the message", case.error));
        }
        if !stderr.contains("no host was contacted") {
            problems.push("the message does not say that no host was contacted".to_string());
        }
        if host.was_contacted() {
            problems.push("the host was contacted".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}\n{stderr}", case.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
