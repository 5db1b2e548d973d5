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
//!    validator ([`crate::distro::validate`]; a failure makes them conflicts and the live
//!    files stay, unless the live configuration was already broken)
//!    and committed in one merge commit whose second parent is the new distro tip.
//!    Conflicts are written, with markers ([`markers`]), to the worktree
//!    `/var/lib/placard/etc-upgrade/files/` (root only), never to live /etc, and listed
//!    in its `conflicts.json`. Packages dpkg could not configure with the kept files
//!    are configured again.
//!
//! [`run`] is these steps in order, one function each: `merge_base` (1),
//! `switch_sources` and `upgrade_packages` (2), `record_new_release` (3), `decide_all`
//! (pure but for reading the three versions), `merge_files` and
//! `configure_after_merge` (4).
//!
//! `etc resolve` takes each file the admin resolved there (no markers left; a deleted
//! file accepts the new release's removal of it), checks it like a clean merge, writes
//! it, and commits. A second upgrade finds nothing to upgrade and nothing to merge, and
//! changes nothing.

pub mod apply;
pub mod apt;
pub mod decide;
pub mod markers;
pub mod message;
pub mod sources;
pub mod worktree;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use git2::{Oid, Repository};
use serde::{Deserialize, Serialize};

use super::branch;
use super::host::{self, Roots};
use super::pristine::{Unavailable, MODE_LINK};
use super::validate::{self, Outcome, StillInvalid};
use crate::merge::{self, Method};
use crate::system::etc_git::{Declared, EtcRepo};
pub use message::list;
use worktree::{State, Worktree};

/// What the upgrade tells as it goes; the agent turns it into its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Notice(String),
    Commit { id: String, summary: String },
}

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

/// Where conflicts wait for the admin, and the upgrade's state, on a host.
pub const WORKTREE: &str = "/var/lib/placard/etc-upgrade";
pub(crate) const STILL_MARKED: &str = "it still holds conflict markers";
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
    /// Groups of clean merges written although their validator fails: the live
    /// configuration failed it already before the merge.
    pub still_invalid: Vec<StillInvalid>,
}

impl UpgradeReport {
    pub fn new(from: &str, to: &str, worktree: &str) -> UpgradeReport {
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
    /// Daemons whose configuration was already failing its validator and still fails
    /// with the resolutions written (see [`crate::distro::validate`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub still_invalid: Vec<StillInvalid>,
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

/// `etc upgrade` of the host whose /etc is `etc`, with its worktree at `worktree`
/// ([`WORKTREE`] on a host): see the module's documentation. Each step stops the run
/// with its error (nothing after it runs); a validator's failure is the one thing that
/// does not stop it, since its files become conflicts and the live ones stay.
pub fn run(
    etc: &Path,
    worktree: &Path,
    release: &str,
    emit: &mut dyn FnMut(Progress),
) -> Result<UpgradeReport> {
    let repo = open_repo(etc)?;
    let from = upgrade_from(&installed_release(etc)?, release)?;
    let worktree = Worktree::open(worktree)?;
    let files = worktree.root.join("files");
    let mut report = UpgradeReport::new(&from, release, &files.to_string_lossy());
    let mut up = Upgrade {
        etc,
        repo: &repo,
        roots: Roots::host(etc),
        worktree: &worktree,
        release,
        emit,
    };
    let (mut state, base) = merge_base(&mut up, &mut report)?;
    switch_sources(&mut up, &from, &mut report)?;
    let beside = upgrade_packages(&mut up, &state.candidates, &mut report)?;
    let (tip, known) = record_new_release(&up, &mut report)?;
    let mut pending = worktree.conflicts()?;
    if tip != base {
        let unavailable = &report.unavailable;
        let missing = |path: &str| deb_missing(&known.owned, unavailable, path);
        let versions = (base, tip);
        let decisions = decide_all(&up, versions, &state.candidates, &beside, &missing)?;
        merge_files(&mut up, versions, decisions, &mut report, &mut pending)?;
    }
    configure_after_merge(&mut up, &mut report)?;
    report.pending = still_pending(&pending, &report.conflicts);
    // What is left to do is the admin's: the state of the next run starts afresh.
    state.finished = true;
    worktree.save_state(&state)?;
    Ok(report)
}

/// What the steps of [`run`] work on: the host's /etc and its git, the worktree, the
/// release upgraded to, and where progress is told.
struct Upgrade<'a> {
    etc: &'a Path,
    repo: &'a EtcRepo,
    roots: Roots,
    worktree: &'a Worktree,
    release: &'a str,
    emit: &'a mut dyn FnMut(Progress),
}

impl Upgrade<'_> {
    fn git(&self) -> &Repository {
        self.repo.repository()
    }

