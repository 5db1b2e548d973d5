//! `placard etc upgrade HOST --release trixie` and `placard etc resolve HOST`, on the
//! host: a Debian release upgrade that keeps the site's conffiles, then a three-way
//! merge of each of them (base = old pristine, ours = live, theirs = new pristine).
//!
//! The steps, each recorded in /etc's git:
//! 1. stray changes are committed; the `distro` branch is brought up to date for the
//!    installed (old) release: its tip is the merge base, and the files that differ
//!    from it are the locally modified ones (kept in `state.json` so that an
//!    interrupted upgrade resumes with the same base);
//! 2. apt's sources are switched to the new release ([`sources`]), and
//!    `apt-get -o Dpkg::Options::=--force-confold dist-upgrade` runs noninteractively
//!    (`UCF_FORCE_CONFFOLD=1` does the same for ucf-managed files); the maintainer's
//!    versions dpkg and ucf leave beside a kept file (`.dpkg-dist`, `.ucf-dist`…) are
//!    removed, since the distro branch holds them (one is used instead when the
//!    branch lacks the package's new .deb);
//! 3. the distro branch is rebuilt for the new versions, as a new commit on it: its
//!    history shows both releases;
//! 4. each locally modified file whose pristine version changed is merged with
//!    [`crate::merge`]. Clean merges are written atomically, checked by their daemon's
//!    validator ([`validate`]; a failure makes them conflicts and the live files stay)
//!    and committed in one merge commit whose second parent is the new distro tip.
//!    Conflicts are written, with markers ([`markers`]), to the worktree
//!    `/var/lib/placard/etc-upgrade/files/` (root only), never to live /etc, and listed
//!    in its `conflicts.json`.
//!
//! `etc resolve` takes each file the admin resolved there (no markers left; a deleted
//! file accepts the new release's removal of it), checks it like a clean merge, writes
//! it, and commits. A second upgrade finds nothing to upgrade and nothing to merge, and
//! changes nothing.

pub mod markers;
pub mod sources;
pub mod validate;

use crate::system::atomic::{self, Attributes};
use crate::system::command::{deadline, Program};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::branch;
use super::host::{self, Roots};
use super::pristine::{Unavailable, MODE_LINK};
use super::successors;
use crate::merge::{self, Issue, Method};
use crate::plan::Event;
use crate::system::etc_git::{Declared, EtcRepo};
use validate::{Validator, Verdict};

/// Debian releases placard can upgrade between, by codename, with their numbers.
pub const RELEASES: &[(&str, u32)] = &[
    ("buster", 10),
    ("bullseye", 11),
    ("bookworm", 12),
    ("trixie", 13),
    ("forky", 14),
];

pub fn release_number(codename: &str) -> Option<u32> {
    RELEASES
        .iter()
        .find(|(name, _)| *name == codename)
        .map(|(_, number)| *number)
}

/// Where conflicts wait for the admin, and the upgrade's state.
pub const WORKTREE: &str = "/var/lib/placard/etc-upgrade";
pub(crate) const STILL_MARKED: &str = "it still holds conflict markers";
/// apt's messages of the last upgrade, kept for the admin.
const APT_LOG: &str = "apt.log";
/// Files dpkg and ucf leave beside a conffile they did not replace, or replaced.
const LEFT_BESIDE: &[&str] = &[
    ".dpkg-dist",
    ".dpkg-new",
    ".dpkg-old",
    ".ucf-dist",
    ".ucf-new",
    ".ucf-old",
    ".dpkg-bak",
];

/// One file merged cleanly and written.
#[derive(Debug, Clone, Serialize)]
pub struct MergedFile {
    pub path: String,
    pub method: Method,
    /// The site's settings carried over (merges by setting).
    pub replayed: Vec<merge::settings::Replayed>,
    /// Settings both the site and the new release changed, differently: the site's
    /// value was kept, Debian's new default was not.
    pub notices: Vec<merge::Notice>,
    /// Settings the new release renamed, translated by rule (`merge::renames`).
    pub translations: Vec<merge::Translation>,
    /// The validator that passed, or why none ran, or (when the live configuration
    /// already failed it before the merge) that it still fails.
    pub validated: String,
}

/// A conffile the new release dropped, whose site settings were moved where the
/// release moved its function ([`super::successors`]).
#[derive(Debug, Clone, Serialize)]
pub struct MovedFile {
    pub path: String,
    pub successor: String,
    /// The site's settings written there, as `key = value`.
    pub settings: Vec<String>,
    pub source: String,
}

/// A conffile the new release dropped, with no known successor (or one its settings
/// could not be merged into): the site's file stays, or is put back, at its path.
#[derive(Debug, Clone, Serialize)]
pub struct KeptFile {
    pub path: String,
    pub reason: String,
}

/// One file left for the admin.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conflict {
    pub path: String,
    /// How it was merged (as [`Method`] serializes).
    pub method: serde_json::Value,
    /// What the admin must decide (values withheld for files /etc's git ignores).
    pub issues: Vec<serde_json::Value>,
    /// Why a clean merge was not taken (its validator failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The file with markers, in the worktree.
    pub worktree_file: String,
    pub release: String,
}

