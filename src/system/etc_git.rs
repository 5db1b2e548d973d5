//! /etc as a git repository, on the host: init or adopt, commit stray changes, commit
//! each run, keep secrets out.
//!
//! The repository is an ordinary one at /etc/.git (mode 0700), so etckeeper can share
//! it: when /etc/.etckeeper exists we let `etckeeper pre-commit` record permissions
//! before each commit, as etckeeper's own commits do, and keep its .gitignore section.
//! Ours is a second section, between `# begin section managed by placard` and
//! `# end section managed by placard`: private keys, and every file a role marked as
//! holding a secret, and every file that is not world-readable (a key, a password
//! file: a package that made it private knew why). An admin who wants such a file in
//! history says so with a `!/PATH` line after our section, which git honours. A file
//! that is ignored after having been committed is removed from the index; its old
//! versions stay in history.
//!
//! A run killed while git held one of its lock files leaves that file behind, and git
//! then refuses every later commit. [`EtcRepo::clear_stale_locks`] removes such a file
//! when no process has it open (the caller holds the host's run lock, so no other
//! placard run is at work).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use git2::{IndexAddOption, Repository, Signature, Status, StatusOptions, StatusShow};

use super::atomic::{self, Attributes};
use super::command::{self, deadline};
use super::etc_scan;

/// What the roles said of the files they wrote: with a secret in them, or without one.
/// Kept in the agent's state folder, because an admin may edit /etc/.gitignore: a
/// secret-bearing file stays out of history whatever that file says, and a file a role
/// rendered from the site without a secret (sudoers.d/placard-admins, 0440) may be
/// recorded though it is private, since its content is in the site's repository anyway.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Declared {
    pub secret: BTreeSet<PathBuf>,
    pub public: BTreeSet<PathBuf>,
}

impl Declared {
    const SECRET_FILE: &'static str = "sensitive-paths.json";
    const PUBLIC_FILE: &'static str = "public-paths.json";

    /// Reads both lists from `state`; a list that cannot be read stops the run.
    pub fn load(state: &Path) -> Result<Declared> {
        Ok(Declared {
            secret: read_list(&state.join(Self::SECRET_FILE))?,
            public: read_list(&state.join(Self::PUBLIC_FILE))?,
        })
    }

    /// Records what a role said of `path`, in memory and, when it is news, in `state`.
    pub fn declare(&mut self, path: &Path, secret: bool, state: &Path) -> Result<()> {
        let (mine, other, file) = if secret {
            (&mut self.secret, &mut self.public, Self::SECRET_FILE)
        } else {
            (&mut self.public, &mut self.secret, Self::PUBLIC_FILE)
        };
        if !mine.insert(path.to_path_buf()) {
            return Ok(());
        }
        write_list(&state.join(file), mine)?;
        // A file that now holds no secret may still have held one: it stays secret
        // until the admin says otherwise. A file that now holds a secret stops being public.
        if secret && other.remove(path) {
            write_list(&state.join(Self::PUBLIC_FILE), other)?;
        }
        Ok(())
    }
}

fn read_list(path: &Path) -> Result<BTreeSet<PathBuf>> {
    Ok(
        atomic::read_json(path, "the list of files kept out of /etc's git or let in")?
            .unwrap_or_default(),
    )
}

