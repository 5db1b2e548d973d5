//! `symlink`: a symbolic link pointing where it should (a wrong link is replaced; a file
//! in its place is an error, since replacing it could lose data).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome, Resource};

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
        let path = Path::new(&self.path);
        let current = match fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => Some(fs::read_link(path)?),
            Ok(_) => bail!(
                "{} exists and is not a symlink; remove it first if it should be one",
                self.path
            ),
            Err(_) => None,
        };
        if current.as_deref() == Some(Path::new(&self.target)) {
            return Ok(Outcome::unchanged(format!(
                "{} points to {}",
                self.path, self.target
            )));
        }
        context.record_change(path);
        if !context.check {
            // Make the new link beside the old one and rename it over, so the link never
            // disappears in between.
            let temporary: PathBuf =
                path.with_file_name(format!(".placard-link-{}", std::process::id()));
            let _ = fs::remove_file(&temporary);
            std::os::unix::fs::symlink(&self.target, &temporary)
                .with_context(|| format!("cannot create a link beside {}", self.path))?;
            fs::rename(&temporary, path)
                .with_context(|| format!("cannot put the link {} in place", self.path))?;
        }
        Ok(Outcome::changed(match current {
            Some(old) => format!(
                "{} points to {} instead of {}",
                self.path,
                self.target,
                old.display()
            ),
            None => format!("link {} → {}", self.path, self.target),
        }))
    }
}
