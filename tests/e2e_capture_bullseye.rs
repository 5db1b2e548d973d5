//! Issue 13, item 6: capture from an old host. A Debian 11 host (glibc 2.31, which the
//! controller's own glibc 2.36 build cannot run on) is served by the static agent:
//! `placard etc init` and `placard capture` of it after site edits, then
//! `placard etc migrate` of that capture onto a fresh Debian 13 host.
//!
//! The static agent is built by scripts/test (`cargo build --target
//! x86_64-unknown-linux-musl`); without it this test fails and says how to build it.
//! One host at a time (they share this machine's network), and no daemon is started
//! while packages install (a policy-rc.d), so nothing listens but sshd on loopback.

#[path = "common/testbed.rs"]
mod testbed;

use std::collections::BTreeSet;
use std::process::Command;

use placard::transport::agent_binary::{agent_binary, BUILD_ADVICE};
use testbed::{output_event, stderr, stdout, Testbed};

/// The same packages on both hosts; daemons stay stopped while they install.
const INSTALL: &str = "set -e
printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections
echo 'postfix postfix/mailname string club.example' | debconf-set-selections
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server postfix procps >/dev/null
rm /usr/sbin/policy-rc.d";

/// The site's edits on the Debian 11 host: SSH hardening, Postfix settings, the
/// login umask, and two files of the site's own.
const SITE_EDITS: &str = r#"set -e
sed -i 's/^#PasswordAuthentication yes/PasswordAuthentication no/' /etc/ssh/sshd_config
sed -i 's/^#MaxAuthTries 6/MaxAuthTries 3/' /etc/ssh/sshd_config
sed -i 's/^myhostname = .*/myhostname = mx.club.example/' /etc/postfix/main.cf
sed -i 's/^inet_interfaces = .*/inet_interfaces = loopback-only/' /etc/postfix/main.cf
sed -i 's/^UMASK\t\t022/UMASK\t\t027/' /etc/login.defs
mkdir -p /etc/club
echo 'keep = 30' > /etc/club/backup.conf
echo 'vm.swappiness = 10' > /etc/sysctl.d/90-club.conf
echo 'relay = smarthost.club.example' > /etc/club/relay.conf
chgrp postfix /etc/club/relay.conf
"#;

const EDITED: &[&str] = &["login.defs", "postfix/main.cf", "ssh/sshd_config"];

