//! The upgrade's worktree, `/var/lib/placard/etc-upgrade` on a host (root only): the
//! state of an upgrade under way (its merge base, kept across runs), the conflicts waiting
//! for the admin (`conflicts.json`) and their files with markers (`files/`), never in
//! live /etc.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::Conflict;
use crate::distro::validate::write_file;
use crate::system::atomic;

/// The upgrade in progress, kept across runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub release: String,
    /// The distro commit of the old release.
    pub base: String,
    /// The locally modified files, relative to /etc.
    pub candidates: Vec<String>,
    pub finished: bool,
}

pub struct Worktree {
    pub root: PathBuf,
}

impl Worktree {
    pub fn open(root: &Path) -> Result<Worktree> {
        fs::create_dir_all(root.join("files"))
            .with_context(|| format!("cannot create {}", root.display()))?;
        // Conflict files are copies of /etc files, some of them secret.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(Worktree {
            root: root.to_path_buf(),
        })
    }

    pub fn file(&self, path: &str) -> PathBuf {
        self.root.join("files").join(path)
    }

    /// The state of an upgrade under way. A state that cannot be read stops the run:
    /// it holds the merge base, and starting over without it would merge against the
    /// wrong pristine files.
    pub fn state(&self) -> Result<Option<State>> {
        atomic::read_json(
            &self.root.join("state.json"),
            "the upgrade's merge base (remove it only to start the upgrade's merge over)",
        )
    }

    pub fn save_state(&self, state: &State) -> Result<()> {
        write_file(
            &self.root.join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    pub fn conflicts(&self) -> Result<BTreeMap<String, Conflict>> {
        let path = self.root.join("conflicts.json");
        match fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<Conflict> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(list.into_iter().map(|c| (c.path.clone(), c)).collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            // Taking an unreadable list for "no conflicts" would let resolve finish an
            // upgrade whose files still wait for the admin.
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    pub fn save_conflicts(&self, conflicts: &BTreeMap<String, Conflict>) -> Result<()> {
        let list: Vec<&Conflict> = conflicts.values().collect();
        write_file(
            &self.root.join("conflicts.json"),
            &serde_json::to_vec_pretty(&list)?,
        )
    }

    pub fn leave(&self, path: &str, text: &str) -> Result<String> {
        let file = self.file(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        write_file(&file, text.as_bytes())?;
        Ok(file.to_string_lossy().into_owned())
    }
}
