//! Which files under /etc are secrets, for `placard capture` (never copied into a
//! draft: named, with what the admin must do) and for `placard etc status` (a warning,
//! with the fix, when /etc's existing git history already holds one).
//!
//! A file is a secret when it is not world-readable (a package that makes a file 0600
//! or 0640 says it is private: postsrsd's `postsrsd.secret`, NUT's `upsd.users`), or
//! when its path matches [`SECRET_PATTERNS`] (known secret files, whatever their mode).
//! Failing closed: a file whose mode cannot be read counts as a secret.
//!
//! Git keeps no read permissions (a blob is 0644 or 0755), so the history check takes
//! the mode of the live file at the same path; a path that matches the patterns is a
//! secret in history whether or not it still exists. The `distro` branch is not
//! searched: it holds the packages' pristine files, not the site's.
//!
//! This module only reads; /etc's `.gitignore` and what gets committed are
//! `system::etc_git`'s.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::{ObjectType, Oid, Repository, Tree};
use glob::{MatchOptions, Pattern};
use serde::{Deserialize, Serialize};

/// Known secret files under /etc; the same list keeps them out of /etc's git.
pub use crate::system::etc_git::SECRET_PATTERNS;

/// Why `path` is a secret, or `None`. `mode` is the live file's (`None`: no live file;
/// `Some(Err)`: its mode could not be read, which counts as a secret).
pub fn why_secret(path: &str, mode: LiveMode) -> Option<String> {
    let options = MatchOptions {
        require_literal_separator: true,
        ..MatchOptions::default()
    };
    if let Some((pattern, what)) = SECRET_PATTERNS
        .iter()
        .find(|(pattern, _)| Pattern::new(pattern).is_ok_and(|p| p.matches_with(path, options)))
    {
        return Some(format!("{what} (matches `{pattern}`)"));
    }
    match mode {
        Some(Ok(mode)) if mode & 0o004 == 0 => {
            Some(format!("not world-readable (mode {:04o})", mode & 0o7777))
        }
        Some(Err(error)) => Some(format!(
            "its mode cannot be read ({error}): taken for a secret"
        )),
        _ => None,
    }
}

/// The paths the admin explicitly marked as not secret: lines `!/PATH` of /etc's
/// .gitignore outside placard's section, one exact path each. Failing closed, nothing
/// else counts: no glob (`!/nut/*`), no unanchored name (`!upsmon.conf`), no escape.
pub fn parse_marked(gitignore: &str) -> BTreeSet<String> {
    let mut marked = BTreeSet::new();
    let mut in_placards = false;
    for line in gitignore.lines() {
        if line == crate::system::etc_git::BEGIN {
            in_placards = true;
        } else if line == crate::system::etc_git::END {
            in_placards = false;
        } else if let Some(path) = line.strip_prefix("!/").filter(|_| !in_placards) {
            let exact = !path.is_empty()
                && !path.ends_with('/')
                && !path.contains(['*', '?', '[', '\\', ' ', '\t'])
                && path.split('/').all(|part| !matches!(part, "" | "." | ".."));
            if exact {
                marked.insert(path.to_string());
            }
        }
    }
    marked
}

/// [`parse_marked`] of `etc/.gitignore` (none when it cannot be read).
pub fn marked(etc: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(etc.join(".gitignore"))
        .map(|text| parse_marked(&text))
        .unwrap_or_default()
}

/// Why the live `etc/path` is a secret, or `None`; a path in `marked` (the admin's
/// `!/PATH`) is not one.
pub fn why_secret_in(etc: &Path, marked: &BTreeSet<String>, path: &str) -> Option<String> {
    if marked.contains(path) {
        return None;
    }
    why_secret(path, live_mode(etc, path))
}

