//! One run at a time per host: an exclusive flock on /run/placard.lock, holding a line
//! that says who has it, so that the second run can name the holder. The line the
//! last holder left also tells the next one which run came before it (see
//! [`Lock::previous`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "/run/placard.lock";

/// Held until dropped; the kernel releases it if the agent dies.
pub struct Lock {
    _file: Flock<File>,
    /// The line the previous holder wrote; empty when there was none (since the host
    /// booted: /run is emptied then).
    previous: String,
    /// The line this holder wrote.
    line: String,
}

impl Lock {
    pub fn acquire(path: &Path, operator: &str) -> Result<Lock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                bail!(
                    "another placard run holds the lock on this host ({}): {}; wait for it to finish",
                    path.display(),
                    if holder.is_empty() { "holder unknown" } else { holder }
                );
            }
        };
        let mut previous = String::new();
        file.read_to_string(&mut previous)
            .with_context(|| format!("cannot read the lock file {}", path.display()))?;
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let line = format!(
            "pid {} for {operator}, since {since} (seconds since the epoch)",
            std::process::id()
        );
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{line}")?;
        file.flush()?;
        Ok(Lock {
            _file: file,
            previous: previous.trim_end().to_string(),
            line,
        })
    }

    /// What the previous holder wrote: who it was, its process and when it began.
    /// Every run that takes the lock writes a line of its own, so a line names one run.
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// What this holder wrote.
    pub fn line(&self) -> &str {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_holder_is_told_who_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("placard.lock");
        let first = Lock::acquire(&path, "alice@laptop").unwrap();
        let error = Lock::acquire(&path, "bob@desktop")
            .err()
            .expect("second lock refused")
            .to_string();
        assert!(error.contains("alice@laptop"), "{error}");
        let first_line = first.line().to_string();
        assert_eq!(first.previous(), "");
        drop(first);
        let second = Lock::acquire(&path, "bob@desktop").unwrap();
        assert_eq!(second.previous(), first_line);
        assert!(second.line().contains("bob@desktop"), "{}", second.line());
    }
}
