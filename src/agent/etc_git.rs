//! /etc as a git repository, on the host: init or adopt, commit stray changes, commit
//! each run, keep secrets out.
//!
//! The repository is an ordinary one at /etc/.git (mode 0700), so etckeeper can share
//! it: when /etc/.etckeeper exists we let `etckeeper pre-commit` record permissions
//! before each commit, as etckeeper's own commits do, and keep its .gitignore section.
//! Ours is a second section, between `# begin section managed by placard` and
//! `# end section managed by placard`: private keys, and every file a role marked as
//! holding a secret. A file that is ignored after having been committed is removed
//! from the index; its old versions stay in history.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use git2::{IndexAddOption, Repository, Signature, StatusOptions};

use super::process;

pub const BEGIN: &str = "# begin section managed by placard";
pub const END: &str = "# end section managed by placard";

/// Always kept out of history: private keys that packages put in /etc, and password
/// hashes (which can be cracked offline).
const ALWAYS_IGNORED: &[&str] = &[
    "/ssh/ssh_host_*_key",
    "/ssl/private/",
    "*.key",
    ".placard-*",
    "/shadow",
    "/shadow-",
    "/gshadow",
    "/gshadow-",
];

pub struct EtcRepo {
    repo: Repository,
    root: PathBuf,
}

impl EtcRepo {
    /// Opens the repository at `root`, if there is one.
    pub fn open(root: &Path) -> Result<Option<EtcRepo>> {
        if !root.join(".git").exists() {
            return Ok(None);
        }
        let repo = Repository::open(root).with_context(|| {
            format!("{}/.git exists but is not a git repository", root.display())
        })?;
        Ok(Some(EtcRepo {
            repo,
            root: root.to_path_buf(),
        }))
    }

    /// Opens the repository, creating it (and saying so) when there is none.
    pub fn open_or_init(root: &Path) -> Result<(EtcRepo, bool)> {
        if let Some(repo) = EtcRepo::open(root)? {
            return Ok((repo, false));
        }
        let repo = Repository::init(root)
            .with_context(|| format!("cannot create a git repository in {}", root.display()))?;
        fs::set_permissions(root.join(".git"), fs::Permissions::from_mode(0o700))?;
        Ok((
            EtcRepo {
                repo,
                root: root.to_path_buf(),
            },
            true,
        ))
    }

