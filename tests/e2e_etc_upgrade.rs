//! `placard etc upgrade --release trixie` and `placard etc resolve`, end to end: a real
//! Debian 12 host (systemd-nspawn) with local edits to a dozen conffiles is upgraded to
//! Debian 13 from Debian's mirror, and the distro's changes are merged into the edits.
//!
//! The .debs apt downloads are kept between runs in `/var/cache/placard/debs/etc-upgrade`
//! (copied into the host's apt cache before, and back after), so only the first run on
//! a machine downloads the trixie packages; the test passes without that folder too.
//! Postfix is configured to bind no port (`master_service_disable = inet`, one of the
//! site's edits) and dovecot-core alone has no listener, so the host clashes with no
//! other on this machine's shared network.

#[path = "common/testbed.rs"]
mod testbed;

use std::collections::BTreeMap;
use std::path::Path;

use testbed::{stderr, stdout, Testbed};

const DEB_CACHE: &str = "/var/cache/placard/debs/etc-upgrade";

const INSTALL: &str = "set -e
echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
echo 'postfix postfix/mailname string club.example' | debconf-set-selections
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix dovecot-core sudo nut-client git >/dev/null";

/// The site's edits: fourteen conffiles (19 settings), among them files Debian changed between 12 and
/// 13 (sshd_config around PasswordAuthentication, main.cf around myhostname, Dovecot's
/// conf.d with settings 2.4 renamed or whose `%` variables 2.4 spells otherwise,
/// sysctl.conf which 13 no longer ships). One value no rule translates (the `UTF8` flag
/// of `mail_location`, 2.4's `mailbox_list_utf8`) leaves 10-mail.conf to the admin, so
/// that `etc resolve` takes a marked file in.
const EDITS: &str = r#"set -e
sed -i 's/^#PasswordAuthentication yes/PasswordAuthentication no/' /etc/ssh/sshd_config
sed -i 's/^X11Forwarding yes/X11Forwarding no/' /etc/ssh/sshd_config
echo 'ChallengeResponseAuthentication no' >> /etc/ssh/sshd_config
sed -i 's/^myhostname = .*/myhostname = mx.club.example/' /etc/postfix/main.cf
echo 'master_service_disable = inet' >> /etc/postfix/main.cf
echo 'smtpd_use_tls = yes' >> /etc/postfix/main.cf
echo 'disable_dns_lookups = yes' >> /etc/postfix/main.cf
sed -i 's/^#disable_plaintext_auth = yes/disable_plaintext_auth = no/' /etc/dovecot/conf.d/10-auth.conf
sed -i 's|^mail_location = .*|mail_location = maildir:~/Maildir:UTF8|' /etc/dovecot/conf.d/10-mail.conf
sed -i 's/^#auth_username_format = %Lu/auth_username_format = %Lu/' /etc/dovecot/conf.d/10-auth.conf
echo 'Defaults:%sudo timestamp_timeout=5' >> /etc/sudoers
sed -i 's/^MODE=none/MODE=netclient/' /etc/nut/nut.conf
echo 'MONITOR ups@localhost 1 upsmon secret secondary' >> /etc/nut/upsmon.conf
sed -i 's/^#net.ipv4.ip_forward=1/net.ipv4.ip_forward=1/' /etc/sysctl.conf
echo 'vm.swappiness = 10' >> /etc/sysctl.conf
sed -i 's/^UMASK\t\t022/UMASK\t\t027/' /etc/login.defs
sed -i 's/^#DIR_MODE=0700/DIR_MODE=0750/' /etc/adduser.conf
sed -i 's|^SHELL=/bin/sh|SHELL=/bin/bash|' /etc/default/useradd
echo '@club hard nofile 4096' >> /etc/security/limits.conf
postfix reload >/dev/null 2>&1 || true
"#;