/// What `etc upgrade` did.
#[derive(Debug, Clone, Serialize)]
pub struct UpgradeReport {
    pub from: String,
    pub to: String,
    /// apt source files switched to the new release.
    pub sources: Vec<String>,
    /// Whether package versions changed (the distro branch got a new commit).
    pub upgraded: bool,
    /// Package changes recorded on the distro branch by this run.
    pub packages: Vec<String>,
    pub unavailable: Vec<Unavailable>,
    /// The distro commits of the old release (the merge base) and the new one.
    pub distro_base: Option<String>,
    pub distro_tip: Option<String>,
    pub merged: Vec<MergedFile>,
    /// Dropped conffiles whose site settings moved to their successor.
    pub moved: Vec<MovedFile>,
    /// Dropped conffiles kept as the site had them, listed for the admin.
    pub kept: Vec<KeptFile>,
    pub conflicts: Vec<Conflict>,
    /// Conflicts of an earlier run still waiting in the worktree.
    pub pending: Vec<String>,
    /// `.dpkg-dist` and similar files removed from /etc.
    pub cleaned: Vec<String>,
    pub reloaded: Vec<String>,
    pub commits: Vec<String>,
    pub worktree: String,
    /// Packages dpkg could not configure with the configuration it kept.
    pub unconfigured: Vec<String>,
    /// Why dpkg still cannot configure them after the merge (the conflicts, usually).
    pub apt_error: Option<String>,
    /// Daemons whose live configuration failed its validator before the merge and still
    /// fails after the clean merges were written ("dovecot: configuration still invalid
    /// until the conflicts are resolved: …").
    pub still_invalid: Vec<String>,
}

impl UpgradeReport {
    fn new(from: &str, to: &str, worktree: &str) -> UpgradeReport {
        UpgradeReport {
            from: from.to_string(),
            to: to.to_string(),
            sources: Vec::new(),
            upgraded: false,
            packages: Vec::new(),
            unavailable: Vec::new(),
            distro_base: None,
            distro_tip: None,
            merged: Vec::new(),
            moved: Vec::new(),
            kept: Vec::new(),
            conflicts: Vec::new(),
            pending: Vec::new(),
            cleaned: Vec::new(),
            reloaded: Vec::new(),
            commits: Vec::new(),
            worktree: worktree.to_string(),
            unconfigured: Vec::new(),
            apt_error: None,
            still_invalid: Vec::new(),
        }
    }
}

/// What `etc resolve` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ResolveReport {
    /// Files taken into /etc (or removed, when the admin accepted a removal).
    pub resolved: Vec<String>,
    /// Files refused, with why: markers left, or a failed validator.
    pub refused: Vec<(String, String)>,
    pub reloaded: Vec<String>,
    pub commit: Option<String>,
    /// Why dpkg still cannot configure the packages the upgrade left unconfigured.
    pub apt_error: Option<String>,
    /// Migrate's conflicts whose file the admin deleted: /etc keeps the new host's own.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
    /// Conflicts still waiting in the worktree.
    pub pending: Vec<String>,
    pub worktree: String,
}

