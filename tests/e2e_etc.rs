//! /etc against the packages' pristine files, end to end on a real Debian 12 host booted
//! with systemd-nspawn: `placard etc init`, `placard etc drift` and its distro branch.

#[path = "common/testbed.rs"]
mod testbed;

use std::collections::BTreeSet;

use testbed::{drift_class as class, stderr, stdout, Testbed};

/// The `drift` object of `placard etc drift HOST --format json`, timed.
fn drift(bed: &Testbed) -> serde_json::Value {
    let started = std::time::Instant::now();
    let drift = bed.etc_drift(&[]);
    eprintln!("etc drift took {} ms", started.elapsed().as_millis());
    drift
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

fn file<'a>(drift: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    let files = drift["files"].as_array().expect("files");
    files
        .iter()
        .find(|f| f["path"] == path)
        .unwrap_or_else(|| panic!("{path} is not in the drift"))
}

/// Files no package owns on a fresh sandbox host with postfix: written by debootstrap and
/// the sandbox (sources, fstab, hostname, hosts, networks, the sshd drop-in that makes it
/// reachable) and by postfix's postinst from debconf (aliases, mailname). They are the
/// site's as far as dpkg knows, and drift says so.
const INSTALLED_SITE_FILES: &[&str] = &[
    "aliases",
    "apt/sources.list.d/debian.sources",
    "fstab",
    "hostname",
    "hosts",
    "mailname",
    "networks",
    "ssh/sshd_config.d/00-placard-sandbox.conf",
];

const INSTALL: &str = "set -e
echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections
echo 'postfix postfix/mailname string club.example' | debconf-set-selections
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix dovecot-core nut-client nginx git >/dev/null";

/// The site's changes: four conffiles edited (a conffile, two ucf-managed files, a
/// generated main.cf), one deleted, three files added, a package removed after an edit
/// of its conffile, and a local package whose .deb is nowhere to be downloaded.
const CHANGES: &str = r#"set -e
sed -i 's/^#PasswordAuthentication yes/PasswordAuthentication no/' /etc/ssh/sshd_config
sed -i 's/^myhostname = .*/myhostname = mx.club.example/' /etc/postfix/main.cf
sed -i 's/^#disable_plaintext_auth = yes/disable_plaintext_auth = no/' /etc/dovecot/conf.d/10-auth.conf
sed -i 's/worker_connections 768;/worker_connections 2048;/' /etc/nginx/nginx.conf
rm /etc/update-motd.d/10-uname
echo 'MONITOR ups@localhost 1 upsmon secret primary' >> /etc/nut/upsmon.conf
mkdir -p /etc/club
echo 'keep = 30' > /etc/club/backup.conf
echo 'net.ipv4.ip_forward = 1' > /etc/sysctl.d/90-club.conf
echo 'server { listen 80; server_name club.example; }' > /etc/nginx/sites-available/club.conf
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq nut-client >/dev/null
mkdir -p /tmp/club-tools/DEBIAN /tmp/club-tools/etc/club-tools
printf 'Package: club-tools\nVersion: 1.0\nArchitecture: all\nMaintainer: club <admin@club.example>\nDescription: the club tools\n' > /tmp/club-tools/DEBIAN/control
echo /etc/club-tools/tools.conf > /tmp/club-tools/DEBIAN/conffiles
echo 'level = 1' > /tmp/club-tools/etc/club-tools/tools.conf
dpkg-deb -b /tmp/club-tools /tmp/club-tools.deb >/dev/null
dpkg -i /tmp/club-tools.deb >/dev/null
rm -r /tmp/club-tools /tmp/club-tools.deb
echo 'level = 2' > /etc/club-tools/tools.conf
"#;

