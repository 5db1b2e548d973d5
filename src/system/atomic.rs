//! Replacing a file so that a reader, or a run killed at any instant, sees either the
//! whole old file or the whole new one.
//!
//! A new file is staged beside its target under a fixed name, `.placard-tmp-NAME`
//! (one run at a time holds the host's lock, so the name is never shared), with its
//! content synced and its owner, group and mode set; then it is renamed over the
//! target and the folder is synced. Before anything is created, the
//! [`crate::system::journal`] records what is about to exist, so that the next run can
//! remove a staged file or put back a kept old file that a killed run left behind.
//!
//! What this module leaves to others: validating the content
//! ([`crate::resource::file`]) and deciding the attributes.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use super::journal::{self, Journal};

/// The prefix of every file placard stages or keeps beside a target.
pub const STAGED_PREFIX: &str = ".placard-tmp-";
/// The prefix of the old file kept while a new one is validated in place.
pub const KEPT_PREFIX: &str = ".placard-old-";

/// Owner, group and mode for a written file; `None` keeps what the process gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Attributes {
    pub fn mode(mode: u32) -> Attributes {
        Attributes {
            mode,
            uid: None,
            gid: None,
        }
    }

    /// The attributes of the file at `path`, or `fallback` when there is none.
    pub fn of_existing(path: &Path, fallback: Attributes) -> Attributes {
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_file() => Attributes {
                mode: metadata.mode() & 0o7777,
                uid: Some(metadata.uid()),
                gid: Some(metadata.gid()),
            },
            _ => fallback,
        }
    }

    pub fn apply(&self, path: &Path) -> Result<()> {
        if self.uid.is_some() || self.gid.is_some() {
            nix::unistd::chown(
                path,
                self.uid.map(nix::unistd::Uid::from_raw),
                self.gid.map(nix::unistd::Gid::from_raw),
            )
            .with_context(|| format!("cannot chown {}", path.display()))?;
        }
        fs::set_permissions(path, fs::Permissions::from_mode(self.mode))
            .with_context(|| format!("cannot chmod {}", path.display()))
    }
}

/// `NAME`'s sibling `PREFIX` + `NAME`.
pub fn sibling(path: &Path, prefix: &str) -> Result<PathBuf> {
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let mut sibling_name = std::ffi::OsString::from(prefix);
    sibling_name.push(name);
    Ok(path.with_file_name(sibling_name))
}

/// A new file beside its target, written and synced, not yet in place.
#[derive(Debug)]
pub struct Staged<'j> {
    staged: PathBuf,
    target: PathBuf,
    journal: Option<&'j Journal>,
    entry: Option<journal::Entry>,
    committed: bool,
}

impl<'j> Staged<'j> {
    /// Writes `content` beside `target` with `attributes`.
    pub fn new(
        target: &Path,
        content: &[u8],
        attributes: Attributes,
        journal: Option<&'j Journal>,
    ) -> Result<Staged<'j>> {
        let folder = target
            .parent()
            .with_context(|| format!("{} has no folder", target.display()))?;
        if !folder.is_dir() {
            bail!(
                "directory {} does not exist; add a `directory` task before this one",
                folder.display()
            );
        }
        let staged = sibling(target, STAGED_PREFIX)?;
        let entry = journal
            .map(|j| {
                j.begin(journal::Step::Staged {
                    path: staged.clone(),
                })
            })
            .transpose()?;
        let mut staging = Staged {
            staged,
            target: target.to_path_buf(),
            journal,
            entry,
            committed: false,
        };
        staging.write(content, attributes)?;
        Ok(staging)
    }

    fn write(&mut self, content: &[u8], attributes: Attributes) -> Result<()> {
        // A leftover of a killed run, from before the journal knew of it.
        match fs::remove_file(&self.staged) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", self.staged.display()))
            }
        }
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.staged)
            .with_context(|| format!("cannot create {}", self.staged.display()))?;
        file.write_all(content)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", self.staged.display()))?;
        drop(file);
        attributes.apply(&self.staged)
    }

    /// Where the new content is, for a validator that reads it there.
    pub fn path(&self) -> &Path {
        &self.staged
    }

    /// Renames the new file over the target, durably.
    pub fn commit(mut self) -> Result<()> {
        fs::rename(&self.staged, &self.target)
            .with_context(|| format!("cannot put {} in place", self.target.display()))?;
        self.committed = true;
        journal::sync_folder(&self.target);
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        if let (Some(journal), Some(entry)) = (self.journal, self.entry.take()) {
            journal.end(entry);
        }
    }
}

