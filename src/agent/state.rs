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
//! - `etc-scan`: the last scan of /etc that found nothing to commit, see
//!   [`crate::system::etc_scan`].
//! - `ended-cleanly`: the lock line (see [`crate::system::lock`]) of the last run that
//!   ended cleanly. When it is the line the next run finds in the lock file, no run
//!   came in between and the last one left nothing behind, so the next one need not
//!   sweep /etc for what a killed run left (every folder of /etc read, about 2 ms of a
//!   no-op run's 20). A run that was killed or failed, one that is not an apply, a
//!   version that never wrote this file, or a reboot (the lock file is in /run) all
//!   leave a line that does not match, and the next run sweeps.
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

/// See the module's comment.
const ENDED_CLEANLY: &str = "ended-cleanly";

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

    pub fn etc_scan(&self) -> PathBuf {
        self.folder.join("etc-scan")
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

    /// Whether the run whose lock line is `previous` ended cleanly: it is the line
    /// [`State::set_ended_cleanly`] wrote last. A marker that cannot be read says no.
    pub fn ended_cleanly(&self, previous: &str) -> bool {
        !previous.is_empty()
            && fs::read_to_string(self.folder.join(ENDED_CLEANLY))
                .is_ok_and(|line| line.trim_end() == previous)
    }

    /// Records that the run holding the lock with `line` ends cleanly: it left no
    /// staged or kept file in /etc. Losing this file only costs the next run a sweep.
    pub fn set_ended_cleanly(&self, line: &str) -> Result<()> {
        atomic::replace_unsynced(
            &self.folder.join(ENDED_CLEANLY),
            format!("{line}\n").as_bytes(),
            Attributes::mode(0o600),
        )
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

    #[test]
    fn only_the_run_that_ended_cleanly_is_taken_for_clean() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::new(dir.path());
        let line = "pid 42 for alice@laptop, since 1764590000 (seconds since the epoch)";
        assert!(!state.ended_cleanly(line), "no run recorded yet");
        state.set_ended_cleanly(line).unwrap();
        assert!(state.ended_cleanly(line));
        assert!(!state.ended_cleanly(&line.replace("42", "43")));
        assert!(!state.ended_cleanly(""), "a lock file emptied by a reboot");
        fs::write(dir.path().join(ENDED_CLEANLY), [0xff, 0xfe]).unwrap();
        assert!(!state.ended_cleanly(line), "an unreadable marker");
    }
}
