//! `directory`: a directory with its owner, group and mode (created with its parents).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::file::{attributes, differences, set_attributes, Owner, Wanted};
use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl Resource for DirectorySpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("path", &self.path)?;
        check::attributes(
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )?;
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What is at the directory's path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Found {
    Nothing,
    /// A directory: its uid, gid and permission bits.
    Directory(u32, u32, u32),
    /// A file or a link, which a directory task does not replace.
    Other,
}

/// What the host has: the path, and the owner and mode the spec asks for, looked up
/// (or, in a check run, why they cannot be yet: a task before would create the account).
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub found: Found,
    pub wanted: Result<Wanted, String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Action {
    Create { mode: u32, owner: Option<Owner> },
    SetAttributes { mode: u32, owner: Option<Owner> },
}

impl Planned for DirectorySpec {
    type Current = Current;
    type Action = Action;

    fn observe(&self, context: &mut Context) -> Result<Current> {
        let wanted = attributes(
            &self.path,
            self.owner.as_deref(),
            self.group.as_deref(),
            self.mode.as_deref(),
            context,
        )?;
        let found = match fs::symlink_metadata(&self.path) {
            Ok(m) if m.is_dir() => Found::Directory(m.uid(), m.gid(), m.mode() & 0o7777),
            Ok(_) => Found::Other,
            Err(_) => Found::Nothing,
        };
        Ok(Current { found, wanted })
    }

    fn plan(&self, current: &Current, _context: &Context) -> Result<Change<Action>> {
        let (owner, mode) = match &current.wanted {
            Ok(wanted) => *wanted,
            // Only in a check run: the account is created by an earlier task.
            Err(reason) => {
                return Ok(Change::to(
                    Action::Create {
                        mode: 0o755,
                        owner: None,
                    },
                    reason.clone(),
                ))
            }
        };
        match current.found {
            Found::Other => bail!("{} exists and is not a directory", self.path),
            Found::Directory(uid, gid, found_mode) => {
                let changes = differences((uid, gid, found_mode), owner, mode);
                if changes.is_empty() {
                    return Ok(Change::none(format!("directory {} is in place", self.path)));
                }
                Ok(Change::to(
                    Action::SetAttributes {
                        mode: mode.unwrap_or(found_mode),
                        owner,
                    },
                    format!("{}: {}", self.path, changes.join(", ")),
                ))
            }
            Found::Nothing => Ok(Change::to(
                Action::Create {
                    mode: mode.unwrap_or(0o755),
                    owner,
                },
                format!("create directory {}", self.path),
            )),
        }
    }

    fn apply(&self, action: &Action, context: &mut Context) -> Result<()> {
        let path = Path::new(&self.path);
        context.record_change(path);
        match *action {
            Action::Create { mode, owner } => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(path)
                    .with_context(|| format!("cannot create {}", self.path))?;
                set_attributes(path, mode, owner.unwrap_or((None, None)))
            }
            Action::SetAttributes { mode, owner } => {
                set_attributes(path, mode, owner.unwrap_or((None, None)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::testing::expect_plan;

    #[test]
    fn plan_cases() {
        let spec = DirectorySpec {
            path: "/var/lib/radio".into(),
            owner: Some("icecast2".into()),
            group: None,
            mode: Some("0750".into()),
        };
        let context = Context::new(false);
        let wanted: Wanted = (Some((Some(120), None)), Some(0o750));
        let owner = Some((Some(120), None));
        // (what is there, what the plan does, the reason or error)
        let cases: Vec<(Found, Option<Action>, &str)> = vec![
            (
                Found::Nothing,
                Some(Action::Create { mode: 0o750, owner }),
                "create directory /var/lib/radio",
            ),
            (
                Found::Directory(120, 0, 0o750),
                None,
                "directory /var/lib/radio is in place",
            ),
            (
                Found::Directory(120, 7, 0o750),
                None,
                "directory /var/lib/radio is in place",
            ),
            (
                Found::Directory(0, 0, 0o750),
                Some(Action::SetAttributes { mode: 0o750, owner }),
                "/var/lib/radio: owner",
            ),
            (
                Found::Directory(120, 0, 0o755),
                Some(Action::SetAttributes { mode: 0o750, owner }),
                "/var/lib/radio: mode 0755 → 0750",
            ),
            (Found::Other, None, "exists and is not a directory"),
        ];
        for (found, action, says) in cases {
            let current = Current {
                found,
                wanted: Ok(wanted),
            };
            expect_plan(&spec, &current, &context, action, says);
        }
        let waiting = Current {
            found: Found::Nothing,
            wanted: Err("/var/lib/radio: would be written once the account exists".into()),
        };
        let change = spec.plan(&waiting, &context).expect("a plan");
        assert!(change.reason.contains("once the account exists"));
        let bare = DirectorySpec {
            owner: None,
            mode: None,
            ..spec.clone()
        };
        let change = bare
            .plan(
                &Current {
                    found: Found::Nothing,
                    wanted: Ok((None, None)),
                },
                &context,
            )
            .expect("a plan");
        assert_eq!(
            change.action,
            Some(Action::Create {
                mode: 0o755,
                owner: None
            })
        );
    }
}
