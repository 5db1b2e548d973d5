//! The `distro` branch of /etc's repository: the pristine /etc files of the installed
//! packages at their installed versions, one commit per change of the package set.
//!
//! The commit is built from blobs in an in-memory index, so the working tree (live /etc)
//! and master's index are never touched, and the branch has a history of its own: its
//! first commit has no parent, and each later one has the previous distro commit as
//! its only parent. Paths are relative to /etc, as on master, so that
//! `git diff distro master -- ssh/sshd_config` shows the site's changes.
//!
//! Three files at the top of its tree record what it holds: `.placard-packages`
//! (`name version architecture`), `.placard-sources` (`path<TAB>package<TAB>source`) and
//! `.placard-unavailable` (packages whose .deb could not be had, and why). An update
//! reuses the files of every package whose version did not change, so only new or
//! upgraded packages are fetched; unavailable ones are tried again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, Result};
use git2::{Index, IndexEntry, IndexTime, Oid, Repository, Signature};
use serde::Serialize;

use super::classify::Known;
use super::host::Roots;
use super::pristine::{self, PackageVersion, PristineFile, Unavailable};

pub const BRANCH: &str = "distro";
pub const REFERENCE: &str = "refs/heads/distro";
const PACKAGES_FILE: &str = ".placard-packages";
const SOURCES_FILE: &str = ".placard-sources";
const UNAVAILABLE_FILE: &str = ".placard-unavailable";

/// What an update did.
#[derive(Debug, Clone, Serialize)]
pub struct Update {
    /// The new commit, when the package set changed.
    pub commit: Option<String>,
    /// The branch's tip after the update (None: no package ships files under /etc).
    pub tip: Option<String>,
    /// Packages added, upgraded or removed since the previous commit.
    pub changes: Vec<String>,
    pub unavailable: Vec<Unavailable>,
    /// How many pristine files the branch holds.
    pub files: usize,
    /// How many .debs were read this time.
    pub fetched: usize,
    #[serde(skip)]
    pub pristine: BTreeMap<String, PristineFile>,
}

/// What the previous distro commit holds.
#[derive(Default)]
struct Previous {
    tip: Option<Oid>,
    packages: BTreeMap<String, String>,
    sources: BTreeMap<String, (String, String)>,
    unavailable: BTreeSet<String>,
}

fn read_previous(repo: &Repository) -> Result<Previous> {
    let Ok(reference) = repo.find_reference(REFERENCE) else {
        return Ok(Previous::default());
    };
    let commit = reference
        .peel_to_commit()
        .context("the distro branch does not point at a commit")?;
    let tree = commit.tree()?;
    let text = |name: &str| -> String {
        read_blob(repo, &tree, name)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let packages = text(PACKAGES_FILE)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            Some((words.next()?.to_string(), words.next()?.to_string()))
        })
        .collect();
    let sources = text(SOURCES_FILE)
        .lines()
        .filter_map(|l| {
            let mut fields = l.split('\t');
            Some((
                fields.next()?.to_string(),
                (fields.next()?.to_string(), fields.next()?.to_string()),
            ))
        })
        .collect();
    let unavailable = text(UNAVAILABLE_FILE)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    Ok(Previous {
        tip: Some(commit.id()),
        packages,
        sources,
        unavailable,
    })
}

fn read_blob(repo: &Repository, tree: &git2::Tree, path: &str) -> Option<Vec<u8>> {
    let entry = tree.get_path(Path::new(path)).ok()?;
    let blob = entry.to_object(repo).ok()?.peel_to_blob().ok()?;
    Some(blob.content().to_vec())
}

