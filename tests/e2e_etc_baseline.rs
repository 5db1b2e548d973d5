//! Issue 13, item 5: files that packages' maintainer scripts make are not the site's.
//! On real Debian 12 and 13 hosts: drift and capture without a reference install (the
//! files stay "site", and drift says why: it was not asked for, or debootstrap is
//! missing), then with one built on the host by `etc drift --reference` (they become
//! "generated", a site edit of such a file stays the site's), a plain drift that reads
//! the cache, and a capture that no longer copies them.

#[path = "common/testbed.rs"]
mod testbed;

use std::collections::BTreeSet;

use testbed::{drift_class as class, stderr, Testbed};

const INSTALL: &str = "set -e
echo 'postfix postfix/main_mailer_type select Internet Site' | debconf-set-selections
echo 'postfix postfix/mailname string club.example' | debconf-set-selections
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postfix postsrsd >/dev/null";

/// The site's own work: an edit of a file postfix's postinst made, a file of its own,
/// and two private ones (0640).
const SITE_EDITS: &str = "set -e
echo 'club: root' >> /etc/aliases
mkdir -p /etc/club
echo 'keep = 30' > /etc/club/backup.conf
for f in shared private; do echo \"token = $f\" > /etc/club/$f.conf; chmod 0640 /etc/club/$f.conf; done";

/// `placard etc drift HOST`, with `--reference` when `reference`.
fn drift(bed: &Testbed, reference: bool) -> serde_json::Value {
    bed.etc_drift(if reference { &["--reference"] } else { &[] })
}

fn reference_install_tells_package_made_files_from_the_sites(name: &str, suite: &str) {
    let bed = Testbed::up(name, suite);
    let host = bed.host.name.clone();
    bed.ssh(INSTALL);
    bed.ssh(SITE_EDITS);
    let init = bed.placard(&["etc", "init", &host]);
    assert_eq!(init.status.code(), Some(0), "{}", stderr(&init));

    // Not asked for: no baseline, and drift says how to build one; it is minutes and
    // hundreds of MB on the host, so a routine drift never builds it.
    let unasked = drift(&bed, false);
    assert_eq!(unasked["baseline"]["status"], "unavailable", "{unasked}");
    assert!(
        unasked["baseline"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--reference")),
        "{}",
        unasked["baseline"]
    );

    // Asked for, but no debootstrap on the host: no baseline, said so, and nothing
    // leaves "site".
    let without = drift(&bed, true);
    assert_eq!(without["baseline"]["status"], "unavailable", "{without}");
    assert!(
        without["baseline"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("apt-get install debootstrap")),
        "{}",
        without["baseline"]
    );
    let site_without = class(&without, "site");
    for path in ["aliases", "club/backup.conf", "default/postsrsd"] {
        assert!(site_without.contains(path), "{path}: {site_without:?}");
    }

    bed.ssh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null");
    let started = std::time::Instant::now();
    let with = drift(&bed, true);
    let first = started.elapsed();
    let baseline = &with["baseline"];
    assert_eq!(baseline["status"], "used", "{baseline}");
    assert_eq!(baseline["built"], true, "{baseline}");
    let site_with = class(&with, "site");
    let generated = class(&with, "generated");
    let moved: BTreeSet<&String> = site_without.difference(&site_with).collect();
    eprintln!("{suite}: site before {site_without:?}\n{suite}: site after {site_with:?}\n{suite}: moved {moved:?}");
    // Made by maintainer scripts, not the site: postsrsd's defaults and apparmor local
    // file, the mail name postfix writes from debconf, the networks file; on 13 also
    // systemd's user socket link and the empty vconsole.conf its tmpfiles make at boot.
    let mut expected = vec![
        "apparmor.d/local/usr.sbin.postsrsd",
        "default/postsrsd",
        "mailname",
        "networks",
    ];
    if suite == "trixie" {
        expected.extend([
            "systemd/user/sockets.target.wants/ssh-agent.socket",
            "vconsole.conf",
        ]);
    }
    for path in expected {
        assert!(
            generated.contains(path) && !site_with.contains(path),
            "{suite}: {path} is still the site's: {site_with:?}"
        );
    }
    // The site's edit of a package-made file, and the site's own file, stay the site's.
    assert!(site_with.contains("aliases"), "{site_with:?}");
    assert!(site_with.contains("club/backup.conf"), "{site_with:?}");
    assert!(
        site_with.is_subset(&site_without),
        "the baseline only ever takes files out of site: {site_with:?}"
    );
    assert_eq!(baseline["generated"], moved.len(), "{baseline}");
    eprintln!(
        "baseline measurement ({suite}): built in {:.0} s (the drift {:.0} s), {} MB of scratch, {} files taken out of site, {} packages left out",
        baseline["build_seconds"].as_f64().unwrap_or(0.0),
        first.as_secs_f64(),
        baseline["scratch_bytes"].as_u64().unwrap_or(0) >> 20,
        moved.len(),
        baseline["left_out"].as_array().map_or(0, Vec::len),
    );
    let cache = bed.ssh("du -sk /var/cache/placard/baseline; ls /var/cache/placard/baseline");
    assert!(
        !cache.contains("scratch"),
        "the scratch tree is deleted: {cache}"
    );
    eprintln!("baseline cache ({suite}): {cache}");

    // A second drift, not asking for a reference install, reads the cache.
    let again = drift(&bed, false);
    assert_eq!(again["baseline"]["built"], false, "{}", again["baseline"]);
    assert_eq!(class(&again, "site"), site_with);

    // Two private files of the site (0640), which `etc init` kept out of git; the admin
    // marks one, by its exact path, as fit for git and a capture. A glob marks nothing:
    // failing closed.
    bed.ssh("printf '!/club/shared.conf\\n!/club/p*.conf\\n' >> /etc/.gitignore");

    // Capture copies the site's files, never the package-made ones.
    let draft_parent = tempfile::tempdir().expect("a temporary folder");
    let draft = draft_parent.path().join("draft");
    let captured = bed.placard(&["capture", &host, "-o", &draft.to_string_lossy()]);
    assert_eq!(captured.status.code(), Some(0), "{}", stderr(&captured));
    let site = draft.join("templates/site");
    assert!(site.join("club/backup.conf").is_file());
    assert!(
        site.join("aliases").is_file(),
        "the site's edit is captured"
    );
    assert!(
        site.join("club/shared.conf").is_file(),
        "the admin's `!/club/shared.conf` is honoured"
    );
    assert!(!site.join("club/private.conf").exists());
    let capture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(draft.join("capture.json")).expect("capture.json"),
    )
    .expect("capture.json is JSON");
    let secrets: Vec<&str> = capture["secrets"]
        .as_array()
        .expect("secrets")
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert!(secrets.contains(&"club/private.conf"), "{secrets:?}");
    assert!(!secrets.contains(&"club/shared.conf"), "{secrets:?}");
    for path in &moved {
        assert!(
            !site.join(path).exists(),
            "{path} was made by a package's script, yet captured"
        );
    }
}

#[test]
fn issue_13_reference_install_on_debian_12() {
    reference_install_tells_package_made_files_from_the_sites("e2e-baseline-12", "bookworm");
}

#[test]
fn issue_13_reference_install_on_debian_13() {
    reference_install_tells_package_made_files_from_the_sites("e2e-baseline-13", "trixie");
}
