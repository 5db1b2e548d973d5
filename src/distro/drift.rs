//! `placard etc drift`, on the host: bring the distro branch up to date, classify every
//! file under /etc, and diff each locally modified file against its pristine version.
//!
//! Diffs of files that /etc's repository ignores (secrets, private keys) are withheld:
//! drift names them but never prints their content.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use git2::Repository;
use serde::Serialize;

use super::baseline;
use super::branch::{self, Update};
use super::classify::{self, Class};
use super::host::{self, Roots};
use crate::diff;

#[derive(Debug, Clone, Serialize)]
pub struct FileDrift {
    pub path: String,
    #[serde(flatten)]
    pub class: Class,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Drift {
    pub branch: Update,
    /// Every file under /etc, by path.
    pub files: Vec<FileDrift>,
    /// How many files fall in each class.
    pub counts: BTreeMap<String, usize>,
    /// The reference install that tells package-made files from the site's, or why
    /// there is none (then those files stay the site's).
    pub baseline: baseline::Report,
}

/// Runs drift on the /etc of `roots`, whose repository must exist. `reference`: build
/// the reference install when none is cached for the host's package set; without it a
/// cached one is used, and with none the report says how to build one.
pub fn run(roots: &Roots, reference: bool) -> Result<Drift> {
    let repo = Repository::open(&roots.etc)
        .with_context(|| format!("cannot open the git repository in {}", roots.etc.display()))?;
    let (_, mut known) = host::read_known(roots)?;
    let update = branch::update(&repo, &known, roots)?;
    known.pristine = update
        .pristine
        .iter()
        .map(|(path, file)| (path.clone(), host::md5_hex(&file.content)))
        .collect();
    let live = host::walk_etc(&roots.etc)?;
    let mut classes = classify::classify(&live, &known);
    // Issue 13, item 5: files maintainer scripts made are not the site's. Fails closed:
    // without a baseline they stay "site", and the report says why.
    let baseline = match baseline::load_or_build(roots, &known.status, reference) {
        Ok((baseline, built)) => baseline::Report::Used {
            generated: baseline::apply(&baseline, &live, &mut classes),
            key: baseline.key,
            built,
            build_seconds: baseline.build_seconds,
            scratch_bytes: baseline.scratch_bytes,
            left_out: baseline.left_out,
        },
        Err(error) => baseline::Report::Unavailable {
            reason: format!("{error:#}"),
        },
    };

    // The admin's `!/PATH` lines: files marked as no secret get their diff.
    let marked = super::secrets::marked(&roots.etc);
    let mut files = Vec::with_capacity(classes.len());
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (path, class) in classes {
        let name = serde_json::to_value(&class)
            .ok()
            .and_then(|v| v.get("class").and_then(|c| c.as_str()).map(str::to_string))
            .unwrap_or_default();
        *counts.entry(name).or_default() += 1;
        let diff = match &class {
            Class::Modified { deleted, .. } => Some(modified_diff(
                &repo, roots, &marked, &update, &path, *deleted,
            )),
            _ => None,
        };
        files.push(FileDrift { path, class, diff });
    }
    Ok(Drift {
        branch: update,
        files,
        counts,
        baseline,
    })
}

fn modified_diff(
    repo: &Repository,
    roots: &Roots,
    marked: &std::collections::BTreeSet<String>,
    update: &Update,
    path: &str,
    deleted: bool,
) -> String {
    // A path git cannot answer for is taken as secret: its diff is withheld.
    if repo.is_path_ignored(path).unwrap_or(true) {
        return "(diff withheld: /etc's repository keeps this file out of history, as it may hold secrets)\n".to_string();
    }
    if !deleted {
        if let Some(why) = super::secrets::why_secret_in(&roots.etc, marked, path) {
            return format!("(diff withheld: {why}; it may hold secrets)\n");
        }
    }
    let Some(pristine) = update.pristine.get(path) else {
        return "(no diff: the pristine version is not on the distro branch; see its unavailable packages)\n".to_string();
    };
    let live = if deleted {
        None
    } else if pristine.mode == super::pristine::MODE_LINK {
        std::fs::read_link(roots.etc.join(path))
            .ok()
            .map(|t| t.as_os_str().as_encoded_bytes().to_vec())
    } else {
        std::fs::read(roots.etc.join(path)).ok()
    };
    diff::unified(
        &format!("/etc/{path}"),
        Some(&pristine.content),
        live.as_deref(),
    )
}
