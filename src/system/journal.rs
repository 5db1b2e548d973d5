//! The agent's intent journal: what a run is about to leave on disk, written down
//! before it exists, so that the next run can undo what a killed run left half done.
//!
//! Two steps are recorded: a staged file beside its target (removed at recovery), and
//! an in-place validation, where the new file is already live and the old one is kept
//! under a second name until the validator says yes (the old file is put back at
//! recovery: a configuration that never passed its validator must not stay live). Each
//! step is one small JSON file in the journal folder, written atomically and removed
//! when the step ends. Recovery runs at the start of every run, under the host's lock,
//! before anything else.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

/// One step whose result is not final yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    /// A new file staged beside its target.
    Staged { path: PathBuf },
    /// A new file live at `target` while its validator runs; the old one, if there was
    /// one (`had_old`), kept at `kept`.
    Validating {
        target: PathBuf,
        kept: PathBuf,
        had_old: bool,
    },
}

/// A step in the journal; hand it back to [`Journal::end`].
#[derive(Debug, PartialEq)]
pub struct Entry {
    file: PathBuf,
}

#[derive(Debug)]
pub struct Journal {
    folder: PathBuf,
    sequence: AtomicU64,
}

impl Journal {
    /// The journal in `folder` (created root-only when missing).
    pub fn open(folder: &Path) -> Result<Journal> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(folder)
            .with_context(|| format!("cannot create the journal folder {}", folder.display()))?;
        Ok(Journal {
            folder: folder.to_path_buf(),
            sequence: AtomicU64::new(0),
        })
    }

    /// Records `step` durably before the caller takes it.
    pub fn begin(&self, step: Step) -> Result<Entry> {
        let number = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!("{:010}-{number:06}", std::process::id());
        let file = self.folder.join(format!("{name}.json"));
        let staged = self.folder.join(format!(".{name}.new"));
        let text = serde_json::to_vec(&step)?;
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)
            .with_context(|| format!("cannot write the journal in {}", self.folder.display()))?;
        out.write_all(&text)
            .and_then(|()| out.sync_all())
            .with_context(|| format!("cannot write {}", staged.display()))?;
        fs::rename(&staged, &file).with_context(|| format!("cannot write {}", file.display()))?;
        sync_folder(&file);
        Ok(Entry { file })
    }

    /// The step is over, for better or worse: forget it.
    pub fn end(&self, entry: Entry) {
        let _ = fs::remove_file(entry.file);
    }

    /// Undoes every step a killed run left, newest first; says what it did, one
    /// sentence per file. An entry that cannot be read stops the run: guessing could
    /// leave a never-validated configuration live.
    pub fn recover(&self) -> Result<Vec<String>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.folder)
            .with_context(|| format!("cannot read the journal {}", self.folder.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("cannot read the journal {}", self.folder.display()))?;
        files.sort();
        let mut said = Vec::new();
        for file in files.iter().rev() {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            if name.as_deref().is_some_and(|n| n.starts_with('.')) {
                // A journal entry that was never completed: its step never began.
                let _ = fs::remove_file(file);
                continue;
            }
            let text = fs::read(file)
                .with_context(|| format!("cannot read the journal entry {}", file.display()))?;
            let step: Step = serde_json::from_slice(&text).with_context(|| {
                format!(
                    "the journal entry {} cannot be read, so what the interrupted run left cannot be undone safely; \
                     check the file it names by hand, then remove the entry",
                    file.display()
                )
            })?;
            if let Some(sentence) = undo(&step)? {
                said.push(sentence);
            }
            fs::remove_file(file)
                .with_context(|| format!("cannot remove the journal entry {}", file.display()))?;
        }
        Ok(said)
    }
}

fn undo(step: &Step) -> Result<Option<String>> {
    match step {
        Step::Staged { path } => Ok(remove_if_there(path)?.then(|| {
            format!(
                "removed {}, a file an interrupted run had staged",
                path.display()
            )
        })),
        Step::Validating {
            target,
            kept,
            had_old,
        } => {
            if fs::symlink_metadata(kept).is_ok() {
                fs::rename(kept, target)
                    .with_context(|| format!("cannot put back {}", target.display()))?;
                sync_folder(target);
                return Ok(Some(format!(
                    "put back the previous {}: an interrupted run had not finished validating its new version",
                    target.display()
                )));
            }
            if !had_old && remove_if_there(target)? {
                return Ok(Some(format!(
                    "removed {}: an interrupted run had not finished validating it",
                    target.display()
                )));
            }
            Ok(None)
        }
    }
}

fn remove_if_there(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

/// Makes a rename in `path`'s folder durable.
pub fn sync_folder(path: &Path) {
    if let Some(folder) = path.parent() {
        if let Ok(folder) = fs::File::open(folder) {
            let _ = folder.sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_left_mid_validation_is_put_back() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let target = dir.path().join("sshd_config");
        let kept = dir.path().join(".placard-old-sshd_config");
        fs::write(&target, "never validated\n").unwrap();
        fs::write(&kept, "the working one\n").unwrap();
        journal
            .begin(Step::Validating {
                target: target.clone(),
                kept: kept.clone(),
                had_old: true,
            })
            .unwrap();
        let said = journal.recover().unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "the working one\n");
        assert!(!kept.exists());
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("put back the previous"), "{said:?}");
        assert!(
            journal.recover().unwrap().is_empty(),
            "recovery is done once"
        );
    }

    #[test]
    fn a_new_file_never_validated_is_removed_and_a_staged_one_too() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let target = dir.path().join("new.conf");
        let staged = dir.path().join(".placard-tmp-other.conf");
        fs::write(&target, "never validated\n").unwrap();
        fs::write(&staged, "half\n").unwrap();
        journal
            .begin(Step::Validating {
                target: target.clone(),
                kept: dir.path().join(".placard-old-new.conf"),
                had_old: false,
            })
            .unwrap();
        journal
            .begin(Step::Staged {
                path: staged.clone(),
            })
            .unwrap();
        assert_eq!(journal.recover().unwrap().len(), 2);
        assert!(!target.exists() && !staged.exists());
    }

    #[test]
    fn an_ended_step_leaves_nothing_to_recover() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(&dir.path().join("journal")).unwrap();
        let staged = dir.path().join(".placard-tmp-x");
        fs::write(&staged, "x").unwrap();
        let entry = journal
            .begin(Step::Staged {
                path: staged.clone(),
            })
            .unwrap();
        journal.end(entry);
        assert!(journal.recover().unwrap().is_empty());
        assert!(staged.exists(), "an ended step is not undone");
    }

    #[test]
    fn an_unreadable_entry_stops_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("journal");
        let journal = Journal::open(&folder).unwrap();
        fs::write(folder.join("0000000001-000000.json"), "{not json").unwrap();
        let error = format!("{:#}", journal.recover().unwrap_err());
        assert!(error.contains("cannot be read"), "{error}");
    }
}
