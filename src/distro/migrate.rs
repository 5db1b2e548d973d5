//! `placard etc migrate --from DIR NEWHOST`: the site's edits of the old host's
//! conffiles, replayed onto the new host's own pristine files by the three-way merge of
//! [`crate::merge`]: base = the old pristine file (from the capture), ours = the old
//! live file (the pristine file with the capture's patch), theirs = the new host's
//! pristine file (from its own distro branch, brought up to date first).
//!
//! On the host: stray changes in /etc are committed first; clean merges are written and
//! checked by the service's validator where one exists, by the rule of
//! [`super::validate`] shared with `etc upgrade` (a group that makes a working
//! configuration fail is put back and handed to the admin); then one commit. A merge with anything to decide is
//! never written to live /etc: it goes, with the three inputs, under
//! [`CONFLICTS_DIR`] for the admin. The controller side, [`load`], reads the draft.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use git2::Repository;
use serde::{Deserialize, Serialize};

use super::branch;
use super::draft;
use super::host::{self, Roots};
use super::successors;
use super::upgrade;
use super::validate::{self, Outcome, Validator};
use crate::merge::{self, Issue};
use crate::system::atomic::{self, Attributes};
use crate::system::etc_git::{Declared, EtcRepo};

/// Where conflicts are left for the admin, outside /etc; emptied at each migrate.
pub const CONFLICTS_DIR: &str = "/var/lib/placard/migrate";
/// The conflicts still waiting under [`CONFLICTS_DIR`], by path: what `etc resolve` reads.
pub const PENDING: &str = "pending.json";
/// The suffixes of the files left beside each conflict (inputs and notes).
const INPUTS: &[&str] = &["old-pristine", "old-live", "new-pristine", "placard-issues"];

/// One captured conffile, as the bundle carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrateFile {
    /// Relative to /etc.
    pub path: String,
    pub package: String,
    /// The old host's pristine file.
    pub base: String,
    /// The old host's live file.
    pub ours: String,
}

/// What a draft holds besides patches: the conffiles the old site deleted, and the
/// changed files capture could not carry because they are not text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Others {
    pub deleted: Vec<String>,
    pub binary: Vec<String>,
}

