//! One run at a time per host: an exclusive flock on /run/placard.lock, holding a line
//! that says who has it, so that the second run can name the holder.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = "/run/placard.lock";

/// Held until dropped; the kernel releases it if the agent dies.
pub struct Lock {
    _file: Flock<File>,
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
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        file.set_len(0)?;
        file.rewind()?;
        writeln!(
            file,
            "pid {} for {operator}, since {since} (seconds since the epoch)",
            std::process::id()
        )?;
        file.flush()?;
        Ok(Lock { _file: file })
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
        drop(first);
        assert!(Lock::acquire(&path, "bob@desktop").is_ok());
    }
}