/// The mode of `etc/path` as [`why_secret`] takes it: `None` when there is no such file
/// or it is a link (a capture records a link's target, never what it points to).
pub fn live_mode(etc: &Path, path: &str) -> LiveMode {
    match std::fs::symlink_metadata(etc.join(path)) {
        Ok(meta) if meta.file_type().is_symlink() => None,
        Ok(meta) => Some(Ok(meta.mode())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => Some(Err(error.to_string())),
    }
}

/// A live file's mode as [`why_secret`] takes it.
pub type LiveMode = Option<std::result::Result<u32, String>>;

/// What the admin must do with a secret a capture left out.
pub const CAPTURE_TODO: &str = "not copied into the draft: copy it to the new host by hand (keeping its owner and mode), or let its package make a new one there";

/// A secret file already in /etc's git history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLeak {
    pub path: String,
    pub why: String,
    /// The newest commit (of those searched) that holds it, abbreviated.
    pub commit: String,
}

/// The history check's answer: each leak, and the fix, one command per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryCheck {
    pub leaks: Vec<HistoryLeak>,
    /// Empty when there is no leak.
    pub fix: Vec<String>,
}

/// Searches every commit reachable from every ref of /etc's repository but the `distro`
/// branch, for a file that [`why_secret`] calls a secret (the mode is the live file's,
/// from `mode`). Trees already seen at the same path are not walked twice, so a long
/// etckeeper history costs about one walk of each distinct tree. Any git error stops
/// the check and is returned: no answer is never "no leak".
pub fn history_check(repo: &Repository, mode: &dyn Fn(&str) -> LiveMode) -> Result<HistoryCheck> {
    let mut walk = repo.revwalk().context("cannot walk /etc's git history")?;
    walk.set_sorting(git2::Sort::TIME)?;
    let mut pushed = false;
    for reference in repo.references().context("cannot list /etc's git refs")? {
        let reference = reference.context("cannot read a ref of /etc's repository")?;
        if reference.name() == Some("refs/heads/distro") || reference.is_remote() {
            continue;
        }
        if let Ok(commit) = reference.peel_to_commit() {
            walk.push(commit.id())?;
            pushed = true;
        }
    }
    if !pushed {
        // An empty repository, or HEAD alone (detached).
        if let Ok(head) = repo.head().and_then(|h| h.peel_to_commit()) {
            walk.push(head.id())?;
        }
    }
    let mut leaks: BTreeMap<String, HistoryLeak> = BTreeMap::new();
    let mut seen: HashSet<(String, Oid)> = HashSet::new();
    let mut verdicts: BTreeMap<String, Option<String>> = BTreeMap::new();
    for id in walk {
        let id = id.context("cannot walk /etc's git history")?;
        let commit = repo.find_commit(id)?;
        let tree = commit.tree()?;
        let short = id.to_string()[..12].to_string();
        walk_tree(repo, &tree, "", &mut seen, &mut |path| {
            if leaks.contains_key(path) {
                return;
            }
            let verdict = verdicts
                .entry(path.to_string())
                .or_insert_with(|| why_secret(path, mode(path)));
            if let Some(why) = verdict {
                leaks.insert(
                    path.to_string(),
                    HistoryLeak {
                        path: path.to_string(),
                        why: why.clone(),
                        commit: short.clone(),
                    },
                );
            }
        })?;
    }
    let leaks: Vec<HistoryLeak> = leaks.into_values().collect();
    let fix = if leaks.is_empty() {
        Vec::new()
    } else {
        let paths: Vec<String> = leaks.iter().map(|l| quote(&l.path)).collect();
        vec![
            "These files' contents can be read by anyone who gets a copy of /etc/.git (a backup, a clone). Treat them as disclosed: make new secrets where you can.".to_string(),
            format!(
                "Remove them from every commit: git -C /etc filter-branch --index-filter 'git rm -r --cached --ignore-unmatch -- {}' -- --branches --tags",
                paths.join(" ")
            ),
            "Then drop the old objects: rm -rf /etc/.git/refs/original && git -C /etc reflog expire --expire=now --all && git -C /etc gc --prune=now".to_string(),
            "placard does not commit such files from now on; copies of the repository made before keep them.".to_string(),
        ]
    };
    Ok(HistoryCheck { leaks, fix })
}

