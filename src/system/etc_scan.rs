//! The record of the last scan of /etc that found nothing to commit, so that the next
//! run can tell that nothing changed since by looking at what it recorded, instead of
//! git's status reading every folder and file of /etc and every tracked file being
//! examined for its mode (about 9 ms of a no-op run's 17 on Debian's /etc;
//! docs/benchmarks.md, fan-out).
//!
//! Why a look suffices. The scan said: HEAD, the index and the files agree, no file is
//! new, and these tracked files are private. What could make it say otherwise later
//! changes the ctime (or the inode, or the existence) of something recorded:
//! - a tracked file written, replaced, removed, chmod-ed or chown-ed: the file's own
//!   ctime (which no program can set: touch and utimes change it too);
//! - a file or folder added, removed or renamed anywhere under /etc: its folder's
//!   ctime (every folder is recorded, ignored ones too);
//! - what git ignores or how it reads the tree (a .gitignore is a file of /etc; the
//!   index, HEAD, the branch, .git/info/exclude, git's configuration files): recorded as
//!   well, present or absent.
//!
//! A ctime is only as fine as the kernel's clock tick, so a file changed in the same
//! tick as the scan saw it could keep its ctime: a scan that sees anything changed
//! less than [`SETTLED`] before it began records nothing, and the next run scans again.
//! Anything unexpected (a record from another version, an unreadable entry, a path
//! this format cannot hold, a git configuration naming other ignore files) also means
//! no record, or a full scan: never "unchanged" by default.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

use super::atomic::{self, Attributes};

/// How long before a scan a change must be for the record to be trusted to show it.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The record's first line: its format and the placard that wrote it (what a scan
/// finds may change between versions).
fn header() -> String {
    format!("placard etc scan 1 {}", env!("CARGO_PKG_VERSION"))
}

/// What a path looked like: absent, or its inode, ctime and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Look {
    Absent,
    Present {
        ino: u64,
        ctime: i64,
        ctime_nsec: i64,
        size: u64,
    },
}

impl Look {
    /// The path as it is now (not following a symlink); an error for anything but
    /// "not there".
    fn of(path: &Path) -> std::io::Result<Look> {
        match fs::symlink_metadata(path) {
            Ok(metadata) => Ok(Look::Present {
                ino: metadata.ino(),
                ctime: metadata.ctime(),
                ctime_nsec: metadata.ctime_nsec(),
                size: metadata.size(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Look::Absent),
            Err(e) => Err(e),
        }
    }

    /// Whether it changed at or after `since` (seconds and nanoseconds since the epoch).
    fn changed_since(&self, since: (i64, i64)) -> bool {
        match *self {
            Look::Absent => false,
            Look::Present {
                ctime, ctime_nsec, ..
            } => (ctime, ctime_nsec) >= since,
        }
    }
}

/// The files outside the worktree that decide what git's status says, for the
/// repository at `git_dir`: present or absent, each is recorded. None when git is told
/// to read ignore or attribute files from elsewhere (then no record is made).
fn git_files(git_dir: &Path, repo: &git2::Repository) -> Option<Vec<PathBuf>> {
    let config = repo.config().ok()?;
    for key in ["core.excludesfile", "core.attributesfile"] {
        if config.get_entry(key).is_ok() {
            return None;
        }
    }
    let mut files: Vec<PathBuf> = [
        "index",
        "HEAD",
        "packed-refs",
        "config",
        "info/exclude",
        "info/attributes",
    ]
    .iter()
    .map(|name| git_dir.join(name))
    .collect();
    let head = fs::read_to_string(git_dir.join("HEAD")).ok()?;
    if let Some(branch) = head.trim_end().strip_prefix("ref: ") {
        files.push(git_dir.join(branch));
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|home| home.join(".config")));
    if let Some(home) = home {
        files.push(home.join(".gitconfig"));
    }
    if let Some(xdg) = xdg {
        for name in ["config", "ignore", "attributes"] {
            files.push(xdg.join("git").join(name));
        }
    }
    files.push(PathBuf::from("/etc/gitconfig"));
    Some(files)
}

/// Every folder under `root`, but git's own, relative to it.
fn folders(root: &Path) -> Result<Vec<String>> {
    let mut found = vec![String::new()];
    let mut next = 0;
    while next < found.len() {
        let relative = found[next].clone();
        next += 1;
        let folder = root.join(&relative);
        for entry in
            fs::read_dir(&folder).with_context(|| format!("cannot read {}", folder.display()))?
        {
            let entry = entry.with_context(|| format!("cannot read {}", folder.display()))?;
            let is_dir = entry
                .file_type()
                .with_context(|| format!("cannot read {}", entry.path().display()))?
                .is_dir();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                anyhow::bail!("{} has a name that is not UTF-8", entry.path().display());
            };
            if is_dir && !(relative.is_empty() && name == ".git") {
                found.push(if relative.is_empty() {
                    name
                } else {
                    format!("{relative}/{name}")
                });
            }
        }
    }
    Ok(found)
}