impl ResolveReport {
    /// A message when a resolved file could not be taken (its validator failed, or it
    /// cannot be read): the run then counts as failed. A file that still holds markers
    /// is refused too, but is only not resolved yet: the admin may take files in one at
    /// a time.
    pub fn refusal(&self) -> Option<String> {
        let failed: Vec<&(String, String)> = self
            .refused
            .iter()
            .filter(|(_, why)| why != STILL_MARKED)
            .collect();
        (!failed.is_empty()).then(|| {
            format!(
                "{} file(s) not taken: {}",
                failed.len(),
                failed
                    .iter()
                    .map(|(path, why)| format!("/etc/{path}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })
    }
}

/// The upgrade in progress, kept across runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    release: String,
    /// The distro commit of the old release.
    base: String,
    /// The locally modified files, relative to /etc.
    candidates: Vec<String>,
    finished: bool,
}

struct Worktree {
    root: PathBuf,
}

impl Worktree {
    fn open(root: &Path) -> Result<Worktree> {
        fs::create_dir_all(root.join("files"))
            .with_context(|| format!("cannot create {}", root.display()))?;
        // Conflict files are copies of /etc files, some of them secret.
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        Ok(Worktree {
            root: root.to_path_buf(),
        })
    }

    fn file(&self, path: &str) -> PathBuf {
        self.root.join("files").join(path)
    }

    /// The state of an upgrade under way. A state that cannot be read stops the run:
    /// it holds the merge base, and starting over without it would merge against the
    /// wrong pristine files.
    fn state(&self) -> Result<Option<State>> {
        atomic::read_json(
            &self.root.join("state.json"),
            "the upgrade's merge base (remove it only to start the upgrade's merge over)",
        )
    }

    fn save_state(&self, state: &State) -> Result<()> {
        write_atomic(
            &self.root.join("state.json"),
            &serde_json::to_vec_pretty(state)?,
        )
    }

    fn conflicts(&self) -> Result<BTreeMap<String, Conflict>> {
        let path = self.root.join("conflicts.json");
        match fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<Conflict> = serde_json::from_slice(&bytes)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                Ok(list.into_iter().map(|c| (c.path.clone(), c)).collect())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            // Taking an unreadable list for "no conflicts" would let resolve finish an
            // upgrade whose files still wait for the admin.
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save_conflicts(&self, conflicts: &BTreeMap<String, Conflict>) -> Result<()> {
        let list: Vec<&Conflict> = conflicts.values().collect();
        write_atomic(
            &self.root.join("conflicts.json"),
            &serde_json::to_vec_pretty(&list)?,
        )
    }

    fn leave(&self, path: &str, text: &str) -> Result<String> {
        let file = self.file(path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)?;
        }
        write_atomic(&file, text.as_bytes())?;
        Ok(file.to_string_lossy().into_owned())
    }
}

/// Writes `content` to `path` atomically, keeping the mode and owner of the file it
/// replaces (sudoers is 0440).
pub fn write_atomic(path: &Path, content: &[u8]) -> Result<()> {
    let attributes = Attributes::of_existing(path, Attributes::mode(0o644));
    atomic::write_atomic(path, content, attributes, None)
}

/// The release the host runs, from os-release.
fn installed_release() -> Result<String> {
    let text = fs::read_to_string("/etc/os-release")
        .or_else(|_| fs::read_to_string("/usr/lib/os-release"))
        .context("cannot read /etc/os-release")?;
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
        .context("os-release names no VERSION_CODENAME; is this Debian?")
}

pub(crate) fn open_repo(etc: &Path) -> Result<EtcRepo> {
    EtcRepo::open(etc)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a git repository yet, so there is no history to merge with and nowhere to keep the distro branch; nothing was written. \
             Run `placard etc init HOST` to create it",
            etc.display()
        )
    })
}

fn blob_at(repo: &Repository, commit: Oid, path: &str) -> Result<Option<(Vec<u8>, i32)>> {
    let tree = repo.find_commit(commit)?.tree()?;
    let Ok(entry) = tree.get_path(Path::new(path)) else {
        return Ok(None);
    };
    let blob = entry.to_object(repo)?.peel_to_blob()?;
    Ok(Some((blob.content().to_vec(), entry.filemode())))
}

/// Every file of the distro commit (not links, not placard's records). Unmodified ones
/// are merged too: dpkg keeps an unmodified file with --force-confold when its package
/// moved it from ucf to dpkg's conffiles (Dovecot in Debian 13), and the merge then
/// simply takes the new version.
fn pristine_files(repo: &Repository, commit: Oid) -> Result<Vec<String>> {
    let tree = repo.find_commit(commit)?.tree()?;
    let mut found = Vec::new();
    tree.walk(git2::TreeWalkMode::PreOrder, |folder, entry| {
        let path = format!("{folder}{}", entry.name().unwrap_or_default());
        if entry.kind() == Some(git2::ObjectType::Blob)
            && entry.filemode() != MODE_LINK
            && !path.starts_with(".placard-")
        {
            found.push(path);
        }
        git2::TreeWalkResult::Ok
    })?;
    Ok(found)
}

/// dpkg's status with the packages dpkg could not configure counted as installed: their
/// new files are on disk and their .debs in apt's cache, and a package that failed to
/// configure for want of a merged configuration (Dovecot 2.4 refusing 2.3's settings)
/// is exactly one whose files must be merged.
fn known_with_unconfigured(roots: &Roots) -> Result<(super::classify::Known, Vec<String>)> {
    let (_, mut known) = host::read_known(roots)?;
    let info = roots.system_path(host::DPKG_INFO);
    let mut unconfigured = Vec::new();
    for (name, package) in known.status.packages.iter_mut() {
        if !matches!(
            package.state.as_str(),
            "half-configured" | "unpacked" | "triggers-awaited" | "triggers-pending"
        ) {
            continue;
        }
        unconfigured.push(name.clone());
        package.state = "installed".to_string();
        for stem in [format!("{name}:{}", package.architecture), name.clone()] {
            if let Ok(list) = fs::read_to_string(info.join(format!("{stem}.list"))) {
                for path in host::parse_list(&list) {
                    if !roots.etc.join(&path).is_dir() {
                        known.owned.insert(path, name.clone());
                    }
                }
                let sums =
                    fs::read_to_string(info.join(format!("{stem}.md5sums"))).unwrap_or_default();
                known.md5sums.extend(host::parse_md5sums(&sums));
                break;
            }
        }
    }
    Ok((known, unconfigured))
}

/// Finishes configuring packages dpkg left unconfigured; apt's message when it fails.
fn configure_pending(log: &Path) -> Option<String> {
    apt_get(
        &[
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Use-Pty=0",
            "-f",
            "install",
        ],
        log,
    )
    .err()
    .map(|e| format!("{e:#}"))
}

fn apt_get(args: &[&str], log: &Path) -> Result<String> {
    let mut argv = vec!["apt-get"];
    argv.extend(args);
    // A release upgrade downloads and unpacks hundreds of packages: hours, not minutes.
    let output = Program::new(&argv, 4 * deadline::APT)
        .env("NEEDRESTART_MODE", "a")
        // ucf asks about its files itself; this is its --force-confold.
        .env("UCF_FORCE_CONFFOLD", "1")
        .output()
        .context("cannot run apt-get")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if let Ok(mut file) = fs::OpenOptions::new().create(true).append(true).open(log) {
        let _ = writeln!(file, "$ apt-get {}\n{stdout}{stderr}", args.join(" "));
    }
    if !output.status.success() {
        // dpkg names the failing package and its maintainer script's complaint in lines
        // with "error" on stdout and stderr; apt's own summary starts with E:.
        let mut errors: Vec<&str> = Vec::new();
        let mut listing = false;
        for line in stdout.lines().chain(stderr.lines()) {
            listing =
                (listing && line.starts_with(' ')) || line.starts_with("Errors were encountered");
            if listing
                || line.starts_with("E:")
                || line.starts_with("dpkg: error")
                || line.contains("Fatal:")
            {
                errors.push(line.trim());
            }
        }
        errors.truncate(16);
        let detail = if errors.is_empty() {
            stderr.lines().rev().take(6).collect::<Vec<_>>().join("; ")
        } else {
            errors.join("; ")
        };
        bail!(
            "`apt-get {}` failed ({}): {detail}; the whole output is in {}",
            args.join(" "),
            output.status,
            log.display()
        );
    }
    Ok(stdout.into_owned())
}

/// The files dpkg or ucf left beside `path`, with their content.
fn left_beside(etc: &Path, path: &str) -> Vec<(String, Vec<u8>)> {
    LEFT_BESIDE
        .iter()
        .filter_map(|suffix| {
            let relative = format!("{path}{suffix}");
            let content = fs::read(etc.join(&relative)).ok()?;
            Some((relative, content))
        })
        .collect()
}

fn redacted(issue: &Issue, secret: bool) -> serde_json::Value {
    let mut value = serde_json::to_value(issue).unwrap_or_default();
    if secret {
        if let Some(object) = value.as_object_mut() {
            for field in ["base", "ours", "theirs", "values"] {
                if object.get(field).is_some_and(|v| !v.is_null()) {
                    object.insert(field.into(), serde_json::json!(["(withheld)"]));
                }
            }
        }
    }
    value
}

/// Writes a group of files, checks them with their validator, and puts the old ones
/// back when it fails. `None` content removes the file. Returns the verdict.
fn write_checked(
    etc: &Path,
    validator: Option<Validator>,
    files: &[(String, Option<Vec<u8>>)],
) -> Result<Verdict> {
    let mut previous = Vec::new();
    for (path, content) in files {
        let live = etc.join(path);
        previous.push((live.clone(), fs::read(&live).ok()));
        match content {
            Some(content) => write_atomic(&live, content)?,
            None if live.exists() => fs::remove_file(&live)
                .with_context(|| format!("cannot remove {}", live.display()))?,
            None => {}
        }
    }
    let verdict = validator.map_or(Verdict::NotInstalled, |v| v.check());
    if let Verdict::Failed(_) = verdict {
        for (live, content) in previous {
            match content {
                Some(content) => write_atomic(&live, &content)?,
                None => {
                    let _ = fs::remove_file(&live);
                }
            }
        }
    }
    Ok(verdict)
}

/// What became of a group of clean merges (see [`write_group`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupVerdict {
    /// Written; the validator passed, or there is none to run.
    Passed,
    /// The live configuration already failed its validator: the merges were written
    /// and it still fails.
    StillInvalid,
    /// The live configuration passed, the merges made it fail: the old files are back.
    RolledBack,
}

