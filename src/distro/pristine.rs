//! The pristine versions of the /etc files of the installed packages, from their three
//! sources: the package's .deb (from apt's cache, else `apt-get download` into a
//! temporary folder), ucf's cache for ucf-managed files, and the templates of
//! [`super::tables::TEMPLATES`].
//!
//! A package whose .deb cannot be had is reported by name with apt's message, and the
//! others go on. Programs run with an argv, never a shell line.

use crate::system::command::{self, deadline};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use super::classify::Known;
use super::host::{self, Roots};
use super::tables;

pub const APT_ARCHIVES: &str = "/var/cache/apt/archives";
/// git's modes for a blob.
pub const MODE_FILE: i32 = 0o100644;
pub const MODE_EXECUTABLE: i32 = 0o100755;
pub const MODE_LINK: i32 = 0o120000;

/// An installed package whose files placard wants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PackageVersion {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// One file's pristine content, and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PristineFile {
    pub content: Vec<u8>,
    pub mode: i32,
    pub package: String,
    /// `deb`, `ucf`, or `template:/usr/share/…`.
    pub source: String,
}

/// A package whose .deb could not be had.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unavailable {
    pub package: String,
    pub version: String,
    pub message: String,
}

/// The installed packages that ship files under /etc (conffiles or others).
pub fn packages_with_etc_files(known: &Known) -> BTreeMap<String, PackageVersion> {
    let mut names: Vec<&String> = known.owned.values().collect();
    for (name, package) in &known.status.packages {
        if package.state == "installed"
            && package
                .conffiles
                .iter()
                .any(|c| !c.obsolete && c.path.starts_with("/etc/"))
        {
            names.push(name);
        }
    }
    names
        .into_iter()
        .filter_map(|name| {
            let package = known.status.packages.get(name)?;
            Some((
                name.clone(),
                PackageVersion {
                    name: name.clone(),
                    version: package.version.clone(),
                    architecture: package.architecture.clone(),
                },
            ))
        })
        .collect()
}

/// The .debs of `packages`: from apt's cache, else downloaded into `download_dir`.
pub fn find_debs(
    packages: &[&PackageVersion],
    roots: &Roots,
    download_dir: &Path,
) -> (BTreeMap<String, PathBuf>, Vec<Unavailable>) {
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    let archives = roots.system_path(APT_ARCHIVES);
    for package in packages {
        let cached = archives.join(deb_file_name(package));
        if cached.is_file() {
            found.insert(package.name.clone(), cached);
        } else {
            missing.push(*package);
        }
    }
    if missing.is_empty() {
        return (found, Vec::new());
    }
    let native = native_architecture();
    // One apt-get for all, which is fast; when it fails (one unknown version fails
    // them all), one per package, so that each failure is reported by name.
    let specs: Vec<String> = missing
        .iter()
        .map(|p| download_spec(p, native.as_deref()))
        .collect();
    let batch = apt_download(&specs, download_dir);
    let mut unavailable = Vec::new();
    for (package, spec) in missing.iter().zip(&specs) {
        let downloaded = download_dir.join(deb_file_name(package));
        if batch.is_ok() && downloaded.is_file() {
            found.insert(package.name.clone(), downloaded);
            continue;
        }
        match apt_download(std::slice::from_ref(spec), download_dir) {
            Ok(()) if downloaded.is_file() => {
                found.insert(package.name.clone(), downloaded);
            }
            Ok(()) => unavailable.push(Unavailable {
                package: package.name.clone(),
                version: package.version.clone(),
                message: format!(
                    "apt-get download {spec} wrote no {}",
                    deb_file_name(package)
                ),
            }),
            Err(error) => unavailable.push(Unavailable {
                package: package.name.clone(),
                version: package.version.clone(),
                message: format!("{error:#}"),
            }),
        }
    }
    (found, unavailable)
}

/// apt's name for a .deb: `name_version_arch.deb`, with the epoch's colon escaped.
pub fn deb_file_name(package: &PackageVersion) -> String {
    format!(
        "{}_{}_{}.deb",
        package.name,
        package.version.replace(':', "%3a"),
        package.architecture
    )
}

fn download_spec(package: &PackageVersion, native: Option<&str>) -> String {
    if package.architecture == "all" || Some(package.architecture.as_str()) == native {
        format!("{}={}", package.name, package.version)
    } else {
        format!(
            "{}:{}={}",
            package.name, package.architecture, package.version
        )
    }
}

fn native_architecture() -> Option<String> {
    let output = command::run_ok(&["dpkg", "--print-architecture"], deadline::QUERY).ok()?;
    Some(output.trim().to_string())
}

