//! The sweep of /etc for files that a killed run left beside their targets.
//!
//! The [`journal`](super::journal) undoes what this version of placard was doing when
//! it was killed; this sweep also catches what older versions left, which no journal
//! recorded: staged files (`.placard-tmp-NAME`, `.placard-new-NAME`,
//! `.placard-link-PID`, and `.placard-XXXXXX` from tempfile) are removed, and an old
//! file kept during an in-place validation (`.placard-old-NAME`) is put back over
//! NAME, because the new NAME may never have passed its validator.

use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::atomic::{KEPT_PREFIX, STAGED_PREFIX};

/// What to do with a file found under /etc, by its name.
#[derive(Debug, PartialEq, Eq)]
enum Leftover<'a> {
    Staged,
    /// An old file to put back over the sibling named here.
    Kept(&'a str),
}

fn classify(name: &str) -> Option<Leftover<'_>> {
    if let Some(original) = name.strip_prefix(KEPT_PREFIX) {
        return (!original.is_empty()).then_some(Leftover::Kept(original));
    }
    if [STAGED_PREFIX, ".placard-new-", ".placard-link-"]
        .iter()
        .any(|prefix| name.starts_with(prefix) && name.len() > prefix.len())
    {
        return Some(Leftover::Staged);
    }
    // tempfile's names: the prefix and six random letters or digits.
    let random = name.strip_prefix(".placard-")?;
    (random.len() == 6 && random.chars().all(|c| c.is_ascii_alphanumeric()))
        .then_some(Leftover::Staged)
}

/// Sweeps `root` (not its .git); says what it did, one sentence per file.
pub fn sweep(root: &Path) -> Result<Vec<String>> {
    let mut said = Vec::new();
    sweep_folder(root, &mut said)?;
    Ok(said)
}

fn sweep_folder(folder: &Path, said: &mut Vec<String>) -> Result<()> {
    let entries =
        fs::read_dir(folder).with_context(|| format!("cannot read {}", folder.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", folder.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let file_type = entry
            .file_type()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        if file_type.is_dir() {
            if name != ".git" {
                sweep_folder(&entry.path(), said)?;
            }
            continue;
        }
        match classify(name) {
            None => {}
            Some(Leftover::Staged) => {
                fs::remove_file(entry.path())
                    .with_context(|| format!("cannot remove {}", entry.path().display()))?;
                said.push(format!(
                    "removed {}, left by an interrupted run",
                    entry.path().display()
                ));
            }
            Some(Leftover::Kept(original)) => {
                let target = folder.join(original);
                fs::rename(entry.path(), &target)
                    .with_context(|| format!("cannot put back {}", target.display()))?;
                super::journal::sync_folder(&target);
                said.push(format!(
                    "put back the previous {}: an interrupted run had not finished validating its new version",
                    target.display()
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_told_apart() {
        assert_eq!(classify(".placard-tmp-main.cf"), Some(Leftover::Staged));
        assert_eq!(classify(".placard-new-sudoers"), Some(Leftover::Staged));
        assert_eq!(classify(".placard-link-4242"), Some(Leftover::Staged));
        assert_eq!(classify(".placard-a1B2c3"), Some(Leftover::Staged));
        assert_eq!(
            classify(".placard-old-sshd_config"),
            Some(Leftover::Kept("sshd_config"))
        );
        for name in [
            ".placard-packages",
            ".placard-old-",
            "placard.conf",
            ".placard-tmp-",
        ] {
            assert_eq!(classify(name), None, "{name}");
        }
    }

    #[test]
    fn a_sweep_puts_back_kept_files_and_removes_staged_ones() {
        let dir = tempfile::tempdir().unwrap();
        let ssh = dir.path().join("ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::write(ssh.join("sshd_config"), "never validated\n").unwrap();
        fs::write(ssh.join(".placard-old-sshd_config"), "working\n").unwrap();
        fs::write(ssh.join(".placard-tmp-moduli"), "half").unwrap();
        fs::write(dir.path().join(".git/.placard-tmp-x"), "not ours to touch").unwrap();
        let said = sweep(dir.path()).unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert_eq!(
            fs::read_to_string(ssh.join("sshd_config")).unwrap(),
            "working\n"
        );
        let mut left: Vec<String> = fs::read_dir(&ssh)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec!["sshd_config"]);
        assert!(dir.path().join(".git/.placard-tmp-x").exists());
        assert!(sweep(dir.path()).unwrap().is_empty());
    }
}
