//! `service`: a systemd unit enabled, started, masked — or, from a handler, restarted or
//! reloaded.
//!
//! Restarting and reloading are not states a host can be in, so they are refused in
//! tasks (a second run would restart again) and allowed in handlers, which run only
//! when something they watch changed.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
use crate::system::command::{self, deadline};
use crate::system::systemd;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub masked: Option<bool>,
    /// With `state: reloaded`, for servers whose reload only sends a signal (nginx,
    /// Apache): wait until the main process has started new workers, which it does once
    /// it has read the new configuration, so that the run ends with it in effect.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_new_workers: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    Started,
    Stopped,
    Restarted,
    Reloaded,
}

impl ServiceState {
    /// Whether this is an action rather than a state: only handlers may ask for it.
    pub fn is_action(self) -> bool {
        matches!(self, ServiceState::Restarted | ServiceState::Reloaded)
    }
}

impl Resource for ServiceSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::plain_name("name", &self.name)?;
        if self.enabled.is_none() && self.state.is_none() && self.masked.is_none() {
            return Err(FieldError::new(
                "name",
                "say what the service should be: `enabled`, `state` or `masked`",
            ));
        }
        if self.wait_for_new_workers && self.state != Some(ServiceState::Reloaded) {
            return Err(FieldError::new(
                "wait_for_new_workers",
                "only a reload starts new workers: use it with `state: reloaded`",
            ));
        }
        if self.masked == Some(true)
            && (self.enabled == Some(true) || self.state == Some(ServiceState::Started))
        {
            return Err(FieldError::new(
                "masked",
                "a masked service cannot be enabled or started",
            ));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What systemd says of the unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    /// `systemctl is-enabled`'s word: enabled, disabled, static, masked, not-found …
    pub enablement: String,
    /// `systemctl is-active`'s word (active, inactive, failed, activating …); observe
    /// always reads it, in the same question to systemd; the plan looks at it only for
    /// `state: started|stopped`.
    pub active: Option<String>,
}

/// One systemctl operation, in the order a plan lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Mask,
    Unmask,
    Enable,
    Disable,
    Start,
    Stop,
    Restart,
    Reload,
}

impl Step {
    /// The word the report uses.
    fn word(self) -> &'static str {
        match self {
            Step::Mask => "mask",
            Step::Unmask => "unmask",
            Step::Enable => "enable",
            Step::Disable => "disable",
            Step::Start => "start",
            Step::Stop => "stop",
            Step::Restart => "restart",
            Step::Reload => "reload",
        }
    }
}

impl Planned for ServiceSpec {
    type Current = Current;
    type Action = Vec<Step>;

    fn observe(&self, context: &mut Context) -> Result<Current> {
        // A unit file changed by an earlier task: systemd must reread it before it is
        // asked about the unit.
        if context.daemon_reload_needed && !context.check {
            command::run_ok(
                &["systemctl", "daemon-reload"],
                context.deadline(deadline::SYSTEM),
            )?;
            context.daemon_reload_needed = false;
        }
        let unit = self.name.as_str();
        let state = match context.unit_states.take(unit) {
            Some(state) => state,
            None => unit_state(unit)?,
        };
        let UnitState { enablement, active } = refine_generated(unit, state)?;
        Ok(Current {
            enablement,
            active: Some(active),
        })
    }

    fn plan(&self, current: &Current, context: &Context) -> Result<Change<Vec<Step>>> {
        let unit = self.name.as_str();
        let enablement = current.enablement.as_str();
        let mut steps: Vec<Step> = Vec::new();
        let mut fine: Vec<String> = Vec::new();
        if let Some(masked) = self.masked {
            if enablement.starts_with("masked") == masked {
                fine.push(if masked { "masked" } else { "not masked" }.to_string());
            } else {
                steps.push(if masked { Step::Mask } else { Step::Unmask });
            }
        }
        if let Some(enabled) = self.enabled {
            // Units that `systemctl enable/disable` cannot change (static ones, aliases,
            // generated units) are left as they are, so that a second run stays quiet.
            let fixed = matches!(enablement, "static" | "indirect" | "generated" | "alias");
            let is_enabled = matches!(enablement, "enabled" | "enabled-runtime");
            if fixed {
                fine.push(enablement.to_string());
            } else if enablement == "not-found" && !enabled {
                fine.push("not installed".to_string());
            } else if enablement == "not-found" && !context.check {
                // In a check run, the package task before this one has not installed it.
                anyhow::bail!(
                    "unit {unit} does not exist on this host (is its package installed?)"
                );
            } else if is_enabled == enabled {
                fine.push(if enabled { "enabled" } else { "disabled" }.to_string());
            } else {
                steps.push(if enabled { Step::Enable } else { Step::Disable });
            }
        }
        match self.state {
            None => {}
            Some(ServiceState::Restarted) => steps.push(Step::Restart),
            Some(ServiceState::Reloaded) => steps.push(Step::Reload),
            Some(state) => {
                let want_running = state == ServiceState::Started;
                let is_running = matches!(
                    current.active.as_deref(),
                    Some("active" | "reloading" | "activating")
                );
                if is_running == want_running {
                    fine.push(if want_running { "running" } else { "stopped" }.to_string());
                } else {
                    steps.push(if want_running {
                        Step::Start
                    } else {
                        Step::Stop
                    });
                }
            }
        }
        Ok(if steps.is_empty() {
            Change::none(format!("service {unit} is {}", fine.join(" and ")))
        } else {
            let words: Vec<&str> = steps.iter().map(|step| step.word()).collect();
            Change::to(steps.clone(), format!("{} {unit}", words.join(", ")))
        })
    }

