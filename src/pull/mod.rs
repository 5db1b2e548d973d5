//! Pull mode: a host that nobody can reach applies its own configuration from a git
//! repository of the site (inventory, roles, templates), on a timer.
//!
//! One run ([`run`], `placard pull` on the host, started by the pull role's timer):
//! 1. fetch the branch into /var/lib/placard/pull/site (git, read-only: `git://`,
//!    `https://`, or `ssh://` with the deploy key the pull role generated on the host
//!    and the server's pinned host key); a repository that cannot be reached leaves
//!    the host as it is, and says so;
//! 2. a commit already seen ends the run: nothing is applied, /etc gets no commit;
//! 3. the commit must carry an SSH signature by a key of the allowed signers file
//!    (`git verify-commit`), unless unsigned commits are explicitly allowed;
//! 4. check it out and run `placard apply --local` on the host's inventory entry, as a
//!    child process under a deadline: it takes the host's run lock, as a push does, so
//!    pull and push never run at once; an invalid site (exit 3) changes nothing.
//!
//! Each result goes to the journal (the service's output); a failure, and the first
//! success after one, are also mailed through the monitor's mail path (its settings,
//! /etc/placard/monitor.json) when the monitor role is on the host. The same failure is
//! mailed once, not at every period. The state (`pull/state.json`): the last commit
//! judged (signed or not, valid or not: not judged again), the last one applied, the
//! last result. A commit whose apply failed is tried again at the next period: the
//! failure may pass (a push holding the run lock, a package mirror down).

pub mod cli;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::system::atomic::{self, Attributes};
use crate::system::command::{self, Program};

pub const CONFIG_PATH: &str = "/etc/placard/pull.json";
pub const LOCK_FILE: &str = "/run/placard-pull.lock";
/// How git reaches an ssh:// repository (fixed words: nothing here comes from a user).
const SSH_COMMAND: &str = "ssh -i /var/lib/placard/pull/deploy-key -o IdentitiesOnly=yes -o BatchMode=yes \
     -o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/placard/pull-known-hosts -o ConnectTimeout=30";
const FETCH_DEADLINE: Duration = Duration::from_secs(300);
const APPLY_DEADLINE: Duration = Duration::from_secs(3600);

/// The settings the pull role writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The site's repository, as git takes it.
    pub repository: String,
    pub branch: String,
    /// The inventory, relative to the repository's root.
    pub inventory: String,
    /// This host's name in the inventory.
    pub host: String,
    /// An SSH allowed-signers file (`git verify-commit`).
    pub allowed_signers: String,
    #[serde(default)]
    pub allow_unsigned: bool,
}

/// What the last run found.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullState {
    /// The last commit fetched and judged (applied or refused): not judged again.
    #[serde(default)]
    pub seen: Option<String>,
    /// The last commit applied without failure: the host is in its state.
    #[serde(default)]
    pub applied: Option<String>,
    /// The last run's result, in a line.
    #[serde(default)]
    pub result: String,
    /// Whether the last result was a failure (the next success is mailed).
    #[serde(default)]
    pub failing: bool,
}

/// One run's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    NoNewCommit(String),
    Applied { commit: String, output: String },
    Unreachable(String),
    Refused { commit: String, why: String },
    Invalid { commit: String, why: String },
    Failed { commit: String, why: String },
}

impl Outcome {
    pub fn failed(&self) -> bool {
        !matches!(self, Outcome::NoNewCommit(_) | Outcome::Applied { .. })
    }

    /// The line for the journal and the mail's first line.
    pub fn summary(&self) -> String {
        let short = |c: &str| c.chars().take(12).collect::<String>();
        match self {
            Outcome::NoNewCommit(c) => format!("no new commit (still {}): nothing to do", short(c)),
            Outcome::Applied { commit, .. } => format!("applied commit {}", short(commit)),
            Outcome::Unreachable(why) => {
                format!("the site's repository cannot be fetched; the host is left as it is: {why}")
            }
            Outcome::Refused { commit, why } => {
                format!("commit {} refused, not applied: {why}", short(commit))
            }
            Outcome::Invalid { commit, why } => format!(
                "commit {} is not a valid site (exit 3), not applied; the host keeps its last good state:\n{why}",
                short(commit)
            ),
            Outcome::Failed { commit, why } => {
                format!("applying commit {} failed:\n{why}", short(commit))
            }
        }
    }
}

