//! The draft site repository that `placard capture HOST -o DIR` writes, on the
//! controller, from what the agent captured ([`super::capture`]):
//!
//! ```text
//! DIR/README.md            what was captured, and what is left to do by hand
//! DIR/capture.json         the manifest (no file contents); `etc migrate` reads it
//! DIR/inventory/hosts.yml  the host, with the role `site`
//! DIR/roles/site.yml       packages, site files, services: a role `placard plan` reads
//! DIR/templates/site/…     the files the site added, copied
//! DIR/pristine/…           the pristine version of each modified conffile
//! DIR/patches/….patch      the site's change to it, a unified diff
//! ```
//!
//! Modified conffiles are not in the role: writing the old host's file onto a new
//! release would undo the release's changes. `placard etc migrate` replays each patch
//! onto the new host's own pristine file instead; an admin may edit or delete a patch
//! first. The folder must be new or empty, so a capture never overwrites an admin's work.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::archive::Verdict;
use super::capture::{self, Capture, CapturedPackage, LeftOut, SiteLink};

pub const MANIFEST: &str = "capture.json";

/// capture.json: the capture without file contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub hostname: String,
    pub os: String,
    pub release: String,
    pub mirror: String,
    pub archive_error: Option<String>,
    pub packages: Vec<CapturedPackage>,
    /// Modified conffiles: `pristine/PATH` and `patches/PATH.patch`.
    pub modified: Vec<ModifiedEntry>,
    pub deleted: Vec<String>,
    /// Site files, copied to `templates/site/PATH`.
    pub site_files: Vec<String>,
    pub site_links: Vec<SiteLink>,
    pub services: Vec<String>,
    pub secrets: Vec<String>,
    pub left_out: Vec<LeftOut>,
    pub unavailable: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModifiedEntry {
    pub path: String,
    pub package: String,
}

/// Where the host is reached, copied into the draft's inventory.
#[derive(Debug, Clone, Default)]
pub struct Reach {
    pub name: String,
    pub address: Option<String>,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub known_hosts: Vec<PathBuf>,
    pub identity: Option<PathBuf>,
}

/// What was written, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub folder: PathBuf,
    pub packages: usize,
    pub missing: Vec<String>,
    pub renamed: Vec<String>,
    pub patches: usize,
    pub site_files: usize,
    pub services: usize,
    pub secrets: Vec<String>,
}

/// A draft goes into a new or empty folder only, so a capture never overwrites an
/// admin's work.
pub fn check_empty(dir: &Path) -> Result<()> {
    if dir.exists()
        && fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "{} is not empty; capture writes a new draft only, into a new or empty folder",
            dir.display()
        );
    }
    Ok(())
}

pub fn write(dir: &Path, capture: &Capture, reach: &Reach) -> Result<Written> {
    check_empty(dir)?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let put = |relative: &str, content: &[u8]| -> Result<()> {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))
    };

    for file in &capture.modified {
        put(&format!("pristine/{}", file.path), file.pristine.as_bytes())?;
        put(
            &format!("patches/{}.patch", file.path),
            patch_text(&file.path, &file.pristine, &file.live).as_bytes(),
        )?;
    }
    for file in &capture.site_files {
        put(
            &format!("templates/site/{}", file.path),
            file.content.as_bytes(),
        )?;
    }
    let packages = capture::installable(capture);
    put("roles/site.yml", role(capture, &packages).as_bytes())?;
    put("inventory/hosts.yml", inventory(capture, reach).as_bytes())?;
    let manifest = Manifest {
        hostname: capture.hostname.clone(),
        os: capture.os.clone(),
        release: capture.release.clone(),
        mirror: capture.mirror.clone(),
        archive_error: capture.archive_error.clone(),
        packages: capture.packages.clone(),
        modified: capture
            .modified
            .iter()
            .map(|m| ModifiedEntry {
                path: m.path.clone(),
                package: m.package.clone(),
            })
            .collect(),
        deleted: capture.deleted.clone(),
        site_files: capture.site_files.iter().map(|f| f.path.clone()).collect(),
        site_links: capture.site_links.clone(),
        services: capture.services.clone(),
        secrets: capture.secrets.clone(),
        left_out: capture.left_out.clone(),
        unavailable: capture.unavailable.clone(),
    };
    put(
        MANIFEST,
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    put("README.md", readme(capture, reach).as_bytes())?;

    let verdicts = |wanted: fn(&Verdict) -> Option<String>| {
        capture
            .packages
            .iter()
            .filter_map(|p| wanted(&p.verdict).map(|detail| format!("{}: {detail}", p.name)))
            .collect::<Vec<_>>()
    };
    Ok(Written {
        folder: dir.to_path_buf(),
        packages: packages.len(),
        missing: verdicts(|v| match v {
            Verdict::Missing { note } => Some(note.clone()),
            Verdict::Unchecked { message } => Some(format!("unchecked: {message}")),
            _ => None,
        }),
        renamed: verdicts(|v| match v {
            Verdict::Renamed { to, how } => Some(format!("→ {to} ({how})")),
            _ => None,
        }),
        patches: capture.modified.len(),
        site_files: capture.site_files.len(),
        services: capture.services.len(),
        secrets: capture.secrets.clone(),
    })
}