/// Writes a group of clean merges with the rule of [`validate`]: the validator runs on
/// the live configuration first. When it passes (or is not installed), the merges are
/// written and checked, and a failure puts the old files back — a configuration that
/// fails its validator never replaces a working one. When the live configuration
/// already fails, it is not a working one: the merges are written anyway (they cannot
/// make it worse) and the validator's new verdict is reported, not held against them.
/// Returns the verdict and the line for the report.
fn write_group(
    etc: &Path,
    validator: Option<Validator>,
    files: &[(String, Option<Vec<u8>>)],
) -> Result<(GroupVerdict, String)> {
    let broken_before = validator.is_some_and(|v| matches!(v.check(), Verdict::Failed(_)));
    if !broken_before {
        let verdict = write_checked(etc, validator, files)?;
        let line = describe(&verdict, validator);
        return Ok(match verdict {
            Verdict::Failed(_) => (GroupVerdict::RolledBack, line),
            _ => (GroupVerdict::Passed, line),
        });
    }
    for (path, content) in files {
        let live = etc.join(path);
        match content {
            Some(content) => write_atomic(&live, content)?,
            None if live.exists() => fs::remove_file(&live)
                .with_context(|| format!("cannot remove {}", live.display()))?,
            None => {}
        }
    }
    let verdict = validator.map_or(Verdict::NotInstalled, |v| v.check());
    let line = match (&verdict, validator) {
        (Verdict::Failed(message), Some(v)) => {
            return Ok((
                GroupVerdict::StillInvalid,
                format!(
                    "{}: configuration still invalid until the conflicts are resolved: {message}",
                    v.unit.unwrap_or(v.argv[0])
                ),
            ))
        }
        (Verdict::Passed, Some(v)) => format!(
            "{} passed (it failed on the live configuration before the merge)",
            v.name
        ),
        _ => describe(&verdict, validator),
    };
    Ok((GroupVerdict::Passed, line))
}

fn describe(verdict: &Verdict, validator: Option<Validator>) -> String {
    match (verdict, validator) {
        (Verdict::Passed, Some(v)) => format!("{} passed", v.name),
        (Verdict::NotInstalled, Some(v)) => format!("not checked: {} is not installed", v.argv[0]),
        (Verdict::Failed(message), _) => message.clone(),
        _ => "no validator for this file".to_string(),
    }
}

fn by_validator<T>(items: Vec<(String, T)>) -> BTreeMap<Option<&'static str>, Vec<(String, T)>> {
    let mut groups: BTreeMap<Option<&'static str>, Vec<(String, T)>> = BTreeMap::new();
    for (path, item) in items {
        groups
            .entry(validate::for_path(&path).map(|v| v.name))
            .or_default()
            .push((path, item));
    }
    groups
}