    fn notice(&mut self, text: String) {
        (self.emit)(Progress::Notice(text));
    }

    /// Commits all of /etc (see [`EtcRepo::commit_all_merging`]; nothing when nothing
    /// changed), tells it, and lists it in the report.
    fn commit(
        &mut self,
        report: &mut UpgradeReport,
        summary: &str,
        body: &str,
        merged: Option<Oid>,
    ) -> Result<()> {
        let id = self.repo.commit_all_merging(summary, body, merged)?;
        if let Some(id) = &id {
            (self.emit)(Progress::Commit {
                id: id.clone(),
                summary: summary.to_string(),
            });
        }
        report.commits.extend(id);
        Ok(())
    }
}

/// Step 1, the merge base. Commits the changes found in /etc, brings the distro branch
/// up to date for the installed (old) release, and takes its tip as the merge base and
/// every file it holds as a candidate; an unfinished upgrade to the same release keeps
/// the base and candidates its `state.json` names. Guarantees: the base is saved in the
/// worktree before apt changes anything, so that an interrupted upgrade resumes against
/// the same pristine files; a state that cannot be read, or an empty branch, stops the
/// run before anything is upgraded.
fn merge_base(up: &mut Upgrade, report: &mut UpgradeReport) -> Result<(State, Oid)> {
    let state = up
        .worktree
        .state()?
        .filter(|s| s.release == up.release && !s.finished);
    up.repo
        .update_ignores(&Declared::load(Path::new(crate::system::STATE_DIR))?)?;
    let stray = up.repo.changes()?;
    up.commit(
        report,
        "changes found before placard run",
        &list(&stray),
        None,
    )?;
    let (_, known) = host::read_known(&up.roots)?;
    let before = branch::update(up.git(), &known, &up.roots)?;
    report.unavailable.extend(before.unavailable);
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
            (tip, pristine_files(up.git(), tip)?)
        }
    };
    let state = State {
        release: up.release.to_string(),
        base: base.to_string(),
        candidates,
        finished: false,
    };
    up.worktree.save_state(&state)?;
    report.distro_base = Some(base.to_string());
    Ok((state, base))
}

/// Step 2a, apt's sources: switched from the installed release `from` to the new one
/// (nothing on a second run, when they already name it), and committed.
fn switch_sources(up: &mut Upgrade, from: &str, report: &mut UpgradeReport) -> Result<()> {
    if from != up.release {
        report.sources = sources::switch(up.etc, from, up.release)?;
    }
    let summary = format!(
        "placard etc upgrade: apt sources switched to {}",
        up.release
    );
    let body = list(&report.sources);
    up.commit(report, &summary, &body, None)
}

/// The maintainer's versions dpkg and ucf left beside each candidate, by candidate.
type Beside = BTreeMap<String, Vec<(String, Vec<u8>)>>;