    fn apply(&self, steps: &Vec<Step>, context: &mut Context) -> Result<()> {
        for step in steps {
            match step {
                Step::Mask => self.act(context, &["mask", "--now"])?,
                Step::Unmask => self.act(context, &["unmask"])?,
                Step::Enable => self.act(context, &["enable"])?,
                Step::Disable => self.act(context, &["disable"])?,
                Step::Start => self.act(context, &["start"])?,
                Step::Stop => self.act(context, &["stop"])?,
                Step::Restart => self.act(context, &["restart"])?,
                Step::Reload => self.reload(context)?,
            }
        }
        Ok(())
    }
}

impl ServiceSpec {
    /// Reloads the unit, or restarts it when it cannot reload, which is what an admin
    /// would do; with `wait_for_new_workers`, returns once the reload took effect.
    fn reload(&self, context: &Context) -> Result<()> {
        if context.check || !self.wait_for_new_workers {
            return self.act(context, &["reload-or-restart"]);
        }
        let master = main_pid(&self.name)?;
        let before = children_of(master);
        self.act(context, &["reload-or-restart"])?;
        if master == 0 || main_pid(&self.name)? != master {
            // Started or restarted: systemd waited for it to be up.
            return Ok(());
        }
        // The task's `timeout:` bounds the wait too.
        let wait = context.deadline(RELOAD_WAIT);
        let waited = std::time::Instant::now();
        while waited.elapsed() < wait {
            if has_new_child(&before, &children_of(master)) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!(
            "{unit} was told to reload but started no new worker within {seconds} s, so it \
             may still serve its old configuration; see `journalctl -u {unit}`",
            unit = self.name,
            seconds = wait.as_secs()
        )
    }

    fn act(&self, context: &Context, verb: &[&str]) -> Result<()> {
        if context.check {
            return Ok(());
        }
        if matches!(
            verb.first(),
            Some(&"start" | &"restart" | &"reload-or-restart")
        ) {
            // A package's postinst may have started the unit before it was configured,
            // and its failed restarts hit systemd's start limit: forget those, so that
            // the now configured unit can start.
            let _ = command::Program::new(
                &["systemctl", "reset-failed", "--", self.name.as_str()],
                deadline::QUERY,
            )
            .output();
        }
        let mut argv = vec!["systemctl"];
        argv.extend(verb);
        argv.extend(["--", self.name.as_str()]);
        command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
        Ok(())
    }
}

/// How long a reloaded server may take to start its new workers.
const RELOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The unit's main process, 0 when it has none (stopped, or a oneshot).
fn main_pid(unit: &str) -> Result<u32> {
    let output = command::Program::new(
        &[
            "systemctl",
            "show",
            "--property=MainPID",
            "--value",
            "--",
            unit,
        ],
        deadline::QUERY,
    )
    .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("systemctl gave no main process for {unit}: {text:?}"))
}

/// The processes whose parent is `parent`, from /proc. Processes that end while it is
/// read are left out.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|status| parent_in_status(&status))
                == Some(parent)
        })
        .collect()
}

/// The `PPid:` of a /proc/PID/status text.
fn parent_in_status(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Whether `now` holds a process that `before` did not.
fn has_new_child(before: &[u32], now: &[u32]) -> bool {
    now.iter().any(|pid| !before.contains(pid))
}

/// What `systemctl is-enabled` and `is-active` would answer for a unit.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitState {
    /// enabled, disabled, static, masked…; `not-found` for a unit systemd does not know.
    enablement: String,
    /// active, inactive, failed, activating…
    active: String,
}

