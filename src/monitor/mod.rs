//! The monitor: the roles' health checks, run on the host by a systemd timer with no
//! controller, and a mail to the admin when one changes state.
//!
//! How the pieces meet:
//! - every apply that succeeds stores the host's checks, rendered, in
//!   `/var/lib/placard/checks.json` ([`store_checks`]), and keeps the agent binary it
//!   ran as at `/var/lib/placard/bin/placard` ([`keep_agent`]): the timer's service runs
//!   that file, so the checks are exactly what `placard verify` would run;
//! - the monitor role writes `/etc/placard/monitor.json` ([`Config`]: who gets mail, how
//!   it is sent, the deadlines, extra commands) and the timer;
//! - each timer run ([`run`]) runs every check at once, each under its deadline, and
//!   compares with the last state ([`step`], pure): failing → one mail, recovered →
//!   one mail, still failing → a reminder once `reminder` has passed since the last mail;
//! - the state is written atomically and synced (`/var/lib/placard/monitor/state.json`)
//!   after the mail went out: a reboot finds what was already said, and a mail that
//!   could not be sent is tried again at the next run.
//!
//! What it leaves to others: sending ([`mail`]), the checks themselves
//! ([`crate::verify`]), the timer ([roles/monitor.yml]).

pub mod mail;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::role::CheckSpec;
use crate::system::atomic::{self, Attributes};

/// The monitor's settings, written by the monitor role.
pub const CONFIG_PATH: &str = "/etc/placard/monitor.json";
/// In the state folder: the checks the last apply stored.
pub const CHECKS_FILE: &str = "checks.json";
/// In the state folder: what the monitor last found, and what it said.
pub const STATE_FILE: &str = "monitor/state.json";
/// In the state folder: the agent binary the timer runs.
pub const AGENT_LINK: &str = "bin/placard";
/// One monitor run at a time, even started by hand beside the timer.
pub const LOCK_FILE: &str = "/run/placard-monitor.lock";

/// One check, as the last apply rendered it, with the role that declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredCheck {
    pub role: String,
    pub check: CheckSpec,
}

/// The settings the monitor role writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who gets the mail.
    pub admin: String,
    /// The sender; empty: root@ this host's name.
    #[serde(default)]
    pub sender: String,
    /// Empty: the local MTA's sendmail; else an SMTP relay reached directly.
    #[serde(default)]
    pub relay_host: String,
    #[serde(default = "smtp_port")]
    pub relay_port: u16,
    /// A duration (30s, 5m, 24h, 2d): how long a check may run.
    pub check_timeout: String,
    /// A duration: how long a failing check goes unmentioned after its last mail.
    pub reminder: String,
    /// Commands checked beside the roles' checks, role `monitor`.
    #[serde(default)]
    pub checks: Vec<ExtraCheck>,
}

fn smtp_port() -> u16 {
    25
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraCheck {
    pub name: String,
    pub command: Vec<String>,
}

/// What the monitor knows of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckState {
    pub role: String,
    pub name: String,
    pub ok: bool,
    /// What the last run saw.
    pub detail: String,
    /// When it entered this state (seconds since the epoch).
    pub since: u64,
    /// When a mail last said so; 0: never (a check found passing at its first run).
    #[serde(default)]
    pub mailed: u64,
}

/// The monitor's state file.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    /// By [`key`].
    pub checks: BTreeMap<String, CheckState>,
    /// When the last run finished (seconds since the epoch).
    #[serde(default)]
    pub last_run: u64,
    /// Why the last run's mail could not be sent, when it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_error: Option<String>,
}

/// A check's result in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub role: String,
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What a mail says of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Failing,
    Recovered,
    StillFailing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub change: Change,
    pub check: CheckState,
}

pub fn key(role: &str, name: &str) -> String {
    format!("{role}: {name}")
}

