//! The foundation, end to end, on real Debian 12 hosts booted with systemd-nspawn:
//! apply, idempotence, plan after a manual edit, /etc history, validators, host keys.

#[path = "common/testbed.rs"]
mod testbed;

use std::fs;

use testbed::{placard_with_site, stderr, stdout, summary, Testbed};

fn json_summary(output: &std::process::Output) -> serde_json::Value {
    let text = stdout(output);
    let last = text.lines().last().expect("json output");
    serde_json::from_str::<serde_json::Value>(last).expect("the last line is the summary")
        ["summary"][0]
        .clone()
}

#[test]
fn base_changes_the_host_then_nothing_and_commits_etc_with_secrets_kept_out() {
    let bed = Testbed::up("e2e-base", "bookworm");
    // An administrator with a real key pair, to log in with once base is applied.
    let key = bed.dir.path().join("alice");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "alice@e2e", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let public = fs::read_to_string(key.with_extension("pub")).expect("alice's public key");
    bed.write_inventory(&format!(
        "roles: [base]\n    vars:\n      base_hostname: e2e-host\n      base_admin_users: [{{name: alice, keys: [\"{}\"]}}]\n",
        public.trim()
    ));

    let first = bed.placard(&["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(summary(&first), "1 host: 0 unchanged, 1 changed, 0 failed");
    assert_eq!(bed.read("/etc/hostname").as_deref(), Some("e2e-host\n"));
    // alice logs in with her key and may use sudo without a password.
    let alice = std::process::Command::new("ssh")
        .arg("-i")
        .arg(&key)
        .args([
            "-p",
            &bed.host.port.to_string(),
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "StrictHostKeyChecking=yes",
        ])
        .arg("-o")
        .arg(format!(
            "UserKnownHostsFile={}",
            bed.paths.known_hosts().display()
        ))
        .args(["alice@127.0.0.1", "sudo", "-n", "id", "-un"])
        .output()
        .expect("ssh as alice");
    assert_eq!(
        String::from_utf8_lossy(&alice.stdout).trim(),
        "root",
        "{}",
        String::from_utf8_lossy(&alice.stderr)
    );
    let sshd =
        bed.ssh("sshd -T | grep -E '^(passwordauthentication|permitrootlogin|maxauthtries) '");
    assert!(
        sshd.contains("passwordauthentication no") && sshd.contains("maxauthtries 3"),
        "{sshd}"
    );
    assert!(bed
        .ssh("dpkg-query -W -f '${Status}' unattended-upgrades")
        .contains("install ok installed"));
    assert_eq!(
        bed.ssh("systemctl is-active unattended-upgrades").trim(),
        "active"
    );

    // The agent was uploaded once, named by its content hash.
    let agent = bed.ssh("sha256sum /var/lib/placard/bin/placard-*");
    let (hash, path) = agent.trim().split_once("  ").expect("one cached agent");
    assert_eq!(path, format!("/var/lib/placard/bin/placard-{hash}"));
    assert_eq!(bed.ssh(&format!("stat -c %a {path}")).trim(), "700");
    let uploaded_at = bed.ssh(&format!("stat -c %Y.%i {path}"));

    // A second apply finds everything in place, and the agent already there.
    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(second.status.code(), Some(0));
    let totals = json_summary(&second);
    assert_eq!(
        (totals["changed"].as_u64(), totals["failed"].as_bool()),
        (Some(0), Some(false)),
        "{totals}"
    );
    assert_eq!(
        bed.ssh(&format!("stat -c %Y.%i {path}")),
        uploaded_at,
        "the agent was not uploaded again"
    );

    // The secret was made on the host, is root's alone, and never entered /etc's history.
    let secret_path = bed.root_path("/var/lib/placard/secrets/root-console-password");
    let secret = fs::read_to_string(&secret_path).expect("the secret exists");
    assert_eq!(secret.trim().len(), 24);
    assert_eq!(
        bed.ssh("stat -c %a /var/lib/placard/secrets/root-console-password")
            .trim(),
        "600"
    );
    let history = bed.ssh("git -C /etc log -p --all");
    assert!(
        !history.contains(secret.trim()),
        "the secret is in /etc's history"
    );
    assert!(
        !stdout(&first).contains(secret.trim()),
        "the secret was printed"
    );
    assert!(
        bed.ssh("git -C /etc ls-files")
            .lines()
            .all(|f| f != "shadow" && !f.ends_with("_key")),
        "password hashes or private keys are tracked"
    );
    assert_eq!(bed.ssh("stat -c %a /etc/.git").trim(), "700");

    // An admin edits a managed file by hand: plan shows it and exits 2.
    bed.ssh("echo 'X11Forwarding yes' >> /etc/ssh/sshd_config.d/50-placard.conf");
    let plan = bed.placard(&["plan"]);
    assert_eq!(
        plan.status.code(),
        Some(2),
        "plan exits 2 when changes are pending"
    );
    assert!(
        stdout(&plan).contains("-X11Forwarding yes"),
        "the diff shows the edit going away"
    );
    assert!(
        bed.read("/etc/ssh/sshd_config.d/50-placard.conf")
            .is_some_and(|t| t.contains("X11Forwarding yes")),
        "plan changes nothing"
    );

    // Apply records the stray edit first, then its own change.
    let third = bed.placard(&["apply"]);
    assert_eq!(third.status.code(), Some(0));
    let log = bed.ssh("git -C /etc log --format=%s");
    let subjects: Vec<&str> = log.lines().collect();
    assert_eq!(subjects[0], "placard: base");
    assert_eq!(subjects[1], "changes found before placard run");
    let stray = bed.ssh("git -C /etc show --stat --format= HEAD~1");
    assert!(
        stray.contains("ssh/sshd_config.d/50-placard.conf"),
        "{stray}"
    );
    let etc_log = bed.placard(&["etc", "log", &bed.host.name]);
    assert!(stdout(&etc_log).contains("changes found before placard run"));

    units_are_read_from_systemds_socket_or_else_with_systemctl(&bed);
    unit_kinds_are_read_from_the_socket_as_systemctl_reads_them(&bed);
}

/// Units of every kind a service task meets, as the agent reads them from PID 1's
/// socket: a role asks of each what `systemctl is-enabled` and `is-active` say of it
/// now, and with systemctl moved away, the run finds nothing to change. (Aliases and
/// units generated from init scripts are left out: `is-enabled` words them apart from
/// `systemctl show`'s UnitFileState, which the agent has always read.)
fn unit_kinds_are_read_from_the_socket_as_systemctl_reads_them(bed: &Testbed) {
    bed.ssh("systemctl mask placard-masked.service");
    let units = [
        "ssh",
        "systemd-journald",
        "getty@tty1",
        "apt-daily.timer",
        "dbus.socket",
        "systemd-networkd",
        "placard-no-such-unit",
        "placard-masked.service",
    ];
    let mut tasks = String::new();
    for unit in units {
        let word = |verb: &str| {
            let output = bed.ssh_output(&format!("systemctl {verb} {unit}"));
            String::from_utf8_lossy(&output.stdout).trim().to_string()
        };
        let (enabled, active) = (word("is-enabled"), word("is-active"));
        let state = if active == "active" {
            "started"
        } else {
            "stopped"
        };
        let wanted = match enabled.as_str() {
            "masked" => "masked: true".to_string(),
            "enabled" => format!("enabled: true, state: {state}"),
            _ => format!("enabled: false, state: {state}"),
        };
        tasks.push_str(&format!(
            "  - name: Leave {unit} as systemctl says it is ({enabled}, {active}).\n    service: {{name: {unit}, {wanted}}}\n"
        ));
    }
    let site = tempfile::tempdir().expect("a site folder");
    fs::create_dir(site.path().join("roles")).expect("roles/");
    fs::write(
        site.path().join("roles/units.yml"),
        format!(
            "description: Units of every kind, left as they are (a test role).\n\ntasks:\n{tasks}"
        ),
    )
    .expect("the role");
    let inventory = site.path().join("inventory.yml");
    // The bed's inventory (its ssh settings and host) with this role only.
    let text = fs::read_to_string(bed.inventory()).expect("the inventory");
    let (host, _) = text.split_once("roles:").expect("the host's roles");
    fs::write(&inventory, format!("{host}roles: [units]\n")).expect("the inventory");

    eprintln!("the test role's tasks:\n{tasks}");
    let plan = without_systemctl(bed, || {
        placard_with_site(None, &inventory, site.path(), &["plan", "--verbose"])
    });
    bed.ssh("systemctl unmask placard-masked.service");
    let report = stdout(&plan);
    assert_eq!(summary(&plan), "1 host: 1 unchanged, 0 changed, 0 failed");
    for line in [
        "service placard-no-such-unit is not installed",
        "service placard-masked.service is masked",
        "service systemd-journald is static and running",
        "service ssh is enabled and running",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
}

/// The service tasks of a no-op run read their units from PID 1's private socket: with
/// systemctl gone, the run still finds nothing to change. When the socket does not
/// answer, they ask systemctl instead: Debian 12's systemctl then goes through the
/// system bus (dbus-daemon) and the run still finds nothing to change; Debian 13's
/// needs that same socket, and the run fails saying so rather than reading a unit it
/// could not ask about as "not installed".
fn units_are_read_from_systemds_socket_or_else_with_systemctl(bed: &Testbed) {
    let applied = without_systemctl(bed, || bed.placard(&["apply", "--verbose"]));
    assert_eq!(
        summary(&applied),
        "1 host: 1 unchanged, 0 changed, 0 failed"
    );
    let report = stdout(&applied);
    for line in [
        "service ssh is enabled and running",
        "service unattended-upgrades is enabled and running",
    ] {
        assert!(report.contains(line), "{report}");
    }

    bed.ssh("mount --bind /dev/null /run/systemd/private");
    let without_socket = bed.placard(&["apply"]);
    bed.ssh("umount /run/systemd/private");
    if bed.host.suite == "bookworm" {
        assert_eq!(
            summary(&without_socket),
            "1 host: 1 unchanged, 0 changed, 0 failed"
        );
    } else {
        assert_eq!(
            summary(&without_socket),
            "1 host: 0 unchanged, 0 changed, 1 failed"
        );
        let report = stdout(&without_socket);
        assert!(
            report.contains("systemctl show unattended-upgrades failed"),
            "{report}"
        );
    }
    let again = bed.placard(&["apply"]);
    assert_eq!(summary(&again), "1 host: 1 unchanged, 0 changed, 0 failed");
}

/// What `run` gives with /usr/bin/systemctl moved away on the host, put back after.
fn without_systemctl<T>(bed: &Testbed, run: impl FnOnce() -> T) -> T {
    bed.ssh("mv /usr/bin/systemctl /usr/bin/systemctl.away");
    let result = run();
    bed.ssh("mv /usr/bin/systemctl.away /usr/bin/systemctl");
    result
}

#[test]
fn a_config_failing_its_validator_leaves_the_old_file_and_the_service_untouched() {
    let bed = Testbed::up("e2e-validate", "bookworm");
    // First, a plan on the fresh host: it reports what would change and changes nothing.
    let plan = bed.placard(&["plan"]);
    assert_eq!(plan.status.code(), Some(2), "{}", stderr(&plan));
    assert_eq!(
        summary(&plan),
        "1 host: 0 unchanged, 1 changed, 0 failed",
        "every task could say what it would do"
    );
    assert!(
        !bed.root_path("/etc/.git").exists(),
        "plan created no repository"
    );
    assert!(
        bed.read("/etc/ssh/sshd_config.d/50-placard.conf").is_none(),
        "plan wrote no file"
    );

    assert_eq!(bed.placard(&["apply"]).status.code(), Some(0));
    let before = bed
        .read("/etc/ssh/sshd_config.d/50-placard.conf")
        .expect("the drop-in");
    let pid_before = bed.ssh("systemctl show -p MainPID --value ssh");

    bed.write_inventory(
        "roles: [base]\n    vars:\n      base_hostname: e2e-host\n      base_permit_root_login: sometimes\n",
    );
    let broken = bed.placard(&["apply"]);
    assert_eq!(broken.status.code(), Some(1), "a host failed");
    let report = stdout(&broken);
    assert!(
        report.contains("failed validation; the old file is still in place"),
        "{report}"
    );
    assert!(
        !report.contains("handler reload ssh"),
        "ssh was not reloaded"
    );
    assert_eq!(
        bed.read("/etc/ssh/sshd_config.d/50-placard.conf")
            .as_deref(),
        Some(before.as_str())
    );
    let leftovers: Vec<String> = fs::read_dir(bed.root_path("/etc/ssh/sshd_config.d"))
        .expect("the drop-in folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".placard"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    assert_eq!(bed.ssh("systemctl show -p MainPID --value ssh"), pid_before);
    assert_eq!(bed.ssh("systemctl is-active ssh").trim(), "active");
}

#[test]
fn host_keys_are_verified_and_first_contact_needs_the_flag() {
    let bed = Testbed::up("e2e-hostkey", "bookworm");
    let empty = bed.dir.path().join("empty_known_hosts");
    fs::write(&empty, "").expect("write known_hosts");
    let empty = empty.to_string_lossy().into_owned();

    let unknown = bed.placard(&["facts", &bed.host.name, "--known-hosts", &empty]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        stdout(&unknown).contains("--accept-new-host-keys"),
        "the refusal says how to accept"
    );
    assert_eq!(
        fs::read_to_string(&empty).expect("known_hosts"),
        "",
        "nothing was learned without the flag"
    );

    let learned = bed.placard(&[
        "facts",
        &bed.host.name,
        "--known-hosts",
        &empty,
        "--accept-new-host-keys",
    ]);
    assert_eq!(learned.status.code(), Some(0), "{}", stderr(&learned));
    assert!(stdout(&learned).contains("\"codename\": \"bookworm\""));
    assert!(fs::read_to_string(&empty)
        .expect("known_hosts")
        .contains(&format!("[127.0.0.1]:{}", bed.host.port)));

    // Another key recorded for the same host: the host's real key no longer matches.
    let other = bed.dir.path().join("other");
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let public = fs::read_to_string(other.with_extension("pub")).expect("public key");
    let forged = bed.dir.path().join("forged_known_hosts");
    let key = public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    fs::write(&forged, format!("[127.0.0.1]:{} {key}\n", bed.host.port))
        .expect("write known_hosts");
    let changed = bed.placard(&[
        "apply",
        "--known-hosts",
        &forged.to_string_lossy(),
        "--accept-new-host-keys",
    ]);
    assert_eq!(changed.status.code(), Some(1));
    let report = stdout(&changed).to_lowercase();
    assert!(
        report.contains("changed"),
        "the refusal says the key changed: {report}"
    );
    assert!(
        bed.read("/etc/hostname").is_some_and(|h| h != "e2e-host\n"),
        "nothing was applied"
    );
}

#[test]
fn a_failing_host_neither_stops_nor_hides_the_others() {
    let bed = Testbed::up("e2e-fanout", "bookworm");
    // A second host that refuses connections: nothing listens on that port.
    let dead_port = placard::sandbox::free_port().expect("a free port");
    bed.write_inventory(&format!(
        "roles: [base]\n    vars: {{base_hostname: e2e-host}}\n  unreachable:\n    address: 127.0.0.1\n    port: {dead_port}\n    roles: [base]\n    vars: {{base_hostname: nowhere}}\n"
    ));
    let output = bed.placard(&["apply", "--jobs", "2"]);
    assert_eq!(output.status.code(), Some(1), "one host failed");
    let report = stdout(&output);
    assert!(
        report.contains("── unreachable") && report.contains("Connection refused"),
        "{report}"
    );
    assert!(
        report.contains(&format!("── {}", bed.host.name)) && report.contains("placard: base"),
        "the other host ran and committed: {report}"
    );
    assert_eq!(
        summary(&output),
        "2 hosts: 0 unchanged, 1 changed, 1 failed"
    );
    assert_eq!(bed.read("/etc/hostname").as_deref(), Some("e2e-host\n"));
}

#[test]
fn local_mode_applies_on_the_machine_itself() {
    // An admin on the server: placard and the site are on the host, no SSH involved.
    let bed = Testbed::up("e2e-local", "bookworm");
    let site = bed.root_path("/srv/site");
    for folder in ["roles", "templates/base"] {
        fs::create_dir_all(site.join(folder)).expect("site folders");
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    fs::copy(repo.join("roles/base.yml"), site.join("roles/base.yml")).expect("copy the role");
    for template in fs::read_dir(repo.join("templates/base")).expect("templates") {
        let template = template.expect("a template").path();
        fs::copy(
            &template,
            site.join("templates/base")
                .join(template.file_name().expect("a name")),
        )
        .expect("copy a template");
    }
    fs::write(
        site.join("inventory.yml"),
        "hosts:\n  here: {roles: [base], vars: {base_hostname: local-host}}\n",
    )
    .expect("inventory");
    fs::copy(
        env!("CARGO_BIN_EXE_placard"),
        bed.root_path("/usr/local/bin/placard"),
    )
    .expect("install placard");

    let first = bed.ssh_output("placard apply --local -i /srv/site/inventory.yml here");
    assert!(
        first.status.success(),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    assert_eq!(bed.read("/etc/hostname").as_deref(), Some("local-host\n"));
    let second = bed.ssh("placard apply --local -i /srv/site/inventory.yml here");
    assert!(
        second.ends_with("1 host: 1 unchanged, 0 changed, 0 failed\n"),
        "{second}"
    );
}

#[test]
fn an_etckeeper_repository_is_adopted_not_replaced() {
    let bed = Testbed::up("e2e-etckeeper", "bookworm");
    bed.ssh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etckeeper git >/dev/null");
    let etckeeper_head = bed.ssh("git -C /etc rev-parse HEAD");

    let apply = bed.placard(&["apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", stderr(&apply));
    // Our commits sit on top of etckeeper's history.
    assert!(bed
        .ssh_output(&format!(
            "git -C /etc merge-base --is-ancestor {} HEAD",
            etckeeper_head.trim()
        ))
        .status
        .success());
    let ignore = bed.read("/etc/.gitignore").expect("a .gitignore");
    assert!(
        ignore.contains("# begin section managed by etckeeper"),
        "etckeeper's section is kept"
    );
    assert!(
        ignore.contains("# begin section managed by placard"),
        "ours is added"
    );
    // etckeeper recorded the permissions of the files placard wrote, as its own commits do.
    let metadata = bed.read("/etc/.etckeeper").expect("etckeeper's metadata");
    assert!(
        metadata.contains("maybe chmod 0440 'sudoers.d/placard-admins'"),
        "etckeeper metadata updated"
    );
    // And etckeeper's own tools still see a clean tree.
    assert_eq!(
        bed.ssh("etckeeper unclean && echo unclean || echo clean")
            .trim(),
        "clean"
    );
}

#[test]
fn base_applies_on_debian_13_too() {
    let bed = Testbed::up("e2e-trixie", "trixie");
    // A minimal Debian (debootstrap's minbase) may have no /etc/hosts at all.
    bed.ssh("rm /etc/hosts");
    let first = bed.placard(&["apply"]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    assert!(bed
        .ssh("cat /etc/os-release")
        .contains("VERSION_CODENAME=trixie"));
    let hosts = bed.read("/etc/hosts").expect("base creates /etc/hosts");
    assert!(
        hosts.contains("127.0.0.1\tlocalhost") && hosts.contains("127.0.1.1\t"),
        "{hosts}"
    );
    assert_eq!(
        bed.ssh("getent hosts localhost").split_whitespace().next(),
        Some("127.0.0.1")
    );
    // journald reads the cap from placard's drop-in; its own journald.conf is left alone.
    let journald = bed.ssh("systemd-analyze cat-config systemd/journald.conf");
    assert!(
        journald.contains(
            "# /etc/systemd/journald.conf.d/50-placard.conf\n[Journal]\nSystemMaxUse=500M"
        ),
        "{journald}"
    );
    assert_eq!(
        bed.ssh("sshd -T | grep '^passwordauthentication '").trim(),
        "passwordauthentication no"
    );
    let second = bed.placard(&["apply"]);
    assert_eq!(summary(&second), "1 host: 1 unchanged, 0 changed, 0 failed");
    units_are_read_from_systemds_socket_or_else_with_systemctl(&bed);
    unit_kinds_are_read_from_the_socket_as_systemctl_reads_them(&bed);
}

/// It hung once while uploading the agent (issue 12): see src/transport/ssh/jump.rs.
#[test]
fn a_host_behind_a_jump_host_is_reached_through_it() {
    let bed = Testbed::up("e2e-jump", "bookworm");
    // The inner host has a name only the jump host can resolve, as behind a NAT.
    let port = placard::sandbox::free_port().expect("a free port");
    let inner = placard::sandbox::up(&bed.paths, "e2e-inner", "bookworm", port)
        .expect("boot the inner host");
    struct Down<'a>(&'a placard::sandbox::SandboxPaths);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = placard::sandbox::down(self.0, "e2e-inner");
        }
    }
    let _down = Down(&bed.paths);
    bed.ssh("echo '127.0.0.1 inner.behind-nat.test' >> /etc/hosts");
    let known_hosts = fs::read_to_string(bed.paths.known_hosts()).expect("known_hosts");
    let inner_key = known_hosts
        .lines()
        .find(|l| l.starts_with(&format!("[127.0.0.1]:{port} ")))
        .expect("the inner host's key");
    let alias = inner_key.replacen("[127.0.0.1]", "[inner.behind-nat.test]", 1);
    fs::write(bed.paths.known_hosts(), format!("{known_hosts}{alias}\n"))
        .expect("record the alias");

    bed.write_inventory(&format!(
        "roles: []\n  inner:\n    address: inner.behind-nat.test\n    port: {port}\n    via: {}\n    roles: [base]\n    vars: {{base_hostname: inner}}\n",
        bed.host.name
    ));
    let output = bed.placard(&["apply", "inner"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(
        fs::read_to_string(inner.root.join("etc/hostname"))
            .ok()
            .as_deref(),
        Some("inner\n")
    );
}
