//! The reference install: what the host's packages' maintainer scripts make under /etc
//! by themselves, so that drift and capture can tell those files from the site's
//! (issue 13, item 5). dpkg knows the files a package ships, not the ones its postinst
//! writes (`aliases`, `default/postsrsd`, apparmor's local files, systemd's alias links…).
//!
//! The way chosen, and why: on the host itself, `debootstrap --variant=minbase` of the
//! host's own release into a scratch folder under /var/cache/placard, then `apt-get
//! install` of every installed package at its installed version, with the host's apt
//! sources and debconf answers (`/var/cache/debconf/config.dat`; never passwords.dat),
//! daemons kept from starting by a `policy-rc.d`, then `systemd-tmpfiles --create` for
//! what the first boot makes under /etc. The host's own .debs in
//! /var/cache/apt/archives are linked in first, so debootstrap and apt only download
//! what the host's cache lacks. The scratch /etc is hashed; the scratch tree is deleted.
//! Built on the host, not the controller: the host has its release's debootstrap, its
//! mirror, its .debs and its hostname (which scripts like postsrsd's write into files).
//!
//! Only a live file identical to the reference install's copy becomes "generated": a
//! package-made file the site then edited stays the site's, and a file the reference
//! install lacks stays the site's. The result is cached by a key of the release, the
//! installed packages and versions, the debconf answers and the mirror: a second drift
//! or capture reads the cache, a changed package set rebuilds it.
//!
//! Fails closed: without debootstrap, without a mirror, or when the install fails, the
//! reason is reported and every file stays where the classifier put it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::archive;
use super::host::{self, Roots};
use crate::facts::dpkg::DpkgStatus;
use crate::system::atomic::{self, Attributes};
use crate::system::command::{deadline, Program};

/// Where the cached baselines and the scratch tree live, on the host.
pub const CACHE_DIR: &str = "/var/cache/placard/baseline";
const DEBCONF_ANSWERS: &str = "/var/cache/debconf/config.dat";
const HOST_DEBS: &str = "/var/cache/apt/archives";
/// Bump when what a baseline holds changes, so old caches are not read.
const FORMAT: u32 = 1;

/// The reference install's /etc, as hashes, and what it cost.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub format: u32,
    pub key: String,
    /// md5 of each file (of the target, for a link) under the reference install's /etc.
    pub files: BTreeMap<String, String>,
    /// Installed packages the reference install could not have (`name version: why`):
    /// what their scripts make stays the site's.
    pub left_out: Vec<String>,
    /// Wall-clock seconds the build took, and the scratch tree's size on disk.
    pub build_seconds: f64,
    pub scratch_bytes: u64,
}

/// What drift says of the baseline: used (built now or read from the cache), or why not.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Report {
    Used {
        key: String,
        /// False when it came from the cache.
        built: bool,
        build_seconds: f64,
        scratch_bytes: u64,
        /// Files drift would have called the site's that the reference install made.
        generated: usize,
        left_out: Vec<String>,
    },
    Unavailable {
        reason: String,
    },
}

/// The cached baseline for the host's current package set, else a new one. Only on the
/// host itself (`roots.system` is `/`): the scratch install runs the host's programs.
pub fn load_or_build(
    roots: &Roots,
    status: &DpkgStatus,
    build_it: bool,
) -> Result<(Baseline, bool)> {
    if roots.system != Path::new("/") {
        bail!("the reference install is built only on the host itself");
    }
    let release = crate::facts::parse_os_release(
        &fs::read_to_string(roots.etc.join("os-release")).context("cannot read /etc/os-release")?,
    )
    .codename;
    if release.is_empty() {
        bail!("/etc/os-release names no VERSION_CODENAME, so there is no release to install");
    }
    let (mirror, _) = archive::mirror_and_components(&archive::read_host_sources(&roots.etc));
    let answers = fs::read(DEBCONF_ANSWERS).unwrap_or_default();
    let key = key(&release, &mirror, status, &answers);
    let cache = Path::new(CACHE_DIR);
    let cached = cache.join(format!("{key}.json"));
    if let Some(baseline) = fs::read(&cached)
        .ok()
        .and_then(|b| serde_json::from_slice::<Baseline>(&b).ok())
        .filter(|b| b.format == FORMAT && b.key == key)
    {
        return Ok((baseline, false));
    }
    // Building one takes minutes and hundreds of MB on the host: only when asked.
    if !build_it {
        bail!(
            "no reference install for this host's package set yet; `placard etc drift \
             --reference HOST` (or `placard capture --reference`) builds one on the host \
             (minutes, and some 450 MB of scratch space; see docs/migrate.md)"
        );
    }
    let baseline = build(roots, &release, &mirror, status, &key)?;
    // One baseline at a time: the previous package set's is of no more use.
    if let Ok(entries) = fs::read_dir(cache) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "json") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    let json = serde_json::to_vec(&baseline).context("cannot encode the baseline")?;
    atomic::write_atomic(&cached, &json, Attributes::mode(0o600), None)
        .with_context(|| format!("cannot write {}", cached.display()))?;
    Ok((baseline, true))
}

