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
    /// The command refusing the input: `plan` unless given (`[capture]`, `[etc, migrate]`).
    #[serde(default)]
    command: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Roles shipped in this repository, copied into the site with their templates,
    /// so that the cases check the real roles' variables too.
    #[serde(default)]
    shipped_roles: Vec<String>,
    /// Placeholders for giant inputs, replaced in the files by a text repeated a number
    /// of times: `LONG: [a, 70000]` keeps a 70,000-character line out of this corpus.
    #[serde(default)]
    repeat: BTreeMap<String, (String, usize)>,
    error: String,
}

const ROLE: &str = "\
description: A test site's web page.
variables:
  web_greeting: {description: What the page says., type: string}
  web_listen_port: {description: The port it listens on., default: 80, type: port}
  web_site_domain: {description: The site's domain., default: club.example, type: domain}
  web_members: {description: Who may edit it., default: [], type: list, unique: true}
tasks:
  - name: Write the page.
    file: {path: /etc/web-page, template: web/page.hbs, mode: \"0644\"}
    notify: reload web
handlers:
  - name: reload web
    service: {name: nginx, state: reloaded}
";

// `web_greeting` is global, so that cases replacing the role do not also trip over it.
const INVENTORY: &str =
    "vars: {web_greeting: hi}\nhosts:\n  web: {address: 127.0.0.1, port: PORT, roles: [web]}\n";

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

fn write_site(dir: &Path, port: u16, overlay: &BTreeMap<String, String>) {
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    files.insert("roles/web.yml".into(), ROLE.into());
    files.insert(
        "templates/web/page.hbs".into(),
        "<h1>{{web_greeting}}</h1>\n".into(),
    );
    files.insert("inventory.yml".into(), INVENTORY.into());
    files.extend(overlay.clone());
    for (name, text) in files {
        let path = dir.join(&name);
        fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
        fs::write(path, text.replace("PORT", &port.to_string())).expect("write a site file");
    }
}

/// A role of this repository and its templates, as site files.
fn shipped_role(role: &str) -> BTreeMap<String, String> {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = BTreeMap::new();
    let name = format!("roles/{role}.yml");
    files.insert(
        name.clone(),
        fs::read_to_string(repository.join(&name)).expect("a shipped role"),
    );
    if let Ok(entries) = fs::read_dir(repository.join("templates").join(role)) {
        for entry in entries.filter_map(|e| e.ok()) {
            let name = format!("templates/{role}/{}", entry.file_name().to_string_lossy());
            files.insert(
                name.clone(),
                fs::read_to_string(repository.join(&name)).expect("a template"),
            );
        }
    }
    files
}

fn plan(dir: &Path, command: &[String], args: &[String]) -> std::process::Output {
    let command: Vec<&str> = if command.is_empty() {
        vec!["plan"]
    } else {
        command.iter().map(String::as_str).collect()
    };
    Command::new(env!("CARGO_BIN_EXE_placard"))
        .current_dir(dir)
        .args(command)
        .args(["-i", "inventory.yml", "--known-hosts", "/dev/null"])
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
    write_site(dir.path(), host.port(), &BTreeMap::new());
    let output = plan(dir.path(), &[], &[]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the listener is no SSH server: {output:?}"
    );
    assert!(host.was_contacted());
}

#[test]
fn global_and_group_vars_may_serve_the_roles_of_hosts_not_selected() {
    // Issue 14 checks global and group vars against the roles' variables. A variable
    // for another host's role is no typo, even when that host is not planned now.
    let host = Host::new();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut files = BTreeMap::new();
    files.insert(
        "roles/db.yml".to_string(),
        "description: A database.\nvariables:\n  db_name: {description: Its name.}\ntasks: []\n"
            .to_string(),
    );
    files.insert(
        "inventory.yml".to_string(),
        "vars: {db_name: club}\ngroups:\n  data: {hosts: [db], vars: {db_name: members}}\n  empty: {vars: {anything: 1}}\nhosts:\n  web: {address: 127.0.0.1, port: PORT, roles: [web], vars: {web_greeting: hi}}\n  db: {address: 127.0.0.1, port: 1, roles: [db]}\n"
            .to_string(),
    );
    write_site(dir.path(), host.port(), &files);
    let output = plan(dir.path(), &[], &["web".to_string()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(host.was_contacted());
}

#[test]
fn issue_16_an_old_variable_name_still_works_with_a_warning() {
    // base and ups prefixed their variables; inventories written before still plan,
    // and each old name is named with its line, once, however many hosts it reaches.
    let host = Host::new();
    let dir = tempfile::tempdir().expect("a temporary folder");
    let mut files = shipped_role("base");
    files.extend(shipped_role("ups"));
    files.insert(
        "inventory.yml".to_string(),
        "vars:\n  web_greeting: hi\n  admin_email: admins@club.example\nhosts:\n  web:\n    address: 127.0.0.1\n    port: PORT\n    roles: [web, base, ups]\n    vars: {hostname: cupboard, upsd_port: 3494}\n  other: {address: 127.0.0.1, port: PORT, roles: [base], vars: {base_hostname: other}}\n"
            .to_string(),
    );
    write_site(dir.path(), host.port(), &files);
    let output = plan(dir.path(), &[], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "planned, then the listener is no SSH server: {stderr}"
    );
    assert!(host.was_contacted(), "{stderr}");
    for expected in [
        "warning: inventory.yml:3:3: variable `admin_email` is now called `base_admin_email` (role base) and `ups_admin_email` (role ups)",
        "warning: inventory.yml:9:12: variable `hostname` is now called `base_hostname` (role base)",
        "warning: inventory.yml:9:32: variable `upsd_port` is now called `ups_upsd_port` (role ups)",
    ] {
        assert_eq!(stderr.matches(expected).count(), 1, "once `{expected}` in:\n{stderr}");
    }
    assert_eq!(stderr.matches("warning:").count(), 3, "{stderr}");
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
        let mut files = case.files.clone();
        for text in files.values_mut() {
            for (placeholder, (repeated, times)) in &case.repeat {
                *text = text.replace(placeholder, &repeated.repeat(*times));
            }
        }
        for role in &case.shipped_roles {
            files.extend(shipped_role(role));
        }
        write_site(dir.path(), host.port(), &files);
        let started = std::time::Instant::now();
        let output = plan(dir.path(), &case.command, &case.args);
        let elapsed = started.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut problems = Vec::new();
        // Refusing must be quick even for giant input: a 100,000-deep list once took
        // 45 s. The bound is loose for a debug build on a busy machine.
        if elapsed > std::time::Duration::from_secs(10) {
            problems.push(format!("took {elapsed:?} to refuse"));
        }
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
