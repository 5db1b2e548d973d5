//! Reading the host's package databases and /etc itself, for the classifier: dpkg's
//! status, its per-package file lists and md5sums, ucf's registry, and an md5 of every
//! file under /etc. The parsers are pure functions; the readers are thin.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use md5::{Digest, Md5};

use super::classify::{Known, Live};
use crate::facts::dpkg::{self, DpkgStatus};

pub const DPKG_INFO: &str = "/var/lib/dpkg/info";
pub const UCF_REGISTRY: &str = "/var/lib/ucf/registry";
pub const UCF_CACHE: &str = "/var/lib/ucf/cache";

/// Where the databases live; tests and a host mounted elsewhere point these at a root.
#[derive(Debug, Clone)]
pub struct Roots {
    pub etc: PathBuf,
    /// Prefix of /var/lib and /usr/share ("/" on the host itself).
    pub system: PathBuf,
}

impl Roots {
    pub fn host(etc: &Path) -> Roots {
        Roots {
            etc: etc.to_path_buf(),
            system: PathBuf::from("/"),
        }
    }

    pub fn system_path(&self, absolute: &str) -> PathBuf {
        self.system.join(absolute.trim_start_matches('/'))
    }
}

/// dpkg's status, the /etc files of installed packages with their md5, and ucf's registry.
pub fn read_known(roots: &Roots) -> Result<(DpkgStatus, Known)> {
    let status_path = roots.system_path(dpkg::STATUS_FILE);
    let text = fs::read_to_string(&status_path).with_context(|| {
        format!(
            "cannot read {}; is this a Debian host?",
            status_path.display()
        )
    })?;
    let status = dpkg::parse_status(&text);
    let mut known = Known {
        status: status.clone(),
        ..Known::default()
    };
    let info = roots.system_path(DPKG_INFO);
    for (name, package) in &status.packages {
        if package.state != "installed" {
            continue;
        }
        // Multi-arch "same" packages name their files name:arch.
        let candidates = [format!("{name}:{}", package.architecture), name.clone()];
        let Some(stem) = candidates
            .iter()
            .find(|c| info.join(format!("{c}.list")).exists())
        else {
            continue;
        };
        let list = fs::read_to_string(info.join(format!("{stem}.list"))).unwrap_or_default();
        for path in parse_list(&list) {
            // .list names folders too; only what is not a folder on the host counts.
            if !roots.etc.join(&path).is_dir() {
                known.owned.insert(path, name.clone());
            }
        }
        let sums = fs::read_to_string(info.join(format!("{stem}.md5sums"))).unwrap_or_default();
        known.md5sums.extend(parse_md5sums(&sums));
    }
    if let Ok(registry) = fs::read_to_string(roots.system_path(UCF_REGISTRY)) {
        known.ucf = parse_ucf_registry(&registry);
    }
    Ok((status, known))
}

/// The /etc entries of a dpkg .list file, relative to /etc.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("/etc/"))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `md5  usr/share/x` lines, keeping those under etc/, keyed relative to /etc.
pub fn parse_md5sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (sum, path) = line.split_once(char::is_whitespace)?;
            let path = path.trim_start().strip_prefix("etc/")?;
            Some((path.to_string(), sum.to_string()))
        })
        .collect()
}

/// ucf's registry: `package <tab/spaces> /etc/path` lines.
pub fn parse_ucf_registry(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let package = words.next()?;
            let path = words.next()?.strip_prefix("/etc/")?;
            Some((path.to_string(), package.to_string()))
        })
        .collect()
}

/// Where ucf keeps the pristine copy of an /etc file: the path with `/` as `:`.
pub fn ucf_cache_name(relative: &str) -> String {
    format!("/etc/{relative}").replace('/', ":")
}

/// Every file and link under /etc (not .git), relative, with the md5 of its content or
/// of its link target.
pub fn walk_etc(etc: &Path) -> Result<BTreeMap<String, Live>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![etc.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let entries =
            fs::read_dir(&folder).with_context(|| format!("cannot list {}", folder.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let Ok(relative) = path.strip_prefix(etc) else {
                continue;
            };
            let relative = relative.to_string_lossy().into_owned();
            if relative == ".git" {
                continue;
            }
            let kind = entry.file_type()?;
            let bytes = if kind.is_dir() {
                stack.push(path);
                continue;
            } else if kind.is_symlink() {
                fs::read_link(&path)?
                    .as_os_str()
                    .as_encoded_bytes()
                    .to_vec()
            } else if kind.is_file() {
                // A file that cannot be read (a socket's leftovers, a FUSE mount) is
                // still listed; its md5 is then that of nothing.
                fs::read(&path).unwrap_or_default()
            } else {
                continue;
            };
            files.insert(
                relative,
                Live {
                    md5: md5_hex(&bytes),
                },
            );
        }
    }
    Ok(files)
}

pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsers_of_recorded_files() {
        assert_eq!(
            parse_list("/.\n/etc\n/etc/nut\n/etc/nut/upsmon.conf\n/usr/sbin/upsmon\n"),
            ["nut", "nut/upsmon.conf"]
        );
        let sums = parse_md5sums("0f1e  etc/dpkg/origins/debian\n1a2b  usr/bin/dpkg\n");
        assert_eq!(
            sums.into_iter().collect::<Vec<_>>(),
            [("dpkg/origins/debian".to_string(), "0f1e".to_string())]
        );
        let ucf = parse_ucf_registry(
            "openssh-server \t /etc/ssh/sshd_config\ndovecot-core \t /etc/dovecot/dovecot.conf\n",
        );
        assert_eq!(
            ucf.get("ssh/sshd_config").map(String::as_str),
            Some("openssh-server")
        );
        assert_eq!(
            ucf_cache_name("dovecot/conf.d/10-auth.conf"),
            ":etc:dovecot:conf.d:10-auth.conf"
        );
    }

    #[test]
    fn walks_files_and_links_but_not_git() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        fs::create_dir_all(dir.path().join(".git/objects")).expect("folders");
        fs::create_dir_all(dir.path().join("nut")).expect("folders");
        fs::write(dir.path().join(".git/HEAD"), "ref").expect("write");
        fs::write(dir.path().join("nut/nut.conf"), "MODE=none\n").expect("write");
        std::os::unix::fs::symlink("/proc/self/mounts", dir.path().join("mtab")).expect("link");
        let files = walk_etc(dir.path()).expect("walk");
        assert_eq!(files.keys().collect::<Vec<_>>(), ["mtab", "nut/nut.conf"]);
        assert_eq!(files["nut/nut.conf"].md5, md5_hex(b"MODE=none\n"));
        assert_eq!(files["mtab"].md5, md5_hex(b"/proc/self/mounts"));
    }
}