fn quote(path: &str) -> String {
    if path
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
    {
        path.to_string()
    } else {
        format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

fn walk_tree(
    repo: &Repository,
    tree: &Tree,
    prefix: &str,
    seen: &mut HashSet<(String, Oid)>,
    visit: &mut dyn FnMut(&str),
) -> Result<()> {
    if !seen.insert((prefix.to_string(), tree.id())) {
        return Ok(());
    }
    for entry in tree.iter() {
        let name = String::from_utf8_lossy(entry.name_bytes()).into_owned();
        let path = format!("{prefix}{name}");
        match entry.kind() {
            Some(ObjectType::Tree) => {
                let subtree = repo
                    .find_tree(entry.id())
                    .with_context(|| format!("cannot read the tree of {path} in /etc's history"))?;
                walk_tree(repo, &subtree, &format!("{path}/"), seen, visit)?;
            }
            Some(ObjectType::Blob) => visit(&path),
            _ => {}
        }
    }
    Ok(())
}

/// [`history_check`] on the host's /etc, with the live files' modes.
pub fn check_etc(etc: &Path) -> Result<HistoryCheck> {
    let repo = Repository::open(etc)
        .with_context(|| format!("cannot open the git repository in {}", etc.display()))?;
    let marked = marked(etc);
    let mut check = history_check(&repo, &|path| live_mode(etc, path))?;
    // A file the admin marked with `!/PATH` is in the history on purpose.
    check.leaks.retain(|leak| !marked.contains(&leak.path));
    if check.leaks.is_empty() {
        check.fix.clear();
    }
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_an_exact_bang_path_outside_placards_section_marks_a_file() {
        let gitignore = "*.swp\n!/sudoers\n!/nut/upsmon.conf\n!upsd.users\n!/nut/*\n!/club/\n!/club/../shadow\n!/a\\ b\n# begin section managed by placard\n!/postsrsd.secret\n# end section managed by placard\n";
        assert_eq!(
            parse_marked(gitignore),
            BTreeSet::from(["sudoers".to_string(), "nut/upsmon.conf".to_string()])
        );
        let etc = tempfile::tempdir().unwrap();
        fs::write(etc.path().join("sudoers"), "root ALL=(ALL) ALL\n").unwrap();
        fs::set_permissions(
            etc.path().join("sudoers"),
            fs::Permissions::from_mode(0o440),
        )
        .unwrap();
        let marked = parse_marked(gitignore);
        assert_eq!(why_secret_in(etc.path(), &marked, "sudoers"), None);
        assert!(why_secret_in(etc.path(), &BTreeSet::new(), "sudoers").is_some());
    }

    #[test]
    fn what_is_a_secret() {
        let cases: &[(&str, LiveMode, bool)] = &[
            ("postsrsd.secret", Some(Ok(0o100600)), true),
            ("postsrsd.secret", Some(Ok(0o100644)), true),
            ("club/api.secret", None, true),
            ("ssl/private/club.pem", Some(Ok(0o100640)), true),
            ("ssh/ssh_host_ed25519_key", None, true),
            ("ssh/ssh_host_ed25519_key.pub", Some(Ok(0o100644)), false),
            ("nut/upsmon.conf", Some(Ok(0o100640)), true),
            ("nut/upsmon.conf", Some(Ok(0o100644)), false),
            ("motd", Some(Ok(0o100644)), false),
            ("motd", Some(Err("permission denied".into())), true),
            ("shadow", Some(Ok(0o100644)), true),
            ("opendkim/keys/club.example/mail.private", None, true),
        ];
        for (path, mode, secret) in cases {
            assert_eq!(
                why_secret(path, mode.clone()).is_some(),
                *secret,
                "{path} {mode:?}"
            );
        }
    }

    fn commit_all(repo: &Repository, message: &str) -> Oid {
        let mut index = repo.index().expect("index");
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .expect("add");
        index.write().expect("write the index");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let signature = git2::Signature::now("test", "test@example.org").expect("signature");
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            message,
            &tree,
            &parents,
        )
        .expect("commit")
    }

    /// Issue 13, item 4: a history that already holds a secret (postsrsd.secret, 0600,
    /// committed by an older `etc init`, then removed from the index) is found, with the
    /// fix; the same history without it is clean; the distro branch is not searched.
    #[test]
    fn issue_13_a_history_holding_a_secret_gets_a_warning_with_the_fix() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let etc = dir.path();
        let repo = Repository::init(etc).expect("init");
        fs::write(etc.join("motd"), "hello\n").expect("write");
        commit_all(&repo, "first");
        let clean = check_etc(etc).expect("a check");
        assert_eq!(clean.leaks, Vec::new());
        assert!(clean.fix.is_empty());

        fs::write(etc.join("postsrsd.secret"), "s3cr3t\n").expect("write");
        fs::set_permissions(
            etc.join("postsrsd.secret"),
            fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        fs::create_dir_all(etc.join("nut")).expect("mkdir");
        fs::write(
            etc.join("nut/upsmon.conf"),
            "MONITOR ups 1 upsmon pass primary\n",
        )
        .expect("write");
        fs::set_permissions(
            etc.join("nut/upsmon.conf"),
            fs::Permissions::from_mode(0o640),
        )
        .expect("chmod");
        commit_all(&repo, "etc init committed the secrets");
        // Later commits no longer hold them; the history still does.
        let mut index = repo.index().expect("index");
        index
            .remove_path(Path::new("postsrsd.secret"))
            .expect("remove");
        index
            .remove_path(Path::new("nut/upsmon.conf"))
            .expect("remove");
        index.write().expect("write");
        fs::write(etc.join("motd"), "hello again\n").expect("write");
        let tree = repo
            .find_tree(index.write_tree().expect("tree"))
            .expect("tree");
        let signature = git2::Signature::now("test", "test@example.org").expect("signature");
        let head = repo.head().and_then(|h| h.peel_to_commit()).expect("head");
        repo.commit(
            Some("HEAD"),
            &signature,
            &signature,
            "untracked",
            &tree,
            &[&head],
        )
        .expect("commit");

        let found = check_etc(etc).expect("a check");
        let paths: Vec<&str> = found.leaks.iter().map(|l| l.path.as_str()).collect();
        assert_eq!(paths, ["nut/upsmon.conf", "postsrsd.secret"]);
        assert!(found.leaks[1].why.contains("postsrsd"), "{:?}", found.leaks);
        assert!(found.leaks[0].why.contains("0640"), "{:?}", found.leaks);
        assert!(found
            .fix
            .iter()
            .any(|line| line.contains("filter-branch") && line.contains("postsrsd.secret")));

        // The distro branch (pristine files) is not the site's history.
        let distro_dir = tempfile::tempdir().expect("a temporary folder");
        let distro = Repository::init(distro_dir.path()).expect("init");
        fs::write(distro_dir.path().join("motd"), "hi\n").expect("write");
        let first = commit_all(&distro, "first");
        let main = distro
            .head()
            .ok()
            .and_then(|h| h.name().map(str::to_string))
            .expect("a branch");
        fs::write(distro_dir.path().join("pristine.key"), "k\n").expect("write");
        let keyed = commit_all(&distro, "a key");
        distro
            .branch("distro", &distro.find_commit(keyed).expect("commit"), true)
            .expect("branch");
        distro
            .reference(&main, first, true, "back")
            .expect("reset the main branch");
        let found = history_check(&distro, &|_| None).expect("a check");
        assert_eq!(found.leaks, Vec::new(), "only the distro branch holds it");
    }
}
