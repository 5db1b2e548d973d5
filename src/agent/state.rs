//! The agent's own state on the host, under /var/lib/placard (root only): what must
//! survive a run that was killed.
//!
//! - `pending-handlers.json`: handlers notified and not yet run. Written as soon as a
//!   task notifies one, cleared once the handlers ran; a killed run leaves them to the
//!   next one, which would otherwise find the new files already in place and never
//!   reload the daemon that reads them.
//! - `sensitive-paths.json` and `public-paths.json`: what the roles said of the files
//!   they wrote (see [`crate::system::etc_git::Declared`]).
//! - `journal/`: see [`crate::system::journal`].
//!
//! A state file that cannot be read stops the run and says which file: guessing would
//! lose a reload or let a secret into git.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::system::atomic::{self, Attributes};

pub use crate::system::STATE_DIR;

/// Handlers notified and not yet run: (role, handler) by name.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingHandlers {
    pub handlers: Vec<(String, String)>,
}

pub struct State {
    folder: PathBuf,
}

impl State {
    pub fn new(folder: &Path) -> State {
        State {
            folder: folder.to_path_buf(),
        }
    }

    pub fn journal(&self) -> PathBuf {
        self.folder.join("journal")
    }

    pub fn pending_handlers(&self) -> Result<PendingHandlers> {
        Ok(self.read("pending-handlers.json")?.unwrap_or_default())
    }

    pub fn set_pending_handlers(&self, pending: &PendingHandlers) -> Result<()> {
        if pending.handlers.is_empty() {
            let path = self.folder.join("pending-handlers.json");
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
            };
        }
        self.write("pending-handlers.json", pending)
    }

    pub fn folder(&self) -> &Path {
        &self.folder
    }

    fn read<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        atomic::read_json(
            &self.folder.join(name),
            "the handlers an interrupted run left to run",
        )
    }

    fn write<T: Serialize>(&self, name: &str, value: &T) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.folder)
            .with_context(|| format!("cannot create {}", self.folder.display()))?;
        let text = serde_json::to_vec_pretty(value)?;
        // Not synced: these files are rewritten at most a few times per run, and must
        // survive a killed agent, which the page cache ensures, not a power cut.
        atomic::replace_unsynced(&self.folder.join(name), &text, Attributes::mode(0o600))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_survives_and_a_corrupt_file_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path());
        assert_eq!(
            state.pending_handlers().unwrap(),
            PendingHandlers::default()
        );
        let pending = PendingHandlers {
            handlers: vec![("base".into(), "reload ssh".into())],
        };
        state.set_pending_handlers(&pending).unwrap();
        assert_eq!(state.pending_handlers().unwrap(), pending);
        state
            .set_pending_handlers(&PendingHandlers::default())
            .unwrap();
        assert!(!dir.path().join("pending-handlers.json").exists());

        fs::write(dir.path().join("pending-handlers.json"), "{half").unwrap();
        let error = format!("{:#}", state.pending_handlers().unwrap_err());
        assert!(error.contains("is not what placard wrote there"), "{error}");
    }
}