/// Writes the record of a scan of `root` that began at `began`, found nothing to
/// commit, and found `private` among the `tracked` files. Records nothing (and removes
/// an older record) when anything recorded changed less than [`SETTLED`] before the
/// scan began, or cannot be recorded.
pub fn record(
    file: &Path,
    root: &Path,
    repo: &git2::Repository,
    tracked: &[String],
    private: &[String],
    began: SystemTime,
) -> Result<()> {
    let _ = fs::remove_file(file);
    let Some(since) = began
        .checked_sub(SETTLED)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|t| (t.as_secs() as i64, i64::from(t.subsec_nanos())))
    else {
        return Ok(());
    };
    let Some(git) = git_files(repo.path(), repo) else {
        return Ok(());
    };
    let mut text = Vec::new();
    writeln!(text, "{}", header())?;
    for path in private {
        if path.contains('\n') {
            return Ok(());
        }
        writeln!(text, "private {path}")?;
    }
    // git's own files first: after a commit, the index is what differs, and a check
    // stops at the first difference.
    for path in git {
        let look = Look::of(&path)?;
        let Some(name) = path.to_str().filter(|name| !name.contains('\n')) else {
            return Ok(());
        };
        if look.changed_since(since) {
            return Ok(());
        }
        writeln!(text, "g {} {name}", encode(look))?;
    }
    let folders = folders(root)?;
    let entries = folders
        .iter()
        .map(|f| ('d', root.join(f), f.as_str()))
        .chain(tracked.iter().map(|f| ('f', root.join(f), f.as_str())));
    for (kind, path, name) in entries {
        let look = Look::of(&path)?;
        if name.contains('\n') || look == Look::Absent || look.changed_since(since) {
            return Ok(());
        }
        writeln!(text, "{kind} {} {name}", encode(look))?;
    }
    atomic::replace_unsynced(file, &text, Attributes::mode(0o600))
}

fn encode(look: Look) -> String {
    match look {
        Look::Absent => "absent".to_string(),
        Look::Present {
            ino,
            ctime,
            ctime_nsec,
            size,
        } => format!("{ino}:{ctime}:{ctime_nsec}:{size}"),
    }
}

