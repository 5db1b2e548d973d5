//! `secret`: a password or key generated on the host the first time, reused after.
//!
//! Secrets live in `/var/lib/placard/secrets/NAME` (root, 0600, folder 0700): outside
//! /etc, so never in its git history, and never sent back to the controller. Templates
//! read them with `{{secret "NAME"}}`; a file rendered that way is marked sensitive (no
//! diff, kept out of git) — see [`crate::template`].

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::{run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
use crate::system::atomic::{self, Attributes};

pub const SECRETS_DIR: &str = "/var/lib/placard/secrets";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    /// Characters (alphanumeric) or bytes before encoding (hex).
    #[serde(default = "default_length")]
    pub length: usize,
    #[serde(default)]
    pub charset: Charset,
}

fn default_length() -> usize {
    32
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Charset {
    #[default]
    Alphanumeric,
    Hex,
}

impl Resource for SecretSpec {
    fn validate(&self) -> Result<(), FieldError> {
        valid_name(&self.name).map_err(|m| FieldError::new("name", m))?;
        if !(16..=4096).contains(&self.length) {
            return Err(FieldError::new(
                "length",
                "a secret is between 16 and 4096 long",
            ));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// The one thing a secret task does: generate the secret. An existing one is never
/// replaced (services and peers already use it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Generate;

impl Planned for SecretSpec {
    /// Whether the secret exists in the store.
    type Current = bool;
    type Action = Generate;

    fn observe(&self, _context: &mut Context) -> Result<bool> {
        Ok(path_of(&self.name).exists())
    }

    fn plan(&self, exists: &bool, _context: &Context) -> Result<Change<Generate>> {
        Ok(if *exists {
            Change::none(format!("secret {} exists", self.name))
        } else {
            Change::to(Generate, format!("generate secret {}", self.name))
        })
    }

    fn apply(&self, _: &Generate, context: &mut Context) -> Result<()> {
        store(&path_of(&self.name), &self.generate(), context)
    }
}

impl SecretSpec {
    fn generate(&self) -> String {
        match self.charset {
            Charset::Alphanumeric => {
                Alphanumeric.sample_string(&mut rand::thread_rng(), self.length)
            }
            Charset::Hex => {
                let mut bytes = vec![0u8; self.length];
                rand::rngs::OsRng.fill_bytes(&mut bytes);
                hex::encode(bytes)
            }
        }
    }
}

pub fn valid_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a secret name (letters, digits, `.`, `_` and `-`)"
        ))
    }
}

pub fn path_of(name: &str) -> PathBuf {
    Path::new(SECRETS_DIR).join(name)
}

/// Reads a secret for a template; None when it has not been generated yet.
pub fn read(name: &str) -> Result<Option<String>> {
    valid_name(name).map_err(anyhow::Error::msg)?;
    match fs::read_to_string(path_of(name)) {
        Ok(value) => Ok(Some(value.trim_end_matches('\n').to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read secret {name}")),
    }
}

fn store(path: &Path, value: &str, context: &Context) -> Result<()> {
    let directory = path.parent().context("secrets have a folder")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)?;
    fs::set_permissions(directory, fs::Permissions::from_mode(0o700))?;
    atomic::write_atomic(
        path,
        value.as_bytes(),
        Attributes::mode(0o600),
        context.journal.as_ref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_cases() {
        let spec = |charset| SecretSpec {
            name: "mail-db".into(),
            length: 24,
            charset,
        };
        let context = Context::new(false);
        // (whether the secret exists, whether one is generated, the reason)
        let cases = [
            (false, true, "generate secret mail-db"),
            (true, false, "secret mail-db exists"),
        ];
        for (exists, generates, says) in cases {
            let change = spec(Charset::Alphanumeric)
                .plan(&exists, &context)
                .expect("a plan");
            assert_eq!(change.action.is_some(), generates);
            assert_eq!(change.reason, says);
        }
        let text = spec(Charset::Alphanumeric).generate();
        assert_eq!(text.len(), 24);
        assert!(text.chars().all(|c| c.is_ascii_alphanumeric()));
        let hex = spec(Charset::Hex).generate();
        assert_eq!(hex.len(), 48, "24 random bytes, in hex");
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(spec(Charset::Hex).generate(), hex);
    }
}