#[test]
fn issue_5_drift_reports_exactly_the_sites_changes_on_a_debian_12_host() {
    let bed = Testbed::up("e2e-etc-drift", "bookworm");
    let host = bed.host.name.clone();

    // No repository yet: drift offers to create one and writes nothing.
    let refused = bed.placard(&["etc", "drift", &host]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stdout(&refused).contains("Run `placard etc init HOST`"),
        "{}",
        stdout(&refused)
    );
    assert!(!bed.root_path("/etc/.git").exists(), "nothing was written");

    bed.ssh(INSTALL);
    let init = bed.placard(&["etc", "init", &host]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));
    assert!(
        stdout(&init).contains("created a git repository in /etc and committed"),
        "{}",
        stdout(&init)
    );
    let head = bed.ssh("git -C /etc rev-parse HEAD");

    // A fresh host: only postfix's generated main.cf differs from its template (the
    // postinst set myhostname, mydestination… from debconf).
    let fresh = drift(&bed);
    assert!(
        fresh["branch"]["commit"].is_string(),
        "the distro branch was created: {}",
        fresh["branch"]
    );
    assert_eq!(fresh["branch"]["unavailable"], serde_json::json!([]));
    assert_eq!(class(&fresh, "modified"), set(&["postfix/main.cf"]));
    assert_eq!(class(&fresh, "site"), set(INSTALLED_SITE_FILES));
    assert_eq!(class(&fresh, "leftover"), set(&[]));
    assert_eq!(class(&fresh, "unknown"), set(&[]));
    assert!(
        class(&fresh, "pristine").len() > 100,
        "every shipped conffile is pristine"
    );
    assert!(class(&fresh, "generated").contains("ssh/ssh_host_ed25519_key"));

    // Drift again with nothing changed: the branch stays, nothing is fetched.
    let again = drift(&bed);
    assert_eq!(
        again["branch"]["commit"],
        serde_json::Value::Null,
        "{}",
        again["branch"]
    );
    assert_eq!(again["branch"]["fetched"], 0);

    bed.ssh(CHANGES);
    let changed = drift(&bed);
    assert_eq!(
        class(&changed, "modified"),
        set(&[
            "club-tools/tools.conf",
            "dovecot/conf.d/10-auth.conf",
            "nginx/nginx.conf",
            "postfix/main.cf",
            "ssh/sshd_config",
            "update-motd.d/10-uname"
        ])
    );
    let mut site = set(INSTALLED_SITE_FILES);
    site.extend(set(&[
        "club/backup.conf",
        "nginx/sites-available/club.conf",
        "sysctl.d/90-club.conf",
    ]));
    assert_eq!(class(&changed, "site"), site);
    assert_eq!(
        class(&changed, "leftover"),
        set(&[
            "init.d/nut-client",
            "nut/nut.conf",
            "nut/upsmon.conf",
            "nut/upssched.conf"
        ])
    );
    assert_eq!(class(&changed, "unknown"), set(&[]));

    // Each modified file says where its pristine version came from, with the diff.
    let sshd = file(&changed, "ssh/sshd_config");
    assert_eq!(
        (sshd["package"].as_str(), sshd["source"].as_str()),
        (Some("openssh-server"), Some("template"))
    );
    assert!(
        sshd["diff"].as_str().is_some_and(
            |d| d.contains("-#PasswordAuthentication yes\n+PasswordAuthentication no\n")
        ),
        "{sshd}"
    );
    // Issue 13, item 3: openssh-server's config script reads PasswordAuthentication back
    // from the live file, and its postinst then fills ucf's cache with the site's value.
    // The pristine file is the package's template: the hardening stays a local change.
    bed.ssh("DEBIAN_FRONTEND=noninteractive dpkg-reconfigure openssh-server >/dev/null 2>&1");
    assert!(bed
        .ssh("cat '/var/lib/ucf/cache/:etc:ssh:sshd_config'")
        .contains("\nPasswordAuthentication no\n"));
    let reconfigured = drift(&bed);
    let sshd = file(&reconfigured, "ssh/sshd_config");
    assert_eq!(sshd["class"], "modified", "{sshd}");
    assert!(
        sshd["diff"].as_str().is_some_and(
            |d| d.contains("-#PasswordAuthentication yes\n+PasswordAuthentication no\n")
        ),
        "still modified after dpkg-reconfigure: {sshd}"
    );
    let nginx = file(&changed, "nginx/nginx.conf");
    assert_eq!(
        (nginx["package"].as_str(), nginx["source"].as_str()),
        (Some("nginx-common"), Some("conffile"))
    );
    assert!(
        nginx["diff"]
            .as_str()
            .is_some_and(|d| d.contains("+\tworker_connections 2048;")),
        "{nginx}"
    );
    assert_eq!(file(&changed, "update-motd.d/10-uname")["deleted"], true);
    assert!(file(&changed, "nut/upsmon.conf")["reason"]
        .as_str()
        .is_some_and(|r| r.contains("apt-get purge nut-client")));

    // The local package's .deb is nowhere: reported by name, and the rest went on.
    let unavailable = changed["branch"]["unavailable"]
        .as_array()
        .expect("unavailable");
    assert_eq!(unavailable.len(), 1, "{unavailable:?}");
    assert_eq!(
        (
            unavailable[0]["package"].as_str(),
            unavailable[0]["version"].as_str()
        ),
        (Some("club-tools"), Some("1.0"))
    );
    assert!(
        unavailable[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("apt-get download club-tools=1.0")),
        "{unavailable:?}"
    );
    assert!(
        file(&changed, "club-tools/tools.conf")["diff"]
            .as_str()
            .is_some_and(|d| d.contains("no diff")),
        "dpkg's md5 still says it was modified"
    );

    // The distro branch: a history of its own, one commit per package set, and live
    // /etc's history untouched by drift.
    let subjects = bed.ssh("git -C /etc log --format=%s distro");
    assert_eq!(subjects.lines().count(), 2, "{subjects}");
    let latest = bed.ssh("git -C /etc log -1 --format=%B distro");
    assert!(
        latest.contains("removed nut-client 2.8.0-7") && latest.contains("added club-tools 1.0"),
        "{latest}"
    );
    assert!(
        !bed.ssh_output("git -C /etc merge-base distro HEAD")
            .status
            .success(),
        "distro shares no history with master"
    );
    assert_eq!(
        bed.ssh("git -C /etc rev-parse HEAD"),
        head,
        "drift commits nothing to master"
    );
    let pristine_sshd = bed.ssh("git -C /etc show distro:ssh/sshd_config");
    assert!(pristine_sshd.contains("\n#PasswordAuthentication yes\n"));
    assert!(bed
        .ssh("git -C /etc show distro:.placard-packages")
        .contains("openssh-server 1:9.2p1"));

    // For people: the classes, with the diffs; the leftover's secret is never shown.
    let human = bed.placard(&["etc", "drift", &host]);
    let report = stdout(&human);
    assert!(
        report.contains("locally modified (6):")
            && report.contains("left over from removed packages (4):"),
        "{report}"
    );
    assert!(report.contains("unavailable: club-tools 1.0:"), "{report}");
    assert!(!report.contains("upsmon secret"), "{report}");
}
