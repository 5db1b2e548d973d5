//! `symlink`: a symbolic link pointing where it should (a wrong link is replaced; a file
//! in its place is an error, since replacing it could lose data).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    pub path: String,
    pub target: String,
}

impl Resource for SymlinkSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("path", &self.path)?;
        if self.target.is_empty() {
            return Err(FieldError::new("target", "a symlink needs a target"));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What is at the link's path.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    Nothing,
    Link(PathBuf),
    /// A file or folder, which a link task does not replace.
    Other,
}

/// The one thing a symlink task does: point the link at the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Relink;

impl Planned for SymlinkSpec {
    type Current = Found;
    type Action = Relink;

    fn observe(&self, _context: &mut Context) -> Result<Found> {
        let path = Path::new(&self.path);
        Ok(match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Found::Link(fs::read_link(path)?),
            Ok(_) => Found::Other,
            Err(_) => Found::Nothing,
        })
    }

    fn plan(&self, current: &Found, _context: &Context) -> Result<Change<Relink>> {
        Ok(match current {
            Found::Other => bail!(
                "{} exists and is not a symlink; remove it first if it should be one",
                self.path
            ),
            Found::Link(old) if old == Path::new(&self.target) => {
                Change::none(format!("{} points to {}", self.path, self.target))
            }
            Found::Link(old) => Change::to(
                Relink,
                format!(
                    "{} points to {} instead of {}",
                    self.path,
                    self.target,
                    old.display()
                ),
            ),
            Found::Nothing => Change::to(Relink, format!("link {} → {}", self.path, self.target)),
        })
    }

    fn apply(&self, _: &Relink, context: &mut Context) -> Result<()> {
        let path = Path::new(&self.path);
        context.record_change(path);
        // Make the new link beside the old one and rename it over, so the link never
        // disappears in between.
        let temporary: PathBuf =
            path.with_file_name(format!(".placard-link-{}", std::process::id()));
        let _ = fs::remove_file(&temporary);
        std::os::unix::fs::symlink(&self.target, &temporary)
            .with_context(|| format!("cannot create a link beside {}", self.path))?;
        fs::rename(&temporary, path)
            .with_context(|| format!("cannot put the link {} in place", self.path))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_cases() {
        let spec = SymlinkSpec {
            path: "/etc/nginx/sites-enabled/club".into(),
            target: "../sites-available/club".into(),
        };
        let context = Context::new(false);
        let link = |to: &str| Found::Link(PathBuf::from(to));
        // (what is there, whether the link is made, the reason or error)
        let cases = [
            (
                Found::Nothing,
                true,
                "link /etc/nginx/sites-enabled/club → ../sites-available/club",
            ),
            (
                link("../sites-available/club"),
                false,
                "/etc/nginx/sites-enabled/club points to ../sites-available/club",
            ),
            (
                link("/etc/nginx/sites-available/club"),
                true,
                "instead of /etc/nginx/sites-available/club",
            ),
            (Found::Other, false, "exists and is not a symlink"),
        ];
        for (found, relinks, says) in cases {
            match spec.plan(&found, &context) {
                Ok(change) => {
                    assert_eq!(change.action.is_some(), relinks, "{found:?}");
                    assert!(change.reason.contains(says), "{}", change.reason);
                }
                Err(error) => {
                    assert!(!relinks);
                    assert!(error.to_string().contains(says), "{error}");
                }
            }
        }
    }
}
