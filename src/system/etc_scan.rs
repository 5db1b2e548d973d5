//! The record of the last scan of /etc that found nothing to commit, so that the next
//! run can tell that nothing changed since by looking at what it recorded, instead of
//! git's status reading every folder and file of /etc and every tracked file being
//! examined for its mode (about 7 of the 13 ms of CPU a no-op run of `base` took on
//! Debian 12's /etc; docs/benchmarks.md, fan-out).
//!
//! Why a look suffices. The scan said: HEAD, the index and the files agree, no file is
//! new, and these tracked files are private. What could make it say otherwise later
//! changes the ctime (or the inode, or the existence) of something recorded:
//! - a tracked file written, replaced, removed, chmod-ed or chown-ed: the file's own
//!   ctime (which no program can set: touch and utimes change it too);
//! - a file or folder added, removed or renamed anywhere under /etc: its folder's
//!   ctime (every folder is recorded, ignored ones too);
//! - what git ignores or how it reads the tree: every `.gitignore` and
//!   `.gitattributes` under /etc (tracked or not: git reads an ignored one too), the
//!   index, HEAD, the branch, `.git/info/exclude`, and git's configuration files for
//!   this process's $HOME and $XDG_CONFIG_HOME, each recorded present or absent. A
//!   configuration that names other ignore, attribute or included files is not
//!   recorded at all, and a record made for other git files is not trusted.
//!
//! A ctime is only as fine as the kernel's clock tick, so a file changed in the same
//! tick as the scan saw it could keep its ctime: a scan that sees anything changed
//! less than [`SETTLED`] before it began (or before the repository was opened, when
//! libgit2 read git's configuration) records nothing, and the next run scans again.
//! Anything unexpected (a record from another version, one cut short, an unreadable
//! entry, a path this format cannot hold) also means no record, or a full scan: never
//! "unchanged" by default. With etckeeper every run commits, so nothing is recorded.

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
/// repository at `git_dir` and this process's environment (git reads its user
/// configuration from $HOME and $XDG_CONFIG_HOME): each is recorded, present or
/// absent, and a record made for other files is not trusted.
fn git_files(git_dir: &Path) -> Option<Vec<PathBuf>> {
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
    files.push(PathBuf::from("/etc/gitattributes"));
    Some(files)
}

/// Whether git's configuration sends it to files [`git_files`] does not list: other
/// ignore or attribute files, or included configuration. Then nothing is recorded.
fn reads_other_files(repo: &git2::Repository) -> bool {
    let Ok(config) = repo.config() else {
        return true;
    };
    ["core.excludesfile", "core.attributesfile", "include.path"]
        .iter()
        .any(|key| config.get_entry(key).is_ok())
        || config
            .entries(Some("includeif\\..*"))
            .map_or(true, |mut entries| entries.next().is_some())
}

/// Every folder under `root` but git's own, and every `.gitignore` and
/// `.gitattributes` in them (git reads them even when they are ignored themselves),
/// relative to `root`.
fn folders_and_rules(root: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let mut folders = vec![String::new()];
    let mut rules = Vec::new();
    let mut next = 0;
    while next < folders.len() {
        let relative = folders[next].clone();
        next += 1;
        let folder = root.join(&relative);
        let entries =
            fs::read_dir(&folder).with_context(|| format!("cannot read {}", folder.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", folder.display()))?;
            let is_dir = entry
                .file_type()
                .with_context(|| format!("cannot read {}", entry.path().display()))?
                .is_dir();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                anyhow::bail!("{} has a name that is not UTF-8", entry.path().display());
            };
            let path = if relative.is_empty() {
                name.clone()
            } else {
                format!("{relative}/{name}")
            };
            if is_dir && path != ".git" {
                folders.push(path);
            } else if !is_dir && (name == ".gitignore" || name == ".gitattributes") {
                rules.push(path);
            }
        }
    }
    Ok((folders, rules))
}

/// Whether a path can be written on one line of the record.
fn fits(name: &str) -> bool {
    !name.contains(['\n', '\r'])
}