/// `etc upgrade`: see the module's documentation.
pub fn run(etc: &Path, release: &str, emit: &mut dyn FnMut(Event)) -> Result<UpgradeReport> {
    let Some(target) = release_number(release) else {
        bail!("`{release}` is not a Debian release placard knows");
    };
    let repo = open_repo(etc)?;
    let installed = installed_release()?;
    let worktree = Worktree::open(Path::new(WORKTREE))?;
    let state = worktree
        .state()?
        .filter(|s| s.release == release && !s.finished);
    let from = match release_number(&installed) {
        Some(number) if number + 1 == target => installed.clone(),
        Some(number) if number == target => installed.clone(),
        Some(number) if number > target => {
            bail!("this host runs Debian {installed} ({number}); it cannot go back to {release}")
        }
        Some(number) => bail!(
            "this host runs Debian {installed} ({number}); Debian supports upgrades one release at a time: upgrade to the next release first"
        ),
        None => bail!("this host runs `{installed}`, which is not a Debian release placard knows"),
    };
    let mut report = UpgradeReport::new(
        &from,
        release,
        &worktree.root.join("files").to_string_lossy(),
    );
    // 1. The merge base: the distro branch of the installed packages.
    repo.update_ignores(&Declared::load(Path::new(crate::system::STATE_DIR))?)?;
    let stray = repo.changes()?;
    if let Some(id) = commit(
        emit,
        &repo,
        "changes found before placard run",
        &list(&stray),
        None,
    )? {
        report.commits.push(id);
    }
    let roots = Roots::host(etc);
    let git = repo.repository();
    let (_, known) = host::read_known(&roots)?;
    let before = branch::update(git, &known, &roots)?;
    report
        .unavailable
        .extend(before.unavailable.iter().cloned());
    let (base, candidates) = match state {
        Some(state) => (
            Oid::from_str(&state.base).context("state.json names no commit")?,
            state.candidates,
        ),
        None => {
            let tip = before.tip.as_deref().context(
                "the distro branch is empty: no installed package ships files under /etc",
            )?;
            let tip = Oid::from_str(tip)?;
            (tip, pristine_files(git, tip)?)
        }
    };
    worktree.save_state(&State {
        release: release.to_string(),
        base: base.to_string(),
        candidates: candidates.clone(),
        finished: false,
    })?;
    report.distro_base = Some(base.to_string());

    // 2. apt: sources, then the upgrade keeping the site's conffiles.
    if from != release {
        report.sources = sources::switch(etc, &from, release)?;
    }
    if let Some(id) = commit(
        emit,
        &repo,
        &format!("placard etc upgrade: apt sources switched to {release}"),
        &list(&report.sources),
        None,
    )? {
        report.commits.push(id);
    }
    let log = worktree.root.join(APT_LOG);
    emit(Event::Notice {
        message: format!("apt-get update, then dist-upgrade to {release} keeping local conffiles (apt's output: {})", log.display()),
    });
    apt_get(&["update", "-q"], &log)?;
    // Debian's release notes: a minimal upgrade first, then the full one, so that
    // essential libraries (the 64-bit time_t transition) are not pulled out from under
    // programs maintainer scripts run.
    apt_get(
        &[
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Use-Pty=0",
            "upgrade",
            "--without-new-pkgs",
        ],
        &log,
    )?;
    // A package whose maintainer script fails on the configuration the site kept is
    // left unconfigured: the merge is what repairs it, so the run goes on, and dpkg
    // finishes once the merged files are in place (or at `etc resolve`).
    let output = apt_get(
        &[
            "-y",
            "-q",
            "-o",
            "Dpkg::Options::=--force-confold",
            "-o",
            "Dpkg::Use-Pty=0",
            "dist-upgrade",
        ],
        &log,
    );
    if let Err(error) = output {
        emit(Event::Notice {
            message: format!("{error:#}; merging, then configuring again"),
        });
    }

    // The maintainer's versions dpkg and ucf left beside kept files: read, then removed.
    let mut beside: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for path in &candidates {
        let found = left_beside(etc, path);
        for (relative, _) in &found {
            fs::remove_file(etc.join(relative))
                .with_context(|| format!("cannot remove /etc/{relative}"))?;
            report.cleaned.push(relative.clone());
        }
        if !found.is_empty() {
            beside.insert(path.clone(), found);
        }
    }
    if let Some(id) = commit(
        emit,
        &repo,
        &format!("placard etc upgrade: packages upgraded to {release}, local conffiles kept"),
        &list(&repo.changes()?),
        None,
    )? {
        report.commits.push(id);
    }

    // 3. The new pristine files.
    let (known, unconfigured) = known_with_unconfigured(&roots)?;
    report.unconfigured = unconfigured;
    let after = branch::update(git, &known, &roots)?;
    // Whether package versions changed: what the distro branch recorded.
    report.upgraded = after.commit.is_some();
    report.packages = after.changes.clone();
    report.unavailable = after.unavailable.clone();
    let tip = after
        .tip
        .as_deref()
        .map(Oid::from_str)
        .transpose()?
        .context("the distro branch is empty after the upgrade")?;
    report.distro_tip = Some(tip.to_string());

    // 4. The merges.
    let mut pending = worktree.conflicts()?;
    if tip != base {
        let mut clean: Vec<(String, (Vec<u8>, merge::Merged))> = Vec::new();
        let mut conflicts: Vec<(String, merge::Merged, String)> = Vec::new();
        for path in &candidates {
            let Some((base_bytes, _)) = blob_at(git, base, path)? else {
                continue;
            };
            let left = beside.get(path).cloned().unwrap_or_default();
            let dist = |suffixes: &[&str]| {
                left.iter()
                    .find(|(name, _)| suffixes.iter().any(|s| name.ends_with(s)))
                    .map(|(_, content)| content.clone())
            };
            let theirs_bytes = match blob_at(git, tip, path)? {
                Some((content, _)) => Some(content),
                // Without the new .deb on the branch, the maintainer's copy dpkg left.
                None if after.unavailable.iter().any(|u| {
                    known
                        .owned
                        .get(path)
                        .is_some_and(|owner| *owner == u.package)
                }) =>
                {
                    dist(&[".dpkg-dist", ".ucf-dist", ".dpkg-new", ".ucf-new"])
                }
                None => None,
            };
            if theirs_bytes.as_deref() == Some(&base_bytes[..]) {
                continue; // the pristine file did not change: nothing to merge
            }
            // dpkg moves a modified conffile the new package drops to .dpkg-bak.
            let ours_bytes = match fs::read(etc.join(path)) {
                Ok(content) => content,
                Err(_) => match dist(&[".dpkg-bak"]) {
                    Some(content) => content,
                    None => continue, // the site deleted it
                },
            };
            if theirs_bytes.is_none() && ours_bytes == base_bytes {
                continue; // an unmodified file the new release dropped: drift's leftover
            }
            if theirs_bytes.as_deref() == Some(&ours_bytes[..]) {
                continue; // dpkg installed the new file, or the site already had it
            }
            let texts = (
                String::from_utf8(base_bytes),
                String::from_utf8(ours_bytes.clone()),
                theirs_bytes.map(String::from_utf8).transpose(),
            );
            let (Ok(base_text), Ok(ours_text), Ok(theirs_text)) = texts else {
                let merged = merge::Merged {
                    method: Method::Lines,
                    text: String::new(),
                    replayed: Vec::new(),
                    notices: Vec::new(),
                    translations: Vec::new(),
                    issues: vec![Issue::Lines { conflicts: 1 }],
                };
                conflicts.push((
                    path.clone(),
                    merged,
                    "not a text file: merge it by hand".into(),
                ));
                continue;
            };
            let Some(theirs_text) = theirs_text else {
                // The new release dropped a file the site changed: its settings must keep
                // working (issue 13, item 1).
                keep_dropped(etc, path, &base_text, &ours_text, &mut report)?;
                continue;
            };
            let merged = merge::merge(path, &base_text, &ours_text, Some(&theirs_text));
            if merged.is_clean() {
                clean.push((path.clone(), (ours_bytes, merged)));
            } else {
                let text = markers::conflict_text(&merged, &base_text, &ours_text, release);
                let mut merged = merged;
                merged.text = text;
                conflicts.push((path.clone(), merged, String::new()));
            }
        }

        // Clean merges, a validator's group at a time.
        for (_, group) in by_validator(clean) {
            let validator = group.first().and_then(|(p, _)| validate::for_path(p));
            let files: Vec<(String, Option<Vec<u8>>)> = group
                .iter()
                .map(|(path, (_, merged))| (path.clone(), Some(merged.text.clone().into_bytes())))
                .collect();
            let (verdict, validated) = write_group(etc, validator, &files)?;
            for (path, (_, merged)) in group {
                if let GroupVerdict::RolledBack = verdict {
                    conflicts.push((path, merged, validated.clone()));
                } else {
                    report.merged.push(MergedFile {
                        path,
                        method: merged.method,
                        replayed: merged.replayed,
                        notices: merged.notices,
                        translations: merged.translations,
                        validated: validated.clone(),
                    });
                }
            }
            match verdict {
                GroupVerdict::Passed => report.reloaded.extend(validator.and_then(|v| v.reload())),
                GroupVerdict::StillInvalid => report.still_invalid.push(validated),
                GroupVerdict::RolledBack => {}
            }
        }

        for (path, merged, reason) in conflicts {
            let file = worktree.leave(&path, &merged.text)?;
            let secret = git.is_path_ignored(&path).with_context(|| {
                format!("cannot tell whether /etc/{path} is kept out of git, so whether its conflicts may be shown")
            })? || is_secret(etc, &path);
            let conflict = Conflict {
                path: path.clone(),
                method: serde_json::to_value(merged.method).unwrap_or_default(),
                issues: merged.issues.iter().map(|i| redacted(i, secret)).collect(),
                reason: (!reason.is_empty()).then_some(reason),
                worktree_file: file,
                release: release.to_string(),
            };
            pending.insert(path, conflict.clone());
            report.conflicts.push(conflict);
        }
        worktree.save_conflicts(&pending)?;

        let mut body = format!(
            "Debian {from} → {release}: the distro's changes merged into the locally modified files\n(base: distro {}, theirs: distro {}).\n",
            short(&base.to_string()),
            short(&tip.to_string())
        );
        if !report.merged.is_empty() {
            body.push_str("\nMerged:\n");
            body.push_str(&list(
                report
                    .merged
                    .iter()
                    .map(|m| m.path.clone())
                    .collect::<Vec<_>>()
                    .as_slice(),
            ));
            body.push('\n');
        }
        let notices: Vec<String> = report
            .merged
            .iter()
            .flat_map(|m| {
                m.notices
                    .iter()
                    .map(move |n| format!("{}: {}", m.path, n.message))
            })
            .collect();
        if !notices.is_empty() {
            body.push_str("\nSite values kept over Debian's new defaults:\n");
            body.push_str(&list(&notices));
            body.push('\n');
        }
        let translations: Vec<String> = report
            .merged
            .iter()
            .flat_map(|m| {
                m.translations
                    .iter()
                    .map(move |t| format!("{}: {}", m.path, t.message))
            })
            .collect();
        if !translations.is_empty() {
            body.push_str("\nRenamed settings translated by rule:\n");
            body.push_str(&list(&translations));
            body.push('\n');
        }
        let moved: Vec<String> = report
            .moved
            .iter()
            .map(|m| format!("{} → {} ({})", m.path, m.successor, m.settings.join(", ")))
            .chain(
                report
                    .kept
                    .iter()
                    .map(|k| format!("{}: kept as it was: {}", k.path, k.reason)),
            )
            .collect();
        if !moved.is_empty() {
            body.push_str("\nConffiles the new release dropped:\n");
            body.push_str(&list(&moved));
            body.push('\n');
        }
        if !report.still_invalid.is_empty() {
            body.push_str("\nStill invalid:\n");
            body.push_str(&list(&report.still_invalid));
            body.push('\n');
        }
        if !report.conflicts.is_empty() {
            body.push_str(&format!(
                "\nConflicts, left with markers in {} (live files kept):\n",
                report.worktree
            ));
            body.push_str(&list(
                report
                    .conflicts
                    .iter()
                    .map(|c| c.path.clone())
                    .collect::<Vec<_>>()
                    .as_slice(),
            ));
            body.push('\n');
        }
        let summary = format!(
            "placard etc upgrade: merged Debian {release}'s conffiles ({} merged, {} in conflict)",
            report.merged.len(),
            report.conflicts.len()
        );
        if let Some(id) = commit(emit, &repo, &summary, body.trim_end(), Some(tip))? {
            report.commits.push(id);
        }
    }
    if !report.unconfigured.is_empty() {
        report.apt_error = configure_pending(&log);
        if let Some(id) = commit(
            emit,
            &repo,
            "placard etc upgrade: packages configured after the merge",
            &list(&repo.changes()?),
            None,
        )? {
            report.commits.push(id);
        }
    }
    report.pending = pending
        .keys()
        .filter(|p| !report.conflicts.iter().any(|c| &c.path == *p))
        .cloned()
        .collect();
    worktree.save_state(&State {
        release: release.to_string(),
        base: base.to_string(),
        candidates,
        finished: true,
    })?;
    // What is left to do is the admin's: the state of the next run starts afresh.
    Ok(report)
}

