//! dpkg's view of the host: which packages are installed, at which version, held or not.
//!
//! Read straight from `/var/lib/dpkg/status` rather than by running `dpkg-query`, because
//! every package task asks and a parse takes about a millisecond.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use serde::Serialize;

pub const STATUS_FILE: &str = "/var/lib/dpkg/status";

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PackageStatus {
    pub version: String,
    /// The three words of dpkg's Status field: want, flag, state.
    pub want: String,
    pub state: String,
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

pub fn read_status() -> Result<DpkgStatus> {
    let text = std::fs::read_to_string(STATUS_FILE)
        .with_context(|| format!("cannot read {STATUS_FILE}; is this a Debian host?"))?;
    Ok(parse_status(&text))
}

/// Parses the stanzas of a dpkg status file.
pub fn parse_status(text: &str) -> DpkgStatus {
    let mut status = DpkgStatus::default();
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut package = PackageStatus::default();
        for line in stanza.lines() {
            if let Some(value) = line.strip_prefix("Package: ") {
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

#[cfg(test)]
mod tests {
    use super::*;

    const RECORDED: &str = "\
Package: openssh-server
Status: install ok installed
Priority: optional
Version: 1:9.2p1-2+deb12u3
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
}