/// Writes the record of a scan of `root` that began at `began`, found nothing to
/// commit, and found `private` among the `tracked` files, with `repo` opened at
/// `opened` (libgit2 reads git's configuration when it opens a repository, and the
/// index when first asked). Records nothing (and removes an older record) when
/// anything recorded changed less than [`SETTLED`] before the earlier of the two, or
/// cannot be recorded.
pub fn record(
    file: &Path,
    root: &Path,
    repo: &git2::Repository,
    tracked: &[String],
    private: &[String],
    began: SystemTime,
    opened: SystemTime,
) -> Result<()> {
    let _ = fs::remove_file(file);
    let Some(since) = began
        .min(opened)
        .checked_sub(SETTLED)
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|t| (t.as_secs() as i64, i64::from(t.subsec_nanos())))
    else {
        return Ok(());
    };
    if reads_other_files(repo) {
        return Ok(());
    }
    let Some(git) = git_files(repo.path()) else {
        return Ok(());
    };
    let mut text = Vec::new();
    writeln!(text, "{}", header())?;
    for path in private {
        if !fits(path) {
            return Ok(());
        }
        writeln!(text, "private {path}")?;
    }
    // git's own files first: after a commit, the index is what differs, and a check
    // stops at the first difference.
    let mut count = 0;
    for path in git {
        let look = Look::of(&path)?;
        let Some(name) = path.to_str().filter(|name| fits(name)) else {
            return Ok(());
        };
        if look.changed_since(since) {
            return Ok(());
        }
        writeln!(text, "git {} {name}", encode(look))?;
        count += 1;
    }
    let (folders, rules) = folders_and_rules(root)?;
    let entries = folders
        .iter()
        .map(|f| ("folder", f))
        .chain(rules.iter().chain(tracked).map(|f| ("file", f)));
    for (kind, name) in entries {
        let look = Look::of(&root.join(name))?;
        if !fits(name) || look == Look::Absent || look.changed_since(since) {
            return Ok(());
        }
        writeln!(text, "{kind} {} {name}", encode(look))?;
        count += 1;
    }
    // A record cut short (a power cut: it is not synced) is not one.
    writeln!(text, "end {count}")?;
    atomic::replace_unsynced(file, &text, Attributes::mode(0o600))
}

/// A look as the record writes it: `absent`, or `INODE:CTIME:NANOSECONDS:SIZE`.
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