/// A conffile the site changed and the new release dropped: its site settings go to
/// its successor when [`successors`] knows one; otherwise the site's file stays at its
/// path, as it was (put back when dpkg moved it to `.dpkg-bak`), and is listed.
fn keep_dropped(
    etc: &Path,
    path: &str,
    base: &str,
    ours: &str,
    report: &mut UpgradeReport,
) -> Result<()> {
    let live = etc.join(path);
    if let Some(successor) = successors::lookup(path) {
        let target = etc.join(successor.successor);
        let existing = match fs::read_to_string(&target) {
            Ok(text) => Some(text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", target.display()))
            }
        };
        if let Some(merged) = successors::moved_text(successor, base, ours, existing.as_deref()) {
            if let Some(folder) = target.parent() {
                fs::create_dir_all(folder)
                    .with_context(|| format!("cannot create {}", folder.display()))?;
            }
            write_atomic(&target, merged.text.as_bytes())?;
            // The settings now live in the successor alone; git keeps the old file.
            if live.exists() {
                fs::remove_file(&live)
                    .with_context(|| format!("cannot remove {}", live.display()))?;
            }
            report.moved.push(MovedFile {
                path: path.to_string(),
                successor: successor.successor.to_string(),
                settings: merged
                    .replayed
                    .iter()
                    .map(|r| match r.values.as_slice() {
                        [] => format!("{} (removed)", r.key),
                        values => format!("{} = {}", r.key, values.join("; ")),
                    })
                    .collect(),
                source: successor.source.to_string(),
            });
            return Ok(());
        }
    }
    let reason = match successors::lookup(path) {
        Some(successor) => format!(
            "the new release no longer ships it; its settings could not be merged into /etc/{} by setting, so the site's file stays: move them by hand",
            successor.successor
        ),
        None => "the new release no longer ships it and placard knows no file that took over its job: the site's file stays as it was; check that something still reads it".to_string(),
    };
    if !live.exists() {
        if let Some(folder) = live.parent() {
            fs::create_dir_all(folder)
                .with_context(|| format!("cannot create {}", folder.display()))?;
        }
        write_atomic(&live, ours.as_bytes())?;
    }
    report.kept.push(KeptFile {
        path: path.to_string(),
        reason,
    });
    Ok(())
}

