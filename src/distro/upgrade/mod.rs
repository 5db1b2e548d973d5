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
//!    in its `conflicts.json`.
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
use super::validate::{self, Outcome};
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
    /// Daemons whose live configuration failed its validator before the merge and still
    /// fails after the clean merges were written ("dovecot: configuration still invalid
    /// until the conflicts are resolved: …").
    pub still_invalid: Vec<String>,
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
    pub still_invalid: Vec<String>,
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
/// ([`WORKTREE`] on a host): see the module's documentation.
pub fn run(
    etc: &Path,
    worktree: &Path,
    release: &str,
    emit: &mut dyn FnMut(Progress),
) -> Result<UpgradeReport> {
    let repo = open_repo(etc)?;
    let installed = installed_release(etc)?;
    let from = upgrade_from(&installed, release)?;
    let worktree = Worktree::open(worktree)?;
    let state = worktree
        .state()?
        .filter(|s| s.release == release && !s.finished);
    let mut report = UpgradeReport::new(
        &from,
        release,
        &worktree.root.join("files").to_string_lossy(),
    );
    // 1. The merge base: the distro branch of the installed packages.
    repo.update_ignores(&Declared::load(Path::new(crate::system::STATE_DIR))?)?;
    let stray = repo.changes()?;
    let summary = "changes found before placard run";
    report
        .commits
        .extend(commit(emit, &repo, summary, &list(&stray), None)?);
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
    let mut state = State {
        release: release.to_string(),
        base: base.to_string(),
        candidates,
        finished: false,
    };
    worktree.save_state(&state)?;
    report.distro_base = Some(base.to_string());

    // 2. apt: sources, then the upgrade keeping the site's conffiles.
    if from != release {
        report.sources = sources::switch(etc, &from, release)?;
    }
    let summary = format!("placard etc upgrade: apt sources switched to {release}");
    report
        .commits
        .extend(commit(emit, &repo, &summary, &list(&report.sources), None)?);
    let log = worktree.root.join(apt::LOG);
    emit(Progress::Notice(format!(
        "apt-get update, then dist-upgrade to {release} keeping local conffiles (apt's output: {})",
        log.display()
    )));
    if let Err(error) = apt::upgrade(&log)? {
        emit(Progress::Notice(format!(
            "{error:#}; merging, then configuring again"
        )));
    }
    // The maintainer's versions dpkg and ucf left beside kept files: read, then removed.
    let mut beside: BTreeMap<String, Vec<(String, Vec<u8>)>> = BTreeMap::new();
    for path in &state.candidates {
        let found = apt::left_beside(etc, path);
        for (relative, _) in &found {
            fs::remove_file(etc.join(relative))
                .with_context(|| format!("cannot remove /etc/{relative}"))?;
            report.cleaned.push(relative.clone());
        }
        if !found.is_empty() {
            beside.insert(path.clone(), found);
        }
    }
    let summary =
        format!("placard etc upgrade: packages upgraded to {release}, local conffiles kept");
    report.commits.extend(commit(
        emit,
        &repo,
        &summary,
        &list(&repo.changes()?),
        None,
    )?);

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

    // 4. The merges: each file decided (pure), then written.
    let mut pending = worktree.conflicts()?;
    if tip != base {
        let mut decisions = Vec::new();
        for path in &state.candidates {
            let left = beside.get(path).map(Vec::as_slice).unwrap_or_default();
            // Without the new .deb on the branch, the maintainer's copy dpkg left.
            let deb_missing = after.unavailable.iter().any(|u| {
                known
                    .owned
                    .get(path)
                    .is_some_and(|owner| *owner == u.package)
            });
            let inputs = Inputs::read(etc, git, (base, tip), path, left, deb_missing)?;
            let decision = decide::decide(
                path,
                release,
                inputs.base.as_deref(),
                inputs.ours.as_deref(),
                inputs.theirs.as_deref(),
            );
            decisions.push((path.clone(), decision));
        }
        let is_secret = |path: &str| -> Result<bool> {
            Ok(git.is_path_ignored(path).with_context(|| {
                format!("cannot tell whether /etc/{path} is kept out of git, so whether its conflicts may be shown")
            })? || is_secret(etc, path))
        };
        let target = apply::Target {
            etc,
            worktree: &worktree,
            release,
            validator_for: &validate::for_path,
            is_secret: &is_secret,
        };
        apply::apply(&target, decisions, &mut report, &mut pending)?;
        worktree.save_conflicts(&pending)?;
        let (summary, body) = message::merge_commit(&report, &base.to_string(), &tip.to_string());
        report
            .commits
            .extend(commit(emit, &repo, &summary, &body, Some(tip))?);
    }
    if !report.unconfigured.is_empty() {
        report.apt_error = apt::configure_pending(&log);
        let summary = "placard etc upgrade: packages configured after the merge";
        report
            .commits
            .extend(commit(emit, &repo, summary, &list(&repo.changes()?), None)?);
    }
    report.pending = pending
        .keys()
        .filter(|p| !report.conflicts.iter().any(|c| &c.path == *p))
        .cloned()
        .collect();
    // What is left to do is the admin's: the state of the next run starts afresh.
    state.finished = true;
    worktree.save_state(&state)?;
    Ok(report)
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

/// Commits /etc (see [`EtcRepo::commit_all_merging`]) and reports the commit.
fn commit(
    emit: &mut dyn FnMut(Progress),
    repo: &EtcRepo,
    summary: &str,
    body: &str,
    merged: Option<Oid>,
) -> Result<Option<String>> {
    let id = repo.commit_all_merging(summary, body, merged)?;
    if let Some(id) = &id {
        emit(Progress::Commit {
            id: id.clone(),
            summary: summary.to_string(),
        });
    }
    Ok(id)
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