/// A look as [`encode`] wrote it; None for anything else.
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
/// git's status would find nothing to commit in `root` (whose repository is at
/// `git_dir`), and the same private files. None when anything differs, or there is no
/// whole record this placard can read, made for the git files this process reads.
pub fn unchanged(file: &Path, root: &Path, git_dir: &Path) -> Option<Vec<String>> {
    let text = fs::read_to_string(file).ok()?;
    let mut lines = text.split('\n');
    if lines.next()? != header() {
        return None;
    }
    let mut git = git_files(git_dir)?.into_iter();
    let mut private = Vec::new();
    let mut count = 0;
    for line in lines {
        let (kind, rest) = line.split_once(' ')?;
        let (look, name) = match kind {
            "private" => {
                private.push(rest.to_string());
                continue;
            }
            "end" => {
                return (rest.parse() == Ok(count) && git.next().is_none()).then_some(private);
            }
            _ => rest.split_once(' ')?,
        };
        let path = match kind {
            "folder" | "file" => root.join(name),
            "git" if git.next()? == Path::new(name) => PathBuf::from(name),
            _ => return None,
        };
        if Look::of(&path).ok()? != decode(look)? {
            return None;
        }
        count += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn tracked(repo: &git2::Repository) -> Vec<String> {
        repo.index()
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.path).unwrap())
            .collect()
    }

    /// A committed /etc with a subfolder, a symlink, a private file and a folder whose
    /// own .gitignore ignores everything in it, itself included; the record of a scan
    /// made as if it began `SETTLED` and more after all that.
    fn recorded() -> (tempfile::TempDir, PathBuf, git2::Repository) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("etc");
        fs::create_dir_all(root.join("ssh/sshd_config.d")).unwrap();
        fs::create_dir_all(root.join("cache")).unwrap();
        fs::write(root.join("cache/.gitignore"), "*\n").unwrap();
        fs::write(root.join("hostname"), "box\n").unwrap();
        fs::write(root.join("ssh/sshd_config"), "Port 22\n").unwrap();
        fs::write(root.join("sudoers"), "root ALL=(ALL) ALL\n").unwrap();
        fs::set_permissions(root.join("sudoers"), fs::Permissions::from_mode(0o440)).unwrap();
        std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", root.join("localtime")).unwrap();
        let (etc, _) = crate::system::etc_git::EtcRepo::open_or_init(&root).unwrap();
        etc.commit_all("first", "").unwrap().expect("a commit");
        let repo = git2::Repository::open(&root).unwrap();
        let file = dir.path().join("etc-scan");
        let later = SystemTime::now() + SETTLED + Duration::from_secs(1);
        let tracked = tracked(&repo);
        record(
            &file,
            &root,
            &repo,
            &tracked,
            &["sudoers".into()],
            later,
            later,
        )
        .unwrap();
        (dir, root, repo)
    }

    fn check(dir: &tempfile::TempDir, root: &Path) -> Option<Vec<String>> {
        unchanged(&dir.path().join("etc-scan"), root, &root.join(".git"))
    }

    #[test]
    fn a_record_holds_while_nothing_changes() {
        let (dir, root, _repo) = recorded();
        assert_eq!(check(&dir, &root), Some(vec!["sudoers".to_string()]));
        // Reading does not change what is read.
        fs::read_to_string(root.join("hostname")).unwrap();
        assert_eq!(check(&dir, &root), Some(vec!["sudoers".to_string()]));
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
            ("an ignored .gitignore edited in place", |root, _| {
                fs::write(root.join("cache/.gitignore"), "*.tmp\n").unwrap()
            }),
            ("a file staged", |_, repo| {
                let mut index = repo.index().unwrap();
                index.add_path(Path::new("hostname")).unwrap();
                index.write().unwrap();
            }),
            ("HEAD moved alone (git reset --soft)", |root, _| {
                fs::create_dir_all(root.join(".git/refs/heads")).unwrap();
                let head = root.join(".git/refs/heads/master");
                let branch = if head.exists() {
                    head
                } else {
                    root.join(".git/refs/heads/main")
                };
                fs::write(branch, "0000000000000000000000000000000000000001\n").unwrap();
            }),
            ("git told to ignore more", |root, _| {
                fs::write(root.join(".git/info/exclude"), "*.conf\n").unwrap()
            }),
        ];
        for (what, change) in changes {
            let (dir, root, repo) = recorded();
            assert!(check(&dir, &root).is_some(), "{what}: recorded");
            // Past the clock tick of the files' creation, as every change after a scan
            // began is (the record is only made of what settled before).
            std::thread::sleep(Duration::from_millis(50));
            change(&root, &repo);
            assert_eq!(check(&dir, &root), None, "{what}");
        }
    }

    #[test]
    fn a_scan_that_may_have_missed_a_change_records_nothing() {
        for name in ["hostname", "ssh/sshd_config.d"] {
            let (dir, root, repo) = recorded();
            let file = dir.path().join("etc-scan");
            std::thread::sleep(Duration::from_millis(50));
            let mark = SystemTime::now();
            let path = root.join(name);
            if path.is_dir() {
                fs::write(path.join("late.conf"), "x\n").unwrap();
                fs::remove_file(path.join("late.conf")).unwrap();
            } else {
                fs::write(path, "new\n").unwrap();
            }
            // Changed less than SETTLED before the scan began: its ctime could hide a
            // second change in the same clock tick. Everything else is old enough.
            let began = mark + SETTLED - Duration::from_millis(10);
            record(&file, &root, &repo, &tracked(&repo), &[], began, began).unwrap();
            assert!(!file.exists(), "{name}");
            assert_eq!(check(&dir, &root), None, "{name}");
            // The same scan begun later records.
            let began = mark + SETTLED + Duration::from_millis(100);
            record(&file, &root, &repo, &tracked(&repo), &[], began, began).unwrap();
            assert!(check(&dir, &root).is_some(), "{name}");
        }
    }

    #[test]
    fn a_record_cut_short_or_of_another_version_is_not_read() {
        let (dir, root, _repo) = recorded();
        let file = dir.path().join("etc-scan");
        let text = fs::read_to_string(&file).unwrap();
        fs::write(
            &file,
            text.replacen("placard etc scan 1", "placard etc scan 0", 1),
        )
        .unwrap();
        assert_eq!(check(&dir, &root), None);
        let cut = text.rsplit_once("\nend ").unwrap().0.to_string() + "\n";
        fs::write(&file, &cut).unwrap();
        assert_eq!(check(&dir, &root), None, "no end line");
        let lines: Vec<&str> = text.lines().collect();
        let shorter = lines[..lines.len() - 2].join("\n") + "\n" + lines[lines.len() - 1] + "\n";
        fs::write(&file, shorter).unwrap();
        assert_eq!(check(&dir, &root), None, "a line missing before the end");
        fs::write(&file, &text).unwrap();
        assert!(check(&dir, &root).is_some());
    }
}