/// `etc resolve`: see the module's documentation.
pub fn resolve(etc: &Path) -> Result<ResolveReport> {
    let repo = open_repo(etc)?;
    let worktree = Worktree::open(Path::new(WORKTREE))?;
    let mut pending = worktree.conflicts()?;
    let mut report = ResolveReport {
        worktree: worktree.root.join("files").to_string_lossy().into_owned(),
        ..ResolveReport::default()
    };
    let mut ready: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    for path in pending.keys() {
        match fs::read(worktree.file(path)) {
            Ok(content) if markers::has_markers(&String::from_utf8_lossy(&content)) => {
                report.refused.push((path.clone(), STILL_MARKED.into()))
            }
            Ok(content) => ready.push((path.clone(), Some(content))),
            // The admin deleted it: the new release's removal of the file is accepted.
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                ready.push((path.clone(), None))
            }
            Err(error) => report
                .refused
                .push((path.clone(), format!("cannot read it: {error}"))),
        }
    }
    take_resolutions(etc, &repo, ready, &mut report)?;
    if !report.resolved.is_empty() {
        let (_, unconfigured) = known_with_unconfigured(&Roots::host(etc))?;
        if !unconfigured.is_empty() {
            report.apt_error = configure_pending(&worktree.root.join(APT_LOG));
        }
        report.commit = repo.commit_all(
            &format!(
                "placard etc resolve: {} upgrade conflict(s) resolved",
                report.resolved.len()
            ),
            &list(&report.resolved),
        )?;
        for path in &report.resolved {
            pending.remove(path);
            let _ = fs::remove_file(worktree.file(path));
        }
        worktree.save_conflicts(&pending)?;
    }
    report.refused.sort();
    report.pending = pending.keys().cloned().collect();
    Ok(report)
}