/// The next state and what to mail, from the last state and this run's outcomes: a
/// change of state is mailed once; a check still failing is mailed again once
/// `reminder` has passed since its last mail. A check found passing at its first run
/// is not mailed (nothing changed that anyone knew of); one found failing is. Checks no
/// longer stored (a role removed) are forgotten.
pub fn step(
    previous: &MonitorState,
    outcomes: &[Outcome],
    now: u64,
    reminder: Duration,
) -> (MonitorState, Vec<Alert>) {
    let mut next = MonitorState {
        checks: BTreeMap::new(),
        last_run: now,
        mail_error: None,
    };
    let mut alerts = Vec::new();
    for outcome in outcomes {
        let id = key(&outcome.role, &outcome.name);
        let fresh = CheckState {
            role: outcome.role.clone(),
            name: outcome.name.clone(),
            ok: outcome.ok,
            detail: outcome.detail.clone(),
            since: now,
            mailed: 0,
        };
        let (state, change) = match previous.checks.get(&id) {
            None if outcome.ok => (fresh, None),
            None => (fresh, Some(Change::Failing)),
            Some(old) if old.ok != outcome.ok => (
                fresh,
                Some(if outcome.ok {
                    Change::Recovered
                } else {
                    Change::Failing
                }),
            ),
            Some(old) => {
                let state = CheckState {
                    detail: outcome.detail.clone(),
                    ..old.clone()
                };
                let due = !old.ok && now.saturating_sub(old.mailed) >= reminder.as_secs();
                (state, due.then_some(Change::StillFailing))
            }
        };
        let state = match change {
            Some(change) => {
                let state = CheckState {
                    mailed: now,
                    ..state
                };
                alerts.push(Alert {
                    change,
                    check: state.clone(),
                });
                state
            }
            None => state,
        };
        next.checks.insert(id, state);
    }
    (next, alerts)
}

/// `30s`, `5m`, `24h`, `2d`, `1w`, `1y` (the role's `duration` variables).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let unit = text.chars().last()?;
    let number: u64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'y' => 365 * 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(number.checked_mul(seconds)?))
}

/// Writes the checks an apply found (rendered) for the timer's runs, when they differ
/// from the stored ones.
pub fn store_checks(state_dir: &Path, checks: &[StoredCheck]) -> Result<()> {
    let path = state_dir.join(CHECKS_FILE);
    let text = serde_json::to_vec_pretty(checks)?;
    if fs::read(&path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    create_private(state_dir)?;
    atomic::write_atomic(&path, &text, Attributes::mode(0o600), None)
}

pub fn load_checks(state_dir: &Path) -> Result<Option<Vec<StoredCheck>>> {
    atomic::read_json(
        &state_dir.join(CHECKS_FILE),
        "the checks the last apply stored for the monitor (the next apply writes it again)",
    )
}

pub fn load_state(state_dir: &Path) -> Result<MonitorState> {
    Ok(atomic::read_json(
        &state_dir.join(STATE_FILE),
        "what the monitor last found and mailed (removing it makes the next run mail every failing check again)",
    )?
    .unwrap_or_default())
}

fn save_state(state_dir: &Path, state: &MonitorState) -> Result<()> {
    let path = state_dir.join(STATE_FILE);
    if let Some(folder) = path.parent() {
        create_private(folder)?;
    }
    // Synced: a reboot right after a mail must not send it again.
    atomic::write_atomic(
        &path,
        &serde_json::to_vec_pretty(state)?,
        Attributes::mode(0o600),
        None,
    )
}

fn create_private(folder: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(folder)
        .with_context(|| format!("cannot create {}", folder.display()))
}

/// Keeps the running agent at `state_dir/bin/placard`, the path the timer's service
/// runs. A hard link, so that the bootstrap's sweep of old versions (which removes
/// `placard-HASH` files) leaves it working until the next apply replaces it; a copy
/// when the executable is on another file system (`--local`).
pub fn keep_agent(state_dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let executable = std::env::current_exe().context("cannot find the agent's executable")?;
    let link = state_dir.join(AGENT_LINK);
    let same = |a: &Path, b: &Path| match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    };
    if same(&executable, &link) {
        return Ok(());
    }
    if let Some(folder) = link.parent() {
        create_private(folder)?;
    }
    let staged = link.with_file_name("placard.new");
    let _ = fs::remove_file(&staged);
    if fs::hard_link(&executable, &staged).is_err() {
        fs::copy(&executable, &staged).with_context(|| {
            format!(
                "cannot copy {} to {}",
                executable.display(),
                staged.display()
            )
        })?;
    }
    fs::rename(&staged, &link).with_context(|| format!("cannot put {} in place", link.display()))
}

/// Where a monitor run reads and writes.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config: PathBuf,
    pub state: PathBuf,
}

/// What one run did, for the journal (the service's output).
#[derive(Debug, Default)]
pub struct RunReport {
    pub checked: usize,
    pub failing: Vec<String>,
    pub mailed: Vec<String>,
}