/// A unified diff from the pristine file to the live one, with git's a/ b/ names.
pub fn patch_text(path: &str, pristine: &str, live: &str) -> String {
    let text = diffy::create_patch(pristine, live).to_string();
    let body = text
        .split_once('\n')
        .and_then(|(_, rest)| rest.split_once('\n'))
        .map_or(text.as_str(), |(_, rest)| rest);
    format!("--- a/etc/{path}\n+++ b/etc/{path}\n{body}")
}

/// The live file again: the pristine file with the patch applied.
pub fn apply_patch(pristine: &str, patch: &str) -> Result<String> {
    let patch = diffy::Patch::from_str(patch).context("not a unified diff")?;
    diffy::apply(pristine, &patch).context("the patch does not apply to its pristine file")
}

/// A YAML scalar: JSON's quoted string is valid YAML and escapes everything.
fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into())
}

fn role(capture: &Capture, packages: &[String]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A draft written by `placard capture` from {} ({}), for Debian {}.\n# Read it top to bottom, delete what the new host should not have, then\n# `placard plan` shows what apply would do.",
        capture.hostname, capture.os, capture.release
    );
    out.push_str("description: |\n");
    let _ = writeln!(
        out,
        "  What the site added to {} by hand: the packages it installed, the files it\n  put under /etc, the services it enabled. The site's edits of the packages' own\n  configuration files are not here: `placard etc migrate --from THIS_FOLDER NEWHOST`\n  merges each of them (patches/) into the new host's own version of the file.\n  Secrets are not here either: README.md lists them, to move by hand.\n",
        capture.hostname
    );
    out.push_str("variables:\n");
    out.push_str("  site_packages:\n    description: |\n      The packages installed by hand on the old host (apt-mark showmanual) that exist in\n      the target release, renamed ones under their new name. README.md lists the missing ones.\n    type: list\n    default:\n");
    for name in packages {
        let _ = writeln!(out, "      - {}", quote(name));
    }
    if packages.is_empty() {
        out.push_str("      []\n");
    }
    out.push_str("  site_services:\n    description: The units enabled on the old host (systemctl list-unit-files --state=enabled).\n    type: list\n    default:\n");
    for name in &capture.services {
        let _ = writeln!(out, "      - {}", quote(name));
    }
    if capture.services.is_empty() {
        out.push_str("      []\n");
    }
    out.push_str("\ntasks:\n");
    out.push_str("  - name: Install {{item}}, which the old host had installed by hand.\n    loop: site_packages\n    package:\n      names: [\"{{item}}\"]\n\n");

    let mut folders: Vec<&str> = capture
        .site_files
        .iter()
        .map(|f| f.path.as_str())
        .chain(capture.site_links.iter().map(|l| l.path.as_str()))
        .filter_map(|p| p.rsplit_once('/').map(|(folder, _)| folder))
        .collect();
    folders.sort();
    folders.dedup();
    for folder in folders {
        let _ = writeln!(
            out,
            "  - name: Make the folder /etc/{folder}, where the site keeps files.\n    directory:\n      path: {}\n",
            quote(&format!("/etc/{folder}"))
        );
    }
    for file in &capture.site_files {
        let _ = writeln!(
            out,
            "  - name: Put the site's /etc/{} in place, as the old host had it.\n    file:\n      path: {}\n      copy: {}\n      owner: {}\n      group: {}\n      mode: {}\n",
            file.path,
            quote(&format!("/etc/{}", file.path)),
            quote(&format!("site/{}", file.path)),
            quote(&file.owner),
            quote(&file.group),
            quote(&file.mode),
        );
    }
    for link in &capture.site_links {
        let _ = writeln!(
            out,
            "  - name: Link /etc/{} to {}, as on the old host.\n    symlink:\n      path: {}\n      target: {}\n",
            link.path,
            link.target,
            quote(&format!("/etc/{}", link.path)),
            quote(&link.target),
        );
    }
    out.push_str("  - name: Enable {{item}}, as on the old host.\n    loop: site_services\n    service:\n      name: \"{{item}}\"\n      enabled: true\n");
    out
}

