//! `directory`: a directory with its owner, group and mode (created with its parents).

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use super::file::{attribute_changes, attributes, set_attributes};
use super::{check, Context, FieldError, Outcome, Resource};

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
        let path = Path::new(&self.path);
        let (owner, mode) = match attributes(
            &self.path,
            self.owner.as_deref(),
            self.group.as_deref(),
            self.mode.as_deref(),
            context,
        )? {
            Ok(attributes) => attributes,
            Err(outcome) => return Ok(outcome),
        };
        let metadata = fs::symlink_metadata(path).ok();
        match &metadata {
            Some(m) if !m.is_dir() => bail!("{} exists and is not a directory", self.path),
            Some(m) => {
                let changes = attribute_changes(Some(m), owner, mode);
                if changes.is_empty() {
                    return Ok(Outcome::unchanged(format!(
                        "directory {} is in place",
                        self.path
                    )));
                }
                context.record_change(path);
                if !context.check {
                    set_attributes(
                        path,
                        mode.unwrap_or(m.mode() & 0o7777),
                        owner.unwrap_or((None, None)),
                    )?;
                }
                Ok(Outcome::changed(format!(
                    "{}: {}",
                    self.path,
                    changes.join(", ")
                )))
            }
            None => {
                context.record_change(path);
                if !context.check {
                    let mode = mode.unwrap_or(0o755);
                    fs::DirBuilder::new()
                        .recursive(true)
                        .mode(mode)
                        .create(path)
                        .with_context(|| format!("cannot create {}", self.path))?;
                    set_attributes(path, mode, owner.unwrap_or((None, None)))?;
                }
                Ok(Outcome::changed(format!("create directory {}", self.path)))
            }
        }
    }
}