/// One timer run: run the stored checks (and the config's commands), each under the
/// deadline and all at once, then mail what changed through `send`, and save the state.
/// When `send` fails, the state of the checks it was about is kept as it was, so the
/// next run tries again.
pub fn run(
    paths: &Paths,
    now: u64,
    send: &dyn Fn(&Config, &[Alert]) -> Result<()>,
) -> Result<RunReport> {
    let config: Config =
        atomic::read_role_settings(&paths.config, "the monitor's settings", "monitor")?;
    let limit = parse_duration(&config.check_timeout).with_context(|| {
        format!(
            "{}: check_timeout `{}` is not a duration such as 30s",
            paths.config.display(),
            config.check_timeout
        )
    })?;
    let reminder = parse_duration(&config.reminder).with_context(|| {
        format!(
            "{}: reminder `{}` is not a duration such as 24h",
            paths.config.display(),
            config.reminder
        )
    })?;
    let mut checks = load_checks(&paths.state)?.unwrap_or_default();
    checks.extend(config.checks.iter().map(|extra| StoredCheck {
        role: "monitor".into(),
        check: CheckSpec {
            name: extra.name.clone(),
            service: None,
            port: None,
            command: Some(extra.command.clone()),
        },
    }));
    let outcomes = run_checks(&checks, limit);
    let previous = load_state(&paths.state)?;
    let (mut next, alerts) = step(&previous, &outcomes, now, reminder);
    let mut report = RunReport {
        checked: outcomes.len(),
        failing: outcomes
            .iter()
            .filter(|o| !o.ok)
            .map(|o| key(&o.role, &o.name))
            .collect(),
        mailed: Vec::new(),
    };
    if !alerts.is_empty() {
        match send(&config, &alerts) {
            Ok(()) => {
                report.mailed = alerts
                    .iter()
                    .map(|a| key(&a.check.role, &a.check.name))
                    .collect();
            }
            Err(error) => {
                for alert in &alerts {
                    let id = key(&alert.check.role, &alert.check.name);
                    match previous.checks.get(&id) {
                        Some(old) => next.checks.insert(id, old.clone()),
                        None => next.checks.remove(&id),
                    };
                }
                next.mail_error = Some(format!("{error:#}"));
                save_state(&paths.state, &next)?;
                return Err(
                    error.context("the monitor's mail could not be sent; the next run tries again")
                );
            }
        }
    }
    save_state(&paths.state, &next)?;
    Ok(report)
}

/// Every check at once, each in a thread under `limit`: a hung check costs one
/// deadline, not one per check after it.
fn run_checks(checks: &[StoredCheck], limit: Duration) -> Vec<Outcome> {
    std::thread::scope(|scope| {
        let running: Vec<_> = checks
            .iter()
            .map(|stored| {
                scope.spawn(move || {
                    let (ok, detail) = match stored.check.validate() {
                        Ok(()) => crate::verify::run_within(&stored.check, limit),
                        Err(problem) => (false, problem),
                    };
                    Outcome {
                        role: stored.role.clone(),
                        name: stored.check.name.clone(),
                        ok,
                        detail,
                    }
                })
            })
            .collect();
        running
            .into_iter()
            .zip(checks)
            .map(|(thread, stored)| {
                thread.join().unwrap_or_else(|_| Outcome {
                    role: stored.role.clone(),
                    name: stored.check.name.clone(),
                    ok: false,
                    detail: "the check crashed the monitor's thread".into(),
                })
            })
            .collect()
    })
}