/// Where a pull run reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub state: PathBuf,
    /// The monitor's settings, for the mail; absent: journal only.
    pub monitor: PathBuf,
    /// The placard binary that applies (`apply --local`).
    pub placard: PathBuf,
}

fn git(dir: &Path, args: &[&str]) -> Program {
    let mut argv = vec!["git", "-C"];
    let dir = dir.to_string_lossy().into_owned();
    argv.push(&dir);
    argv.extend_from_slice(args);
    // Over ssh://: the host's own deploy key, the pinned host key, never a prompt.
    Program::new(&argv, FETCH_DEADLINE)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_SSH_COMMAND", SSH_COMMAND)
}

/// Fetches the branch; the commit at its tip.
fn fetch(config: &Config, site: &Path) -> Result<String> {
    if !site.join(".git").is_dir() {
        std::fs::create_dir_all(site)
            .with_context(|| format!("cannot create {}", site.display()))?;
        git(site, &["init", "--quiet"]).run_ok()?;
        git(site, &["remote", "add", "origin", &config.repository]).run_ok()?;
    }
    git(site, &["remote", "set-url", "origin", &config.repository]).run_ok()?;
    let refspec = format!("+refs/heads/{0}:refs/remotes/origin/{0}", config.branch);
    git(site, &["fetch", "--quiet", "origin", &refspec]).run_ok()?;
    let tip = git(
        site,
        &[
            "rev-parse",
            &format!("refs/remotes/origin/{}^{{commit}}", config.branch),
        ],
    )
    .run_ok()?;
    Ok(tip.stdout_text().trim().to_string())
}

/// Runs one pull; the outcome is also written to the state, and mailed when it says
/// something new.
pub fn run(paths: &Paths) -> Result<Outcome> {
    let config: Config = atomic::read_role_settings(&paths.config, "pull mode's settings", "pull")?;
    let folder = paths.state.join("pull");
    let state_path = folder.join("state.json");
    let previous: PullState = atomic::read_json(
        &state_path,
        "the last commit pull mode saw and applied (removing it makes the next run apply the tip again)",
    )?
    .unwrap_or_default();
    let outcome = judge(&config, paths, &folder.join("site"), &previous);
    let mut next = previous.clone();
    match &outcome {
        Outcome::NoNewCommit(_) => return Ok(outcome),
        Outcome::Unreachable(_) => {}
        Outcome::Applied { commit, .. } => {
            next.seen = Some(commit.clone());
            next.applied = Some(commit.clone());
        }
        // Judged for good: the same commit would be refused again.
        Outcome::Refused { commit, .. } | Outcome::Invalid { commit, .. } => {
            next.seen = Some(commit.clone())
        }
        // Maybe passing (the run lock held by a push, a mirror down): tried again.
        Outcome::Failed { .. } => {}
    }
    next.result = outcome.summary();
    next.failing = outcome.failed();
    // The same failure (an unreachable repository, every period) is mailed once; a
    // success is mailed only after a failure.
    let say = if outcome.failed() {
        next.result != previous.result
    } else {
        previous.failing
    };
    if say {
        if let Err(error) = mail(paths, &config, &outcome) {
            println!("the pull's mail could not be sent: {error:#}");
        }
    }
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    atomic::write_atomic(
        &state_path,
        &serde_json::to_vec_pretty(&next)?,
        Attributes::mode(0o600),
        None,
    )?;
    Ok(outcome)
}