/// The properties one `systemctl show` is asked for.
const SHOW_PROPERTIES: &str = "--property=LoadState,UnitFileState,ActiveState";

/// The states of the units of a run's service tasks, asked for together before the
/// tasks run: one question to systemd for all of them instead of one per task (on a
/// no-op run, the service queries were the agent's largest cost on the host:
/// docs/benchmarks.md, fan-out). What it holds is only true until the host changes,
/// so the agent forgets it after any task that changed something (or failed), and a
/// task takes its unit's answer once.
#[derive(Debug, Default)]
pub struct UnitStates(HashMap<String, UnitState>);

impl UnitStates {
    /// Asks systemd about `units` together. Anything short of a full answer (systemd
    /// did not answer, or said nothing of one unit) leaves it empty: each task then
    /// asks on its own, and says what went wrong.
    pub fn ask(units: &[String]) -> UnitStates {
        let mut unique: Vec<&str> = Vec::new();
        for unit in units {
            if !unique.contains(&unit.as_str()) {
                unique.push(unit);
            }
        }
        if unique.is_empty() {
            return UnitStates::default();
        }
        UnitStates::matched(&unique, ask_systemd(&unique))
    }

    /// The answers ([`ask_systemd`]'s, one for each unit in order), or none at all.
    fn matched(units: &[&str], answers: Result<Vec<UnitState>>) -> UnitStates {
        match answers {
            Ok(states) => UnitStates(
                units
                    .iter()
                    .map(|unit| unit.to_string())
                    .zip(states)
                    .collect(),
            ),
            Err(_) => UnitStates::default(),
        }
    }

    /// The answer for `unit`, once.
    pub fn take(&mut self, unit: &str) -> Option<UnitState> {
        self.0.remove(unit)
    }

    /// Forgets every answer: the host changed since they were given.
    pub fn forget(&mut self) {
        self.0.clear();
    }
}

/// What systemd says of one unit.
fn unit_state(unit: &str) -> Result<UnitState> {
    let mut states = ask_systemd(&[unit])?;
    states
        .pop()
        .with_context(|| format!("systemd said nothing of {unit}"))
}

/// What systemd says of `units`, one answer for each, in their order: over PID 1's
/// private socket without starting a program (the agent runs as root), or, when that
/// socket does not answer, with one `systemctl show`. When both fail, the error says
/// why each did.
fn ask_systemd(units: &[&str]) -> Result<Vec<UnitState>> {
    match systemd::unit_properties(units, deadline::SOCKET) {
        Ok(answers) => answers
            .iter()
            .zip(units)
            .map(|(answer, unit)| {
                UnitState::from_properties(
                    &answer.load_state,
                    &answer.unit_file_state,
                    &answer.active_state,
                )
                .with_context(|| format!("systemd did not say what {unit} is"))
            })
            .collect(),
        Err(socket) => {
            tracing::debug!("asking systemd over its socket failed ({socket:#}): asking systemctl");
            systemctl_show(units).with_context(|| {
                format!("neither systemd's socket ({socket:#}) nor systemctl answered")
            })
        }
    }
}

/// Both answers for every unit in one `systemctl show`.
fn systemctl_show(units: &[&str]) -> Result<Vec<UnitState>> {
    let mut argv = vec!["systemctl", "show", SHOW_PROPERTIES, "--"];
    argv.extend(units);
    let output = command::Program::new(&argv, deadline::QUERY).output()?;
    // `systemctl show` answers 0 for a unit it does not know: anything else is systemd
    // itself not answering, which must not read as "not installed, stopped".
    if !output.status.success() {
        anyhow::bail!(
            "systemctl show {} failed ({}): {}",
            units.join(" "),
            output.status,
            output.last_lines(4).trim()
        );
    }
    from_show(units, &String::from_utf8_lossy(&output.stdout))
}

/// A unit generated from an init script: `is-enabled` asks systemd-sysv-install whether
/// the script is enabled, which the unit file state does not say.
fn refine_generated(unit: &str, mut state: UnitState) -> Result<UnitState> {
    if state.enablement == "generated" {
        let output =
            command::Program::new(&["systemctl", "is-enabled", "--", unit], deadline::QUERY)
                .output()?;
        let word = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if !word.is_empty() {
            state.enablement = word;
        }
    }
    Ok(state)
}

/// `systemctl show` of several units answers one block each, in the order asked,
/// separated by blank lines.
fn from_show(units: &[&str], text: &str) -> Result<Vec<UnitState>> {
    let blocks: Vec<&str> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .collect();
    if blocks.len() != units.len() {
        anyhow::bail!(
            "systemctl show answered {} blocks for {} units: {:?}",
            blocks.len(),
            units.len(),
            text.trim()
        );
    }
    units
        .iter()
        .zip(blocks)
        .map(|(unit, block)| {
            parse_show(block).with_context(|| format!("systemctl show did not say what {unit} is"))
        })
        .collect()
}