/// What `placard monitor status` shows of this host: the state, and whether the
/// timer runs.
pub fn status(state_dir: &Path) -> Result<serde_json::Value> {
    let state = load_state(state_dir)?;
    let timer = crate::system::command::Program::new(
        &["systemctl", "is-active", "placard-monitor.timer"],
        crate::system::command::deadline::QUERY,
    )
    .output()
    .map(|o| o.stdout_text().trim().to_string())
    .unwrap_or_else(|e| e.to_string());
    let stored = load_checks(state_dir)?.map(|c| c.len());
    Ok(serde_json::json!({
        "monitor": {
            "timer": timer,
            "stored_checks": stored,
            "last_run": state.last_run,
            "mail_error": state.mail_error,
            "checks": state.checks.values().collect::<Vec<_>>(),
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(name: &str, ok: bool) -> Outcome {
        Outcome {
            role: "mail".into(),
            name: name.into(),
            ok,
            detail: if ok { "fine" } else { "broken" }.into(),
        }
    }

    fn changes(alerts: &[Alert]) -> Vec<(Change, String)> {
        alerts
            .iter()
            .map(|a| (a.change, a.check.name.clone()))
            .collect()
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn a_change_is_mailed_once_and_a_reminder_after_the_interval() {
        let (state, alerts) = step(
            &MonitorState::default(),
            &[outcome("dovecot", true)],
            100,
            DAY,
        );
        assert!(
            alerts.is_empty(),
            "a first run finding it fine says nothing"
        );
        let (state, alerts) = step(&state, &[outcome("dovecot", false)], 400, DAY);
        assert_eq!(changes(&alerts), [(Change::Failing, "dovecot".into())]);
        assert_eq!(state.checks["mail: dovecot"].since, 400);
        // Still down: nothing until a day after the mail.
        let (state, alerts) = step(&state, &[outcome("dovecot", false)], 700, DAY);
        assert!(alerts.is_empty());
        let (state, alerts) = step(&state, &[outcome("dovecot", false)], 400 + 86_399, DAY);
        assert!(alerts.is_empty());
        let (state, alerts) = step(&state, &[outcome("dovecot", false)], 400 + 86_400, DAY);
        assert_eq!(changes(&alerts), [(Change::StillFailing, "dovecot".into())]);
        assert_eq!(
            state.checks["mail: dovecot"].since, 400,
            "down since the start"
        );
        let (state, alerts) = step(&state, &[outcome("dovecot", false)], 400 + 86_700, DAY);
        assert!(alerts.is_empty());
        let (state, alerts) = step(&state, &[outcome("dovecot", true)], 90_000, DAY);
        assert_eq!(changes(&alerts), [(Change::Recovered, "dovecot".into())]);
        let (_, alerts) = step(&state, &[outcome("dovecot", true)], 90_300, DAY);
        assert!(alerts.is_empty());
    }

    #[test]
    fn a_check_failing_at_its_first_run_is_mailed_and_a_removed_one_forgotten() {
        let (state, alerts) = step(
            &MonitorState::default(),
            &[outcome("a", false), outcome("b", true)],
            10,
            DAY,
        );
        assert_eq!(changes(&alerts), [(Change::Failing, "a".into())]);
        let (state, _) = step(&state, &[outcome("b", true)], 20, DAY);
        assert_eq!(state.checks.len(), 1);
    }

    #[test]
    fn durations_as_the_role_types_them() {
        assert_eq!(parse_duration("20s"), Some(Duration::from_secs(20)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("24h"), Some(DAY));
        assert_eq!(parse_duration("1w"), Some(DAY * 7));
        for bad in ["", "m", "5", "5min", "-5m", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    fn setup(extra: &str) -> (tempfile::TempDir, Paths) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config: dir.path().join("monitor.json"),
            state: dir.path().join("state"),
        };
        fs::write(
            &paths.config,
            format!(
                r#"{{"admin": "admin@club.example", "check_timeout": "1s", "reminder": "24h", "checks": [{extra}]}}"#
            ),
        )
        .unwrap();
        (dir, paths)
    }

    #[test]
    fn a_hung_check_times_out_and_a_failed_mail_is_tried_again() {
        let (_dir, paths) = setup(
            r#"{"name": "hangs", "command": ["sleep", "30"]}, {"name": "passes", "command": ["true"]}"#,
        );
        let started = std::time::Instant::now();
        let refuse = |_: &Config, _: &[Alert]| -> Result<()> { anyhow::bail!("relay down") };
        let error = run(&paths, 100, &refuse).unwrap_err();
        assert!(format!("{error:#}").contains("relay down"), "{error:#}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the hung check was stopped"
        );
        let state = load_state(&paths.state).unwrap();
        assert!(
            !state.checks.contains_key("monitor: hangs"),
            "not recorded as told"
        );
        assert!(state.mail_error.is_some());

        let sent = std::cell::RefCell::new(Vec::new());
        let record = |_: &Config, alerts: &[Alert]| -> Result<()> {
            sent.borrow_mut().extend(alerts.iter().cloned());
            Ok(())
        };
        let report = run(&paths, 200, &record).unwrap();
        assert_eq!(report.checked, 2);
        let sent = sent.into_inner();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].check.name, "hangs");
        assert!(sent[0].check.detail.contains("timed out"), "{:?}", sent[0]);
        // The next run, reading the saved state, says nothing more.
        let silent =
            |_: &Config, alerts: &[Alert]| -> Result<()> { panic!("mailed again: {alerts:?}") };
        run(&paths, 300, &silent).unwrap();
    }

    #[test]
    fn stored_checks_are_rewritten_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let checks = vec![StoredCheck {
            role: "mail".into(),
            check: CheckSpec {
                name: "Dovecot is running".into(),
                service: Some("dovecot".into()),
                port: None,
                command: None,
            },
        }];
        store_checks(dir.path(), &checks).unwrap();
        let modified = fs::metadata(dir.path().join(CHECKS_FILE))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        store_checks(dir.path(), &checks).unwrap();
        let again = fs::metadata(dir.path().join(CHECKS_FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(modified, again);
        assert_eq!(load_checks(dir.path()).unwrap(), Some(checks));
    }
}
