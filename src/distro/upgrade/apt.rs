//! apt on the host for `etc upgrade` and `etc resolve`: the release upgrade itself
//! (keeping the site's conffiles), finishing packages dpkg left unconfigured, and the
//! maintainer's versions dpkg and ucf leave beside a kept conffile. Every run of apt-get
//! is appended to the worktree's `apt.log` for the admin.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use crate::system::command::{deadline, Program};

/// apt's messages of the last upgrade, kept for the admin in the worktree.
pub const LOG: &str = "apt.log";
/// Files dpkg and ucf leave beside a conffile they did not replace, or replaced.
pub const LEFT_BESIDE: &[&str] = &[
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-old",
    ".ucf-dist",
    ".ucf-new",
    ".ucf-old",
    ".dpkg-bak",
];

/// `apt-get update`, then the upgrade to the release the sources now name, keeping the
/// site's conffiles (`--force-confold`, and `UCF_FORCE_CONFFOLD` for ucf's files). The
/// dist-upgrade's failure is returned, not raised: a package whose maintainer script fails
/// on the configuration the site kept is left unconfigured, and the merge is what repairs
/// it, so the run goes on and dpkg finishes once the merged files are in place (or at
/// `etc resolve`).
pub fn upgrade(log: &Path) -> Result<Result<String>> {
    apt_get(&["update", "-q"], log)?;
    // Debian's release notes: a minimal upgrade first, then the full one, so that
    // essential libraries (the 64-bit time_t transition) are not pulled out from under
    // programs maintainer scripts run.
    apt_get_keeping_conffiles(&["upgrade", "--without-new-pkgs"], log)?;
    Ok(apt_get_keeping_conffiles(&["dist-upgrade"], log))
}

/// Finishes configuring packages dpkg left unconfigured; apt's message when it fails.
pub fn configure_pending(log: &Path) -> Option<String> {
    apt_get_keeping_conffiles(&["-f", "install"], log)
        .err()
        .map(|e| format!("{e:#}"))
}

/// `apt-get` without questions, keeping the conffiles the site changed (the merge
/// brings Debian's changes in afterwards).
fn apt_get_keeping_conffiles(args: &[&str], log: &Path) -> Result<String> {
    let mut argv = vec![
        "-y",
        "-q",
        "-o",
        "Dpkg::Options::=--force-confold",
        "-o",
        "Dpkg::Use-Pty=0",
    ];
    argv.extend(args);
    apt_get(&argv, log)
}

pub fn apt_get(args: &[&str], log: &Path) -> Result<String> {
    let mut argv = vec!["apt-get"];
    argv.extend(args);
    // A release upgrade downloads and unpacks hundreds of packages: hours, not minutes.
    let output = Program::new(&argv, 4 * deadline::APT)
        .env("NEEDRESTART_MODE", "a")
        // ucf asks about its files itself; this is its --force-confold.
        .env("UCF_FORCE_CONFFOLD", "1")
        .output()
        .context("cannot run apt-get")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "$ apt-get {}\n{stdout}{stderr}", args.join(" "));
    }
    if !output.status.success() {
        // dpkg names the failing package and its maintainer script's complaint in lines
        // with "error" on stdout and stderr; apt's own summary starts with E:.
        let mut errors: Vec<&str> = Vec::new();
        let mut listing = false;
        for line in stdout.lines().chain(stderr.lines()) {
            listing =
                (listing && line.starts_with(' ')) || line.starts_with("Errors were encountered");
            if listing
                || line.starts_with("E:")
                || line.starts_with("dpkg: error")
                || line.contains("Fatal:")
            {
                errors.push(line.trim());
            }
        }
        errors.truncate(16);
        let detail = if errors.is_empty() {
            stderr.lines().rev().take(6).collect::<Vec<_>>().join("; ")
        } else {
            errors.join("; ")
        };
        bail!(
            "`apt-get {}` failed ({}): {detail}; the whole output is in {}",
            args.join(" "),
            output.status,
            log.display()
        );
    }
    Ok(stdout.into_owned())
}

/// The files dpkg or ucf left beside `path`, with their content.
pub fn left_beside(etc: &Path, path: &str) -> Vec<(String, Vec<u8>)> {
    LEFT_BESIDE
        .iter()
        .filter_map(|suffix| {
            let relative = format!("{path}{suffix}");
            let content = fs::read(etc.join(&relative)).ok()?;
            Some((relative, content))
        })
        .collect()
}