/// Takes the admin's resolutions (`None`: remove the file) into live /etc, after a
/// commit of stray changes: by validator group, each checked and put back when its
/// validator fails. Fills `resolved`, `refused` and `reloaded`; commits nothing.
/// `etc resolve` uses it for the upgrade's conflicts and for migrate's.
pub(crate) fn take_resolutions(
    etc: &Path,
    repo: &EtcRepo,
    ready: Vec<(String, Option<Vec<u8>>)>,
    report: &mut ResolveReport,
) -> Result<()> {
    repo.update_ignores(&Declared::load(Path::new(crate::system::STATE_DIR))?)?;
    let stray = repo.changes()?;
    repo.commit_all("changes found before placard run", &list(&stray))?;
    for (_, group) in by_validator(
        ready
            .into_iter()
            .map(|(p, c)| (p.clone(), (p, c)))
            .collect(),
    ) {
        let validator = group.first().and_then(|(p, _)| validate::for_path(p));
        let files: Vec<(String, Option<Vec<u8>>)> = group.into_iter().map(|(_, f)| f).collect();
        let verdict = write_checked(etc, validator, &files)?;
        for (path, _) in &files {
            if let Verdict::Failed(message) = &verdict {
                report.refused.push((path.clone(), message.clone()));
            } else {
                report.resolved.push(path.clone());
            }
        }
        if !matches!(verdict, Verdict::Failed(_)) {
            report.reloaded.extend(validator.and_then(|v| v.reload()));
        }
    }
    Ok(())
}

/// Whether a file's values must be withheld from the report ([`super::secrets`]).
fn is_secret(etc: &Path, path: &str) -> bool {
    super::secrets::why_secret(path, super::secrets::live_mode(etc, path)).is_some()
}

/// Commits /etc (see [`EtcRepo::commit_all_merging`]) and reports the commit.
fn commit(
    emit: &mut dyn FnMut(Event),
    repo: &EtcRepo,
    summary: &str,
    body: &str,
    merged: Option<Oid>,
) -> Result<Option<String>> {
    let id = repo.commit_all_merging(summary, body, merged)?;
    if let Some(id) = &id {
        emit(Event::Commit {
            id: id.clone(),
            summary: summary.to_string(),
        });
    }
    Ok(id)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

pub(crate) fn list(files: &[String]) -> String {
    files
        .iter()
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 13, item 1: a dropped sysctl.conf's settings go to sysctl.d/99-site.conf
    /// (and the file dpkg left is removed); a dropped file with no successor is put back
    /// as it was and listed.
    #[test]
    fn issue_13_a_dropped_conffile_keeps_its_settings_live() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        let mut report = UpgradeReport::new("bookworm", "trixie", "/nowhere");
        let base = "#net.ipv4.ip_forward=1\n";
        let ours = "net.ipv4.ip_forward=1\nvm.swappiness = 10\n";
        keep_dropped(etc.path(), "sysctl.conf", base, ours, &mut report).expect("moved");
        let moved = fs::read_to_string(etc.path().join("sysctl.d/99-site.conf")).expect("written");
        assert!(
            moved.contains("\nnet.ipv4.ip_forward=1\nvm.swappiness = 10\n"),
            "{moved}"
        );
        assert_eq!(report.moved.len(), 1);
        assert_eq!(
            report.moved[0].settings,
            ["net.ipv4.ip_forward = 1", "vm.swappiness = 10"]
        );
        assert!(!etc.path().join("sysctl.conf").exists());

        keep_dropped(
            etc.path(),
            "network/ip-down.d/club",
            "a\n",
            "b\n",
            &mut report,
        )
        .expect("kept");
        assert_eq!(
            fs::read_to_string(etc.path().join("network/ip-down.d/club")).ok(),
            Some("b\n".to_string())
        );
        assert_eq!(report.kept.len(), 1);
        assert!(report.kept[0].reason.contains("stays as it was"));
    }
}