/// Per edited file, a line the site wrote that must survive the upgrade: in live /etc
/// when the merge was clean, in the worktree file when it was not. (Clean merges also
/// keep the values the host's postinst wrote, as notices name them.)
const SITE_LINES: &[(&str, &str)] = &[
    ("ssh/sshd_config", "PasswordAuthentication no"),
    ("ssh/sshd_config", "X11Forwarding no"),
    ("ssh/sshd_config", "ChallengeResponseAuthentication no"),
    ("postfix/main.cf", "myhostname = mx.club.example"),
    ("postfix/main.cf", "master_service_disable = inet"),
    ("postfix/main.cf", "smtpd_use_tls = yes"),
    ("postfix/main.cf", "disable_dns_lookups = yes"),
    ("dovecot/conf.d/10-auth.conf", "disable_plaintext_auth = no"),
    ("dovecot/conf.d/10-auth.conf", "auth_username_format = %Lu"),
    (
        "dovecot/conf.d/10-mail.conf",
        "mail_location = maildir:~/Maildir:UTF8",
    ),
    ("sudoers", "Defaults:%sudo timestamp_timeout=5"),
    ("nut/nut.conf", "MODE=netclient"),
    (
        "nut/upsmon.conf",
        "MONITOR ups@localhost 1 upsmon secret secondary",
    ),
    ("sysctl.conf", "net.ipv4.ip_forward=1"),
    ("sysctl.conf", "vm.swappiness = 10"),
    ("login.defs", "UMASK\t\t027"),
    ("adduser.conf", "DIR_MODE=0750"),
    ("default/useradd", "SHELL=/bin/bash"),
    ("security/limits.conf", "@club hard nofile 4096"),
];

/// Where each of the site's settings must be in live /etc after the upgrade (issue 13,
/// items 1 and 2): at its place, or translated by rule (Dovecot 2.4's renames), or
/// moved to the successor of a file Debian 13 dropped (sysctl.conf). One entry per
/// setting of [`SITE_LINES`], in the same order.
const LIVE_AFTER: &[&[(&str, &str)]] = &[
    &[("ssh/sshd_config", "PasswordAuthentication no")],
    &[("ssh/sshd_config", "X11Forwarding no")],
    &[("ssh/sshd_config", "KbdInteractiveAuthentication no")],
    &[("postfix/main.cf", "myhostname = mx.club.example")],
    &[("postfix/main.cf", "master_service_disable = inet")],
    // The host's postinst already set the new name (as `smtpd_tls_security_level=may`):
    // that value is kept, and the translation says so.
    &[("postfix/main.cf", "smtpd_tls_security_level=may")],
    &[("postfix/main.cf", "smtp_dns_support_level = disabled")],
    &[("dovecot/conf.d/10-auth.conf", "auth_allow_cleartext = yes")],
    &[(
        "dovecot/conf.d/10-auth.conf",
        "auth_username_format = %{user|lower}",
    )],
    // After `etc resolve`: the admin's resolution of the conflict.
    &[
        ("dovecot/conf.d/10-mail.conf", "mail_driver = maildir"),
        ("dovecot/conf.d/10-mail.conf", "mail_path = ~/Maildir"),
        ("dovecot/conf.d/10-mail.conf", "mailbox_list_utf8 = yes"),
    ],
    &[("sudoers", "Defaults:%sudo timestamp_timeout=5")],
    &[("nut/nut.conf", "MODE=netclient")],
    &[(
        "nut/upsmon.conf",
        "MONITOR ups@localhost 1 upsmon secret secondary",
    )],
    &[("sysctl.d/99-site.conf", "net.ipv4.ip_forward=1")],
    &[("sysctl.d/99-site.conf", "vm.swappiness = 10")],
    &[("login.defs", "UMASK\t\t027")],
    &[("adduser.conf", "DIR_MODE=0750")],
    &[("default/useradd", "SHELL=/bin/bash")],
    &[("security/limits.conf", "@club hard nofile 4096")],
];

fn copy_debs(from: &Path, to: &Path) -> usize {
    let _ = std::fs::create_dir_all(to);
    let mut copied = 0;
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let path = entry.path();
        let target = to.join(entry.file_name());
        if path.extension().is_some_and(|e| e == "deb")
            && !target.exists()
            && std::fs::copy(&path, &target).is_ok()
        {
            copied += 1;
        }
    }
    copied
}