/// The `KEY=value` lines of one unit's block of `systemctl show`.
fn parse_show(text: &str) -> Result<UnitState> {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or_default()
    };
    UnitState::from_properties(
        value("LoadState"),
        value("UnitFileState"),
        value("ActiveState"),
    )
    .with_context(|| format!("its answer: {:?}", text.trim()))
}

impl UnitState {
    /// systemd's LoadState, UnitFileState and ActiveState, as is-enabled's and
    /// is-active's words. A unit without a unit file state (a transient or
    /// runtime-generated one) cannot be enabled or disabled: `static`, which leaves it
    /// as it is. No `LoadState` at all is an answer that says nothing: an error, never
    /// "not found".
    fn from_properties(load: &str, file_state: &str, active: &str) -> Result<UnitState> {
        if load.is_empty() {
            anyhow::bail!("systemd gave no LoadState");
        }
        let enablement = match (load, file_state) {
            ("not-found", "") => "not-found",
            ("masked", "") => "masked",
            (_, "") => "static",
            (_, state) => state,
        };
        Ok(UnitState {
            enablement: enablement.to_string(),
            active: if active.is_empty() {
                "inactive"
            } else {
                active
            }
            .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer of Debian 12's systemctl 252 to `systemctl show
    /// --property=LoadState,UnitFileState,ActiveState -- ssh nope.service sshd`.
    const THREE_UNITS: &str = "LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n\n\
        LoadState=not-found\nActiveState=inactive\nUnitFileState=\n\n\
        LoadState=loaded\nActiveState=failed\nUnitFileState=enabled\n";

    /// What `UnitStates::ask` keeps of `systemctl show`'s answer.
    fn shown(units: &[&str], text: &str) -> UnitStates {
        UnitStates::matched(units, from_show(units, text))
    }

    #[test]
    fn units_asked_together_are_answered_in_order() {
        let mut states = shown(&["ssh", "nope.service", "sshd"], THREE_UNITS);
        assert_eq!(states.take("ssh"), Some(state("enabled", "active")));
        assert_eq!(
            states.take("nope.service"),
            Some(state("not-found", "inactive"))
        );
        assert_eq!(states.take("sshd"), Some(state("enabled", "failed")));
        // Each answer is taken once: a second task on the unit asks again.
        assert_eq!(states.take("ssh"), None);
    }

    #[test]
    fn a_partial_answer_for_units_asked_together_is_no_answer() {
        // One block short, one too many, or a block without LoadState: every task asks
        // on its own rather than trusting an answer matched to the wrong unit.
        for units in [&["ssh", "nope.service"][..], &["a", "b", "c", "d"]] {
            let mut states = shown(units, THREE_UNITS);
            assert_eq!(states.take(units[0]), None, "{units:?}");
        }
        let mut states = shown(&["a", "b"], "LoadState=loaded\n\nActiveState=active\n");
        assert_eq!(states.take("a"), None);
        assert_eq!(shown(&["a"], "").take("a"), None);
    }

    #[test]
    fn forgotten_answers_are_asked_again() {
        let mut states = shown(&["ssh", "nope.service", "sshd"], THREE_UNITS);
        states.forget();
        assert_eq!(states.take("ssh"), None);
    }

    fn parse_show_ok(text: &str) -> UnitState {
        parse_show(text).expect("a full answer")
    }

    fn state(enablement: &str, active: &str) -> UnitState {
        UnitState {
            enablement: enablement.to_string(),
            active: active.to_string(),
        }
    }

    #[test]
    fn systemctl_show_reads_as_is_enabled_and_is_active() {
        // As systemd prints them (checked on Debian 13 against is-enabled and
        // is-active): nginx running, a unit that does not exist (is-enabled:
        // not-found), a masked one, a static one, and a scope (is-enabled: not-found,
        // but loaded and running: left alone as static).
        assert_eq!(
            parse_show_ok("LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"),
            state("enabled", "active")
        );
        assert_eq!(
            parse_show_ok("LoadState=not-found\nActiveState=inactive\nUnitFileState=\n"),
            state("not-found", "inactive")
        );
        assert_eq!(
            parse_show_ok("LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n"),
            state("masked", "inactive")
        );
        assert_eq!(
            parse_show_ok("LoadState=loaded\nActiveState=inactive\nUnitFileState=static\n"),
            state("static", "inactive")
        );
        assert_eq!(
            parse_show_ok("LoadState=loaded\nActiveState=active\nUnitFileState=\n"),
            state("static", "active")
        );
        assert!(parse_show("").is_err(), "an empty answer is an error");
        assert!(parse_show("ActiveState=inactive\n").is_err());
    }

    #[test]
    fn the_parent_is_read_from_proc_status() {
        let status =
            "Name:\tnginx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t7\n";
        assert_eq!(parent_in_status(status), Some(7));
        assert_eq!(parent_in_status("Name:\tx\n"), None);
    }

    #[test]
    fn a_reload_took_effect_when_a_new_worker_appeared() {
        assert!(!has_new_child(&[10, 11], &[10, 11]));
        // Old workers still draining their connections, and one new one.
        assert!(has_new_child(&[10, 11], &[10, 11, 12]));
        assert!(has_new_child(&[10, 11], &[12]));
        assert!(!has_new_child(&[10, 11], &[]));
    }

    #[test]
    fn this_process_children_are_found() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("start sleep");
        let children = children_of(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(children.contains(&child.id()), "{children:?}");
    }

    #[test]
    fn waiting_for_workers_needs_a_reload() {
        let spec = ServiceSpec {
            name: "nginx".into(),
            enabled: None,
            state: Some(ServiceState::Restarted),
            masked: None,
            wait_for_new_workers: true,
        };
        assert_eq!(spec.validate().unwrap_err().field, "wait_for_new_workers");
        let spec = ServiceSpec {
            state: Some(ServiceState::Reloaded),
            ..spec
        };
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn plan_cases() {
        let spec = |enabled: Option<bool>, state: Option<ServiceState>, masked: Option<bool>| {
            ServiceSpec {
                name: "icecast2".into(),
                enabled,
                state,
                masked,
                wait_for_new_workers: false,
            }
        };
        let found = |enablement: &str, active: Option<&str>| Current {
            enablement: enablement.into(),
            active: active.map(str::to_string),
        };
        use ServiceState::*;
        use Step::*;
        let run = Context::new(false);
        let check = Context::new(true);
        // (spec, what systemd says, check run, the steps, the reason or error)
        let cases = [
            (
                spec(Some(true), Some(Started), None),
                found("enabled", Some("active")),
                &run,
                vec![],
                "service icecast2 is enabled and running",
            ),
            (
                spec(Some(true), Some(Started), None),
                found("disabled", Some("inactive")),
                &run,
                vec![Enable, Start],
                "enable, start icecast2",
            ),
            (
                spec(Some(true), Some(Started), None),
                found("enabled", Some("activating")),
                &run,
                vec![],
                "service icecast2 is enabled and running",
            ),
            (
                spec(Some(false), Some(Stopped), None),
                found("enabled", Some("active")),
                &run,
                vec![Disable, Stop],
                "disable, stop icecast2",
            ),
            (
                spec(Some(true), None, None),
                found("static", None),
                &run,
                vec![],
                "service icecast2 is static",
            ),
            (
                spec(Some(false), None, None),
                found("not-found", None),
                &run,
                vec![],
                "service icecast2 is not installed",
            ),
            (
                spec(Some(true), None, None),
                found("not-found", None),
                &check,
                vec![Enable],
                "enable icecast2",
            ),
            (
                spec(Some(true), None, None),
                found("not-found", None),
                &run,
                vec![],
                "unit icecast2 does not exist on this host",
            ),
            (
                spec(None, None, Some(true)),
                found("enabled", None),
                &run,
                vec![Mask],
                "mask icecast2",
            ),
            (
                spec(None, None, Some(true)),
                found("masked", None),
                &run,
                vec![],
                "service icecast2 is masked",
            ),
            (
                spec(None, None, Some(false)),
                found("masked-runtime", None),
                &run,
                vec![Unmask],
                "unmask icecast2",
            ),
            (
                spec(None, Some(Reloaded), None),
                found("enabled", None),
                &run,
                vec![Reload],
                "reload icecast2",
            ),
            (
                spec(None, Some(Restarted), None),
                found("enabled", None),
                &run,
                vec![Restart],
                "restart icecast2",
            ),
        ];
        for (spec, current, context, steps, says) in cases {
            match spec.plan(&current, context) {
                Ok(change) => {
                    assert_eq!(change.action.unwrap_or_default(), steps, "{current:?}");
                    assert_eq!(change.reason, says);
                }
                Err(error) => {
                    assert!(steps.is_empty());
                    assert!(error.to_string().contains(says), "{error}");
                }
            }
        }
    }
}
