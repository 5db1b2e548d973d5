//! `file`: a file's content, owner, group and mode.
//!
//! Content comes inline (`content:`), from a handlebars template (`template:`) or
//! verbatim from the templates folder (`copy:`); by the time the task runs, the
//! controller or agent has rendered it into `content` (see [`crate::template`]).
//!
//! A run looks at the file, its owner and mode, and looks up the owner asked for; the
//! plan (pure) decides what changes, the diff and the new file's mode; only the apply
//! writes, and a check run never reaches it.
//!
//! A changed file is written to a temporary file beside the target and renamed over
//! it, so a reader never sees half a file. When the spec has `validate:`, the new content
//! must pass it before it replaces the old: with `%s` in the command, the validator
//! reads the temporary file; without, the new file is put in place, the validator runs
//! (it checks the whole configuration, drop-ins included) and the old file is put back
//! if it fails.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
use crate::system::atomic::{self, Attributes};
use crate::system::command::{self, deadline};
use crate::system::journal::{self, Step};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A template under `templates/`, e.g. `base/sshd.conf.hbs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A file under `templates/` copied as it is, without rendering.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Octal, as a string: "0644".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// A command that must accept the new content; `%s` stands for the new file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Vec<String>>,
    /// The content holds a secret: never diffed, never committed to /etc's git.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
    #[serde(default, skip_serializing_if = "FileState::is_present")]
    pub state: FileState,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    #[default]
    Present,
    Absent,
}

impl FileState {
    fn is_present(&self) -> bool {
        *self == FileState::Present
    }
}

impl Resource for FileSpec {
    fn path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn holds_secret(&self) -> bool {
        self.secret
    }

    const READS_ROLE_FILES: bool = true;

    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("path", &self.path)?;
        let sources = [
            self.content.is_some(),
            self.template.is_some(),
            self.copy.is_some(),
        ];
        let count = sources.iter().filter(|s| **s).count();
        if self.state == FileState::Present && count != 1 {
            return Err(FieldError::new(
                "path",
                "a file needs exactly one of `content`, `template` or `copy`",
            ));
        }
        if self.state == FileState::Absent && count != 0 {
            return Err(FieldError::new(
                "state",
                "an absent file has no content; remove `content`, `template` or `copy`",
            ));
        }
        check::attributes(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        if let Some(validate) = &self.validate {
            check::not_empty("validate", validate)?;
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What the host has at the file's path.
#[derive(Debug, Clone, PartialEq)]
pub enum Current {
    /// For a file that should exist.
    Present {
        /// What reading the path gives (through a link); None when there is nothing.
        content: Option<Vec<u8>>,
        /// The uid, gid and permission bits of what is at the path (a link's own).
        found: Option<(u32, u32, u32)>,
        /// The owner and mode the spec asks for, looked up (or, in a check run, why they
        /// cannot be yet: a task before would create the account).
        wanted: Result<Wanted, String>,
    },
    /// For `state: absent`: what is at the path.
    Absent(Found),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found {
    Nothing,
    /// A directory, which a file task does not remove.
    Directory,
    /// A file or a link.
    File,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    /// Write the spec's content with these attributes, through [`replace`]: validated
    /// before it replaces the old file, when the spec has `validate:`.
    Write(Attributes),
    Remove,
}

impl Planned for FileSpec {
    type Current = Current;
    type Action = Action;

    fn observe(&self, context: &mut Context) -> Result<Current> {
        let path = Path::new(&self.path);
        if self.state == FileState::Absent {
            return Ok(Current::Absent(match fs::symlink_metadata(path) {
                Err(_) => Found::Nothing,
                Ok(metadata) if metadata.is_dir() => Found::Directory,
                Ok(_) => Found::File,
            }));
        }
        let content = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.path)),
        };
        let wanted = attributes(
            &self.path,
            self.owner.as_deref(),
            self.group.as_deref(),
            self.mode.as_deref(),
            context,
        )?;
        let found = fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.uid(), m.gid(), m.mode() & 0o7777));
        Ok(Current::Present {
            content,
            found,
            wanted,
        })
    }

    fn plan(&self, current: &Current, context: &Context) -> Result<Change<Action>> {
        let (content, found, wanted) = match current {
            Current::Absent(Found::Nothing) => {
                return Ok(Change::none(format!("{} is absent", self.path)))
            }
            Current::Absent(Found::Directory) => bail!(
                "{} is a directory; use a `directory` task to remove it",
                self.path
            ),
            Current::Absent(Found::File) => {
                return Ok(Change::to(Action::Remove, format!("remove {}", self.path)))
            }
            Current::Present {
                content,
                found,
                wanted,
            } => (content.as_deref(), *found, wanted),
        };
        let sensitive = self.secret || context.sensitive;
        // A new file takes the mode asked for, or the old file's, or 0644 — 0600 when it
        // holds a secret.
        let fresh = if sensitive { 0o600 } else { 0o644 };
        let (owner, mode) = match wanted {
            Ok(wanted) => *wanted,
            // Only in a check run, which never applies it.
            Err(reason) => {
                let write = Action::Write(Attributes::mode(fresh));
                return Ok(Change::to(write, reason.clone()));
            }
        };
        let desired = self.content.as_deref().unwrap_or_default().as_bytes();
        let content_changed = content != Some(desired);
        let attribute_changes = found
            .map(|found| differences(found, owner, mode))
            .unwrap_or_default();
        if !content_changed && attribute_changes.is_empty() {
            return Ok(Change::none(format!("{} is up to date", self.path)));
        }
        let diff = if !content_changed {
            None
        } else if sensitive {
            Some(crate::diff::hidden(&self.path))
        } else {
            Some(crate::diff::unified(&self.path, content, Some(desired)))
        };
        let mut what = Vec::new();
        if content.is_none() {
            what.push("create".to_string());
        } else if content_changed {
            what.push("update content".to_string());
        }
        what.extend(attribute_changes);
        let (uid, gid) = owner
            .or(found.map(|(uid, gid, _)| (Some(uid), Some(gid))))
            .unwrap_or((None, None));
        let attributes = Attributes {
            mode: mode.or(found.map(|(_, _, mode)| mode)).unwrap_or(fresh),
            uid,
            gid,
        };
        let reason = format!("{}: {}", self.path, what.join(", "));
        Ok(Change::to(Action::Write(attributes), reason).with_diff(diff))
    }

    fn apply(&self, action: &Action, context: &mut Context) -> Result<()> {
        let path = Path::new(&self.path);
        // Before the change is recorded, so that a secret file is kept out of git.
        context.sensitive |= self.secret;
        context.record_change(path);
        match action {
            Action::Write(attributes) => {
                let content = self.content.as_deref().unwrap_or_default();
                replace(
                    path,
                    content.as_bytes(),
                    *attributes,
                    self.validate.as_deref(),
                    context,
                )
            }
            Action::Remove => {
                fs::remove_file(path).with_context(|| format!("cannot remove {}", self.path))
            }
        }
    }
}

pub type Owner = (Option<u32>, Option<u32>);

/// An owner and a mode, each when the spec asks for one.
pub type Wanted = (Option<Owner>, Option<u32>);

/// The owner and mode a spec asks for, looked up on the host. In a check run an account
/// that a task before this one would create does not exist yet: the inner `Err` is then
/// the reason to report (a change) instead of failing.
pub fn attributes(
    path: &str,
    owner: Option<&str>,
    group: Option<&str>,
    mode: Option<&str>,
    context: &mut Context,
) -> Result<Result<Wanted, String>> {
    let owner = match resolve_owner(owner, group) {
        Ok(owner) => owner,
        Err(error) if context.check => {
            context.record_change(Path::new(path));
            return Ok(Err(format!(
                "{path}: would be written once the account exists ({error})"
            )));
        }
        Err(error) => return Err(error),
    };
    let mode = mode
        .map(|m| check::mode("mode", m))
        .transpose()
        .map_err(|e| anyhow::anyhow!(e.message))?;
    Ok(Ok((owner, mode)))
}

/// Looks up user and group names on the host.
pub fn resolve_owner(owner: Option<&str>, group: Option<&str>) -> Result<Option<Owner>> {
    if owner.is_none() && group.is_none() {
        return Ok(None);
    }
    let uid = owner
        .map(|name| {
            nix::unistd::User::from_name(name)?
                .map(|u| u.uid.as_raw())
                .with_context(|| format!("user `{name}` does not exist on this host"))
        })
        .transpose()?;
    let gid = group
        .map(|name| {
            nix::unistd::Group::from_name(name)?
                .map(|g| g.gid.as_raw())
                .with_context(|| format!("group `{name}` does not exist on this host"))
        })
        .transpose()?;
    Ok(Some((uid, gid)))
}

/// What differs between what is there (uid, gid, permission bits) and what is
/// wanted, in words.
pub fn differences(found: (u32, u32, u32), owner: Option<Owner>, mode: Option<u32>) -> Vec<String> {
    let (found_uid, found_gid, current) = found;
    let mut changes = Vec::new();
    if let Some((uid, gid)) = owner {
        if uid.is_some_and(|u| u != found_uid) {
            changes.push("owner".to_string());
        }
        if gid.is_some_and(|g| g != found_gid) {
            changes.push("group".to_string());
        }
    }
    if let Some(mode) = mode {
        if current != mode {
            changes.push(format!("mode {current:04o} → {mode:04o}"));
        }
    }
    changes
}

pub fn set_attributes(path: &Path, mode: u32, owner: Owner) -> Result<()> {
    let (uid, gid) = owner;
    nix::unistd::chown(
        path,
        uid.map(nix::unistd::Uid::from_raw),
        gid.map(nix::unistd::Gid::from_raw),
    )
    .with_context(|| format!("cannot chown {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Atomically replaces `path` with `content`, validated first when asked.
pub(crate) fn replace(
    path: &Path,
    content: &[u8],
    attributes: Attributes,
    validate: Option<&[String]>,
    context: &Context,
) -> Result<()> {
    let journal = context.journal.as_ref();
    let staged = atomic::Staged::new(path, content, attributes, journal)?;
    let validate = validate.filter(|v| !v.is_empty());
    match validate {
        Some(argv) if argv.iter().any(|a| a.contains("%s")) => {
            let staged_path = staged.path().to_string_lossy().into_owned();
            let argv: Vec<String> = argv.iter().map(|a| a.replace("%s", &staged_path)).collect();
            run_validator(&argv, path, context)?;
            staged.commit()
        }
        Some(argv) => {
            // The validator checks the live configuration: put the new file in place, keep
            // the old one under a second name (a hard link, so the path never goes
            // missing) and rename it back over the path if the validator refuses. The
            // journal knows of the kept file first, so that a run killed in between puts
            // the old file back at its next start.
            let kept = atomic::sibling(path, atomic::KEPT_PREFIX)?;
            let _ = fs::remove_file(&kept);
            let had_old = path.exists();
            let entry = journal
                .map(|j| {
                    j.begin(Step::Validating {
                        target: path.to_path_buf(),
                        kept: kept.clone(),
                        had_old,
                    })
                })
                .transpose()?;
            let end = |entry: Option<journal::Entry>| {
                if let (Some(journal), Some(entry)) = (journal, entry) {
                    journal.end(entry);
                }
            };
            if had_old {
                if let Err(error) = fs::hard_link(path, &kept) {
                    end(entry);
                    return Err(error)
                        .with_context(|| format!("cannot keep a copy of {}", path.display()));
                }
            }
            if let Err(error) = staged.commit() {
                let _ = fs::remove_file(&kept);
                end(entry);
                return Err(error);
            }
            let verdict = run_validator(argv, path, context);
            let outcome = match verdict {
                Ok(()) if had_old => fs::remove_file(&kept)
                    .with_context(|| format!("cannot remove {}", kept.display())),
                Ok(()) => Ok(()),
                Err(error) => {
                    if had_old {
                        fs::rename(&kept, path)
                            .with_context(|| format!("cannot restore {}", path.display()))?;
                    } else {
                        let _ = fs::remove_file(path);
                    }
                    crate::system::journal::sync_folder(path);
                    Err(error)
                }
            };
            end(entry);
            outcome
        }
        None => staged.commit(),
    }
}

fn run_validator(argv: &[String], path: &Path, context: &Context) -> Result<()> {
    command::Program::new(argv, context.deadline(deadline::VALIDATE))
        .run_ok()
        .with_context(|| {
            format!(
                "the new {} failed validation; the old file is still in place",
                path.display()
            )
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::testing::expect_plan;
    use crate::system::journal::Journal;

    fn spec(path: &Path, content: &str) -> FileSpec {
        FileSpec {
            path: path.to_string_lossy().into_owned(),
            content: Some(content.to_string()),
            template: None,
            copy: None,
            owner: None,
            group: None,
            mode: Some("0640".into()),
            validate: None,
            secret: false,
            state: FileState::Present,
        }
    }

    #[test]
    fn plan_cases() {
        let spec = spec(Path::new("/etc/motd"), "hello\n");
        let present = |content: Option<&str>, found: Option<(u32, u32, u32)>| Current::Present {
            content: content.map(|c| c.as_bytes().to_vec()),
            found,
            wanted: Ok((Some((Some(0), Some(4))), Some(0o640))),
        };
        let write = |mode, uid, gid| {
            Some(Action::Write(Attributes {
                mode,
                uid: Some(uid),
                gid: Some(gid),
            }))
        };
        let context = Context::new(false);
        // (what is there, the action, the reason or error, whether there is a diff)
        let cases = [
            (
                present(None, None),
                write(0o640, 0, 4),
                "/etc/motd: create",
                true,
            ),
            (
                present(Some("hello\n"), Some((0, 4, 0o640))),
                None,
                "/etc/motd is up to date",
                false,
            ),
            (
                present(Some("hi\n"), Some((0, 4, 0o640))),
                write(0o640, 0, 4),
                "/etc/motd: update content",
                true,
            ),
            (
                present(Some("hello\n"), Some((0, 4, 0o644))),
                write(0o640, 0, 4),
                "/etc/motd: mode 0644 → 0640",
                false,
            ),
            (
                present(Some("hi\n"), Some((1000, 1000, 0o600))),
                write(0o640, 0, 4),
                "/etc/motd: update content, owner, group, mode 0600 → 0640",
                true,
            ),
            (
                Current::Absent(Found::Nothing),
                None,
                "/etc/motd is absent",
                false,
            ),
            (
                Current::Absent(Found::File),
                Some(Action::Remove),
                "remove /etc/motd",
                false,
            ),
            (
                Current::Absent(Found::Directory),
                None,
                "is a directory; use a `directory` task",
                false,
            ),
        ];
        for (current, action, says, diffed) in cases {
            if let Some(change) = expect_plan(&spec, &current, &context, action, says) {
                assert_eq!(change.diff.is_some(), diffed, "{says}");
            }
        }
    }

    #[test]
    fn a_new_file_takes_the_mode_asked_for_or_the_old_files_or_a_default() {
        let bare = FileSpec {
            mode: None,
            ..spec(Path::new("/etc/app.conf"), "new\n")
        };
        let current = |content: Option<&str>, found| Current::Present {
            content: content.map(|c| c.as_bytes().to_vec()),
            found,
            wanted: Ok((None, None)),
        };
        let mut secret_context = Context::new(false);
        secret_context.sensitive = true;
        let public = Context::new(false);
        // (what is there, whether it holds a secret, the attributes written)
        let cases = [
            (current(None, None), &public, Attributes::mode(0o644)),
            (
                current(None, None),
                &secret_context,
                Attributes::mode(0o600),
            ),
            (
                current(Some("old\n"), Some((0, 110, 0o640))),
                &secret_context,
                Attributes {
                    mode: 0o640,
                    uid: Some(0),
                    gid: Some(110),
                },
            ),
        ];
        for (current, context, attributes) in cases {
            let change = bare.plan(&current, context).expect("a plan");
            assert_eq!(change.action, Some(Action::Write(attributes)));
            let diff = change.diff.expect("a diff");
            assert_eq!(diff.contains("+new"), !context.sensitive, "{diff}");
        }
        let waiting = Current::Present {
            content: None,
            found: None,
            wanted: Err("/etc/app.conf: would be written once the account exists".into()),
        };
        let change = bare.plan(&waiting, &public).expect("a plan");
        assert!(change.reason.ends_with("once the account exists"));
        assert!(change.action.is_some() && change.diff.is_none());
    }

    #[test]
    fn writes_then_finds_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("motd");
        let mut context = Context::new(false);
        let first = spec(&path, "hello\n").run(&mut context).unwrap();
        assert!(first.changed);
        assert_eq!(fs::read_to_string(&path).unwrap(), "hello\n");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o640);
        assert!(!spec(&path, "hello\n").run(&mut context).unwrap().changed);
    }

    #[test]
    fn check_mode_reports_without_writing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("motd");
        let outcome = spec(&path, "hello\n").run(&mut Context::new(true)).unwrap();
        assert!(outcome.changed);
        assert!(outcome.diff.unwrap().contains("+hello"));
        assert!(!path.exists());
    }

    #[test]
    fn secrets_are_never_diffed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upsd.users");
        let mut secret = spec(&path, "password = hunter2\n");
        secret.secret = true;
        let mut context = Context::new(false);
        let outcome = secret.run(&mut context).unwrap();
        let diff = outcome.diff.unwrap();
        assert!(
            !diff.contains("hunter2") && diff.contains("diff hidden"),
            "{diff}"
        );
        assert!(context.sensitive_paths.contains(&path));
    }

    #[test]
    fn a_refused_file_never_replaces_the_working_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf");
        fs::write(&path, "good\n").unwrap();
        // Validating the new file alone (%s), and validating in place.
        for validate in [
            vec!["grep".to_string(), "-q".into(), "good".into(), "%s".into()],
            vec!["false".to_string()],
        ] {
            let mut bad = spec(&path, "bad\n");
            bad.validate = Some(validate);
            let error = bad.run(&mut Context::new(false)).unwrap_err();
            assert!(
                format!("{error:#}").contains("failed validation; the old file is still in place")
            );
            assert_eq!(fs::read_to_string(&path).unwrap(), "good\n");
            let names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, vec!["app.conf"], "no temporary file left behind");
        }
        let mut accepted = spec(&path, "good and new\n");
        accepted.validate = Some(vec!["grep".into(), "-q".into(), "good".into(), "%s".into()]);
        assert!(accepted.run(&mut Context::new(false)).unwrap().changed);
        assert_eq!(fs::read_to_string(&path).unwrap(), "good and new\n");
    }

    #[test]
    fn a_hung_validator_fails_at_the_task_deadline_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.conf");
        fs::write(&path, "good\n").unwrap();
        let journal_folder = dir.path().join("journal");
        for validate in [
            vec![
                "sh".to_string(),
                "-c".into(),
                "sleep 30".into(),
                "%s".into(),
            ],
            vec!["sleep".to_string(), "30".into()],
        ] {
            let mut context = Context::new(false);
            context.timeout = Some(std::time::Duration::from_millis(300));
            context.journal = Some(Journal::open(&journal_folder).unwrap());
            let mut hung = spec(&path, "never validated\n");
            hung.validate = Some(validate);
            let error = format!("{:#}", hung.run(&mut context).unwrap_err());
            assert!(error.contains("did not finish within 0.3 s"), "{error}");
            assert!(error.contains("the old file is still in place"), "{error}");
            assert_eq!(fs::read_to_string(&path).unwrap(), "good\n");
            let mut names: Vec<String> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            assert_eq!(names, vec!["app.conf", "journal"], "nothing left beside it");
            assert_eq!(
                fs::read_dir(&journal_folder).unwrap().count(),
                0,
                "journal empty"
            );
        }
    }
}