impl Drop for Staged<'_> {
    /// A staged file that was not committed is removed.
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.staged);
        }
        self.finish();
    }
}

/// Replaces `path` with `content` atomically, with `attributes`.
pub fn write_atomic(
    path: &Path,
    content: &[u8],
    attributes: Attributes,
    journal: Option<&Journal>,
) -> Result<()> {
    Staged::new(path, content, attributes, journal)?.commit()
}

/// Replaces `path` with `content` atomically for other processes and for a killed
/// one, without waiting for the disk: for small state rewritten several times a run.
pub fn replace_unsynced(path: &Path, content: &[u8], attributes: Attributes) -> Result<()> {
    let staged = sibling(path, STAGED_PREFIX)?;
    let _ = fs::remove_file(&staged);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&staged)
        .with_context(|| format!("cannot create {}", staged.display()))?;
    file.write_all(content)
        .with_context(|| format!("cannot write {}", staged.display()))?;
    drop(file);
    attributes.apply(&staged)?;
    fs::rename(&staged, path).with_context(|| format!("cannot put {} in place", path.display()))
}

/// Reads a JSON file placard wrote: `None` when there is none. A file that cannot be
/// read or parsed is an error naming it, what it holds (`holds`, e.g. "the upgrade's
/// merge base") and what to do: state is never guessed.
/// A role's settings file on the host, which must be there: missing, the message says
/// to apply `role`.
pub fn read_role_settings<T: serde::de::DeserializeOwned>(
    path: &Path,
    holds: &str,
    role: &str,
) -> Result<T> {
    read_json(path, holds)?.with_context(|| {
        format!(
            "{} is missing: apply the {role} role to this host",
            path.display()
        )
    })
}

pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, holds: &str) -> Result<Option<T>> {
    let text = match fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    serde_json::from_slice(&text).map(Some).with_context(|| {
        format!(
            "{} is not what placard wrote there, and it holds {holds}; nothing was changed. \
             Look at it, restore or remove it, then run again",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_replaced_file_keeps_the_owner_and_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upsd.conf");
        fs::write(&path, "old\n").unwrap();
        let wanted = Attributes {
            mode: 0o640,
            uid: Some(0),
            gid: Some(nix::unistd::getgid().as_raw()),
        };
        fs::set_permissions(&path, fs::Permissions::from_mode(0o604)).unwrap();
        assert_eq!(
            Attributes::of_existing(&path, Attributes::mode(0o644)).mode,
            0o604
        );
        write_atomic(&path, b"new\n", wanted, None).unwrap();
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o640);
        assert_eq!(fs::read(&path).unwrap(), b"new\n");
        assert_eq!(names(dir.path()), vec!["upsd.conf"]);
    }

    #[test]
    fn a_staged_file_that_is_dropped_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("main.cf");
        let staged = Staged::new(&path, b"x", Attributes::mode(0o644), None).unwrap();
        assert!(staged.path().exists());
        drop(staged);
        assert!(names(dir.path()).is_empty());
    }

    #[test]
    fn a_missing_folder_says_what_to_add() {
        let dir = tempfile::tempdir().unwrap();
        let error = write_atomic(
            &dir.path().join("absent/file"),
            b"x",
            Attributes::mode(0o644),
            None,
        )
        .unwrap_err();
        assert!(
            format!("{error}").contains("add a `directory` task"),
            "{error}"
        );
    }
}