fn inventory(capture: &Capture, reach: &Reach) -> String {
    let mut out = format!(
        "# A draft inventory written by `placard capture` from {} ({}).\n# Point it at the new host (address, port) before `placard apply`.\n",
        reach.name, capture.os
    );
    if !reach.known_hosts.is_empty() || reach.identity.is_some() {
        out.push_str("ssh:\n");
        if !reach.known_hosts.is_empty() {
            out.push_str("  known_hosts:\n");
            for path in &reach.known_hosts {
                let _ = writeln!(out, "    - {}", quote(&path.to_string_lossy()));
            }
        }
        if let Some(identity) = &reach.identity {
            let _ = writeln!(out, "  identity: {}", quote(&identity.to_string_lossy()));
        }
    }
    let _ = writeln!(out, "hosts:\n  {}:", quote(&reach.name));
    if let Some(address) = &reach.address {
        let _ = writeln!(out, "    address: {}", quote(address));
    }
    if let Some(port) = reach.port {
        let _ = writeln!(out, "    port: {port}");
    }
    if let Some(user) = &reach.user {
        let _ = writeln!(out, "    user: {}", quote(user));
    }
    out.push_str("    roles: [site]\n");
    out
}

fn readme(capture: &Capture, reach: &Reach) -> String {
    let mut out = format!(
        "# Draft site of {} ({})\n\nWritten by `placard capture {}`, for Debian {}. Nothing here was applied anywhere.\n\n",
        capture.hostname, capture.os, reach.name, capture.release
    );
    out.push_str("Next steps:\n\n1. Read `roles/site.yml` and delete what the new host should not have.\n2. Point `inventory/hosts.yml` at the new host; `placard plan -i inventory/hosts.yml` shows what apply would do; `placard apply` does it.\n3. `placard etc migrate --from THIS_FOLDER NEWHOST` merges the site's edits of the packages' files (`patches/`) into the new host's own files; conflicts are left for you, never in live /etc.\n4. Move the secrets below by hand, or make new ones.\n\n");
    let section = |out: &mut String, title: &str, lines: Vec<String>| {
        let _ = writeln!(out, "## {title} ({})\n", lines.len());
        for line in &lines {
            let _ = writeln!(out, "- {line}");
        }
        if lines.is_empty() {
            out.push_str("(none)\n");
        }
        out.push('\n');
    };
    if let Some(error) = &capture.archive_error {
        let _ = writeln!(
            out,
            "**The package lists of {} could not be read**, so no package was checked: {error}\n",
            capture.release
        );
    }
    let packages = |wanted: fn(&Verdict) -> Option<String>| {
        capture
            .packages
            .iter()
            .filter_map(|p| wanted(&p.verdict).map(|d| format!("`{}`{d}", p.name)))
            .collect::<Vec<_>>()
    };
    section(
        &mut out,
        &format!("Packages missing from {}", capture.release),
        packages(|v| match v {
            Verdict::Missing { note } => Some(format!(": {note}")),
            Verdict::Unchecked { message } => Some(format!(": not checked: {message}")),
            _ => None,
        }),
    );
    section(
        &mut out,
        &format!("Packages renamed in {}", capture.release),
        packages(|v| match v {
            Verdict::Renamed { to, how } => Some(format!(" → `{to}`: {how}")),
            _ => None,
        }),
    );
    section(
        &mut out,
        "Secrets to move by hand (never copied here)",
        capture
            .secrets
            .iter()
            .map(|s| match capture.secret_reasons.get(s) {
                Some(why) => format!("/etc/{s}: {why}; {}", super::secrets::CAPTURE_TODO),
                None => format!("/etc/{s}"),
            })
            .collect(),
    );
    section(
        &mut out,
        "Modified conffiles (patches/, for `placard etc migrate`)",
        capture
            .modified
            .iter()
            .map(|m| format!("/etc/{} ({})", m.path, m.package))
            .collect(),
    );
    section(
        &mut out,
        "Conffiles the site deleted",
        capture
            .deleted
            .iter()
            .map(|d| format!("/etc/{d}"))
            .collect(),
    );
    section(
        &mut out,
        "Files left out",
        capture
            .left_out
            .iter()
            .map(|l| format!("/etc/{}: {}", l.path, l.reason))
            .collect(),
    );
    section(
        &mut out,
        "Packages whose pristine files could not be had",
        capture.unavailable.clone(),
    );
    out
}

/// Reads a draft's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: is {} a folder written by `placard capture`?",
            path.display(),
            dir.display()
        )
    })?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a capture manifest", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_gives_the_live_file_back_from_the_pristine_one() {
        let pristine = "#Port 22\n#PasswordAuthentication yes\nUsePAM yes\n";
        let live = "#Port 22\nPasswordAuthentication no\nUsePAM yes\nMaxAuthTries 3";
        let patch = patch_text("ssh/sshd_config", pristine, live);
        assert!(patch.starts_with("--- a/etc/ssh/sshd_config\n+++ b/etc/ssh/sshd_config\n@@"));
        assert!(patch.contains("-#PasswordAuthentication yes\n+PasswordAuthentication no\n"));
        assert_eq!(apply_patch(pristine, &patch).expect("applies"), live);
        assert!(apply_patch("something else\n", &patch).is_err());
    }
}