fn decode(text: &str) -> Option<Look> {
    if text == "absent" {
        return Some(Look::Absent);
    }
    let mut parts = text.split(':');
    let look = Look::Present {
        ino: parts.next()?.parse().ok()?,
        ctime: parts.next()?.parse().ok()?,
        ctime_nsec: parts.next()?.parse().ok()?,
        size: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(look)
}

/// The private files of the recorded scan, when nothing it recorded changed since:
/// git's status would find nothing to commit, and the same private files. None when
/// anything differs, or there is no record this placard can read.
pub fn unchanged(file: &Path, root: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    if lines.next()? != header() {
        return None;
    }
    let mut private = Vec::new();
    for line in lines {
        let (kind, rest) = line.split_once(' ')?;
        if kind == "private" {
            private.push(rest.to_string());
            continue;
        }
        let (look, name) = rest.split_once(' ')?;
        let path = match kind {
            "d" | "f" => root.join(name),
            "g" => PathBuf::from(name),
            _ => return None,
        };
        if Look::of(&path).ok()? != decode(look)? {
            return None;
        }
    }
    Some(private)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// A committed /etc with a subfolder, a symlink and a private file; the record of
    /// a scan made as if it began `SETTLED` and more after all that.
    fn recorded() -> (tempfile::TempDir, PathBuf, git2::Repository) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        fs::create_dir_all(root.join("ssh/sshd_config.d")).unwrap();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("ssh/sshd_config"), "Port 22\n").unwrap();
        fs::write(root.join("sudoers"), "root ALL=(ALL) ALL\n").unwrap();
        fs::set_permissions(root.join("sudoers"), fs::Permissions::from_mode(0o440)).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", root.join("localtime")).unwrap();
        let repo = git2::Repository::init(&root).unwrap();
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let signature = git2::Signature::now("t", "t@t").unwrap();
        repo.commit(Some("HEAD"), &signature, &signature, "first", &tree, &[])
            .unwrap();
        drop(tree);
        let tracked: Vec<String> = repo
            .index()
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.path).unwrap())
            .collect();
        let file = dir.path().join("etc-scan");
        let later = SystemTime::now() + SETTLED + Duration::from_secs(1);
        record(&file, &root, &repo, &tracked, &["sudoers".into()], later).unwrap();
        (dir, root, repo)
    }

    #[test]
    fn a_record_holds_while_nothing_changes() {
        let (dir, root, _repo) = recorded();
        let file = dir.path().join("etc-scan");
        assert_eq!(unchanged(&file, &root), Some(vec!["sudoers".to_string()]));
        // Reading does not change what is read.
        fs::read_to_string(root.join("hostname")).unwrap();
        assert_eq!(unchanged(&file, &root), Some(vec!["sudoers".to_string()]));
    }

    #[test]
    fn every_change_git_or_the_private_check_could_see_voids_the_record() {
        type Change = fn(&Path, &git2::Repository);
        let changes: Vec<(&str, Change)> = vec![
            ("a tracked file rewritten, same size", |root, _| {
                fs::write(root.join("hostname"), "xyz\n").unwrap()
            }),
            ("a tracked file made private", |root, _| {
                fs::set_permissions(root.join("hostname"), fs::Permissions::from_mode(0o600))
                    .unwrap()
            }),
            ("a tracked file removed", |root, _| {
                fs::remove_file(root.join("ssh/sshd_config")).unwrap()
            }),
            ("a new file deep down", |root, _| {
                fs::write(root.join("ssh/sshd_config.d/new.conf"), "x\n").unwrap()
            }),
            ("a new empty folder", |root, _| {
                fs::create_dir(root.join("ssh/sshd_config.d/more")).unwrap()
            }),
            ("a symlink pointed elsewhere", |root, _| {
                fs::remove_file(root.join("localtime")).unwrap();
                std::os::unix::fs::symlink("/usr/share/zoneinfo/CET", root.join("localtime"))
                    .unwrap();
            }),
            ("a file staged", |_, repo| {
                let mut index = repo.index().unwrap();
                index.add_path(Path::new("hostname")).unwrap();
                index.write().unwrap();
            }),
            ("git told to ignore more", |root, _| {
                fs::write(root.join(".git/info/exclude"), "*.conf\n").unwrap()
            }),
        ];
        for (what, change) in changes {
            let (dir, root, repo) = recorded();
            let file = dir.path().join("etc-scan");
            assert!(unchanged(&file, &root).is_some(), "{what}: recorded");
            // Past the clock tick of the files' creation, as every change after a scan
            // began is (the record is only made of what settled before).
            std::thread::sleep(Duration::from_millis(50));
            change(&root, &repo);
            assert_eq!(unchanged(&file, &root), None, "{what}");
        }
    }

    #[test]
    fn a_scan_that_may_have_missed_a_change_records_nothing() {
        let (dir, root, repo) = recorded();
        let file = dir.path().join("etc-scan");
        fs::write(root.join("hostname"), "new\n").unwrap();
        // Changed just before the scan began: its ctime could hide a second change.
        record(
            &file,
            &root,
            &repo,
            &["hostname".into()],
            &[],
            SystemTime::now(),
        )
        .unwrap();
        assert!(!file.exists());
        assert_eq!(unchanged(&file, &root), None);
    }

    #[test]
    fn a_record_of_another_format_or_version_is_not_read() {
        let (dir, root, _repo) = recorded();
        let file = dir.path().join("etc-scan");
        let text = fs::read_to_string(&file).unwrap();
        fs::write(
            &file,
            text.replacen("placard etc scan 1", "placard etc scan 0", 1),
        )
        .unwrap();
        assert_eq!(unchanged(&file, &root), None);
        fs::write(&file, text + "f 1:2:3 hostname\n").unwrap();
        assert_eq!(unchanged(&file, &root), None);
    }
}