fn write_list(path: &Path, list: &BTreeSet<PathBuf>) -> Result<()> {
    if let Some(folder) = path.parent() {
        fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    atomic::write_atomic(
        path,
        &serde_json::to_vec_pretty(list)?,
        Attributes::mode(0o600),
        None,
    )
}

pub const BEGIN: &str = "# begin section managed by placard";
pub const END: &str = "# end section managed by placard";

/// Known secret files under /etc (relative paths; `*` stays within a path segment, as
/// in the distro tables), whatever their mode, and whose they are. /etc's .gitignore
/// gets each of them anchored at /etc (`/PATTERN`).
pub const SECRET_PATTERNS: &[(&str, &str)] = &[
    ("shadow", "the account database's password hashes"),
    ("shadow-", "the account database's backup"),
    ("gshadow", "the group password hashes"),
    ("gshadow-", "the group database's backup"),
    ("ssh/ssh_host_*_key", "an SSH host private key"),
    ("ssl/private/*", "a TLS private key"),
    ("*.key", "a private key"),
    ("**/*.key", "a private key"),
    ("postsrsd.secret", "postsrsd's SRS signing secret"),
    ("*.secret", "a shared secret"),
    ("**/*.secret", "a shared secret"),
    ("ppp/chap-secrets", "PPP passwords"),
    ("ppp/pap-secrets", "PPP passwords"),
    ("postfix/sasl_passwd", "Postfix's relay passwords"),
    ("postfix/sasl_passwd.db", "Postfix's relay passwords"),
    ("sasldb2", "Cyrus SASL's password database"),
    ("nut/upsd.users", "NUT's users and passwords"),
    (
        "icecast2/icecast.xml",
        "Icecast's admin, source and relay passwords",
    ),
    ("letsencrypt/archive/**", "certbot's keys and certificates"),
    ("letsencrypt/keys/**", "certbot's private keys"),
    ("letsencrypt/accounts/**", "certbot's ACME account keys"),
    ("dkimkeys/*.private", "OpenDKIM's signing keys"),
    ("opendkim/keys/**/*.private", "OpenDKIM's signing keys"),
    ("wireguard/*.conf", "a WireGuard private key"),
    ("wireguard/*.key", "a WireGuard private key"),
];

/// Always kept out of history besides those: placard's own staged files.
const ALWAYS_IGNORED: &[&str] = &[".placard-*", "/ssl/private/"];

pub struct EtcRepo {
    repo: Repository,
    root: PathBuf,
    /// The private files the last scan found, for [`EtcRepo::update_ignores_unchanged`].
    last_scan: std::cell::RefCell<Option<Vec<String>>>,
    /// What git's status said during the last scan, while .gitignore has not changed
    /// since: for [`EtcRepo::changes_since_scan`].
    scan_changes: std::cell::RefCell<Option<Vec<String>>>,
    /// Whether .gitignore was rewritten since this repository was opened.
    ignores_written: std::cell::Cell<bool>,
    /// Where the last quiet scan is recorded, when the caller holds the run's lock
    /// and keeps one (see [`super::etc_scan`]).
    scan_record: Option<PathBuf>,
    /// When the repository was opened: libgit2 read git's configuration then.
    opened: std::time::SystemTime,
}

impl EtcRepo {
    /// Opens the repository at `root`, if there is one.
    pub fn open(root: &Path) -> Result<Option<EtcRepo>> {
        if !root.join(".git").exists() {
            return Ok(None);
        }
        let opened = std::time::SystemTime::now();
        let repo = Repository::open(root).with_context(|| {
            format!("{}/.git exists but is not a git repository", root.display())
        })?;
        Ok(Some(EtcRepo {
            repo,
            root: root.to_path_buf(),
            last_scan: Default::default(),
            scan_changes: Default::default(),
            ignores_written: Default::default(),
            scan_record: None,
            opened,
        }))
    }

    /// Opens the repository, creating it (and saying so) when there is none.
    pub fn open_or_init(root: &Path) -> Result<(EtcRepo, bool)> {
        if let Some(repo) = EtcRepo::open(root)? {
            return Ok((repo, false));
        }
        let opened = std::time::SystemTime::now();
        let repo = Repository::init(root)
            .with_context(|| format!("cannot create a git repository in {}", root.display()))?;
        fs::set_permissions(root.join(".git"), fs::Permissions::from_mode(0o700))?;
        Ok((
            EtcRepo {
                repo,
                root: root.to_path_buf(),
                last_scan: Default::default(),
                scan_changes: Default::default(),
                ignores_written: Default::default(),
                scan_record: None,
                opened,
            },
            true,
        ))
    }

    /// For a caller that holds the run's lock: keeps a record of each scan that finds
    /// nothing to commit in `file`, and lets the next scan trust it while nothing it
    /// recorded changed (see [`super::etc_scan`]); and fills the index's cache of
    /// trees when a status finds it empty (see [`EtcRepo::index_holds_head`]).
    pub fn record_scans_in(&mut self, file: PathBuf) {
        self.scan_record = Some(file);
    }

    /// Writes our .gitignore section with the declared secrets and every private file
    /// added to what it already lists; returns the private files it added, relative to
    /// /etc, for the run to name. A file declared public leaves the section, unless it
    /// is also declared secret.
    pub fn update_ignores(&self, declared: &Declared) -> Result<Vec<String>> {
        let scan = self.private_files()?;
        self.write_ignores(declared, scan)
    }

    /// [`EtcRepo::update_ignores`] for a run that changed nothing since this repository's
    /// last scan (no task changed, none failed, no handler ran): the private files that
    /// scan found are reused instead of walking /etc again. Anything else rescans.
    pub fn update_ignores_unchanged(&self, declared: &Declared) -> Result<Vec<String>> {
        let scan = match self.last_scan.borrow_mut().take() {
            Some(scan) => scan,
            None => self.private_files()?,
        };
        self.write_ignores(declared, scan)
    }

    fn write_ignores(&self, declared: &Declared, scan: Vec<String>) -> Result<Vec<String>> {
        *self.last_scan.borrow_mut() = Some(scan.clone());
        let path = self.root.join(".gitignore");
        let current = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            // Writing our section over a file we could not read would lose the rest.
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let (before, ours, after) = split_section(&current);
        let mut entries: BTreeSet<String> = ours.into_iter().collect();
        entries.extend(ALWAYS_IGNORED.iter().map(|s| s.to_string()));
        entries.extend(
            SECRET_PATTERNS
                .iter()
                .map(|(pattern, _)| format!("/{pattern}")),
        );
        let relative = |file: &PathBuf| {
            file.strip_prefix(&self.root)
                .ok()
                .map(|r| format!("/{}", r.display()))
        };
        let secret: BTreeSet<String> = declared.secret.iter().filter_map(relative).collect();
        let public: BTreeSet<String> = declared
            .public
            .iter()
            .filter_map(relative)
            .filter(|p| !secret.contains(p))
            .collect();
        entries.retain(|entry| !public.contains(entry));
        entries.extend(secret);
        let mut private = Vec::new();
        // Files the patterns already keep out are not news, whatever their mode.
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::default()
        };
        let named = |file: &str| {
            SECRET_PATTERNS.iter().any(|(pattern, _)| {
                glob::Pattern::new(pattern).is_ok_and(|p| p.matches_with(file, options))
            })
        };
        for file in scan.into_iter().filter(|f| !named(f)) {
            let entry = format!("/{file}");
            if !public.contains(&entry) && entries.insert(entry) {
                private.push(file);
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
            // .gitignore changes, and so does what git's status says.
            self.scan_changes.borrow_mut().take();
            self.ignores_written.set(true);
            let attributes = Attributes::of_existing(&path, Attributes::mode(0o644));
            atomic::write_atomic(&path, text.as_bytes(), attributes, None)?;
        }
        Ok(private)
    }

    /// Files git would record (tracked, or new and not ignored) that others cannot
    /// read, relative to /etc. A file that cannot be examined counts as private.
    /// etckeeper's own metadata (0600, owners and modes, no secret) is etckeeper's to
    /// commit: its pre-commit hook adds it, and would fail were it ignored.
    /// With a record of the last quiet scan that nothing voided, that scan's answer.
    fn private_files(&self) -> Result<Vec<String>> {
        if let Some(record) = &self.scan_record {
            if let Some(private) = etc_scan::unchanged(record, &self.root, self.repo.path()) {
                *self.scan_changes.borrow_mut() = Some(Vec::new());
                return Ok(private);
            }
        }
        let began = std::time::SystemTime::now();
        let index = self.repo.index().context("cannot read /etc's git index")?;
        let tracked: Vec<String> = index
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into_owned())
            .collect();
        let mut candidates: BTreeSet<String> = tracked.iter().cloned().collect();
        let changes = self.changes()?;
        candidates.extend(changes.iter().cloned());
        let quiet = changes.is_empty();
        *self.scan_changes.borrow_mut() = Some(changes);
        candidates.remove(".etckeeper");
        candidates.remove(".gitignore");
        let mut private = Vec::new();
        for relative in candidates {
            let path = self.root.join(&relative);
            let readable = match fs::symlink_metadata(&path) {
                Ok(metadata) if metadata.file_type().is_symlink() => true,
                Ok(metadata) => metadata.mode() & 0o004 != 0,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(_) => false,
            };
            if !readable
                && !self
                    .repo
                    .is_path_ignored(Path::new(&relative))
                    .with_context(|| {
                        format!("cannot tell whether /etc/{relative} is kept out of git")
                    })?
            {
                private.push(relative);
            }
        }
        if let Some(record) = &self.scan_record {
            // Only a shortcut for the next run: one that cannot be written is not made,
            // and that run scans. With etckeeper, every run commits (and so rewrites
            // the index): a record would never hold.
            if quiet && !self.uses_etckeeper() {
                let _ = etc_scan::record(
                    record,
                    &self.root,
                    &self.repo,
                    &tracked,
                    &private,
                    began,
                    self.opened,
                );
            } else {
                let _ = fs::remove_file(record);
            }
        }
        Ok(private)
    }

    /// Removes git lock files that a killed run left (no process has them open);
    /// says what it removed. A lock that a live process holds stops the run, naming it.
    pub fn clear_stale_locks(&self) -> Result<Vec<String>> {
        let git = self.repo.path().to_path_buf();
        let mut locks = Vec::new();
        for name in ["index.lock", "HEAD.lock", "config.lock", "packed-refs.lock"] {
            let path = git.join(name);
            if path.exists() {
                locks.push(path);
            }
        }
        find_locks(&git.join("refs"), &mut locks)?;
        if locks.is_empty() {
            return Ok(Vec::new());
        }
        let holders = open_files()?;
        let mut said = Vec::new();
        for lock in locks {
            if let Some(holder) = holders.iter().find(|(path, _)| *path == lock) {
                bail!(
                    "{} is held by process {}, which is still running; wait for it to finish, then run placard again",
                    lock.display(),
                    holder.1
                );
            }
            fs::remove_file(&lock).with_context(|| format!("cannot remove {}", lock.display()))?;
            said.push(format!(
                "removed {}, a git lock left by an interrupted run (no process held it)",
                lock.display()
            ));
        }
        Ok(said)
    }

    /// Paths (relative to /etc) that changed since the last commit.
    pub fn changes(&self) -> Result<Vec<String>> {
        let mut options = StatusOptions::new();
        options
            .include_untracked(true)
            .recurse_untracked_dirs(true)
            .include_ignored(false);
        let staged_nothing = self.index_holds_head()?;
        if staged_nothing {
            // The index is HEAD's tree: only the files can differ from it.
            options.show(StatusShow::Workdir);
        }
        let statuses = self.repo.statuses(Some(&mut options))?;
        let staged = Status::INDEX_NEW
            | Status::INDEX_MODIFIED
            | Status::INDEX_DELETED
            | Status::INDEX_RENAMED
            | Status::INDEX_TYPECHANGE;
        if self.scan_record.is_some()
            && !staged_nothing
            && !statuses.iter().any(|s| s.status().intersects(staged))
        {
            self.fill_tree_cache();
        }
        Ok(statuses
            .iter()
            .filter_map(|s| s.path().map(str::to_string))
            .collect())
    }

    /// Whether the index holds exactly HEAD's tree, as far as the index's own cache of
    /// trees (git's TREE extension) tells without reading an object: its root is the
    /// tree the index would write. False when it cannot tell (an index changed since
    /// its trees were last written, an unborn HEAD): git's status then compares the
    /// index with HEAD's trees, reading each of them (about 2.5 ms of a no-op run's
    /// 20 on a Debian /etc; docs/benchmarks.md, fan-out).
    fn index_holds_head(&self) -> Result<bool> {
        let head_tree = match self.repo.head() {
            Ok(head) => head.peel_to_tree()?.id(),
            Err(e) if e.code() == git2::ErrorCode::UnbornBranch => return Ok(false),
            Err(e) => return Err(e).context("cannot read /etc's git HEAD"),
        };
        let mut index = self.repo.index().context("cannot read /etc's git index")?;
        index.read(false).context("cannot read /etc's git index")?;
        // Written to an object database of no storage at all, only a complete cache
        // gives an answer: computing a tree would need objects, and fails.
        let nowhere = Repository::from_odb(git2::Odb::new()?)?;
        Ok(index
            .write_tree_to(&nowhere)
            .is_ok_and(|tree| tree == head_tree))
    }

    /// Fills the index's cache of trees, once a status found nothing staged, so that
    /// [`EtcRepo::index_holds_head`] can tell from then on (an index written by an
    /// older placard, or by git after `git add`, has none). The trees exist already:
    /// nothing new is stored. Only under the run's lock (it writes the index), and only
    /// a cache: a failure (git busy with the index) is left for a later run.
    fn fill_tree_cache(&self) {
        let _ = self.repo.index().and_then(|mut index| {
            // The index as it is on disk now, not as this process first read it.
            index.read(false)?;
            index.write_tree()?;
            index.write()
        });
    }

    /// Whether placard's section of .gitignore was rewritten since the repository was
    /// opened (a rewrite is itself a change to commit).
    pub fn ignores_written(&self) -> bool {
        self.ignores_written.get()
    }

    /// Whether commits go through etckeeper, which records owners and modes (changes
    /// that [`EtcRepo::changes`] does not see) in /etc/.etckeeper first.
    pub fn uses_etckeeper(&self) -> bool {
        self.root.join(".etckeeper").exists() && Path::new("/usr/bin/etckeeper").exists()
    }

    /// [`EtcRepo::changes`] right after [`EtcRepo::update_ignores`]: the status its scan
    /// read, when it left .gitignore as it was (the start of a run, where nothing else
    /// ran in between); else a new one.
    pub fn changes_since_scan(&self) -> Result<Vec<String>> {
        match self.scan_changes.borrow_mut().take() {
            Some(changes) => Ok(changes),
            None => self.changes(),
        }
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
        if self.uses_etckeeper() {
            let root = self.root.to_string_lossy();
            // etckeeper records owners and modes in /etc/.etckeeper before each commit.
            command::run_ok(&["etckeeper", "pre-commit", "-d", &root], deadline::SYSTEM)
                .context("etckeeper pre-commit failed")?;
        }
        let (tree_id, parent) = self.stage_all().with_context(|| {
            format!(
                "cannot record /etc's changes in git; if no git or placard process runs on this host, \
                 the next placard run removes a stale lock in {} by itself",
                self.repo.path().display()
            )
        })?;
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

    /// Puts every change into the index and writes its tree; the tree and HEAD's commit.
    fn stage_all(&self) -> Result<(git2::Oid, Option<git2::Commit<'_>>)> {
        let mut index = self.repo.index()?;
        // Files that became ignored leave the index, so they leave future commits. A
        // path git cannot answer for stops the commit: it might hold a secret.
        let tracked: Vec<PathBuf> = index
            .iter()
            .map(|e| PathBuf::from(String::from_utf8_lossy(&e.path).into_owned()))
            .collect();
        for path in tracked {
            let ignored = self.repo.is_path_ignored(&path).with_context(|| {
                format!(
                    "cannot tell whether /etc/{} is kept out of git",
                    path.display()
                )
            })?;
            if ignored {
                index.remove_path(&path)?;
            }
        }
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"], None)?;
        // The trees first: the index then keeps them as its cache, which tells the next
        // run's status that nothing is staged without reading HEAD's trees.
        let tree_id = index.write_tree()?;
        index.write()?;
        let parent = match self.repo.head() {
            Ok(head) => Some(head.peel_to_commit()?),
            Err(e) if e.code() == git2::ErrorCode::UnbornBranch => None,
            Err(e) => return Err(e.into()),
        };
        Ok((tree_id, parent))
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

/// Every `*.lock` file under `folder`.
fn find_locks(folder: &Path, locks: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", folder.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", folder.display()))?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            find_locks(&path, locks)?;
        } else if path.extension().is_some_and(|e| e == "lock") {
            locks.push(path);
        }
    }
    Ok(())
}