/// Step 2b, the packages: `apt-get update` and the upgrade keeping the site's conffiles
/// ([`apt::upgrade`]), then the maintainer's versions left beside the candidates taken
/// out of /etc ([`take_left_beside`]), and everything committed. Guarantees: the live
/// conffiles are the site's; a failed dist-upgrade is told and the run goes on (the
/// merge is what lets dpkg configure), any other failure of apt stops it.
fn upgrade_packages(
    up: &mut Upgrade,
    candidates: &[String],
    report: &mut UpgradeReport,
) -> Result<Beside> {
    let release = up.release;
    let log = up.worktree.root.join(apt::LOG);
    up.notice(format!(
        "apt-get update, then dist-upgrade to {release} keeping local conffiles (apt's output: {})",
        log.display()
    ));
    if let Err(error) = apt::upgrade(&log)? {
        up.notice(format!("{error:#}; merging, then configuring again"));
    }
    let beside = take_left_beside(up.etc, candidates, &mut report.cleaned)?;
    let summary =
        format!("placard etc upgrade: packages upgraded to {release}, local conffiles kept");
    let body = list(&up.repo.changes()?);
    up.commit(report, &summary, &body, None)?;
    Ok(beside)
}

/// The files dpkg and ucf left beside the `candidates` under `etc` (`.dpkg-dist`,
/// `.ucf-old`…): read, then removed, each listed in `cleaned`. Guarantees: a file is
/// removed only once its content is held (the distro branch holds the maintainer's
/// version; the returned one stands in when the branch lacks it); a file that cannot
/// be removed stops the run.
fn take_left_beside(
    etc: &Path,
    candidates: &[String],
    cleaned: &mut Vec<String>,
) -> Result<Beside> {
    let mut beside = Beside::new();
    for path in candidates {
        let found = apt::left_beside(etc, path);
        for (relative, _) in &found {
            fs::remove_file(etc.join(relative))
                .with_context(|| format!("cannot remove /etc/{relative}"))?;
            cleaned.push(relative.clone());
        }
        if !found.is_empty() {
            beside.insert(path.clone(), found);
        }
    }
    Ok(beside)
}

/// Step 3, the new pristine files: the distro branch rebuilt for the packages now
/// installed (those dpkg could not configure counted in), as a new commit on it.
/// Fills `upgraded`, `packages`, `unavailable`, `unconfigured` and `distro_tip`;
/// returns the new tip and what dpkg knows. Guarantees: an empty branch stops the run
/// before any file is merged.
fn record_new_release(
    up: &Upgrade,
    report: &mut UpgradeReport,
) -> Result<(Oid, super::classify::Known)> {
    let (known, unconfigured) = known_with_unconfigured(&up.roots)?;
    report.unconfigured = unconfigured;
    let after = branch::update(up.git(), &known, &up.roots)?;
    // Whether package versions changed: what the distro branch recorded.
    report.upgraded = after.commit.is_some();
    report.packages = after.changes;
    report.unavailable = after.unavailable;
    let tip = after
        .tip
        .as_deref()
        .map(Oid::from_str)
        .transpose()?
        .context("the distro branch is empty after the upgrade")?;
    report.distro_tip = Some(tip.to_string());
    Ok((tip, known))
}

/// Whether the new .deb of the package owning `path` could not be had (then the
/// maintainer's copy dpkg left beside the file is the new version).
fn deb_missing(owned: &BTreeMap<String, String>, unavailable: &[Unavailable], path: &str) -> bool {
    owned
        .get(path)
        .is_some_and(|owner| unavailable.iter().any(|u| u.package == *owner))
}

/// Step 4a, the decisions: for each candidate, its three versions (the old pristine at
/// `base`, the live file, the new pristine at `tip`, or the maintainer's copy dpkg left
/// when `deb_missing`) read and given to the pure [`decide::decide`]. Writes nothing.
fn decide_all(
    up: &Upgrade,
    (base, tip): (Oid, Oid),
    candidates: &[String],
    beside: &Beside,
    deb_missing: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, decide::Decision)>> {
    let mut decisions = Vec::new();
    for path in candidates {
        let left = beside.get(path).map(Vec::as_slice).unwrap_or_default();
        let inputs = Inputs::read(up.etc, up.git(), (base, tip), path, left, deb_missing(path))?;
        let decision = decide::decide(
            path,
            up.release,
            inputs.base.as_deref(),
            inputs.ours.as_deref(),
            inputs.theirs.as_deref(),
        );
        decisions.push((path.clone(), decision));
    }
    Ok(decisions)
}