    /// Writes our .gitignore section with `sensitive` added to what it already lists.
    pub fn update_ignores(&self, sensitive: &BTreeSet<PathBuf>) -> Result<()> {
        let path = self.root.join(".gitignore");
        let current = fs::read_to_string(&path).unwrap_or_default();
        let (before, ours, after) = split_section(&current);
        let mut entries: BTreeSet<String> = ours.into_iter().collect();
        entries.extend(ALWAYS_IGNORED.iter().map(|s| s.to_string()));
        for file in sensitive {
            if let Ok(relative) = file.strip_prefix(&self.root) {
                entries.insert(format!("/{}", relative.display()));
            }
        }
        let mut text = before;
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(BEGIN);
        text.push('\n');
        for entry in &entries {
            text.push_str(entry);
            text.push('\n');
        }
        text.push_str(END);
        text.push('\n');
        text.push_str(&after);
        if text != current {
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Paths (relative to /etc) that changed since the last commit.
    pub fn changes(&self) -> Result<Vec<String>> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        let statuses = self.repo.statuses(Some(&mut options))?;
        Ok(statuses
            .iter()
            .filter_map(|s| s.path().map(str::to_string))
            .collect())
    }

    /// Commits everything not ignored; None when nothing changed.
    pub fn commit_all(&self, summary: &str, body: &str) -> Result<Option<String>> {
        self.commit_all_merging(summary, body, None)
    }

    /// Like [`EtcRepo::commit_all`]; with `merged`, the commit also has that commit as a
    /// second parent (`etc upgrade` records the merge of the new distro tip this way), and
    /// is made even when the tree did not change.
    pub fn commit_all_merging(
        &self,
        summary: &str,
        body: &str,
        merged: Option<git2::Oid>,
    ) -> Result<Option<String>> {
        if self.root.join(".etckeeper").exists() && Path::new("/usr/bin/etckeeper").exists() {
            let root = self.root.to_string_lossy();
            // etckeeper records owners and modes in /etc/.etckeeper before each commit.
            process::run_ok(&["etckeeper", "pre-commit", "-d", &root])
                .context("etckeeper pre-commit failed")?;
        }
        let mut index = self.repo.index()?;
        // Files that became ignored leave the index, so they leave future commits.
        let tracked: Vec<PathBuf> = index
            .iter()
            .map(|e| PathBuf::from(String::from_utf8_lossy(&e.path).into_owned()))
            .collect();
        for path in tracked {
            if self.repo.is_path_ignored(&path).unwrap_or(false) {
                index.remove_path(&path)?;
            }
        }
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"], None)?;
        index.write()?;
        let tree_id = index.write_tree()?;
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        if merged.is_none() && parent.as_ref().is_some_and(|p| p.tree_id() == tree_id) {
            return Ok(None);
        }
        let tree = self.repo.find_tree(tree_id)?;
        let hostname = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "localhost".into());
        let signature = Signature::now("placard", &format!("root@{hostname}"))?;
        let message = if body.is_empty() {
            format!("{summary}\n")
        } else {
            format!("{summary}\n\n{body}\n")
        };
        let merged = merged.map(|id| self.repo.find_commit(id)).transpose()?;
        let parents: Vec<&git2::Commit> = parent.iter().chain(merged.iter()).collect();
        let id = self.repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            &message,
            &tree,
            &parents,
        )?;
        Ok(Some(id.to_string()))
    }

    /// The repository itself, for the distro branch and upgrades.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// The last `count` commits: id, time (seconds since the epoch), summary.
    pub fn log(&self, count: usize) -> Result<Vec<(String, i64, String)>> {
        let mut walk = self.repo.revwalk()?;
        if walk.push_head().is_err() {
            return Ok(Vec::new());
        }
        let mut entries = Vec::new();
        for id in walk.take(count) {
            let commit = self.repo.find_commit(id?)?;
            entries.push((
                commit.id().to_string()[..12].to_string(),
                commit.time().seconds(),
                commit.summary().unwrap_or_default().to_string(),
            ));
        }
        Ok(entries)
    }

    /// The uncommitted changes as a unified diff (ignored files, so secrets, excluded).
    pub fn diff(&self) -> Result<String> {
        let head = self.repo.head().ok().and_then(|h| h.peel_to_tree().ok());
        let mut options = git2::DiffOptions::new();
        options
            .include_untracked(true)
            .show_untracked_content(true)
            .recurse_untracked_dirs(true);
        let diff = self
            .repo
            .diff_tree_to_workdir_with_index(head.as_ref(), Some(&mut options))?;
        let mut text = String::new();
        diff.print(git2::DiffFormat::Patch, |_, _, line| {
            if matches!(line.origin(), '+' | '-' | ' ') {
                text.push(line.origin());
            }
            text.push_str(&String::from_utf8_lossy(line.content()));
            true
        })?;
        Ok(text)
    }
}

/// The text before our section, our section's entries, and the text after it.
fn split_section(text: &str) -> (String, Vec<String>, String) {
    let Some(start) = text.find(BEGIN) else {
        return (text.to_string(), Vec::new(), String::new());
    };
    let Some(end) = text[start..].find(END).map(|e| start + e) else {
        return (text.to_string(), Vec::new(), String::new());
    };
    let entries = text[start + BEGIN.len()..end]
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let after = text[end + END.len()..].trim_start_matches('\n').to_string();
    (text[..start].to_string(), entries, after)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_section_sits_beside_etckeepers() {
        let text = "# begin section managed by etckeeper (do not edit this section by hand)\n*.dpkg-new\n# end section managed by etckeeper\n";
        let (before, ours, after) = split_section(text);
        assert_eq!(before, text);
        assert!(ours.is_empty() && after.is_empty());
        let with_ours = format!("{text}{BEGIN}\n/nut/upsd.users\n{END}\nlocal\n");
        let (before, ours, after) = split_section(&with_ours);
        assert_eq!(before, text);
        assert_eq!(ours, vec!["/nut/upsd.users"]);
        assert_eq!(after, "local\n");
    }

    #[test]
    fn commits_ignore_secrets_and_untrack_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("upsd.users"), "password = hunter2\n").unwrap();
        let (repo, created) = EtcRepo::open_or_init(root).unwrap();
        assert!(created);
        let mode = fs::metadata(root.join(".git"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700);
        assert!(repo.commit_all("first", "").unwrap().is_some());
        assert!(repo.changes().unwrap().is_empty());
        // Marking the file as secret takes it out of the next commit.
        repo.update_ignores(&[root.join("upsd.users")].into_iter().collect())
            .unwrap();
        repo.commit_all("second", "").unwrap().expect("a commit");
        let head = repo.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(
            head.get_name("upsd.users").is_none(),
            "the secret file left the tree"
        );
        assert!(head.get_name("hostname").is_some());
        assert_eq!(
            repo.commit_all("third", "").unwrap(),
            None,
            "nothing to commit"
        );
        assert_eq!(repo.log(10).unwrap().len(), 2);
    }
}