/// The `data` of the output event of a `--format json` run.
fn output(bed: &Testbed, args: &[&str], key: &str) -> (serde_json::Value, Option<i32>) {
    let started = std::time::Instant::now();
    let run = bed.placard(args);
    eprintln!(
        "placard {} took {} s",
        args.join(" "),
        started.elapsed().as_secs()
    );
    let text = stdout(&run);
    let line = text
        .lines()
        .find(|l| l.contains("\"event\":\"output\""))
        .unwrap_or_else(|| panic!("no output event in {text}{}", stderr(&run)));
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
    (event["data"][key].clone(), run.status.code())
}

fn paths(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect()
}

/// The key a line sets, for the comparison of distro changes with site edits.
fn key_of(line: &str) -> String {
    let line = line.trim().trim_start_matches('#').trim();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    line[..end].to_ascii_lowercase()
}

#[test]
fn issue_5_upgrade_to_trixie_merges_the_distros_changes_into_the_sites_conffiles() {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40 * 60);
    let bed = Testbed::up("e2e-etc-upgrade", "bookworm");
    let host = bed.host.name.clone();
    let archives = bed.root_path("/var/cache/apt/archives");
    eprintln!(
        "{} cached .debs",
        copy_debs(Path::new(DEB_CACHE), &archives)
    );
    bed.ssh(INSTALL);
    let init = bed.placard(&["etc", "init", &host]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    bed.ssh(EDITS);

    let upgraded = std::panic::catch_unwind(|| {
        output(
            &bed,
            &[
                "etc",
                "upgrade",
                &host,
                "--release",
                "trixie",
                "--format",
                "json",
            ],
            "upgrade",
        )
    });
    copy_debs(&archives, Path::new(DEB_CACHE));
    let (upgrade, code) = upgraded.unwrap_or_else(|_| {
        let log = bed
            .read("/var/lib/placard/etc-upgrade/apt.log")
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(80).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "the upgrade failed; apt's log ends with:\n{}",
            tail.join("\n")
        )
    });
    assert_eq!(code, Some(0), "{upgrade:#}");
    assert!(
        std::time::Instant::now() < deadline,
        "the upgrade took too long"
    );
    assert!(bed
        .ssh("cat /etc/os-release")
        .contains("VERSION_CODENAME=trixie"));
    assert_eq!(
        upgrade["sources"],
        serde_json::json!(["apt/sources.list.d/debian.sources"])
    );
    assert!(bed
        .ssh("cat /etc/apt/sources.list.d/debian.sources")
        .contains("Suites: trixie trixie-updates\n"));

    // The distro branch shows both releases; master records the merge of its new tip.
    assert!(bed
        .ssh("git -C /etc show distro~1:.placard-packages")
        .contains("openssh-server 1:9.2p1"));
    assert!(bed
        .ssh("git -C /etc show distro:.placard-packages")
        .contains("openssh-server 1:10."));
    assert_eq!(
        bed.ssh("git -C /etc rev-parse HEAD^2"),
        bed.ssh("git -C /etc rev-parse distro"),
        "the last commit merges the new distro tip"
    );
    assert_eq!(
        upgrade["distro_base"].as_str().map(str::to_string),
        Some(bed.ssh("git -C /etc rev-parse distro~1").trim().to_string())
    );

    let merged = paths(&upgrade["merged"]);
    let conflicts = paths(&upgrade["conflicts"]);
    eprintln!("merged: {merged:?}\nconflicts: {conflicts:?}");
    for headline in ["ssh/sshd_config", "postfix/main.cf"] {
        assert!(
            merged.contains(&headline.to_string()),
            "{headline} merged cleanly: {upgrade:#}"
        );
    }
    // Issue 13: the measurement, printed before anything is asserted on it.
    assert_eq!(SITE_LINES.len(), LIVE_AFTER.len());
    let missing_in_live = || {
        let mut missing = Vec::new();
        for ((path, line), places) in SITE_LINES.iter().zip(LIVE_AFTER) {
            let found = places.iter().all(|(live_path, live_line)| {
                bed.read(&format!("/etc/{live_path}"))
                    .is_some_and(|text| text.lines().any(|l| l == *live_line))
            });
            if !found {
                missing.push(format!("/etc/{path}: {line:?} (looked for {places:?})"));
            }
        }
        missing
    };
    let missing = missing_in_live();
    let translations: Vec<String> = upgrade["merged"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|file| {
            file["translations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| format!("{}: {}", file["path"], t["message"]))
        })
        .collect();
    let moved = upgrade["moved"].as_array().cloned().unwrap_or_default();
    let kept = upgrade["kept"].as_array().cloned().unwrap_or_default();
    eprintln!(
        "upgrade measurement: {} files for a human ({conflicts:?} and kept {kept:?}), {} of {} site settings in live /etc, {} translations by rule, {} dropped conffile(s) moved",
        conflicts.len() + kept.len(),
        SITE_LINES.len() - missing.len(),
        SITE_LINES.len(),
        translations.len(),
        moved.len()
    );
    for translation in &translations {
        eprintln!("  translated {translation}");
    }
    for file in &moved {
        eprintln!("  moved {file}");
    }
    // Before `etc resolve`, only the conflict's setting is not live yet.
    assert_eq!(
        missing,
        [format!(
            "/etc/dovecot/conf.d/10-mail.conf: \"mail_location = maildir:~/Maildir:UTF8\" (looked for {:?})",
            LIVE_AFTER[9]
        )],
        "site settings not in live /etc"
    );
    // Item 2: Dovecot 2.4's renames translated by rule, checked by doveconf.
    for (path, old) in [
        ("dovecot/conf.d/10-auth.conf", "disable_plaintext_auth = no"),
        ("dovecot/conf.d/10-auth.conf", "auth_username_format = %Lu"),
        ("ssh/sshd_config", "ChallengeResponseAuthentication no"),
        ("postfix/main.cf", "smtpd_use_tls = yes"),
        ("postfix/main.cf", "disable_dns_lookups = yes"),
    ] {
        assert!(
            merged.contains(&path.to_string()),
            "{path} merged: {upgrade:#}"
        );
        assert!(
            translations
                .iter()
                .any(|t| t.contains(path) && t.contains(old)),
            "{old} translated in {path}: {translations:?}"
        );
        assert!(!bed.ssh(&format!("cat /etc/{path}")).contains(old));
    }
    // Until the admin resolves 10-mail.conf, live /etc keeps the site's 2.3 file, which
    // Dovecot 2.4 refuses; doveconf names it (it passes after `etc resolve`, below).
    let dovecot = bed.ssh_output("doveconf -n >/dev/null");
    assert!(
        !dovecot.status.success() && stderr(&dovecot).contains("10-mail.conf"),
        "doveconf -n: {}",
        stderr(&dovecot)
    );
    // Item 1: sysctl.conf, dropped by Debian 13, moved to sysctl.d, named in the report.
    assert!(
        moved
            .iter()
            .any(|m| m["path"] == "sysctl.conf" && m["successor"] == "sysctl.d/99-site.conf"),
        "{upgrade:#}"
    );
    assert!(bed.read("/etc/sysctl.conf.dpkg-bak").is_none());
    assert_eq!(
        conflicts,
        ["dovecot/conf.d/10-mail.conf"],
        "1 file for a human: the value no rule translates"
    );
    assert_eq!(kept, Vec::<serde_json::Value>::new(), "0 files for a human");
    // Every clean merge keeps the site's lines and takes every line Debian 13 added,
    // except the distro's lines for a setting the site changed.
    let mut site_keys: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (path, line) in SITE_LINES {
        site_keys.entry(path).or_default().push(key_of(line));
    }
    // Settings both the host and Debian 13 set, differently (main.cf's debconf values
    // against Debian 13's template), keep the host's value and are named in a notice.
    let mut notice_keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for file in upgrade["merged"].as_array().expect("merged") {
        let path = file["path"].as_str().expect("a path").to_string();
        for notice in file["notices"].as_array().into_iter().flatten() {
            assert!(
                notice["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("kept the site's")),
                "{notice}"
            );
            let key = notice["key"].as_str().expect("a key");
            notice_keys
                .entry(path.clone())
                .or_default()
                .push(key.to_ascii_lowercase());
        }
    }
    for key in ["alias_maps", "myorigin", "mydestination", "mynetworks"] {
        assert!(
            notice_keys
                .get("postfix/main.cf")
                .is_some_and(|keys| keys.iter().any(|k| k == key)),
            "main.cf keeps the host's {key}, with a notice: {notice_keys:?}"
        );
    }
    for path in &merged {
        let live = bed.ssh(&format!("cat /etc/{path}"));
        for ((_, line), places) in SITE_LINES
            .iter()
            .zip(LIVE_AFTER)
            .filter(|((p, _), _)| p == path)
        {
            for (_, live_line) in places.iter().filter(|(p, _)| p == path) {
                assert!(
                    live.lines().any(|l| l == *live_line),
                    "/etc/{path} lost the site's {line:?}:\n{live}"
                );
            }
        }
        let old = bed.ssh(&format!("git -C /etc show distro~1:{path}"));
        let new = bed.ssh(&format!("git -C /etc show distro:{path}"));
        let old_lines: Vec<&str> = old.lines().collect();
        let mut keys = site_keys.get(path.as_str()).cloned().unwrap_or_default();
        keys.extend(notice_keys.get(path.as_str()).cloned().unwrap_or_default());
        // Settings a translation wrote or commented out replace Debian's lines for them.
        for file in upgrade["merged"].as_array().into_iter().flatten() {
            if file["path"] != path.as_str() {
                continue;
            }
            for translation in file["translations"].as_array().into_iter().flatten() {
                for line in translation["new"].as_array().into_iter().flatten() {
                    keys.push(key_of(line.as_str().unwrap_or_default()));
                }
                for name in translation["unset"].as_array().into_iter().flatten() {
                    keys.push(name.as_str().unwrap_or_default().to_ascii_lowercase());
                }
            }
        }
        let added: Vec<&str> = new
            .lines()
            .filter(|l| !old_lines.contains(l) && !l.trim().is_empty())
            .filter(|l| !keys.contains(&key_of(l)))
            .collect();
        for line in added {
            assert!(
                live.lines().any(|l| l == line),
                "/etc/{path} misses Debian 13's {line:?}:\n{live}"
            );
        }
    }
    // Conflicts: each named, left with markers in the worktree with the site's lines;
    // live /etc holds no marker anywhere.
    for conflict in upgrade["conflicts"].as_array().expect("conflicts") {
        assert!(
            !conflict["issues"].as_array().expect("issues").is_empty()
                || conflict["reason"].is_string(),
            "{conflict}"
        );
        let path = conflict["path"].as_str().expect("a path");
        let file = conflict["worktree_file"].as_str().expect("a worktree file");
        let text = bed.ssh(&format!("cat {file}"));
        if conflict["reason"].is_null() {
            assert!(text.contains("<<<<<<<"), "{file}:\n{text}");
        }
        for (_, line) in SITE_LINES.iter().filter(|(p, _)| *p == path) {
            assert!(text.contains(line), "{file} lost the site's {line:?}");
        }
    }
    let markers = bed.ssh_output("grep -rl --exclude-dir=.git '^<<<<<<<' /etc");
    assert_eq!(
        markers.status.code(),
        Some(1),
        "markers in /etc: {}",
        stdout(&markers)
    );

    // `etc resolve` with markers: refused while the file holds them, taken once the
    // admin wrote Dovecot 2.4's settings in place of the marked block, checked by
    // doveconf, committed.
    let worktree_file = upgrade["conflicts"][0]["worktree_file"]
        .as_str()
        .expect("a worktree file")
        .to_string();
    let (still, code) = output(
        &bed,
        &["etc", "resolve", &host, "--format", "json"],
        "resolve",
    );
    assert_eq!(code, Some(0), "markers only wait: {still:#}");
    assert_eq!(still["resolved"], serde_json::json!([]), "{still:#}");
    assert!(
        still["refused"].to_string().contains("conflict markers"),
        "{still:#}"
    );
    bed.ssh(&format!(
        "sed -i '/^<<<<<<< /,/^>>>>>>> /d' {worktree_file} && printf 'mail_driver = maildir\\nmail_path = ~/Maildir\\nmailbox_list_utf8 = yes\\n' >> {worktree_file}"
    ));
    let (taken, code) = output(
        &bed,
        &["etc", "resolve", &host, "--format", "json"],
        "resolve",
    );
    assert_eq!(code, Some(0), "{taken:#}");
    assert_eq!(
        taken["resolved"],
        serde_json::json!(["dovecot/conf.d/10-mail.conf"]),
        "{taken:#}"
    );
    assert_eq!(taken["pending"], serde_json::json!([]), "{taken:#}");
    let missing = missing_in_live();
    assert!(
        missing.is_empty(),
        "site settings not in live /etc after resolve: {missing:#?}"
    );
    bed.ssh("doveconf -n >/dev/null");
    assert!(bed
        .ssh("ls -a /etc/ssh /etc/postfix /etc/dovecot/conf.d /etc")
        .lines()
        .all(|l| !l.ends_with(".dpkg-dist") && !l.ends_with(".ucf-dist")));
    // The merged services still pass their validators and run.
    bed.ssh("sshd -t && postfix check");
    assert_eq!(
        bed.ssh("systemctl is-active ssh postfix"),
        "active\nactive\n"
    );
    assert_eq!(
        bed.ssh("git -C /etc status --porcelain"),
        "",
        "everything is committed"
    );

    // A second run changes nothing.
    let head = bed.ssh("git -C /etc rev-parse HEAD distro");
    let (again, code) = output(
        &bed,
        &[
            "etc",
            "upgrade",
            &host,
            "--release",
            "trixie",
            "--format",
            "json",
        ],
        "upgrade",
    );
    assert_eq!(code, Some(0));
    assert_eq!(again["merged"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["conflicts"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["commits"], serde_json::json!([]), "{again:#}");
    assert_eq!(again["upgraded"], false);
    assert_eq!(bed.ssh("git -C /etc rev-parse HEAD distro"), head);
    assert_eq!(again["pending"], serde_json::json!([]), "resolved above");

    // For people: nothing waits, and nothing was left to merge.
    let human = bed.placard(&["etc", "upgrade", &host, "--release", "trixie"]);
    assert!(
        stdout(&human).contains("nothing to merge")
            && !stdout(&human).contains("still waiting from an earlier run"),
        "{}",
        stdout(&human)
    );

    // Issue 13, item 5: drift on Debian 13 reads dpkg's remove-on-upgrade flags, so the
    // files dpkg removed itself (sysctl.conf, postfix's post-install…) are no local
    // deletion.
    let (drift, code) = output(&bed, &["etc", "drift", &host, "--format", "json"], "drift");
    assert_eq!(code, Some(0), "{drift:#}");
    let deleted: Vec<String> = drift["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["deleted"] == true)
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect();
    eprintln!("drift after the upgrade: deleted {deleted:?}");
    assert_eq!(deleted, Vec::<String>::new(), "nothing the site deleted");

    // resolve: nothing was left for the admin, so nothing is taken and nothing waits.
    let (resolved, code) = output(
        &bed,
        &["etc", "resolve", &host, "--format", "json"],
        "resolve",
    );
    assert_eq!(code, Some(0), "{resolved:#}");
    assert_eq!(resolved["resolved"], serde_json::json!([]));
    assert_eq!(resolved["pending"], serde_json::json!([]));
    bed.ssh("doveconf -n >/dev/null");
    assert_eq!(bed.ssh("git -C /etc status --porcelain"), "");
}