fn apt_download(specs: &[String], dir: &Path) -> Result<()> {
    // Short timeouts: an unreachable mirror must fail the package, not hang the run.
    let mut argv = vec![
        "apt-get",
        "download",
        "-q",
        "-o",
        "Acquire::Retries=0",
        "-o",
        "Acquire::http::Timeout=20",
        "-o",
        "Acquire::https::Timeout=20",
    ];
    argv.extend(specs.iter().map(String::as_str));
    let output = command::Program::new(&argv, deadline::APT)
        .directory(dir)
        .output()
        .context("cannot run apt-get")?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("E:") || l.starts_with("W:"))
        .collect();
    let detail = if errors.is_empty() {
        stderr.trim().to_string()
    } else {
        errors.join("; ")
    };
    bail!("`apt-get download {}` failed: {detail}", specs.join(" "))
}

/// Every file and link the .deb puts under /etc, relative to /etc, with its git mode.
pub fn extract_etc(deb: &Path) -> Result<Vec<(String, Vec<u8>, i32)>> {
    let mut child = command::Program::new(
        &[
            std::ffi::OsStr::new("dpkg-deb"),
            std::ffi::OsStr::new("--fsys-tarfile"),
            deb.as_os_str(),
        ],
        deadline::SYSTEM,
    )
    .stream()
    .context("cannot run dpkg-deb")?;
    let stdout = child.stdout().context("dpkg-deb has no output")?;
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(stdout);
    let read = (|| -> Result<()> {
        for entry in archive.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            let Some(relative) = path
                .trim_start_matches("./")
                .strip_prefix("etc/")
                .map(str::to_string)
            else {
                continue;
            };
            if relative.is_empty() {
                continue;
            }
            let header = entry.header();
            let kind = header.entry_type();
            if kind.is_symlink() {
                let target = entry
                    .link_name()?
                    .map(|t| t.as_os_str().as_encoded_bytes().to_vec())
                    .unwrap_or_default();
                files.push((relative, target, MODE_LINK));
            } else if kind.is_file() {
                let mode = if header.mode()? & 0o111 != 0 {
                    MODE_EXECUTABLE
                } else {
                    MODE_FILE
                };
                let mut content = Vec::new();
                entry.read_to_end(&mut content)?;
                files.push((relative, content, mode));
            }
        }
        Ok(())
    })();
    child.finish()?;
    read.with_context(|| format!("cannot read the files of {}", deb.display()))?;
    Ok(files)
}

/// The ucf-managed files of installed packages, from ucf's cache.
pub fn from_ucf(known: &Known, roots: &Roots) -> BTreeMap<String, PristineFile> {
    let cache = roots.system_path(host::UCF_CACHE);
    known
        .ucf
        .iter()
        .filter(|(_, package)| known.status.is_installed(package))
        .filter_map(|(path, package)| {
            let content = std::fs::read(cache.join(host::ucf_cache_name(path))).ok()?;
            Some((
                path.clone(),
                PristineFile {
                    content,
                    mode: MODE_FILE,
                    package: package.clone(),
                    source: "ucf".into(),
                },
            ))
        })
        .collect()
}

/// Adds the pristine files of generated configuration to those of the .debs (which
/// win): a package's template before ucf's cache. ucf's cache is not pristine for a
/// file a maintainer script generates from debconf answers, because the package's
/// config script reads those answers back from the live file (issue 13, item 3:
/// openssh-server's config reads `PasswordAuthentication` from sshd_config, so after
/// `dpkg-reconfigure openssh-server` or an upgrade the cache holds the site's value and
/// the site's hardening looked pristine). The template is what the package ships, with
/// debconf's defaults.
pub fn add_generated(
    files: &mut BTreeMap<String, PristineFile>,
    templates: BTreeMap<String, PristineFile>,
    ucf: BTreeMap<String, PristineFile>,
) {
    for (path, file) in templates.into_iter().chain(ucf) {
        files.entry(path).or_insert(file);
    }
}