/// The cache key: what the reference install depends on.
pub fn key(release: &str, mirror: &str, status: &DpkgStatus, answers: &[u8]) -> String {
    let mut text = format!(
        "{FORMAT}\n{release}\n{mirror}\n{}\n",
        host::md5_hex(answers)
    );
    for (name, package) in &status.packages {
        if package.state == "installed" {
            text.push_str(&format!(
                "{name} {} {}\n",
                package.version, package.architecture
            ));
        }
    }
    host::md5_hex(text.as_bytes())
}

/// `Package`, `Version` and `Architecture` of each stanza of an apt Packages list.
pub fn parse_available(text: &str) -> BTreeSet<(String, String)> {
    let mut available = BTreeSet::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| archive::stanza_field(stanza, name);
        if let (Some(name), Some(version)) = (field("Package"), field("Version")) {
            available.insert((name, version));
        }
    }
    available
}

/// What `apt-get install` is given, and what cannot be installed: each installed package
/// of the native architecture (or `all`) at its version, when apt's lists have it.
pub fn install_arguments(
    status: &DpkgStatus,
    native: &str,
    available: &BTreeSet<(String, String)>,
) -> (Vec<String>, Vec<String>) {
    let mut arguments = Vec::new();
    let mut left_out = Vec::new();
    for (name, package) in &status.packages {
        if package.state != "installed" {
            continue;
        }
        if package.architecture != native && package.architecture != "all" {
            left_out.push(format!(
                "{name} {}: a foreign architecture ({})",
                package.version, package.architecture
            ));
        } else if available.contains(&(name.clone(), package.version.clone())) {
            arguments.push(format!("{name}={}", package.version));
        } else {
            left_out.push(format!(
                "{name} {}: this version is in none of the host's apt sources",
                package.version
            ));
        }
    }
    (arguments, left_out)
}

fn build(
    roots: &Roots,
    release: &str,
    mirror: &str,
    status: &DpkgStatus,
    key: &str,
) -> Result<Baseline> {
    let debootstrap = Path::new("/usr/sbin/debootstrap");
    if !debootstrap.exists() {
        bail!("debootstrap is not installed on the host (`apt-get install debootstrap`); it builds the reference install that tells the packages' files from the site's");
    }
    let started = Instant::now();
    let scratch = Path::new(CACHE_DIR).join("scratch");
    remove_scratch(&scratch)?;
    let archives = scratch.join("var/cache/apt/archives");
    fs::create_dir_all(&archives)
        .with_context(|| format!("cannot create {}", archives.display()))?;
    link_host_debs(Path::new(HOST_DEBS), &archives);
    let result = install(roots, release, mirror, status, &scratch);
    let scratch_bytes = disk_usage(&scratch);
    // The scratch tree goes whatever happened; a mount left in it keeps it (and says so).
    let removed = remove_scratch(&scratch);
    let (files, left_out) = result?;
    removed?;
    Ok(Baseline {
        format: FORMAT,
        key: key.to_string(),
        files,
        left_out,
        build_seconds: started.elapsed().as_secs_f64(),
        scratch_bytes,
    })
}

type Installed = (BTreeMap<String, String>, Vec<String>);

