//! Writing what [`super::decide`] decided, for `etc upgrade`: clean merges a validator's
//! group at a time by the rule of [`crate::distro::validate`] (a group it rolls back
//! becomes conflicts), dropped conffiles moved to their successor or kept, and conflicts
//! left in the worktree. Every path comes in: the tests run it against temporary folders.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{Context as _, Result};

use super::decide::Decision;
use super::worktree::Worktree;
use super::{Conflict, KeptFile, MergedFile, MovedFile, UpgradeReport};
use crate::distro::successors;
use crate::distro::validate::{self, write_file, Outcome, Validator};
use crate::merge::{self, Issue};

/// Where the decisions are written, and how a file is judged.
pub struct Target<'a> {
    /// Live /etc.
    pub etc: &'a Path,
    pub worktree: &'a Worktree,
    /// The release upgraded to, recorded with each conflict.
    pub release: &'a str,
    /// The validator of a path: [`validate::for_path`] on a host.
    pub validator_for: &'a dyn Fn(&str) -> Option<Validator>,
    /// Whether a file's values must be withheld from the report.
    pub is_secret: &'a dyn Fn(&str) -> Result<bool>,
}

/// Writes the decisions into `report` (merged, moved, kept, conflicts, reloaded,
/// still_invalid) and adds the new conflicts to `pending`.
pub fn apply(
    target: &Target,
    decisions: Vec<(String, Decision)>,
    report: &mut UpgradeReport,
    pending: &mut BTreeMap<String, Conflict>,
) -> Result<()> {
    let mut clean: Vec<(String, merge::Merged)> = Vec::new();
    let mut conflicts: Vec<(String, merge::Merged, String)> = Vec::new();
    for (path, decision) in decisions {
        match decision {
            Decision::Nothing(_) => {}
            Decision::Clean(merged) => clean.push((path, merged)),
            Decision::Conflict(merged, reason) => conflicts.push((path, merged, reason)),
            Decision::Dropped { base, ours } => {
                keep_dropped(target.etc, &path, &base, &ours, report)?
            }
        }
    }
    for (validator, group) in validate::by_validator(clean, target.validator_for) {
        let files: Vec<(String, Option<Vec<u8>>)> = group
            .iter()
            .map(|(path, merged)| (path.clone(), Some(merged.text.clone().into_bytes())))
            .collect();
        let outcome = validate::write_group(target.etc, validator, &files)?;
        for (path, merged) in group {
            if let Outcome::RolledBack(line) = &outcome {
                conflicts.push((path, merged, line.clone()));
            } else {
                report.merged.push(MergedFile {
                    path,
                    method: merged.method,
                    replayed: merged.replayed,
                    notices: merged.notices,
                    translations: merged.translations,
                    validated: outcome.line(),
                });
            }
        }
        match outcome {
            Outcome::Passed(_) => report.reloaded.extend(validator.and_then(|v| v.reload())),
            Outcome::StillInvalid(line) => report.still_invalid.push(line),
            Outcome::RolledBack(_) => {}
        }
    }
    for (path, merged, reason) in conflicts {
        let file = target.worktree.leave(&path, &merged.text)?;
        let secret = (target.is_secret)(&path)?;
        let conflict = Conflict {
            path: path.clone(),
            method: serde_json::to_value(merged.method).unwrap_or_default(),
            issues: merged.issues.iter().map(|i| redacted(i, secret)).collect(),
            reason: (!reason.is_empty()).then_some(reason),
            worktree_file: file,
            release: target.release.to_string(),
        };
        pending.insert(path, conflict.clone());
        report.conflicts.push(conflict);
    }
    Ok(())
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

/// A conffile the site changed and the new release dropped: its site settings go to
/// its successor when [`successors`] knows one; otherwise the site's file stays at its
/// path, as it was (put back when dpkg moved it to `.dpkg-bak`), and is listed.
pub fn keep_dropped(
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
            write_file(&target, merged.text.as_bytes())?;
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
        write_file(&live, ours.as_bytes())?;
    }
    report.kept.push(KeptFile {
        path: path.to_string(),
        reason,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::decide::decide;
    use super::*;

    /// One conffile: its three versions, and what the live file must be afterwards
    /// (`None`: absent).
    struct Case {
        path: &'static str,
        base: &'static str,
        ours: Option<&'static str>,
        theirs: Option<&'static str>,
        live_after: Option<&'static str>,
    }

    /// A host's /etc and worktree in temporary folders; each case decided and written
    /// as `etc upgrade` does, with a validator (for `ssh/`) that refuses the word
    /// "broken" anywhere under ssh/.
    fn upgrade(cases: &[Case]) -> (tempfile::TempDir, tempfile::TempDir, UpgradeReport) {
        let etc = tempfile::tempdir().expect("a temporary folder");
        let work = tempfile::tempdir().expect("a temporary folder");
        for case in cases {
            if let Some(ours) = case.ours {
                let live = etc.path().join(case.path);
                fs::create_dir_all(live.parent().expect("a folder")).expect("created");
                fs::write(live, ours).expect("written");
            }
        }
        let ssh: &'static str = Box::leak(etc.path().join("ssh").display().to_string().into());
        let refusing = Validator {
            name: "no broken",
            argv: Box::leak(Box::new(["sh", "-c", "! grep -rq broken \"$0\"", ssh])),
            unit: None,
        };
        let validator_for = |path: &str| path.starts_with("ssh/").then_some(refusing);
        let worktree = Worktree::open(work.path()).expect("a worktree");
        let target = Target {
            etc: etc.path(),
            worktree: &worktree,
            release: "trixie",
            validator_for: &validator_for,
            is_secret: &|_| Ok(false),
        };
        let decisions = cases
            .iter()
            .map(|case| {
                let decision = decide(
                    case.path,
                    "trixie",
                    Some(case.base.as_bytes()),
                    case.ours.map(str::as_bytes),
                    case.theirs.map(str::as_bytes),
                );
                (case.path.to_string(), decision)
            })
            .collect();
        let mut report = UpgradeReport::new("bookworm", "trixie", "/nowhere");
        let mut pending = BTreeMap::new();
        apply(&target, decisions, &mut report, &mut pending).expect("applied");
        for case in cases {
            let live = fs::read_to_string(etc.path().join(case.path)).ok();
            assert_eq!(live.as_deref(), case.live_after, "/etc/{}", case.path);
        }
        assert_eq!(
            pending.keys().collect::<Vec<_>>(),
            report.conflicts.iter().map(|c| &c.path).collect::<Vec<_>>()
        );
        (etc, work, report)
    }

    fn paths<T>(items: &[T], path: impl Fn(&T) -> &str) -> Vec<&str> {
        items.iter().map(path).collect()
    }

    #[test]
    fn each_case_of_an_upgrade_written_to_a_temporary_etc() {
        let cases = [
            // Kept by both: nothing written.
            Case {
                path: "kept.conf",
                base: "a = 1\n",
                ours: Some("a = 1\n"),
                theirs: Some("a = 1\n"),
                live_after: Some("a = 1\n"),
            },
            // Changed by the site only: the site's file stays.
            Case {
                path: "default/site",
                base: "A=1\n",
                ours: Some("A=2\n"),
                theirs: Some("A=1\n"),
                live_after: Some("A=2\n"),
            },
            // Changed by the package only (dpkg kept the old one): the new version.
            Case {
                path: "default/package",
                base: "A=1\n",
                ours: Some("A=1\n"),
                theirs: Some("A=1\nB=2\n"),
                live_after: Some("A=1\nB=2\n"),
            },
            // Changed by both, by setting: the site's value on the new file.
            Case {
                path: "default/both",
                base: "# comment\nA=1\n",
                ours: Some("# comment\nA=5\n"),
                theirs: Some("# new comment\nA=1\nB=2\n"),
                live_after: Some("# new comment\nA=5\nB=2\n"),
            },
            // Changed by both, by line: a conflict, the live file kept.
            Case {
                path: "club/motd",
                base: "Welcome\n",
                ours: Some("Welcome to the club\n"),
                theirs: Some("Welcome to Debian\n"),
                live_after: Some("Welcome to the club\n"),
            },
            // Dropped by the release, with a successor: moved to sysctl.d.
            Case {
                path: "sysctl.conf",
                base: "#net.ipv4.ip_forward=1\n",
                ours: Some("net.ipv4.ip_forward=1\n"),
                theirs: None,
                live_after: None,
            },
            // Dropped by the release, no successor: kept as it was.
            Case {
                path: "network/if-up.d/club",
                base: "a\n",
                ours: Some("b\n"),
                theirs: None,
                live_after: Some("b\n"),
            },
            // A renamed setting, translated by rule; its validator passes.
            Case {
                path: "ssh/sshd_config",
                base: "#ChallengeResponseAuthentication no\n",
                ours: Some("ChallengeResponseAuthentication no\n"),
                theirs: Some("#KbdInteractiveAuthentication no\n"),
                live_after: Some(
                    "#KbdInteractiveAuthentication no\nKbdInteractiveAuthentication no\n",
                ),
            },
        ];
        let (etc, work, report) = upgrade(&cases);
        assert_eq!(
            paths(&report.merged, |m| &m.path),
            ["default/package", "default/both", "ssh/sshd_config"]
        );
        let sshd = &report.merged[2];
        assert_eq!(sshd.validated, "no broken passed");
        assert_eq!(sshd.translations.len(), 1, "{:?}", sshd.translations);
        assert_eq!(paths(&report.conflicts, |c| &c.path), ["club/motd"]);
        let left = fs::read_to_string(work.path().join("files/club/motd")).expect("left");
        assert!(left.contains("<<<<<<<"), "{left}");
        assert_eq!(paths(&report.moved, |m| &m.path), ["sysctl.conf"]);
        let moved = fs::read_to_string(etc.path().join("sysctl.d/99-site.conf")).expect("moved");
        assert!(moved.contains("\nnet.ipv4.ip_forward=1\n"), "{moved}");
        assert_eq!(paths(&report.kept, |k| &k.path), ["network/if-up.d/club"]);
        assert!(report.still_invalid.is_empty());
    }

    /// A clean merge that makes a working configuration fail its validator is put back
    /// and becomes a conflict; the rest of its group goes back with it.
    #[test]
    fn a_validator_failure_puts_the_group_back_as_conflicts() {
        let cases = [
            Case {
                path: "ssh/sshd_config",
                base: "#PermitRootLogin yes\n",
                ours: Some("PermitRootLogin no\n"),
                theirs: Some("#PermitRootLogin yes\nbroken\n"),
                live_after: Some("PermitRootLogin no\n"),
            },
            Case {
                path: "ssh/sshd_config.d/club.conf",
                base: "#Port 22\n",
                ours: Some("#Port 22\n"),
                theirs: Some("#Port 22\nX11Forwarding no\n"),
                live_after: Some("#Port 22\n"),
            },
        ];
        let (_etc, work, report) = upgrade(&cases);
        assert!(report.merged.is_empty(), "{:?}", report.merged);
        assert_eq!(
            paths(&report.conflicts, |c| &c.path),
            ["ssh/sshd_config", "ssh/sshd_config.d/club.conf"]
        );
        assert!(report.conflicts[0]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("`no broken` failed")));
        let left = fs::read_to_string(work.path().join("files/ssh/sshd_config")).expect("left");
        assert!(left.contains("PermitRootLogin no\n"), "{left}");
    }

    /// A configuration that already failed its validator is not a working one: the clean
    /// merges are written, and the report says it is still invalid.
    #[test]
    fn a_broken_configuration_takes_the_merges_and_stays_listed() {
        let cases = [Case {
            path: "ssh/sshd_config",
            base: "#Port 22\n",
            ours: Some("#Port 22\nbroken\n"),
            theirs: Some("#Port 22\nX11Forwarding no\n"),
            live_after: Some("#Port 22\nX11Forwarding no\nbroken\n"),
        }];
        let (_etc, _work, report) = upgrade(&cases);
        assert_eq!(paths(&report.merged, |m| &m.path), ["ssh/sshd_config"]);
        assert_eq!(report.still_invalid.len(), 1, "{:?}", report.still_invalid);
        assert_eq!(report.still_invalid[0].files, ["ssh/sshd_config"]);
        assert!(report.conflicts.is_empty());
    }
}
