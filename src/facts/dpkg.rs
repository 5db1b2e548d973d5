//! dpkg's view of the host: which packages are installed, at which version, held or not.
//!
//! Read straight from `/var/lib/dpkg/status` rather than by running `dpkg-query`, because
//! every package task asks and a parse takes about a millisecond.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use serde::Serialize;

pub const STATUS_FILE: &str = "/var/lib/dpkg/status";

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PackageStatus {
    pub version: String,
    /// The three words of dpkg's Status field: want, flag, state.
    pub want: String,
    pub state: String,
    /// The package's architecture (`all`, `amd64`…), for `apt-get download name:arch=version`.
    #[serde(skip)]
    pub architecture: String,
    /// The conffiles dpkg tracks for the package, with the md5 of their pristine version.
    #[serde(skip)]
    pub conffiles: Vec<Conffile>,
}

/// One line of a package's `Conffiles:` field: ` /etc/path md5 [obsolete|remove-on-upgrade]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Conffile {
    pub path: String,
    /// The md5 of the version the package shipped; `newconffile` while dpkg has unpacked
    /// but not yet configured it.
    pub md5: String,
    /// The package no longer ships it (dpkg keeps it, and the admin's edits, on upgrade).
    pub obsolete: bool,
    /// dpkg deletes it at the next upgrade of the package.
    pub remove_on_upgrade: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DpkgStatus {
    pub packages: BTreeMap<String, PackageStatus>,
}

impl DpkgStatus {
    pub fn is_installed(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.state == "installed")
    }

    pub fn is_held(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| p.want == "hold")
    }

    /// A package by name; `name:arch` is accepted and the architecture ignored, since a
    /// host here has one architecture.
    pub fn get(&self, name: &str) -> Option<&PackageStatus> {
        let bare = name.split(':').next().unwrap_or(name);
        self.packages.get(bare)
    }

    /// The installed packages and their versions.
    pub fn installed(&self) -> BTreeMap<String, String> {
        self.packages
            .iter()
            .filter(|(_, p)| p.state == "installed")
            .map(|(n, p)| (n.clone(), p.version.clone()))
            .collect()
    }
}

/// Orders two Debian version strings as dpkg does (`dpkg --compare-versions`): epoch,
/// then upstream version, then Debian revision, each compared in runs of non-digits
/// (where `~` sorts before everything, even the end) and runs of digits.
pub fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    let (a_epoch, a_upstream, a_revision) = split_version(a);
    let (b_epoch, b_upstream, b_revision) = split_version(b);
    a_epoch
        .cmp(&b_epoch)
        .then_with(|| compare_part(a_upstream, b_upstream))
        .then_with(|| compare_part(a_revision, b_revision))
}

/// `epoch:upstream-revision`, each part optional but the upstream version.
fn split_version(version: &str) -> (u64, &str, &str) {
    let version = version.trim();
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) if epoch.chars().all(|c| c.is_ascii_digit()) => {
            (epoch.parse().unwrap_or(0), rest)
        }
        _ => (0, version),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

fn compare_part(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    // dpkg's weight of a non-digit character: `~` first, then the end of the string,
    // then letters, then everything else.
    fn weight(c: Option<u8>) -> i32 {
        match c {
            Some(b'~') => -1,
            None => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let ca = a.get(i).copied().filter(|c| !c.is_ascii_digit());
            let cb = b.get(j).copied().filter(|c| !c.is_ascii_digit());
            match weight(ca).cmp(&weight(cb)) {
                Ordering::Equal => {}
                other => return other,
            }
            i += usize::from(ca.is_some());
            j += usize::from(cb.is_some());
        }
        let start_a = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let start_b = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let digits_a = std::str::from_utf8(&a[start_a..i])
            .unwrap_or("")
            .trim_start_matches('0');
        let digits_b = std::str::from_utf8(&b[start_b..j])
            .unwrap_or("")
            .trim_start_matches('0');
        match digits_a
            .len()
            .cmp(&digits_b.len())
            .then_with(|| digits_a.cmp(digits_b))
        {
            Ordering::Equal => {}
            other => return other,
        }
    }
    Ordering::Equal
}

/// dpkg's status, parsed once per version of the file: a run asks at every package
/// task and every `package_version` in a template (a dozen times for web and certs),
/// and dpkg replaces the file (a new inode) whenever it changes it.
pub fn read_status() -> Result<Arc<DpkgStatus>> {
    static LAST: Mutex<Option<(FileVersion, Arc<DpkgStatus>)>> = Mutex::new(None);
    let version = FileVersion::of(STATUS_FILE);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let (Some(version), Some((seen, status))) = (&version, last.as_ref()) {
        if version == seen {
            return Ok(Arc::clone(status));
        }
    }
    let text = std::fs::read_to_string(STATUS_FILE)
        .with_context(|| format!("cannot read {STATUS_FILE}; is this a Debian host?"))?;
    let status = Arc::new(parse_status(&text));
    // Read after the version was taken: a change in between gives a new version next time.
    *last = version.map(|version| (version, Arc::clone(&status)));
    Ok(status)
}

/// What tells one version of a file from the next without reading it.
#[derive(Debug, PartialEq)]
struct FileVersion {
    inode: u64,
    size: u64,
    modified: Option<std::time::SystemTime>,
}