/// A file migrate cannot carry over by itself, and what the admin does with it.
#[derive(Debug, Clone, Serialize)]
pub struct ByHand {
    pub path: String,
    pub what: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Migration {
    pub source: String,
    /// Written to live /etc and committed.
    pub merged: Vec<MergedFile>,
    /// Conffiles the new host's release no longer ships, whose site settings were
    /// written to the file that took over their job ([`super::successors`]).
    pub moved: Vec<MovedFile>,
    /// Already as the merge would write them (a second run).
    pub unchanged: Vec<String>,
    /// Left under `folder` for the admin; live /etc keeps its file.
    pub conflicts: Vec<Conflict>,
    pub validations: Vec<Validation>,
    /// Groups of clean merges written although their validator fails: this host's
    /// configuration failed it already before the merge ([`validate`]'s rule).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub still_invalid: Vec<validate::StillInvalid>,
    pub commit: Option<String>,
    pub folder: String,
    /// Packages of the new host whose pristine files could not be had.
    pub unavailable: Vec<String>,
    /// Conffiles the old site deleted, deleted here too (this host's copy was pristine).
    pub deleted: Vec<String>,
    /// Files left to the admin, each with what to do: deleted conffiles this host
    /// changed, and binary files.
    pub by_hand: Vec<ByHand>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MergedFile {
    pub path: String,
    pub method: merge::Method,
    /// Site settings carried over (merges by setting).
    pub replayed: usize,
    /// Renamed settings translated by rule, as the merge names them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub translations: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MovedFile {
    pub path: String,
    pub successor: String,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Conflict {
    pub path: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub issues: Vec<Issue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Validation {
    pub command: String,
    pub ok: bool,
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub output: String,
}

/// The controller's side: the captured files of a draft, each live file rebuilt from
/// its pristine version and patch (so an admin's edit of a patch counts).
pub fn load(dir: &Path) -> Result<(String, Vec<MigrateFile>, Others)> {
    let manifest = draft::read_manifest(dir)?;
    let others = Others {
        deleted: manifest.deleted.clone(),
        binary: manifest
            .left_out
            .iter()
            .filter(|l| l.reason.starts_with("not text"))
            .map(|l| l.path.clone())
            .collect(),
    };
    let mut files = Vec::new();
    for entry in &manifest.modified {
        let patch_path = dir.join(format!("patches/{}.patch", entry.path));
        let Ok(patch) = fs::read_to_string(&patch_path) else {
            // The admin deleted the patch: that change is not wanted on the new host.
            continue;
        };
        let pristine_path = dir.join(format!("pristine/{}", entry.path));
        let base = fs::read_to_string(&pristine_path)
            .with_context(|| format!("cannot read {}", pristine_path.display()))?;
        let ours = draft::apply_patch(&base, &patch)
            .with_context(|| format!("{}", patch_path.display()))?;
        files.push(MigrateFile {
            path: entry.path.clone(),
            package: entry.package.clone(),
            base,
            ours,
        });
    }
    Ok((manifest.hostname, files, others))
}

/// Runs on the new host, whose /etc repository must exist.
pub fn run(
    etc: &Path,
    folder: &Path,
    source: &str,
    files: &[MigrateFile],
    others: &Others,
) -> Result<Migration> {
    let repo = EtcRepo::open(etc)?
        .with_context(|| format!("{} is not a git repository", etc.display()))?;
    repo.update_ignores(&Declared::load(Path::new(crate::system::STATE_DIR))?)?;
    let stray = repo.changes()?;
    repo.commit_all(
        "changes found before placard etc migrate",
        &stray.iter().map(|f| format!("  {f}\n")).collect::<String>(),
    )?;

    let roots = Roots::host(etc);
    let (status, known) = host::read_known(&roots)?;
    let git = Repository::open(etc)?;
    let update = branch::update(&git, &known, &roots)?;

    if folder.exists() {
        fs::remove_dir_all(folder).with_context(|| format!("cannot empty {}", folder.display()))?;
    }
    let mut migration = Migration {
        source: source.to_string(),
        merged: Vec::new(),
        moved: Vec::new(),
        unchanged: Vec::new(),
        conflicts: Vec::new(),
        validations: Vec::new(),
        still_invalid: Vec::new(),
        commit: None,
        folder: folder.display().to_string(),
        unavailable: update
            .unavailable
            .iter()
            .map(|u| format!("{} {}: {}", u.package, u.version, u.message))
            .collect(),
        deleted: Vec::new(),
        by_hand: Vec::new(),
    };
    // Clean merges to write, a validator's group at a time once all are known.
    let mut written: Vec<(String, merge::Merged)> = Vec::new();

    for file in files {
        if !valid_relative(&file.path) {
            migration.conflicts.push(Conflict {
                path: file.path.clone(),
                reason: "not a path under /etc; ignored".into(),
                issues: Vec::new(),
            });
            continue;
        }
        let installed = status
            .packages
            .get(&file.package)
            .is_some_and(|p| p.state == "installed");
        let theirs = update
            .pristine
            .get(&file.path)
            .map(|p| String::from_utf8_lossy(&p.content).into_owned());
        let successor = successors::lookup(&file.path).filter(|_| installed);
        if let (None, Some(successor)) = (&theirs, successor) {
            let target = etc.join(successor.successor);
            let existing = fs::read_to_string(&target).ok();
            if let Some(merged) =
                successors::moved_text(successor, &file.base, &file.ours, existing.as_deref())
            {
                if existing.as_deref() == Some(merged.text.as_str()) {
                    migration.unchanged.push(successor.successor.to_string());
                } else {
                    if let Some(parent) = target.parent() {
                        fs::create_dir_all(parent)
                            .with_context(|| format!("cannot create {}", parent.display()))?;
                    }
                    migration.moved.push(MovedFile {
                        path: file.path.clone(),
                        successor: successor.successor.to_string(),
                        source: successor.source.to_string(),
                    });
                    written.push((successor.successor.to_string(), merged));
                }
                continue;
            }
        }
        if theirs.is_none() {
            let reason = if !installed {
                format!(
                    "{} is not installed on this host: install it (the draft's site role does), then migrate again",
                    file.package
                )
            } else if update.unavailable.iter().any(|u| u.package == file.package) {
                format!(
                    "the pristine files of {} could not be had here (see unavailable)",
                    file.package
                )
            } else {
                format!(
                    "{} no longer ships /etc/{}: the site's file is left for you",
                    file.package, file.path
                )
            };
            leave(folder, file, None, &file.ours, &reason, &[])?;
            migration.conflicts.push(Conflict {
                path: file.path.clone(),
                reason,
                issues: Vec::new(),
            });
            continue;
        }
        let merged = merge::merge(&file.path, &file.base, &file.ours, theirs.as_deref());
        if !merged.is_clean() {
            let reason = describe(&merged.issues);
            leave(
                folder,
                file,
                theirs.as_deref(),
                &merged.text,
                &reason,
                &merged.issues,
            )?;
            migration.conflicts.push(Conflict {
                path: file.path.clone(),
                reason,
                issues: merged.issues,
            });
            continue;
        }
        let target = etc.join(&file.path);
        let previous = fs::read(&target).ok();
        if previous.as_deref() == Some(merged.text.as_bytes()) {
            migration.unchanged.push(file.path.clone());
            continue;
        }
        written.push((file.path.clone(), merged));
    }

    // The clean merges, by the rule of `validate`: a group that makes a working
    // configuration fail is put back and handed to the admin.
    for (validator, group) in validate::by_validator(written, &validate::for_path) {
        let files: Vec<(String, Option<Vec<u8>>)> = group
            .iter()
            .map(|(path, merged)| (path.clone(), Some(merged.text.clone().into_bytes())))
            .collect();
        let outcome = validate::write_group(etc, validator, &files)?;
        if let Some(validator) = validator.filter(Validator::is_installed) {
            let (ok, output) = match &outcome {
                Outcome::Passed(_) => (true, String::new()),
                failed => (false, failed.line()),
            };
            migration.validations.push(Validation {
                command: validator.name.to_string(),
                ok,
                files: files.iter().map(|(path, _)| path.clone()).collect(),
                output,
            });
        }
        if let Outcome::StillInvalid(still) = &outcome {
            migration.still_invalid.push(still.clone());
        }
        for (path, merged) in group {
            let Outcome::RolledBack(output) = &outcome else {
                migration.merged.push(MergedFile {
                    path,
                    method: merged.method,
                    replayed: merged.replayed.len(),
                    translations: merged
                        .translations
                        .iter()
                        .map(|t| t.message.clone())
                        .collect(),
                });
                continue;
            };
            leave_refused(folder, &path, &merged, output)?;
            migration.conflicts.push(Conflict {
                path,
                reason: format!(
                    "the merge was clean but `{}` refused the result; /etc keeps its file",
                    validator.map_or("its validator", |v| v.name)
                ),
                issues: Vec::new(),
            });
        }
    }

    // Issue 13, item 7: a conffile the old site deleted (the Debian way to turn one off)
    // is deleted here when this host's copy is as its package ships it, so nothing of
    // this host's is lost; dpkg keeps a deleted conffile deleted on upgrades.
    for path in others.deleted.iter().filter(|p| valid_relative(p)) {
        let live = etc.join(path);
        let Ok(meta) = fs::symlink_metadata(&live) else {
            migration.unchanged.push(path.clone());
            continue;
        };
        let pristine = update.pristine.get(path);
        let as_shipped = meta.is_file()
            && pristine.is_some_and(|p| fs::read(&live).ok().as_deref() == Some(&p.content[..]));
        if as_shipped {
            // A service that cannot do without the file (sshd_config) keeps it.
            let removal = [(path.clone(), None)];
            let outcome = validate::write_group(etc, validate::for_path(path), &removal)?;
            if let Outcome::RolledBack(refusal) = outcome {
                migration.by_hand.push(ByHand {
                    path: path.clone(),
                    what: format!("{source} had deleted this conffile; deleted here, {refusal}, so it was put back: decide by hand"),
                });
                continue;
            }
            migration.deleted.push(path.clone());
        } else {
            let what = if pristine.is_some() {
                format!("{source} had deleted this conffile, but this host's copy is changed: `rm /etc/{path}` if its job is unwanted here, else keep it")
            } else {
                format!("{source} had deleted this conffile, and no installed package here ships it: `rm /etc/{path}` if it is unwanted here")
            };
            migration.by_hand.push(ByHand {
                path: path.clone(),
                what,
            });
        }
    }
    for path in others.binary.iter().filter(|p| valid_relative(p)) {
        migration.by_hand.push(ByHand {
            path: path.clone(),
            what: format!("not text, so no merge: copy it from {source} by hand keeping its owner and mode (`scp -p root@{source}:/etc/{path} /etc/{path}` on this host), then check it with `placard etc drift`"),
        });
    }

    let refused: Vec<String> = migration.conflicts.iter().map(|c| c.path.clone()).collect();
    // What `etc resolve` takes: each conflict that left a file for the admin.
    let pending: Vec<&String> = refused
        .iter()
        .filter(|p| folder.join(p).is_file())
        .collect();
    if !pending.is_empty() {
        atomic::write_atomic(
            &folder.join(PENDING),
            &serde_json::to_vec_pretty(&pending)?,
            Attributes::mode(0o600),
            None,
        )?;
    }
    if !migration.merged.is_empty() || !migration.deleted.is_empty() {
        let body: String = migration
            .merged
            .iter()
            .map(|m| format!("  {}\n", m.path))
            .chain(
                migration
                    .deleted
                    .iter()
                    .map(|p| format!("  {p} (deleted)\n")),
            )
            .collect();
        migration.commit = repo.commit_all(
            &format!(
                "placard etc migrate: the site's changes from {source} ({} files)",
                migration.merged.len() + migration.deleted.len()
            ),
            &body,
        )?;
    }
    Ok(migration)
}

/// `etc resolve` for migrate's conflicts, as for the upgrade's: each file the admin
/// edited under `folder` (no markers left) is written to /etc, checked by its service's
/// validator (put back when it fails) and committed; a file the admin deleted there
/// means "keep the new host's own", and /etc is not touched. `None` when migrate left
/// nothing to resolve.
pub fn resolve(etc: &Path, folder: &Path) -> Result<Option<upgrade::ResolveReport>> {
    let list = folder.join(PENDING);
    let pending: Vec<String> = match fs::read(&list) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("cannot read {}", list.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // An unreadable list is not "nothing to resolve".
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", list.display())),
    };
    let repo = upgrade::open_repo(etc)?;
    let mut report = upgrade::ResolveReport {
        worktree: folder.display().to_string(),
        ..upgrade::ResolveReport::default()
    };
    let mut ready = Vec::new();
    for path in pending.iter().filter(|p| valid_relative(p)) {
        match fs::read(folder.join(path)) {
            Ok(content) if upgrade::markers::has_markers(&String::from_utf8_lossy(&content)) => {
                report
                    .refused
                    .push((path.clone(), upgrade::STILL_MARKED.into()))
            }
            Ok(content) => ready.push((path.clone(), Some(content))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => report.kept.push(path.clone()),
            Err(e) => report
                .refused
                .push((path.clone(), format!("cannot read it: {e}"))),
        }
    }
    upgrade::take_resolutions(etc, &repo, ready, &mut report)?;
    if !report.resolved.is_empty() {
        report.commit = repo.commit_all(
            &format!(
                "placard etc resolve: {} migrate conflict(s) resolved",
                report.resolved.len()
            ),
            &upgrade::list(&report.resolved),
        )?;
    }
    for path in report.resolved.iter().chain(&report.kept) {
        let left = folder.join(path);
        let _ = fs::remove_file(&left);
        for suffix in INPUTS {
            let _ = fs::remove_file(sibling(&left, suffix));
        }
    }
    let done: Vec<&String> = report.resolved.iter().chain(&report.kept).collect();
    report.pending = pending.into_iter().filter(|p| !done.contains(&p)).collect();
    if report.pending.is_empty() {
        fs::remove_file(&list).with_context(|| format!("cannot remove {}", list.display()))?;
    } else {
        atomic::write_atomic(
            &list,
            &serde_json::to_vec_pretty(&report.pending)?,
            Attributes::mode(0o600),
            None,
        )?;
    }
    report.refused.sort();
    Ok(Some(report))
}

/// Leaves for the admin a clean merge its validator refused (live /etc kept its file).
fn leave_refused(folder: &Path, path: &str, merged: &merge::Merged, output: &str) -> Result<()> {
    let left = folder.join(path);
    if let Some(parent) = left.parent() {
        fs::create_dir_all(parent)?;
    }
    fs::write(&left, &merged.text)?;
    fs::write(
        sibling(&left, "placard-issues"),
        format!("The merge was clean, but its validator refused it:\n{output}"),
    )?;
    Ok(())
}

/// `path.suffix` beside `path`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

/// Leaves a file for the admin: the merge's text (markers included), the three inputs,
/// and what is to decide.
fn leave(
    folder: &Path,
    file: &MigrateFile,
    theirs: Option<&str>,
    text: &str,
    reason: &str,
    issues: &[Issue],
) -> Result<()> {
    let left = folder.join(&file.path);
    if let Some(parent) = left.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::set_permissions(folder, fs::Permissions::from_mode(0o700))?;
    fs::write(&left, text)?;
    fs::write(sibling(&left, "old-pristine"), &file.base)?;
    fs::write(sibling(&left, "old-live"), &file.ours)?;
    if let Some(theirs) = theirs {
        fs::write(sibling(&left, "new-pristine"), theirs)?;
    }
    let mut note = format!("{reason}\n");
    for issue in issues {
        note.push_str(&format!(
            "{}\n",
            serde_json::to_string(issue).unwrap_or_default()
        ));
    }
    fs::write(sibling(&left, "placard-issues"), note)?;
    Ok(())
}

/// One line for the admin per kind of issue.
pub fn describe(issues: &[Issue]) -> String {
    issues
        .iter()
        .map(|issue| match issue {
            Issue::Conflict { section, key, .. } => {
                let at = if section.is_empty() {
                    String::new()
                } else {
                    format!(" in {section}")
                };
                format!("the site and the new release both changed {key}{at}")
            }
            Issue::Renamed { key, new_names, .. } if new_names.is_empty() => {
                format!("the new release removed {key}")
            }
            Issue::Renamed { key, new_names, .. } => {
                format!("the new release renamed {key} to {}", new_names.join(", "))
            }
            Issue::Lines { conflicts } => format!("{conflicts} conflicting hunks (line merge)"),
            Issue::FileRemoved => "the new release no longer ships this file".to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A relative path without `..`: a bundle may come from an edited draft.
fn valid_relative(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && Path::new(path)
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_reach_etc() {
        assert!(valid_relative("ssh/sshd_config"));
        assert!(!valid_relative("../root/.ssh/authorized_keys"));
        assert!(!valid_relative("/etc/passwd"));
        assert!(!valid_relative(""));
    }

    #[test]
    fn a_draft_is_read_back_with_each_live_file_rebuilt_from_its_patch() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let pristine = "#PasswordAuthentication yes\nUsePAM yes\n";
        let live = "PasswordAuthentication no\nUsePAM yes\n";
        fs::create_dir_all(dir.path().join("pristine/ssh")).expect("folders");
        fs::create_dir_all(dir.path().join("patches/ssh")).expect("folders");
        fs::write(dir.path().join("pristine/ssh/sshd_config"), pristine).expect("write");
        fs::write(
            dir.path().join("patches/ssh/sshd_config.patch"),
            draft::patch_text("ssh/sshd_config", pristine, live),
        )
        .expect("write");
        let manifest = r#"{"hostname":"old","os":"Debian 12","release":"trixie","mirror":"m","archive_error":null,"packages":[],
            "modified":[{"path":"ssh/sshd_config","package":"openssh-server"},{"path":"nut/upsmon.conf","package":"nut-client"}],
            "deleted":[],"site_files":[],"site_links":[],"services":[],"secrets":[],"left_out":[],"unavailable":[]}"#;
        fs::write(dir.path().join(draft::MANIFEST), manifest).expect("write");
        let (source, files, _) = load(dir.path()).expect("a draft");
        assert_eq!(source, "old");
        assert_eq!(
            files,
            [MigrateFile {
                path: "ssh/sshd_config".into(),
                package: "openssh-server".into(),
                base: pristine.into(),
                ours: live.into(),
            }],
            "the file whose patch the admin deleted is not migrated"
        );
    }
}