fn judge(config: &Config, paths: &Paths, site: &Path, previous: &PullState) -> Outcome {
    let commit = match fetch(config, site) {
        Ok(commit) => commit,
        Err(error) => return Outcome::Unreachable(format!("{error:#}")),
    };
    if previous.seen.as_deref() == Some(commit.as_str()) {
        return Outcome::NoNewCommit(commit);
    }
    if !config.allow_unsigned {
        let signers = format!("gpg.ssh.allowedSignersFile={}", config.allowed_signers);
        let verified = git(site, &["-c", &signers, "verify-commit", &commit]).output();
        match verified {
            Ok(output) if output.status.success() => {}
            Ok(output) => {
                let said = output.last_lines(4);
                return Outcome::Refused {
                    commit,
                    why: if said.trim().is_empty() {
                        "it is not signed; only commits signed by a key of the allowed signers are applied".into()
                    } else {
                        format!("its signature is not by an allowed key: {}", said.trim())
                    },
                };
            }
            Err(error) => {
                return Outcome::Refused {
                    commit,
                    why: format!("its signature cannot be checked: {error}"),
                }
            }
        }
    }
    if let Err(error) = git(
        site,
        &["checkout", "--quiet", "--force", "--detach", &commit],
    )
    .run_ok()
    .and_then(|_| git(site, &["clean", "--quiet", "-fdx"]).run_ok())
    {
        return Outcome::Failed {
            commit,
            why: format!("cannot check it out: {error}"),
        };
    }
    let inventory = site.join(&config.inventory);
    let site_text = site.to_string_lossy().into_owned();
    let inventory_text = inventory.to_string_lossy().into_owned();
    let placard = paths.placard.to_string_lossy().into_owned();
    let applied = Program::new(
        &[
            placard.as_str(),
            "apply",
            "--local",
            "-i",
            &inventory_text,
            "--site",
            &site_text,
            &config.host,
        ],
        APPLY_DEADLINE,
    )
    .env("NO_COLOR", "1")
    .output();
    match applied {
        Ok(output) => {
            let text = format!(
                "{}{}",
                output.stdout_text(),
                String::from_utf8_lossy(&output.stderr)
            );
            match output.status.code() {
                Some(0) => Outcome::Applied {
                    commit,
                    output: text,
                },
                Some(3) => Outcome::Invalid {
                    commit,
                    why: command::last_lines(&text, 20),
                },
                _ => Outcome::Failed {
                    commit,
                    why: command::last_lines(&text, 20),
                },
            }
        }
        Err(error) => Outcome::Failed {
            commit,
            why: error.to_string(),
        },
    }
}

/// `placard pull`: one run under pull mode's lock; the result to the journal. True when
/// it failed: placard then exits 1, so that `systemctl --failed` shows it too.
pub fn main(args: cli::PullArgs) -> Result<bool> {
    let _lock = crate::system::lock::Lock::acquire(Path::new(LOCK_FILE), "placard pull")?;
    let paths = Paths {
        config: args.config,
        monitor: PathBuf::from(crate::monitor::CONFIG_PATH),
        placard: std::env::current_exe().context("cannot find placard's own executable")?,
        state: args.state,
    };
    let outcome = run(&paths)?;
    if let Outcome::Applied { output, .. } = &outcome {
        print!("{output}");
    }
    println!("{}", outcome.summary());
    Ok(outcome.failed())
}

/// Through the monitor's mail path, when the monitor role is on the host.
fn mail(paths: &Paths, config: &Config, outcome: &Outcome) -> Result<()> {
    let Some(monitor) =
        atomic::read_json::<crate::monitor::Config>(&paths.monitor, "the monitor's settings")?
    else {
        return Ok(());
    };
    let host = crate::monitor::mail::host_name();
    let subject = format!(
        "[placard] {host}: pull {}",
        if outcome.failed() {
            "FAILED"
        } else {
            "works again"
        }
    );
    let body = format!(
        "{}\n\nRepository {} (branch {}), host {} of {}.\n",
        outcome.summary(),
        config.repository,
        config.branch,
        config.host,
        config.inventory
    );
    crate::monitor::mail::send_text(&monitor, &subject, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_say_what_happened_to_the_host() {
        let invalid = Outcome::Invalid {
            commit: "0123456789abcdef".into(),
            why: "inventory.yml:3:5: unknown field".into(),
        };
        assert!(invalid.failed());
        let text = invalid.summary();
        assert!(
            text.contains("0123456789ab")
                && text.contains("not applied")
                && text.contains("inventory.yml:3:5")
        );
        assert!(!Outcome::NoNewCommit("a".into()).failed());
        assert!(Outcome::Unreachable("x".into())
            .summary()
            .contains("left as it is"));
    }
}
