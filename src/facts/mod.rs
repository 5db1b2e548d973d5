//! Facts: what a host is — its OS release, name, architecture, size, virtualization.
//!
//! Gathered by the agent on the host from files (`/etc/os-release`, `/proc`), with no
//! program run, so that gathering costs well under a millisecond. The parsers are pure
//! functions tested on recorded files. The controller only ever sees
//! [`Facts::placeholder`], used to check templates before a host is contacted.

pub mod dpkg;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Facts {
    pub hostname: String,
    pub os: OsRelease,
    pub architecture: String,
    pub kernel: String,
    pub cpus: usize,
    pub memory_mib: u64,
    /// `none`, or what we run in: `container` (systemd-nspawn, docker…) — a container
    /// has no BMC and no bootloader of its own.
    pub virtualization: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct OsRelease {
    /// `debian`, `ubuntu`…
    pub id: String,
    /// `12`, `13`…
    pub version_id: String,
    /// `bookworm`, `trixie`…
    pub codename: String,
    pub pretty_name: String,
}

impl Facts {
    /// Reads the facts of the machine this runs on.
    pub fn gather() -> Facts {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let uname = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uname
                .as_ref()
                .map(|u| f(u).to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let container = std::path::Path::new("/run/systemd/container").exists()
            || std::path::Path::new("/.dockerenv").exists();
        Facts {
            hostname: field(|u| u.nodename()),
            os: parse_os_release(&read("/etc/os-release")),
            architecture: field(|u| u.machine()),
            kernel: field(|u| u.release()),
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            memory_mib: parse_meminfo_total(&read("/proc/meminfo")) / 1024,
            virtualization: if container {
                "container".into()
            } else {
                "none".into()
            },
        }
    }

    /// Believable values of every fact, so that templates using facts can be checked on
    /// the controller.
    pub fn placeholder() -> Facts {
        Facts {
            hostname: "placeholder".into(),
            os: OsRelease {
                id: "debian".into(),
                version_id: "12".into(),
                codename: "bookworm".into(),
                pretty_name: "Debian GNU/Linux 12 (bookworm)".into(),
            },
            architecture: "x86_64".into(),
            kernel: "6.1.0-0-amd64".into(),
            cpus: 2,
            memory_mib: 2048,
            virtualization: "none".into(),
        }
    }
}

/// `KEY=value` lines, values optionally quoted.
pub fn parse_os_release(text: &str) -> OsRelease {
    let fields: BTreeMap<&str, String> = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| {
            (
                k.trim(),
                v.trim().trim_matches('"').trim_matches('\'').to_string(),
            )
        })
        .collect();
    let get = |key: &str| fields.get(key).cloned().unwrap_or_default();
    OsRelease {
        id: get("ID"),
        version_id: get("VERSION_ID"),
        codename: get("VERSION_CODENAME"),
        pretty_name: get("PRETTY_NAME"),
    }
}

/// MemTotal in KiB.
pub fn parse_meminfo_total(text: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_of_debian_12_and_13() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        let os = parse_os_release(bookworm);
        assert_eq!(
            (os.id.as_str(), os.version_id.as_str(), os.codename.as_str()),
            ("debian", "12", "bookworm")
        );
        let trixie = "PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\nVERSION_ID=\"13\"\nVERSION_CODENAME=trixie\nID=debian\n";
        assert_eq!(parse_os_release(trixie).codename, "trixie");
    }

    #[test]
    fn meminfo_total() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            24567890
        );
    }
}