/// Brings the distro branch up to date with the installed packages; commits only when
/// the package set or the pristine files changed.
pub fn update(repo: &Repository, known: &Known, roots: &Roots) -> Result<Update> {
    let previous = read_previous(repo)?;
    let wanted = pristine::packages_with_etc_files(known);
    // The package set also counts packages whose files come from ucf or a template.
    let mut tracked = wanted.clone();
    let others = known
        .ucf
        .values()
        .map(String::as_str)
        .chain(super::tables::TEMPLATES.iter().map(|t| t.package));
    for name in others {
        if let Some(package) = known
            .status
            .packages
            .get(name)
            .filter(|p| p.state == "installed")
        {
            tracked
                .entry(name.to_string())
                .or_insert_with(|| PackageVersion {
                    name: name.to_string(),
                    version: package.version.clone(),
                    architecture: package.architecture.clone(),
                });
        }
    }
    let mut files: BTreeMap<String, PristineFile> = BTreeMap::new();

    let unchanged = |p: &PackageVersion| {
        previous.packages.get(&p.name) == Some(&p.version)
            && !previous.unavailable.contains(&p.name)
    };
    if let Some(tip) = previous.tip {
        let tree = repo.find_commit(tip)?.tree()?;
        for (path, (package, source)) in &previous.sources {
            if source == "deb" && wanted.get(package).is_some_and(unchanged) {
                if let (Some(content), Ok(entry)) =
                    (read_blob(repo, &tree, path), tree.get_path(Path::new(path)))
                {
                    files.insert(
                        path.clone(),
                        PristineFile {
                            content,
                            mode: entry.filemode(),
                            package: package.clone(),
                            source: source.clone(),
                        },
                    );
                }
            }
        }
    }
    let to_fetch: Vec<&PackageVersion> = wanted.values().filter(|p| !unchanged(p)).collect();
    let download_dir = tempfile::Builder::new()
        .prefix("placard-debs-")
        .tempdir()
        .context("cannot make a temporary folder for .debs")?;
    let (debs, mut unavailable) = if to_fetch.is_empty() {
        (BTreeMap::new(), Vec::new())
    } else {
        pristine::find_debs(&to_fetch, roots, download_dir.path())
    };
    for (name, deb) in &debs {
        match pristine::extract_etc(deb) {
            Ok(extracted) => {
                for (path, content, mode) in extracted {
                    files.insert(
                        path,
                        PristineFile {
                            content,
                            mode,
                            package: name.clone(),
                            source: "deb".into(),
                        },
                    );
                }
            }
            Err(error) => {
                let version = wanted
                    .get(name)
                    .map(|p| p.version.clone())
                    .unwrap_or_default();
                unavailable.push(Unavailable {
                    package: name.clone(),
                    version,
                    message: format!("{error:#}"),
                });
            }
        }
    }
    // The .deb's own file wins; then the templates; then what ucf's cache recorded.
    pristine::add_generated(
        &mut files,
        pristine::from_templates(known, roots),
        pristine::from_ucf(known, roots),
    );

    let mut index = Index::new()?;
    for (path, file) in &files {
        add_blob(repo, &mut index, path, &file.content, file.mode)?;
    }
    let manifest: String = tracked
        .values()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.architecture))
        .collect();
    let sources: String = files
        .iter()
        .map(|(path, f)| format!("{path}\t{}\t{}\n", f.package, f.source))
        .collect();
    let missing: String = unavailable
        .iter()
        .map(|u| {
            format!(
                "{} {}: {}\n",
                u.package,
                u.version,
                u.message.replace('\n', " ")
            )
        })
        .collect();
    add_blob(
        repo,
        &mut index,
        PACKAGES_FILE,
        manifest.as_bytes(),
        pristine::MODE_FILE,
    )?;
    add_blob(
        repo,
        &mut index,
        SOURCES_FILE,
        sources.as_bytes(),
        pristine::MODE_FILE,
    )?;
    add_blob(
        repo,
        &mut index,
        UNAVAILABLE_FILE,
        missing.as_bytes(),
        pristine::MODE_FILE,
    )?;
    let tree_id = index
        .write_tree_to(repo)
        .context("cannot write the distro tree")?;

    let changes = package_changes(&previous.packages, &tracked);
    let parent = previous.tip.map(|id| repo.find_commit(id)).transpose()?;
    let mut update = Update {
        commit: None,
        tip: previous.tip.map(|t| t.to_string()),
        changes,
        unavailable,
        files: files.len(),
        fetched: debs.len(),
        pristine: BTreeMap::new(),
    };
    if parent.as_ref().is_none_or(|p| p.tree_id() != tree_id) {
        let tree = repo.find_tree(tree_id)?;
        let signature = Signature::now("placard", "root@localhost")?;
        let message = commit_message(&update, tracked.len(), parent.is_none());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        let id = repo
            .commit(
                Some(REFERENCE),
                &signature,
                &signature,
                &message,
                &tree,
                &parents,
            )
            .context("cannot commit on the distro branch")?;
        update.commit = Some(id.to_string());
        update.tip = Some(id.to_string());
    }
    update.pristine = files;
    Ok(update)
}

fn add_blob(
    repo: &Repository,
    index: &mut Index,
    path: &str,
    content: &[u8],
    mode: i32,
) -> Result<()> {
    let id = repo.blob(content)?;
    let entry = IndexEntry {
        ctime: IndexTime::new(0, 0),
        mtime: IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: mode as u32,
        uid: 0,
        gid: 0,
        file_size: content.len() as u32,
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    };
    index
        .add(&entry)
        .with_context(|| format!("cannot add {path} to the distro tree"))
}