/// Step 4b, the merge: the decisions written by [`apply::apply`] (clean merges a
/// validator's group at a time, conflicts to the worktree, never to live /etc), the
/// worktree's conflict list saved, and one merge commit whose second parent is the new
/// distro tip. Guarantees: a group that makes a working configuration fail its
/// validator is put back and becomes conflicts.
fn merge_files(
    up: &mut Upgrade,
    (base, tip): (Oid, Oid),
    decisions: Vec<(String, decide::Decision)>,
    report: &mut UpgradeReport,
    pending: &mut BTreeMap<String, Conflict>,
) -> Result<()> {
    let (etc, git) = (up.etc, up.git());
    let is_secret = |path: &str| -> Result<bool> {
        Ok(git.is_path_ignored(path).with_context(|| {
            format!("cannot tell whether /etc/{path} is kept out of git, so whether its conflicts may be shown")
        })? || is_secret(etc, path))
    };
    let target = apply::Target {
        etc,
        worktree: up.worktree,
        release: up.release,
        validator_for: &validate::for_path,
        is_secret: &is_secret,
    };
    apply::apply(&target, decisions, report, pending)?;
    up.worktree.save_conflicts(pending)?;
    let (summary, body) = message::merge_commit(report, &base.to_string(), &tip.to_string());
    up.commit(report, &summary, &body, Some(tip))
}

/// Step 4c: when dpkg left packages unconfigured, `apt-get -f install` once the merged
/// files are in place (its failure is reported in `apt_error`, the conflicts being the
/// usual cause), and what it changed committed.
fn configure_after_merge(up: &mut Upgrade, report: &mut UpgradeReport) -> Result<()> {
    if report.unconfigured.is_empty() {
        return Ok(());
    }
    report.apt_error = apt::configure_pending(&up.worktree.root.join(apt::LOG));
    let summary = "placard etc upgrade: packages configured after the merge";
    let body = list(&up.repo.changes()?);
    up.commit(report, summary, &body, None)
}

/// The conflicts of earlier runs still waiting in the worktree: those of `pending` this
/// run did not report again.
fn still_pending(pending: &BTreeMap<String, Conflict>, conflicts: &[Conflict]) -> Vec<String> {
    pending
        .keys()
        .filter(|p| !conflicts.iter().any(|c| &c.path == *p))
        .cloned()
        .collect()
}

/// The release an upgrade to `release` starts from: the installed one, when it is the
/// release before (or the same: a second run).
fn upgrade_from(installed: &str, release: &str) -> Result<String> {
    let Some(target) = release_number(release) else {
        bail!("`{release}` is not a Debian release placard knows");
    };
    match release_number(installed) {
        Some(number) if number + 1 == target || number == target => Ok(installed.to_string()),
        Some(number) if number > target => {
            bail!("this host runs Debian {installed} ({number}); it cannot go back to {release}")
        }
        Some(number) => bail!(
            "this host runs Debian {installed} ({number}); Debian supports upgrades one release at a time: upgrade to the next release first"
        ),
        None => bail!("this host runs `{installed}`, which is not a Debian release placard knows"),
    }
}

/// The three versions of one conffile, read from the distro branch and live /etc.
struct Inputs {
    base: Option<Vec<u8>>,
    ours: Option<Vec<u8>>,
    theirs: Option<Vec<u8>>,
}