impl FileVersion {
    fn of(path: &str) -> Option<FileVersion> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        Some(FileVersion {
            inode: metadata.ino(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// Parses the stanzas of a dpkg status file.
pub fn parse_status(text: &str) -> DpkgStatus {
    let mut status = DpkgStatus::default();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut package = PackageStatus::default();
        let mut in_conffiles = false;
        for line in stanza.lines() {
            // Continuation lines start with a space; only Conffiles' are read.
            if line.starts_with(' ') {
                if in_conffiles {
                    package.conffiles.extend(parse_conffile(line));
                }
                continue;
            }
            in_conffiles = line.starts_with("Conffiles:");
            if let Some(value) = line.strip_prefix("Architecture: ") {
                package.architecture = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("Package: ") {
                name = Some(value.trim().to_string());
            } else if let Some(value) = line.strip_prefix("Version: ") {
                package.version = value.trim().to_string();
            } else if let Some(value) = line.strip_prefix("Status: ") {
                let words: Vec<&str> = value.split_whitespace().collect();
                if let [want, _flag, state] = words[..] {
                    package.want = want.to_string();
                    package.state = state.to_string();
                }
            }
        }
        if let Some(name) = name {
            status.packages.insert(name, package);
        }
    }
    status
}

/// A conffile line; the path may hold spaces, so the md5 and flags are read from the end.
fn parse_conffile(line: &str) -> Option<Conffile> {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let mut conffile = Conffile::default();
    while let Some(flag) = words
        .last()
        .filter(|w| matches!(**w, "obsolete" | "remove-on-upgrade"))
    {
        conffile.obsolete |= *flag == "obsolete";
        conffile.remove_on_upgrade |= *flag == "remove-on-upgrade";
        words.pop();
    }
    conffile.md5 = words.pop()?.to_string();
    conffile.path = words.join(" ");
    conffile.path.starts_with('/').then_some(conffile)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Version: 1:9.2p1-2+deb12u3
Conffiles:
 /etc/default/ssh 500e3cf069fe9a7b9936108eb9d9c035
 /etc/ssh/moduli 1f68f6ab5e45958e61ff32297ea1c3ec
 /etc/init.d/ssh 3649a6fe8c18ad1d5245fd91737de507 obsolete
 /etc/sysctl.conf 2c0e1b1d5c3a2d6d1d1c6b0b5e1d2c3a remove-on-upgrade
Architecture: amd64
Description: secure shell (SSH) server
 multi-line description

Package: linux-image-6.1.0-18-amd64
Status: hold ok installed
Version: 6.1.76-1

Package: postfix
Status: deinstall ok config-files
Version: 3.7.10-0+deb12u1
";

    #[test]
    fn versions_compare_as_dpkg_does() {
        use std::cmp::Ordering::{Equal, Greater, Less};
        // Dovecot on Debian 12 and 13, against the 2.4 boundary the mail role uses.
        assert_eq!(
            compare_versions("1:2.3.19.1+dfsg1-2.1+deb12u7", "1:2.4"),
            Less
        );
        assert_eq!(
            compare_versions("1:2.4.1+dfsg1-6+deb13u7", "1:2.4"),
            Greater
        );
        assert_eq!(
            compare_versions("1:2.3.19", "2.4"),
            Greater,
            "the epoch wins"
        );
        assert_eq!(
            compare_versions("1.0~rc1", "1.0"),
            Less,
            "a tilde sorts before the end"
        );
        assert_eq!(
            compare_versions("1.10-2", "1.9-2"),
            Greater,
            "digits compare as numbers"
        );
        assert_eq!(compare_versions("2.0.0-1", "2.0.0-1"), Equal);
        assert_eq!(
            compare_versions("1.0a", "1.0+"),
            Less,
            "letters sort before other characters"
        );
        assert_eq!(compare_versions("", "1"), Less);
    }

    #[test]
    fn reads_installed_held_and_removed_packages() {
        let status = parse_status(RECORDED);
        assert!(status.is_installed("openssh-server"));
        assert_eq!(
            status.get("openssh-server").map(|p| p.version.as_str()),
            Some("1:9.2p1-2+deb12u3")
        );
        assert!(status.is_held("linux-image-6.1.0-18-amd64"));
        assert!(!status.is_held("openssh-server"));
        assert!(
            !status.is_installed("postfix"),
            "config-files only is not installed"
        );
        assert!(status.is_installed("openssh-server:amd64"));
        assert_eq!(status.installed().len(), 2);
    }

    #[test]
    fn reads_conffiles_with_their_md5_and_flags() {
        let status = parse_status(RECORDED);
        let ssh = status.get("openssh-server").expect("openssh-server");
        assert_eq!(ssh.architecture, "amd64");
        let paths: Vec<&str> = ssh.conffiles.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/default/ssh",
                "/etc/ssh/moduli",
                "/etc/init.d/ssh",
                "/etc/sysctl.conf"
            ]
        );
        assert_eq!(ssh.conffiles[0].md5, "500e3cf069fe9a7b9936108eb9d9c035");
        assert!(!ssh.conffiles[0].obsolete && ssh.conffiles[2].obsolete);
        assert!(ssh.conffiles[3].remove_on_upgrade && !ssh.conffiles[3].obsolete);
        assert!(status
            .get("postfix")
            .is_some_and(|p| p.conffiles.is_empty()));
    }
}