/// The files generated from a template, for installed packages, from the host's copy of
/// the template (a file of the installed version).
pub fn from_templates(known: &Known, roots: &Roots) -> BTreeMap<String, PristineFile> {
    tables::TEMPLATES
        .iter()
        .filter(|t| known.status.is_installed(t.package))
        .filter_map(|t| {
            let content = std::fs::read(roots.system_path(t.source)).ok()?;
            Some((
                t.path.to_string(),
                PristineFile {
                    content,
                    mode: MODE_FILE,
                    package: t.package.to_string(),
                    source: format!("template:{}", t.source),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(source: &str, content: &str) -> PristineFile {
        PristineFile {
            content: content.as_bytes().to_vec(),
            mode: MODE_FILE,
            package: "openssh-server".into(),
            source: source.into(),
        }
    }

    /// Issue 13, item 3: after `dpkg-reconfigure openssh-server`, ucf's cache holds the
    /// site's `PasswordAuthentication no`; the template is the pristine file.
    #[test]
    fn issue_13_a_template_wins_over_a_ucf_cache_filled_from_the_live_file() {
        let mut files =
            BTreeMap::from([("dovecot/dovecot.conf".to_string(), file("deb", "deb\n"))]);
        let templates = BTreeMap::from([(
            "ssh/sshd_config".to_string(),
            file(
                "template:/usr/share/openssh/sshd_config",
                "#PasswordAuthentication yes\n",
            ),
        )]);
        let ucf = BTreeMap::from([
            (
                "ssh/sshd_config".to_string(),
                file("ucf", "PasswordAuthentication no\n"),
            ),
            ("dovecot/dovecot.conf".to_string(), file("ucf", "ucf\n")),
            (
                "dovecot/conf.d/10-auth.conf".to_string(),
                file("ucf", "auth\n"),
            ),
        ]);
        add_generated(&mut files, templates, ucf);
        assert_eq!(
            files["ssh/sshd_config"].source,
            "template:/usr/share/openssh/sshd_config"
        );
        assert_eq!(
            files["ssh/sshd_config"].content,
            b"#PasswordAuthentication yes\n"
        );
        assert_eq!(
            files["dovecot/dovecot.conf"].source, "deb",
            "a .deb's file wins"
        );
        assert_eq!(
            files["dovecot/conf.d/10-auth.conf"].source, "ucf",
            "no template: ucf"
        );
    }

    /// A real .deb, built with dpkg-deb: its /etc files come out with their git modes,
    /// and nothing outside /etc does.
    #[test]
    fn extracts_the_etc_files_of_a_deb() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let tree = dir.path().join("club-tools");
        std::fs::create_dir_all(tree.join("DEBIAN")).expect("folders");
        std::fs::create_dir_all(tree.join("etc/club/cron.daily")).expect("folders");
        std::fs::create_dir_all(tree.join("usr/share/club")).expect("folders");
        std::fs::write(tree.join("DEBIAN/control"), "Package: club-tools\nVersion: 1.0\nArchitecture: all\nMaintainer: club <admin@club.example>\nDescription: tools\n").expect("write");
        std::fs::write(tree.join("etc/club/tools.conf"), "level = 1\n").expect("write");
        std::fs::write(tree.join("etc/club/cron.daily/backup"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            tree.join("etc/club/cron.daily/backup"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        std::os::unix::fs::symlink("tools.conf", tree.join("etc/club/default.conf")).expect("link");
        std::fs::write(tree.join("usr/share/club/README"), "not config\n").expect("write");
        let deb = dir.path().join("club-tools.deb");
        let built = std::process::Command::new("dpkg-deb")
            .args(["--root-owner-group", "-b"])
            .arg(&tree)
            .arg(&deb)
            .output()
            .expect("dpkg-deb");
        assert!(
            built.status.success(),
            "{}",
            String::from_utf8_lossy(&built.stderr)
        );

        let mut files = extract_etc(&deb).expect("the files");
        files.sort();
        assert_eq!(
            files,
            [
                (
                    "club/cron.daily/backup".to_string(),
                    b"#!/bin/sh\n".to_vec(),
                    MODE_EXECUTABLE
                ),
                (
                    "club/default.conf".to_string(),
                    b"tools.conf".to_vec(),
                    MODE_LINK
                ),
                (
                    "club/tools.conf".to_string(),
                    b"level = 1\n".to_vec(),
                    MODE_FILE
                ),
            ]
        );
        let broken = dir.path().join("broken.deb");
        std::fs::write(&broken, "not a deb").expect("write");
        let error = extract_etc(&broken).expect_err("not a .deb");
        assert!(
            format!("{error:#}").contains("dpkg-deb --fsys-tarfile"),
            "{error:#}"
        );
    }

    #[test]
    fn apt_names_and_specs() {
        let package = PackageVersion {
            name: "openssh-server".into(),
            version: "1:9.2p1-2+deb12u10".into(),
            architecture: "amd64".into(),
        };
        assert_eq!(
            deb_file_name(&package),
            "openssh-server_1%3a9.2p1-2+deb12u10_amd64.deb"
        );
        assert_eq!(
            download_spec(&package, Some("amd64")),
            "openssh-server=1:9.2p1-2+deb12u10"
        );
        assert_eq!(
            download_spec(&package, Some("arm64")),
            "openssh-server:amd64=1:9.2p1-2+deb12u10"
        );
    }
}