#[test]
fn issue_13_6_capture_a_debian_11_host_with_the_static_agent_and_migrate_it_onto_debian_13() {
    // The controller run by this test finds the same static agent this process does.
    let agent = agent_binary().unwrap_or_else(|e| panic!("no agent to upload: {e}"));
    assert!(
        agent.is_static,
        "no static agent built from these sources was found, and a Debian 11 host needs one: {BUILD_ADVICE} (scripts/test does this)"
    );

    let draft_parent = tempfile::tempdir().expect("a temporary folder");
    let draft = draft_parent.path().join("draft");

    let old = Testbed::up("e2e-bullseye-old", "bullseye");
    let old_name = old.host.name.clone();
    let glibc = old.ssh("getconf GNU_LIBC_VERSION");
    assert_eq!(
        glibc.trim(),
        "glibc 2.31",
        "the host is one glibc 2.36 cannot serve"
    );

    // The control: the controller's own glibc build is refused there, plainly, with the
    // way out, and nothing is written.
    let refused = Command::new(env!("CARGO_BIN_EXE_placard"))
        .args(["plan", "-i"])
        .arg(old.inventory())
        .arg("--site")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .env("PLACARD_AGENT", env!("CARGO_BIN_EXE_placard"))
        .env("NO_COLOR", "1")
        .output()
        .expect("run placard plan");
    let said = format!("{}{}", stdout(&refused), stderr(&refused));
    eprintln!("$ PLACARD_AGENT=(the glibc build) placard plan\n{said}");
    assert_ne!(refused.status.code(), Some(0), "{said}");
    assert!(
        said.contains("this host has glibc 2.31, older than the 2.36 this placard needs")
            && said.contains("cargo build --release --target x86_64-unknown-linux-musl"),
        "{said}"
    );
    assert!(!old.root_path("/var/lib/placard/bin").exists());

    old.ssh(INSTALL);
    let init = old.placard(&["etc", "init", &old_name]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    // What runs on the host is the static agent, cached by content hash.
    assert!(old
        .root_path(&format!("/var/lib/placard/bin/placard-{}", agent.sha256))
        .is_file());
    old.ssh(SITE_EDITS);

    let captured = old.placard(&["capture", &old_name, "-o", &draft.to_string_lossy()]);
    assert_eq!(captured.status.code(), Some(0), "{}", stderr(&captured));
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(draft.join("capture.json")).expect("capture.json"),
    )
    .expect("JSON");
    let modified: BTreeSet<&str> = manifest["modified"]
        .as_array()
        .expect("modified")
        .iter()
        .filter_map(|m| m["path"].as_str())
        .collect();
    assert_eq!(modified, EDITED.iter().copied().collect(), "{manifest:#}");
    let sshd_patch =
        std::fs::read_to_string(draft.join("patches/ssh/sshd_config.patch")).expect("a patch");
    assert!(
        sshd_patch.contains("-#PasswordAuthentication yes\n+PasswordAuthentication no\n"),
        "{sshd_patch}"
    );
    assert_eq!(
        std::fs::read_to_string(draft.join("templates/site/club/backup.conf")).ok(),
        Some("keep = 30\n".to_string())
    );
    assert!(draft.join("templates/site/sysctl.d/90-club.conf").is_file());
    // The musl agent names owners from the host's /etc/group (no glibc NSS needed).
    let role = std::fs::read_to_string(draft.join("roles/site.yml")).expect("the role");
    assert!(
        role.contains("path: \"/etc/club/relay.conf\"") && role.contains("group: \"postfix\""),
        "{role}"
    );
    drop(old);

    // The new host: Debian 13, the same packages, nothing of the site yet.
    let new = Testbed::up("e2e-bullseye-new", "trixie");
    let new_name = new.host.name.clone();
    new.ssh(INSTALL);
    let init = new.placard(&["etc", "init", &new_name]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    let migrated = new.etc_migrate(&draft);
    let report = output_event(&stdout(&migrated), "migrate");
    assert!(
        matches!(migrated.status.code(), Some(0 | 2)),
        "migrate failed: {}\n{report:#}",
        stderr(&migrated)
    );
    let paths = |key: &str| -> BTreeSet<String> {
        report[key]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|f| f["path"].as_str().map(str::to_string))
            .collect()
    };
    let merged = paths("merged");
    let conflicts = paths("conflicts");
    eprintln!("merged: {merged:?}\nconflicts: {conflicts:?}\n{report:#}");
    // Two releases apart, sshd_config and main.cf still merge by setting.
    assert!(merged.contains("ssh/sshd_config"), "{merged:?}");
    assert!(merged.contains("postfix/main.cf"), "{merged:?}");
    // login.defs is left to a human today (a line conflict: Debian 13 rewrote the
    // comments around UMASK); the count keeps every edited file accounted for.
    assert_eq!(merged.len() + conflicts.len(), EDITED.len(), "{report:#}");
    let sshd = new.read("/etc/ssh/sshd_config").expect("sshd_config");
    assert!(sshd.contains("\nPasswordAuthentication no\n"), "{sshd}");
    assert!(sshd.contains("\nMaxAuthTries 3\n"), "{sshd}");
    let main_cf = new.read("/etc/postfix/main.cf").expect("main.cf");
    assert!(
        main_cf.contains("\nmyhostname = mx.club.example\n"),
        "{main_cf}"
    );
    assert!(
        main_cf.contains("\ninet_interfaces = loopback-only\n"),
        "{main_cf}"
    );
    new.ssh("sshd -t && postfix check");
    let markers = new.ssh_output("grep -rl --exclude-dir=.git '^<<<<<<<' /etc");
    assert!(
        markers.stdout.is_empty(),
        "live /etc holds conflict markers: {}",
        String::from_utf8_lossy(&markers.stdout)
    );
}
