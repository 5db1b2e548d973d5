//! The foundation, end to end, on real Debian 12 hosts booted with systemd-nspawn:
//! apply, idempotence, plan after a manual edit, /etc history, validators, host keys.

#[path = "common/testbed.rs"]
mod testbed;

use std::fs;

use testbed::{stderr, stdout, summary, Testbed};

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

    let first = bed.placard(&["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(summary(&first), "1 host: 0 unchanged, 1 changed, 0 failed");
    assert_eq!(bed.read("/etc/hostname").as_deref(), Some("e2e-host\n"));
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

    // A second apply finds everything in place.
    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(second.status.code(), Some(0));
    let totals = json_summary(&second);
    assert_eq!(
        (totals["changed"].as_u64(), totals["failed"].as_bool()),
        (Some(0), Some(false)),
        "{totals}"
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
}

#[test]
fn a_config_failing_its_validator_leaves_the_old_file_and_the_service_untouched() {
    let bed = Testbed::up("e2e-validate", "bookworm");
    assert_eq!(bed.placard(&["apply"]).status.code(), Some(0));
    let before = bed
        .read("/etc/ssh/sshd_config.d/50-placard.conf")
        .expect("the drop-in");
    let pid_before = bed.ssh("systemctl show -p MainPID --value ssh");

    bed.write_inventory(
        "roles: [base]\n    vars:\n      hostname: e2e-host\n      permit_root_login: sometimes\n",
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
