//! `placard capture`, on the host: everything a draft site repository needs to rebuild
//! a legacy host — its manually installed packages checked against the target release,
//! each locally modified conffile with its pristine version, the files the site added,
//! the enabled services, and the names of the secrets to move by hand.
//!
//! The classes come from [`super::drift`] (which brings the distro branch up to date).
//! Anything /etc's repository ignores is a secret: named, never read into the capture.
//! Files that describe the old machine rather than the site (its name, disks, apt
//! sources) are named too, and left out. The controller turns the result into files
//! ([`super::draft`]); nothing here writes outside the distro branch.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::archive::{self, Verdict};
use super::classify::Class;
use super::drift;
use super::host::Roots;
use super::secrets;
use crate::system::command::{self, deadline};

/// Files that describe the machine, not the site: a rebuilt host gets its own.
pub const HOST_SPECIFIC: &[(&str, &str)] = &[
    ("hostname", "the old host's name"),
    ("hosts", "the old host's name and addresses"),
    (
        "mailname",
        "the old host's mail name (postfix asks for it on install)",
    ),
    ("fstab", "the old host's disks"),
    ("crypttab", "the old host's disks"),
    (
        "network/interfaces",
        "the old host's network cards and addresses",
    ),
    ("apt/sources.list", "apt sources name the old release"),
    ("apt/sources.list.d/", "apt sources name the old release"),
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capture {
    pub hostname: String,
    /// The old host's os-release PRETTY_NAME.
    pub os: String,
    /// The release the packages were checked against, and where.
    pub release: String,
    pub mirror: String,
    /// Why the release's lists could not be read (then every package is unchecked).
    pub archive_error: Option<String>,
    /// `apt-mark showmanual`, each with its verdict in the target release.
    pub packages: Vec<CapturedPackage>,
    pub modified: Vec<ModifiedFile>,
    /// Conffiles the site deleted.
    pub deleted: Vec<String>,
    pub site_files: Vec<SiteFile>,
    pub site_links: Vec<SiteLink>,
    /// Enabled units (services, sockets, timers, paths), template units excepted.
    pub services: Vec<String>,
    /// Secrets: files /etc's repository ignores, files that are not world-readable, and
    /// files matching [`secrets::SECRET_PATTERNS`]. Named, never read, never copied.
    pub secrets: Vec<String>,
    /// Why each of `secrets` is one (by path), for the draft's README.
    #[serde(default)]
    pub secret_reasons: BTreeMap<String, String>,
    /// Files not captured, and why.
    pub left_out: Vec<LeftOut>,
    /// Packages whose pristine files could not be had (`name version: message`): their
    /// modified conffiles have no patch.
    pub unavailable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapturedPackage {
    pub name: String,
    pub verdict: Verdict,
}

/// A conffile the site changed: the pristine version and the live one, both text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModifiedFile {
    pub path: String,
    pub package: String,
    pub pristine: String,
    pub live: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteFile {
    pub path: String,
    pub content: String,
    /// Octal, as the file resource takes it: "0644".
    pub mode: String,
    pub owner: String,
    pub group: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiteLink {
    pub path: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeftOut {
    pub path: String,
    pub reason: String,
}

/// Captures the host whose /etc is at `roots` (its repository must exist); `release`
/// is the target the packages are checked against; `reference`: build the reference
/// install when none is cached.
pub fn run(roots: &Roots, release: &str, reference: bool) -> Result<Capture> {
    let drift = drift::run(roots, reference)?;
    let repo = Repository::open(&roots.etc)
        .with_context(|| format!("cannot open the git repository in {}", roots.etc.display()))?;
    let ignored = |path: &str| repo.is_path_ignored(path).unwrap_or(true);
    let marked = secrets::marked(&roots.etc);

    let mut capture = Capture {
        hostname: fs::read_to_string(roots.etc.join("hostname"))
            .unwrap_or_default()
            .trim()
            .to_string(),
        os: os_name(&roots.etc),
        release: release.to_string(),
        mirror: String::new(),
        archive_error: None,
        packages: Vec::new(),
        modified: Vec::new(),
        deleted: Vec::new(),
        site_files: Vec::new(),
        site_links: Vec::new(),
        services: enabled_units()?,
        secrets: Vec::new(),
        secret_reasons: BTreeMap::new(),
        left_out: Vec::new(),
        unavailable: drift
            .branch
            .unavailable
            .iter()
            .map(|u| format!("{} {}: {}", u.package, u.version, u.message))
            .collect(),
    };
    for file in &drift.files {
        let path = file.path.as_str();
        if ignored(path) {
            // Host keys, shadow, private keys: the admin moves them, or makes new ones.
            if !matches!(file.class, Class::Generated { .. }) || is_key_or_password(path) {
                capture.secrets.push(path.to_string());
                // The reason that says most: what the file is, else that git ignores it.
                let why = secrets::why_secret(path, secrets::live_mode(&roots.etc, path))
                    .unwrap_or_else(|| "/etc's git repository keeps it out of history".to_string());
                capture.secret_reasons.insert(path.to_string(), why);
            }
            continue;
        }
        // Issue 13, item 4: a file the site or a package made private, or a known
        // secret, is never read into the capture, whatever git ignores, unless the
        // admin marked it with an exact `!/PATH` line in /etc/.gitignore.
        let capturable = matches!(
            file.class,
            Class::Modified { deleted: false, .. } | Class::Site
        );
        if capturable {
            if let Some(why) = secrets::why_secret_in(&roots.etc, &marked, path) {
                capture.secrets.push(path.to_string());
                capture.secret_reasons.insert(path.to_string(), why);
                continue;
            }
        }
        let full = roots.etc.join(path);
        match &file.class {
            Class::Modified { deleted: true, .. } => capture.deleted.push(path.to_string()),
            Class::Modified { package, .. } => {
                let pristine = drift.branch.pristine.get(path);
                let live = fs::symlink_metadata(&full)
                    .ok()
                    .filter(|m| m.is_file())
                    .and_then(|_| fs::read(&full).ok());
                match (pristine, live) {
                    (None, _) => capture.left_out.push(LeftOut {
                        path: path.to_string(),
                        reason: format!("no pristine version of {package}'s file to patch against; copy it by hand if the change matters"),
                    }),
                    (Some(pristine), Some(live)) => {
                        match (String::from_utf8(pristine.content.clone()), String::from_utf8(live)) {
                            (Ok(pristine), Ok(live)) => capture.modified.push(ModifiedFile {
                                path: path.to_string(),
                                package: package.clone(),
                                pristine,
                                live,
                            }),
                            _ => capture.left_out.push(LeftOut {
                                path: path.to_string(),
                                reason: "not text: no patch can be made; copy it by hand".into(),
                            }),
                        }
                    }
                    (Some(_), None) => capture.left_out.push(LeftOut {
                        path: path.to_string(),
                        reason: "not a regular file (a link or a folder where the package ships a file)".into(),
                    }),
                }
            }
            Class::Site => {
                if let Some((_, reason)) = HOST_SPECIFIC.iter().find(|(pattern, _)| {
                    path == *pattern || (pattern.ends_with('/') && path.starts_with(pattern))
                }) {
                    capture.left_out.push(LeftOut {
                        path: path.to_string(),
                        reason: format!("describes the machine, not the site: {reason}"),
                    });
                    continue;
                }
                match site_entry(&full, path) {
                    Ok(Entry::File(f)) => capture.site_files.push(f),
                    Ok(Entry::Link(l)) => capture.site_links.push(l),
                    Err(reason) => capture.left_out.push(LeftOut {
                        path: path.to_string(),
                        reason,
                    }),
                }
            }
            Class::Unknown { reason, .. } => capture.left_out.push(LeftOut {
                path: path.to_string(),
                reason: reason.clone(),
            }),
            Class::Pristine { .. } | Class::Leftover { .. } | Class::Generated { .. } => {}
        }
    }

    let manual = command::run_ok(&["apt-mark", "showmanual"], deadline::QUERY)?;
    let names: Vec<String> = manual
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let (mirror, components) =
        archive::mirror_and_components(&archive::read_host_sources(&roots.etc));
    capture.mirror = mirror.clone();
    let index = archive::fetch(release, &mirror, &components);
    if let Err(error) = &index {
        capture.archive_error = Some(format!("{error:#}"));
    }
    capture.packages = names
        .into_iter()
        .map(|name| {
            let verdict = match &index {
                Ok(index) => archive::check(&name, index),
                Err(error) => Verdict::Unchecked {
                    message: format!("{error:#}"),
                },
            };
            CapturedPackage { name, verdict }
        })
        .collect();
    Ok(capture)
}

fn is_key_or_password(path: &str) -> bool {
    path.ends_with("_key") || path.ends_with(".key") || path.contains("shadow")
}

enum Entry {
    File(SiteFile),
    Link(SiteLink),
}

fn site_entry(full: &Path, path: &str) -> std::result::Result<Entry, String> {
    let meta = fs::symlink_metadata(full).map_err(|e| format!("cannot read: {e}"))?;
    if meta.file_type().is_symlink() {
        let target = fs::read_link(full).map_err(|e| format!("cannot read the link: {e}"))?;
        return Ok(Entry::Link(SiteLink {
            path: path.to_string(),
            target: target.to_string_lossy().into_owned(),
        }));
    }
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    let bytes = fs::read(full).map_err(|e| format!("cannot read: {e}"))?;
    let content = String::from_utf8(bytes).map_err(|_| "not text: copy it by hand".to_string())?;
    let user = nix::unistd::User::from_uid(meta.uid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.uid().to_string(), |u| u.name);
    let group = nix::unistd::Group::from_gid(meta.gid().into())
        .ok()
        .flatten()
        .map_or_else(|| meta.gid().to_string(), |g| g.name);
    Ok(Entry::File(SiteFile {
        path: path.to_string(),
        content,
        mode: format!("{:04o}", meta.mode() & 0o7777),
        owner: user,
        group,
    }))
}

fn os_name(etc: &Path) -> String {
    let text = fs::read_to_string(etc.join("os-release"))
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// `systemctl list-unit-files --state=enabled`, without template units (they are
/// enabled per instance) and without targets and mounts (the system's, not the site's).
fn enabled_units() -> Result<Vec<String>> {
    let output = command::run_ok(
        &[
            "systemctl",
            "list-unit-files",
            "--state=enabled",
            "--no-legend",
            "--no-pager",
        ],
        deadline::QUERY,
    )?;
    Ok(parse_enabled_units(&output))
}

pub fn parse_enabled_units(output: &str) -> Vec<String> {
    let mut units: Vec<String> = output
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| !u.contains("@."))
        .filter(|u| {
            [".service", ".socket", ".timer", ".path"]
                .iter()
                .any(|s| u.ends_with(s))
        })
        .map(str::to_string)
        .collect();
    units.sort();
    units.dedup();
    units
}

/// The capture's packages by what the draft should install: present ones as they are,
/// renamed ones under their new name; missing and unchecked ones are left to the admin.
pub fn installable(capture: &Capture) -> Vec<String> {
    let mut names: BTreeMap<String, ()> = BTreeMap::new();
    for package in &capture.packages {
        match &package.verdict {
            Verdict::Present => {
                names.insert(package.name.clone(), ());
            }
            Verdict::Renamed { to, .. } => {
                names.insert(to.clone(), ());
            }
            Verdict::Missing { .. } | Verdict::Unchecked { .. } => {}
        }
    }
    names.into_keys().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enabled_units_of_a_recorded_listing() {
        let listing = "ssh.service                  enabled enabled\ngetty@.service               enabled enabled\napt-daily.timer              enabled enabled\nremote-fs.target             enabled enabled\npostfix.service              enabled enabled\n";
        assert_eq!(
            parse_enabled_units(listing),
            ["apt-daily.timer", "postfix.service", "ssh.service"]
        );
    }
}