fn package_changes(
    previous: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, PackageVersion>,
) -> Vec<String> {
    let mut changes = Vec::new();
    for (name, package) in wanted {
        match previous.get(name) {
            None if !previous.is_empty() => {
                changes.push(format!("added {name} {}", package.version))
            }
            Some(old) if *old != package.version => {
                changes.push(format!("upgraded {name} {old} → {}", package.version))
            }
            _ => {}
        }
    }
    for (name, old) in previous {
        if !wanted.contains_key(name) {
            changes.push(format!("removed {name} {old}"));
        }
    }
    changes
}

fn commit_message(update: &Update, packages: usize, first: bool) -> String {
    let mut message = format!(
        "distro: pristine /etc files of {packages} packages ({} files)\n\n",
        update.files
    );
    if first {
        message.push_str("The files as the installed packages shipped them; the package set is in .placard-packages.\n");
    }
    for change in &update.changes {
        message.push_str(&format!("{change}\n"));
    }
    for missing in &update.unavailable {
        message.push_str(&format!(
            "unavailable: {} {}: {}\n",
            missing.package, missing.version, missing.message
        ));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::dpkg::parse_status;

    /// A host made of a temporary folder: the branch from ucf's cache and a template only,
    /// so no .deb is needed.
    #[test]
    fn commits_from_blobs_without_touching_the_work_tree_and_only_when_something_changed() {
        let system = tempfile::tempdir().expect("a temporary folder");
        let etc = system.path().join("etc");
        std::fs::create_dir_all(system.path().join("var/lib/ucf/cache")).expect("folders");
        std::fs::create_dir_all(system.path().join("usr/share/base-files")).expect("folders");
        std::fs::create_dir_all(&etc).expect("folders");
        std::fs::write(
            system.path().join("var/lib/ucf/cache/:etc:ssh:sshd_config"),
            "PermitRootLogin no\n",
        )
        .expect("write");
        std::fs::write(system.path().join("usr/share/base-files/motd"), "Debian\n").expect("write");
        std::fs::write(etc.join("motd"), "Welcome to the club\n").expect("write");
        let repo = Repository::init(&etc).expect("a repository");
        let roots = Roots {
            etc: etc.clone(),
            system: system.path().to_path_buf(),
        };
        let status = "Package: openssh-server\nStatus: install ok installed\nVersion: 1:9.2p1-2\nArchitecture: amd64\n\nPackage: base-files\nStatus: install ok installed\nVersion: 12.4\nArchitecture: amd64\n";
        let mut known = Known {
            status: parse_status(status),
            ..Known::default()
        };
        known
            .ucf
            .insert("ssh/sshd_config".into(), "openssh-server".into());

        let first = update(&repo, &known, &roots).expect("an update");
        assert!(first.commit.is_some());
        assert_eq!(first.files, 2);
        let commit = repo
            .find_reference(REFERENCE)
            .and_then(|r| r.peel_to_commit())
            .expect("the branch");
        assert_eq!(commit.parent_count(), 0, "a history of its own");
        let tree = commit.tree().expect("a tree");
        assert_eq!(
            read_blob(&repo, &tree, "motd").as_deref(),
            Some(&b"Debian\n"[..])
        );
        assert_eq!(
            read_blob(&repo, &tree, "ssh/sshd_config").as_deref(),
            Some(&b"PermitRootLogin no\n"[..])
        );
        assert!(
            repo.head().is_err(),
            "master has no commit: only the distro branch was written"
        );
        assert!(
            repo.index().expect("the index").is_empty(),
            "the work tree's index is untouched"
        );

        let again = update(&repo, &known, &roots).expect("an update");
        assert_eq!(again.commit, None, "nothing changed");

        known.status = parse_status(&status.replace("12.4", "13.1"));
        std::fs::write(
            system.path().join("usr/share/base-files/motd"),
            "Debian 13\n",
        )
        .expect("write");
        let upgraded = update(&repo, &known, &roots).expect("an update");
        let id = upgraded.commit.expect("a new commit");
        let commit = repo
            .find_commit(Oid::from_str(&id).expect("an id"))
            .expect("the commit");
        assert_eq!(
            commit.parent_ids().collect::<Vec<_>>(),
            [Oid::from_str(first.commit.as_deref().unwrap_or_default()).expect("an id")]
        );
        assert!(
            commit
                .message()
                .unwrap_or_default()
                .contains("upgraded base-files 12.4 → 13.1"),
            "{:?}",
            commit.message()
        );
    }
}