fn install(
    roots: &Roots,
    release: &str,
    mirror: &str,
    status: &DpkgStatus,
    scratch: &Path,
) -> Result<Installed> {
    let root = scratch.as_os_str().to_string_lossy().into_owned();
    Program::new(
        &[
            "debootstrap",
            "--variant=minbase",
            release,
            root.as_str(),
            mirror,
        ],
        deadline::APT,
    )
    .run_ok()
    .with_context(|| format!("debootstrap of {release} from {mirror} failed"))?;

    // The host's sources and keys, so that the same versions are found.
    for folder in [
        "apt/sources.list.d",
        "apt/trusted.gpg.d",
        "apt/keyrings",
        "apt/preferences.d",
    ] {
        copy_files(&roots.etc.join(folder), &scratch.join("etc").join(folder))?;
    }
    for file in ["apt/sources.list", "apt/trusted.gpg"] {
        let from = roots.etc.join(file);
        if from.is_file() {
            fs::copy(&from, scratch.join("etc").join(file))
                .with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    // Daemons of the reference install must not start (they would clash with the host's).
    let policy = scratch.join("usr/sbin/policy-rc.d");
    atomic::write_atomic(
        &policy,
        b"#!/bin/sh\nexit 101\n",
        Attributes::mode(0o755),
        None,
    )?;
    let chroot = |args: &[&str]| {
        let mut argv = vec!["chroot", root.as_str()];
        argv.extend_from_slice(args);
        Program::new(&argv, deadline::APT)
    };
    chroot(&["apt-get", "update", "-q"])
        .run_ok()
        .context("apt-get update in the reference install failed")?;
    let mut available = BTreeSet::new();
    let lists = scratch.join("var/lib/apt/lists");
    for entry in fs::read_dir(&lists)
        .with_context(|| format!("cannot list {}", lists.display()))?
        .flatten()
    {
        if entry.file_name().to_string_lossy().ends_with("_Packages") {
            available.extend(parse_available(
                &fs::read_to_string(entry.path()).unwrap_or_default(),
            ));
        }
    }
    let native = chroot(&["dpkg", "--print-architecture"])
        .run_ok()
        .context("dpkg --print-architecture in the reference install failed")?
        .stdout_text()
        .trim()
        .to_string();
    let (arguments, left_out) = install_arguments(status, &native, &available);
    // The host's answers, so that scripts write what they wrote on the host.
    if let Ok(answers) = fs::read(DEBCONF_ANSWERS) {
        atomic::write_atomic(
            &scratch.join(DEBCONF_ANSWERS.trim_start_matches('/')),
            &answers,
            Attributes::mode(0o644),
            None,
        )?;
    }
    let mut argv = vec![
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "--allow-downgrades",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    argv.extend(arguments.iter().map(String::as_str));
    chroot(&argv)
        .shown_as("apt-get install (the host's packages, in the reference install)")
        .run_ok()
        .context("installing the host's packages in the reference install failed")?;
    // Files systemd-tmpfiles makes at boot (Debian 13's empty vconsole.conf): the
    // reference install never boots, so they are made here. Evidence only: when it
    // fails, those files stay the site's, and the report says so.
    let mut left_out = left_out;
    let root_option = format!("--root={root}");
    let tmpfiles = Program::new(
        &[
            "systemd-tmpfiles",
            "--create",
            "--prefix=/etc",
            root_option.as_str(),
        ],
        deadline::SYSTEM,
    )
    .output();
    if !tmpfiles.as_ref().is_ok_and(|o| o.status.success()) {
        left_out.push(
            "systemd-tmpfiles --create failed in the reference install: what it makes under /etc at boot stays the site's".to_string(),
        );
    }
    let mut files: BTreeMap<String, String> = host::walk_etc(&scratch.join("etc"))?
        .into_iter()
        .map(|(path, live)| (path, live.md5))
        .collect();
    // The reference install's own setup, not a package's: never evidence. debootstrap
    // copies the host's hostname, so the reference install's says nothing.
    files.remove("apt/sources.list");
    files.remove("hostname");
    files.retain(|path, _| !path.starts_with("apt/sources.list.d/"));
    Ok((files, left_out))
}

/// Hard links (else nothing: apt downloads) of the host's .debs into the scratch cache.
fn link_host_debs(from: &Path, to: &Path) {
    let Ok(entries) = fs::read_dir(from) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "deb") {
            let _ = fs::hard_link(&path, to.join(entry.file_name()));
        }
    }
}

fn copy_files(from: &Path, to: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(from) else {
        return Ok(());
    };
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            fs::copy(entry.path(), to.join(entry.file_name()))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Bytes on disk under `path`, links not followed.
fn disk_usage(path: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(folder) = stack.pop() {
        let Ok(entries) = fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total += meta.blocks() * 512;
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

/// Deletes the scratch tree, unless something is mounted in it (debootstrap mounts /proc
/// and /sys while it works): deleting through a mount would delete the host's files.
fn remove_scratch(scratch: &Path) -> Result<()> {
    if !scratch.exists() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo")
        .context("cannot read /proc/self/mountinfo to check the scratch tree")?;
    let inside: Vec<PathBuf> = mount_points_under(&mounts, scratch);
    if !inside.is_empty() {
        bail!(
            "{} still has mounts ({}); unmount them, then delete it",
            scratch.display(),
            inside
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    fs::remove_dir_all(scratch).with_context(|| format!("cannot delete {}", scratch.display()))
}

/// The mount points of a mountinfo text that are `folder` or under it.
pub fn mount_points_under(mountinfo: &str, folder: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        // mountinfo escapes spaces and such as octal.
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(folder))
        .collect()
}

/// Moves each site file that the reference install made identically to "generated".
pub fn apply(
    baseline: &Baseline,
    live: &BTreeMap<String, super::classify::Live>,
    classes: &mut BTreeMap<String, super::classify::Class>,
) -> usize {
    let mut moved = 0;
    for (path, class) in classes.iter_mut() {
        if *class != super::classify::Class::Site {
            continue;
        }
        let Some(md5) = live.get(path) else { continue };
        if baseline.files.get(path) == Some(&md5.md5) {
            *class = super::classify::Class::Generated {
                reason: "made by a package's maintainer script: a reference install of the same packages has it, identical".to_string(),
            };
            moved += 1;
        }
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::classify::{Class, Live};
    use crate::facts::dpkg::parse_status;

    const STATUS: &str = "\
Package: postfix
Status: install ok installed
Architecture: amd64
Version: 3.7.11-0+deb12u1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1

Package: club-tools
Status: install ok installed
Architecture: all
Version: 1.0

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9

Package: nut-client
Status: deinstall ok config-files
Architecture: amd64
Version: 2.8.0-7
";

    #[test]
    fn every_installed_package_at_its_version_or_named_with_why_not() {
        let available = parse_available(
            "Package: postfix\nVersion: 3.7.11-0+deb12u1\nArchitecture: amd64\n\nPackage: tzdata\nVersion: 2025a-0+deb12u1\n\nPackage: tzdata\nVersion: 2024a-0+deb12u1\n",
        );
        let (arguments, left_out) = install_arguments(&parse_status(STATUS), "amd64", &available);
        assert_eq!(
            arguments,
            ["postfix=3.7.11-0+deb12u1", "tzdata=2024a-0+deb12u1"]
        );
        assert_eq!(left_out.len(), 2, "{left_out:?}");
        assert!(left_out[0].starts_with("club-tools 1.0: this version is in none"));
        assert!(left_out[1].contains("foreign architecture (i386)"));
    }

    #[test]
    fn the_key_changes_with_a_version_or_an_answer_not_with_a_removed_package() {
        let status = parse_status(STATUS);
        let base = key("bookworm", "http://deb.debian.org/debian", &status, b"a");
        assert_eq!(
            base,
            key("bookworm", "http://deb.debian.org/debian", &status, b"a")
        );
        assert_ne!(
            base,
            key("bookworm", "http://deb.debian.org/debian", &status, b"b")
        );
        let upgraded = parse_status(&STATUS.replace("3.7.11-0+deb12u1", "3.7.12-0+deb12u1"));
        assert_ne!(
            base,
            key("bookworm", "http://deb.debian.org/debian", &upgraded, b"a")
        );
        let purged = parse_status(&STATUS.replace(
            "\nPackage: nut-client\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 2.8.0-7\n",
            "",
        ));
        assert_eq!(
            base,
            key("bookworm", "http://deb.debian.org/debian", &purged, b"a")
        );
    }

    #[test]
    fn only_an_identical_site_file_becomes_generated() {
        let baseline = Baseline {
            format: FORMAT,
            key: "k".into(),
            files: [("aliases", "aaaa"), ("networks", "bbbb"), ("ssh/x", "cccc")]
                .into_iter()
                .map(|(p, m)| (p.to_string(), m.to_string()))
                .collect(),
            left_out: Vec::new(),
            build_seconds: 0.0,
            scratch_bytes: 0,
        };
        let live: BTreeMap<String, Live> = [
            ("aliases", "aaaa"),
            ("networks", "edited"),
            ("club.conf", "dddd"),
            ("ssh/x", "cccc"),
        ]
        .into_iter()
        .map(|(p, m)| (p.to_string(), Live { md5: m.to_string() }))
        .collect();
        let mut classes: BTreeMap<String, Class> = [
            ("aliases", Class::Site),
            ("networks", Class::Site),
            ("club.conf", Class::Site),
            (
                "ssh/x",
                Class::Modified {
                    package: "p".into(),
                    source: crate::distro::classify::Source::Conffile,
                    deleted: false,
                },
            ),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_string(), c))
        .collect();
        assert_eq!(apply(&baseline, &live, &mut classes), 1);
        assert!(matches!(classes["aliases"], Class::Generated { .. }));
        assert_eq!(classes["networks"], Class::Site, "edited by the site");
        assert_eq!(classes["club.conf"], Class::Site, "not in the reference");
        assert!(
            matches!(classes["ssh/x"], Class::Modified { .. }),
            "only site files move"
        );
    }

    #[test]
    fn mounts_inside_the_scratch_tree_are_found() {
        let mountinfo = "22 1 0:21 / /proc rw - proc proc rw\n\
            90 30 0:50 / /var/cache/placard/baseline/scratch/proc rw - proc proc rw\n\
            91 30 0:51 / /var/cache/placard/baseline/scratch2 rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mount_points_under(mountinfo, Path::new("/var/cache/placard/baseline/scratch")),
            [PathBuf::from("/var/cache/placard/baseline/scratch/proc")]
        );
    }
}