impl Inputs {
    /// `left`: the files dpkg or ucf left beside it; `deb_missing`: the new .deb of its
    /// package could not be had, so the maintainer's copy dpkg left is the new version.
    fn read(
        etc: &Path,
        git: &Repository,
        (base, tip): (Oid, Oid),
        path: &str,
        left: &[(String, Vec<u8>)],
        deb_missing: bool,
    ) -> Result<Inputs> {
        let dist = |suffixes: &[&str]| {
            left.iter()
                .find(|(name, _)| suffixes.iter().any(|s| name.ends_with(s)))
                .map(|(_, content)| content.clone())
        };
        let theirs = match blob_at(git, tip, path)? {
            Some((content, _)) => Some(content),
            None if deb_missing => dist(&[".dpkg-dist", ".ucf-dist", ".dpkg-new", ".ucf-new"]),
            None => None,
        };
        // dpkg moves a modified conffile the new package drops to .dpkg-bak.
        let ours = fs::read(etc.join(path))
            .ok()
            .or_else(|| dist(&[".dpkg-bak"]));
        Ok(Inputs {
            base: blob_at(git, base, path)?.map(|(content, _)| content),
            ours,
            theirs,
        })
    }
}

/// The release the host runs, from os-release.
fn installed_release(etc: &Path) -> Result<String> {
    let text = fs::read_to_string(etc.join("os-release"))
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

/// `etc resolve`: see the module's documentation.
pub fn resolve(etc: &Path, worktree: &Path) -> Result<ResolveReport> {
    let repo = open_repo(etc)?;
    let worktree = Worktree::open(worktree)?;
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
            report.apt_error = apt::configure_pending(&worktree.root.join(apt::LOG));
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
/// commit of stray changes: by validator group, by the rule of [`crate::distro::validate`]
/// (put back when they make a working configuration fail). Fills `resolved`, `refused`,
/// `reloaded` and `still_invalid`; commits nothing.
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
    for (validator, group) in validate::by_validator(
        ready
            .into_iter()
            .map(|(p, c)| (p.clone(), (p, c)))
            .collect(),
        &validate::for_path,
    ) {
        let files: Vec<(String, Option<Vec<u8>>)> = group.into_iter().map(|(_, f)| f).collect();
        let outcome = validate::write_group(etc, validator, &files)?;
        for (path, _) in &files {
            if let Outcome::RolledBack(message) = &outcome {
                report.refused.push((path.clone(), message.clone()));
            } else {
                report.resolved.push(path.clone());
            }
        }
        match outcome {
            Outcome::Passed(_) => report.reloaded.extend(validator.and_then(|v| v.reload())),
            Outcome::StillInvalid(line) => report.still_invalid.push(line),
            Outcome::RolledBack(_) => {}
        }
    }
    Ok(())
}

/// Whether a file's values must be withheld from the report ([`super::secrets`]).
fn is_secret(etc: &Path, path: &str) -> bool {
    super::secrets::why_secret(path, super::secrets::live_mode(etc, path)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One file of a [`TempHost`]: its path, old pristine, new pristine and live version
    /// (`None`: absent).
    type File = (
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// A host's /etc (a git repository) and worktree in temporary folders: the old and
    /// new pristine files committed as the two distro commits, then the live files.
    struct TempHost {
        etc: tempfile::TempDir,
        work: tempfile::TempDir,
        repo: EtcRepo,
        base: Oid,
        tip: Oid,
    }

    impl TempHost {
        fn new(files: &[File]) -> TempHost {
            let etc = tempfile::tempdir().expect("a temporary folder");
            let work = tempfile::tempdir().expect("a temporary folder");
            let (repo, _) = EtcRepo::open_or_init(etc.path()).expect("a repository");
            let write = |pick: fn(&File) -> Option<&'static str>| {
                for file in files {
                    let live = etc.path().join(file.0);
                    fs::create_dir_all(live.parent().expect("a folder")).expect("created");
                    match pick(file) {
                        Some(text) => fs::write(&live, text).expect("written"),
                        None => {
                            let _ = fs::remove_file(&live);
                        }
                    }
                }
            };
            let commit = |summary: &str| -> Oid {
                let id = repo
                    .commit_all(summary, "")
                    .expect("committed")
                    .expect("a commit");
                Oid::from_str(&id).expect("an id")
            };
            write(|f| f.1);
            let base = commit("old release");
            write(|f| f.2);
            let tip = commit("new release");
            write(|f| f.3);
            TempHost {
                etc,
                work,
                repo,
                base,
                tip,
            }
        }
    }

    /// Step 2b's cleaning: the maintainer's versions beside a candidate are read, then
    /// removed and listed; files beside a file that is no candidate stay.
    #[test]
    fn files_left_beside_are_held_then_removed() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        fs::create_dir_all(etc.path().join("ssh")).expect("created");
        for (path, text) in [
            ("ssh/sshd_config", "site\n"),
            ("ssh/sshd_config.dpkg-dist", "debian\n"),
            ("ssh/sshd_config.ucf-old", "older\n"),
            ("other.conf.dpkg-dist", "not a candidate\n"),
        ] {
            fs::write(etc.path().join(path), text).expect("written");
        }
        let mut cleaned = Vec::new();
        let candidates = ["ssh/sshd_config".to_string(), "hosts".to_string()];
        let beside = take_left_beside(etc.path(), &candidates, &mut cleaned).expect("taken");
        assert_eq!(
            cleaned,
            ["ssh/sshd_config.dpkg-dist", "ssh/sshd_config.ucf-old"]
        );
        assert_eq!(beside.keys().collect::<Vec<_>>(), ["ssh/sshd_config"]);
        assert_eq!(
            beside["ssh/sshd_config"][0],
            (
                "ssh/sshd_config.dpkg-dist".to_string(),
                b"debian\n".to_vec()
            )
        );
        assert!(!etc.path().join("ssh/sshd_config.dpkg-dist").exists());
        assert!(!etc.path().join("ssh/sshd_config.ucf-old").exists());
        assert!(etc.path().join("ssh/sshd_config").exists());
        assert!(etc.path().join("other.conf.dpkg-dist").exists());
    }

    #[test]
    fn a_missing_deb_is_the_owning_package_s() {
        let owned = BTreeMap::from([("default/club".to_string(), "club".to_string())]);
        let unavailable = [Unavailable {
            package: "club".into(),
            version: "2".into(),
            message: "no .deb".into(),
        }];
        assert!(deb_missing(&owned, &unavailable, "default/club"));
        assert!(!deb_missing(&owned, &unavailable, "default/other"));
        assert!(!deb_missing(&owned, &[], "default/club"));
    }

    #[test]
    fn pending_lists_only_earlier_conflicts() {
        let conflict = |path: &str| Conflict {
            path: path.into(),
            method: serde_json::Value::Null,
            issues: Vec::new(),
            reason: None,
            worktree_file: String::new(),
            release: "trixie".into(),
        };
        let pending = BTreeMap::from([
            ("a".to_string(), conflict("a")),
            ("b".to_string(), conflict("b")),
        ]);
        assert_eq!(still_pending(&pending, &[conflict("a")]), ["b"]);
        assert!(still_pending(&BTreeMap::new(), &[conflict("a")]).is_empty());
    }

    /// Steps 4a and 4b on a temporary /etc with its git: each candidate decided from the
    /// two distro commits and the live file (a missing .deb's new version taken from
    /// the `.dpkg-dist` dpkg left), then written and committed as one merge whose
    /// second parent is the new distro tip; a conflict goes to the worktree only.
    #[test]
    fn decided_from_the_distro_commits_then_merged_and_committed() {
        let host = TempHost::new(&[
            (
                "club/motd",
                Some("Welcome\n"),
                Some("Welcome to Debian\n"),
                Some("Welcome to the club\n"),
            ),
            (
                "default/both",
                Some("# comment\nA=1\n"),
                Some("# new comment\nA=1\nB=2\n"),
                Some("# comment\nA=5\n"),
            ),
            ("default/site", Some("A=1\n"), Some("A=1\n"), Some("A=2\n")),
            ("default/nodeb", Some("X=1\n"), None, Some("X=2\n")),
        ]);
        let left = vec![(
            "default/nodeb.dpkg-dist".to_string(),
            b"X=1\nY=2\n".to_vec(),
        )];
        let beside = Beside::from([("default/nodeb".to_string(), left)]);
        let worktree = Worktree::open(host.work.path()).expect("a worktree");
        let mut told = Vec::new();
        let mut emit = |progress: Progress| told.push(progress);
        let mut up = Upgrade {
            etc: host.etc.path(),
            repo: &host.repo,
            roots: Roots::host(host.etc.path()),
            worktree: &worktree,
            release: "trixie",
            emit: &mut emit,
        };
        let mut candidates = pristine_files(host.repo.repository(), host.base).expect("files");
        candidates.sort();
        assert_eq!(
            candidates,
            ["club/motd", "default/both", "default/nodeb", "default/site"]
        );
        let versions = (host.base, host.tip);
        let missing = |path: &str| path == "default/nodeb";
        let decisions = decide_all(&up, versions, &candidates, &beside, &missing).expect("decided");
        let shape: Vec<(&str, &str)> = decisions
            .iter()
            .map(|(path, decision)| {
                let kind = match decision {
                    decide::Decision::Nothing(_) => "nothing",
                    decide::Decision::Clean(_) => "clean",
                    decide::Decision::Conflict(..) => "conflict",
                    decide::Decision::Dropped { .. } => "dropped",
                };
                (path.as_str(), kind)
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("club/motd", "conflict"),
                ("default/both", "clean"),
                ("default/nodeb", "clean"),
                ("default/site", "nothing")
            ]
        );
        let mut report = UpgradeReport::new("bookworm", "trixie", "/nowhere");
        let mut pending = BTreeMap::new();
        merge_files(&mut up, versions, decisions, &mut report, &mut pending).expect("merged");
        let live = |path: &str| fs::read_to_string(host.etc.path().join(path)).ok();
        assert_eq!(live("club/motd").as_deref(), Some("Welcome to the club\n"));
        assert_eq!(
            live("default/both").as_deref(),
            Some("# new comment\nA=5\nB=2\n")
        );
        assert_eq!(live("default/nodeb").as_deref(), Some("X=2\nY=2\n"));
        assert_eq!(live("default/site").as_deref(), Some("A=2\n"));
        assert_eq!(pending.keys().collect::<Vec<_>>(), ["club/motd"]);
        assert_eq!(
            worktree
                .conflicts()
                .expect("saved")
                .keys()
                .collect::<Vec<_>>(),
            ["club/motd"]
        );
        let marked = fs::read_to_string(worktree.file("club/motd")).expect("left");
        assert!(markers::has_markers(&marked), "{marked}");
        assert_eq!(report.commits.len(), 1, "{:?}", report.commits);
        let git = host.repo.repository();
        let head = git
            .head()
            .and_then(|h| h.peel_to_commit())
            .expect("a commit");
        assert_eq!(head.id().to_string(), report.commits[0]);
        assert_eq!(head.parent_id(1).ok(), Some(host.tip));
        assert!(
            matches!(&told[..], [Progress::Commit { summary, .. }] if summary.contains("1 in conflict")),
            "{told:?}"
        );
    }

    /// Issue 13, item 1: a dropped sysctl.conf's settings go to sysctl.d/99-site.conf
    /// (and the file dpkg left is removed); a dropped file with no successor is put back
    /// as it was and listed.
    #[test]
    fn issue_13_a_dropped_conffile_keeps_its_settings_live() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        let mut report = UpgradeReport::new("bookworm", "trixie", "/nowhere");
        let base = "#net.ipv4.ip_forward=1\n";
        let ours = "net.ipv4.ip_forward=1\nvm.swappiness = 10\n";
        apply::keep_dropped(etc.path(), "sysctl.conf", base, ours, &mut report).expect("moved");
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

        apply::keep_dropped(
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