/// Every file some process has open, with the process (`pid (name)`), from /proc.
fn open_files() -> Result<Vec<(PathBuf, String)>> {
    let mut open = Vec::new();
    for entry in fs::read_dir("/proc").context("cannot read /proc")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // A process may end while we look; its files are then no longer open.
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let command = fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        for fd in fds.flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                open.push((target, format!("{pid} ({})", command.trim())));
            }
        }
    }
    Ok(open)
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
    fn what_is_staged_and_not_committed_is_a_change_whatever_the_index_caches() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("ssh")).unwrap();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("ssh/sshd_config"), "Port 22\n").unwrap();
        let records = tempfile::tempdir().unwrap();
        let open = || {
            let mut repo = EtcRepo::open(root).unwrap().unwrap();
            repo.record_scans_in(records.path().join("etc-scan"));
            repo
        };
        let (repo, _) = EtcRepo::open_or_init(root).unwrap();
        repo.commit_all("first", "").unwrap().expect("a commit");
        // A commit leaves the index with its trees cached: status reads no tree of HEAD.
        let repo = open();
        assert!(repo.index_holds_head().unwrap());
        assert!(repo.changes().unwrap().is_empty());

        // A run killed between staging and committing (or an admin's `git add`): the
        // file matches the index, the index no longer matches HEAD.
        fs::write(root.join("ssh/sshd_config"), "Port 2222\n").unwrap();
        let mut index = repo.repo.index().unwrap();
        index.add_path(Path::new("ssh/sshd_config")).unwrap();
        index.write().unwrap();
        let repo = open();
        assert!(!repo.index_holds_head().unwrap());
        assert_eq!(repo.changes().unwrap(), ["ssh/sshd_config"]);
        repo.commit_all("second", "").unwrap().expect("a commit");
        assert!(repo.changes().unwrap().is_empty());

        // An index written without its trees (as placard wrote it before): git's full
        // status answers, and the cache is filled for the next run.
        let mut index = repo.repo.index().unwrap();
        index.add_path(Path::new("hostname")).unwrap();
        index.write().unwrap();
        let repo = open();
        assert!(!repo.index_holds_head().unwrap());
        assert!(repo.changes().unwrap().is_empty());
        let repo = open();
        assert!(repo.index_holds_head().unwrap());
        fs::write(root.join("hostname"), "other\n").unwrap();
        fs::write(root.join("new.conf"), "x\n").unwrap();
        let mut changes = repo.changes().unwrap();
        changes.sort();
        assert_eq!(changes, ["hostname", "new.conf"]);
    }

    #[test]
    fn a_quiet_scan_is_recorded_and_the_next_scan_sees_what_changed_since() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        fs::create_dir_all(&root).unwrap();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("motd"), "hello\n").unwrap();
        let (repo, _) = EtcRepo::open_or_init(&root).unwrap();
        repo.update_ignores(&Declared::default()).unwrap();
        repo.commit_all("first", "").unwrap().expect("a commit");
        // Only what settled before a scan is recorded.
        std::thread::sleep(etc_scan::SETTLED + std::time::Duration::from_millis(200));
        let record = dir.path().join("etc-scan");
        let open = || {
            let mut repo = EtcRepo::open(&root).unwrap().unwrap();
            repo.record_scans_in(record.clone());
            repo
        };
        let quiet_scan = || {
            let repo = open();
            assert!(repo
                .update_ignores(&Declared::default())
                .unwrap()
                .is_empty());
            assert!(repo.changes_since_scan().unwrap().is_empty());
        };
        quiet_scan();
        assert!(record.exists(), "a quiet scan is recorded");
        let recorded = fs::read_to_string(&record).unwrap();
        quiet_scan();
        assert_eq!(
            fs::read_to_string(&record).unwrap(),
            recorded,
            "trusted, not rewritten"
        );

        fs::set_permissions(root.join("motd"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(root.join("hostname"), "other\n").unwrap();
        let repo = open();
        assert_eq!(repo.update_ignores(&Declared::default()).unwrap(), ["motd"]);
        let mut changes = repo.changes_since_scan().unwrap();
        changes.sort();
        assert_eq!(changes, [".gitignore", "hostname"]);
        assert!(
            !record.exists(),
            "a scan that found changes leaves no record"
        );
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
        repo.update_ignores(&Declared {
            secret: [root.join("upsd.users")].into_iter().collect(),
            public: BTreeSet::new(),
        })
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

    #[test]
    fn a_rewrite_of_gitignore_is_known_so_that_a_quiet_run_still_commits_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("upsd.users"), "password = hunter2\n").unwrap();
        let (repo, _) = EtcRepo::open_or_init(root).unwrap();
        let declared = Declared {
            secret: [root.join("upsd.users")].into_iter().collect(),
            public: BTreeSet::new(),
        };
        assert!(!repo.ignores_written());
        repo.update_ignores(&declared).unwrap();
        assert!(repo.ignores_written(), "the first section was written");
        repo.commit_all("first", "").unwrap().expect("a commit");
        // The next run: the same declarations leave .gitignore as it is.
        let repo = EtcRepo::open(root).unwrap().unwrap();
        repo.update_ignores(&declared).unwrap();
        repo.update_ignores_unchanged(&declared).unwrap();
        assert!(!repo.ignores_written());
        assert!(repo.changes().unwrap().is_empty());
        // A secret declared during the run rewrites it: a change to commit.
        fs::write(root.join("shadow.extra"), "x\n").unwrap();
        repo.commit_all("second", "").unwrap().expect("a commit");
        let more = Declared {
            secret: [root.join("upsd.users"), root.join("shadow.extra")]
                .into_iter()
                .collect(),
            public: BTreeSet::new(),
        };
        repo.update_ignores_unchanged(&more).unwrap();
        assert!(repo.ignores_written());
        assert!(repo.changes().unwrap().contains(&".gitignore".to_string()));
    }

    #[test]
    fn private_files_stay_out_of_history_unless_the_admin_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(
            root.join("upsmon.conf"),
            "MONITOR ups@localhost 1 upsmon pass primary\n",
        )
        .unwrap();
        fs::set_permissions(root.join("upsmon.conf"), fs::Permissions::from_mode(0o600)).unwrap();
        // A world-readable file in a closed folder, like /etc/dkimkeys/NAME.public.
        fs::create_dir_all(root.join("dkimkeys")).unwrap();
        fs::set_permissions(root.join("dkimkeys"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::write(root.join("dkimkeys/mail.public"), "p=MIIB\n").unwrap();
        let (repo, _) = EtcRepo::open_or_init(root).unwrap();
        let private = repo.update_ignores(&Declared::default()).unwrap();
        assert_eq!(private, vec!["upsmon.conf"]);
        repo.commit_all("first", "").unwrap().expect("a commit");
        let tree = repo.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree.get_name("upsmon.conf").is_none());
        assert!(tree.get_path(Path::new("dkimkeys/mail.public")).is_ok());
        assert!(tree.get_name("hostname").is_some());
        assert!(
            repo.update_ignores(&Declared::default())
                .unwrap()
                .is_empty(),
            "named once"
        );

        // The admin's `!` line after our section wins, as git decides.
        let mut ignore = fs::read_to_string(root.join(".gitignore")).unwrap();
        ignore.push_str("!/upsmon.conf\n");
        fs::write(root.join(".gitignore"), ignore).unwrap();
        assert!(repo
            .update_ignores(&Declared::default())
            .unwrap()
            .is_empty());
        repo.commit_all("second", "").unwrap().expect("a commit");
        let tree = repo.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree.get_name("upsmon.conf").is_some());
    }

    #[test]
    fn a_stale_git_lock_is_removed_and_a_held_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("hostname"), "box\n").unwrap();
        let (repo, _) = EtcRepo::open_or_init(root).unwrap();
        repo.commit_all("first", "").unwrap();
        fs::write(root.join("hostname"), "other\n").unwrap();
        let lock = root.join(".git/index.lock");
        fs::write(&lock, "").unwrap();
        fs::create_dir_all(root.join(".git/refs/heads")).unwrap();
        fs::write(root.join(".git/refs/heads/master.lock"), "").unwrap();
        let error = format!("{:#}", repo.commit_all("blocked", "").unwrap_err());
        assert!(error.contains("removes a stale lock"), "{error}");

        // Held by a live process (this one): named, not removed.
        let held = fs::File::open(&lock).unwrap();
        let error = format!("{:#}", repo.clear_stale_locks().unwrap_err());
        assert!(error.contains("is held by process"), "{error}");
        assert!(lock.exists());
        drop(held);

        let said = repo.clear_stale_locks().unwrap();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(!lock.exists());
        assert!(repo.commit_all("second", "").unwrap().is_some());
    }

    #[test]
    fn a_private_file_a_role_rendered_without_a_secret_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        let state = dir.path().join("state");
        fs::create_dir_all(root.join("sudoers.d")).unwrap();
        let sudoers = root.join("sudoers.d/placard-admins");
        fs::write(&sudoers, "%placard-admins ALL=(ALL:ALL) ALL\n").unwrap();
        fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440)).unwrap();
        let (repo, _) = EtcRepo::open_or_init(&root).unwrap();
        // Found before any role said anything: private, so kept out.
        assert_eq!(
            repo.update_ignores(&Declared::load(&state).unwrap())
                .unwrap(),
            vec!["sudoers.d/placard-admins"]
        );
        let mut declared = Declared::load(&state).unwrap();
        declared.declare(&sudoers, false, &state).unwrap();
        assert_eq!(
            Declared::load(&state).unwrap(),
            declared,
            "kept in the state"
        );
        assert!(repo.update_ignores(&declared).unwrap().is_empty());
        repo.commit_all("first", "").unwrap().expect("a commit");
        let tree = repo.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree.get_path(Path::new("sudoers.d/placard-admins")).is_ok());
        // The same file with a secret in it leaves history's next commits.
        declared.declare(&sudoers, true, &state).unwrap();
        let loaded = Declared::load(&state).unwrap();
        assert!(loaded.secret.contains(&sudoers) && !loaded.public.contains(&sudoers));
        repo.update_ignores(&loaded).unwrap();
        repo.commit_all("second", "").unwrap().expect("a commit");
        let tree = repo.repo.head().unwrap().peel_to_tree().unwrap();
        assert!(tree
            .get_path(Path::new("sudoers.d/placard-admins"))
            .is_err());
    }
}
