//! `service`: a systemd unit enabled, started, masked — or, from a handler, restarted or
//! reloaded.
//!
//! Restarting and reloading are not states a host can be in, so they are refused in
//! tasks (a second run would restart again) and allowed in handlers, which run only
//! when something they watch changed.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome};
use crate::system::command::{self, deadline};

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

impl ServiceSpec {
    pub fn validate(&self) -> Result<(), FieldError> {
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

    pub fn run(&self, context: &mut Context) -> Result<Outcome> {
        if context.daemon_reload_needed && !context.check {
            command::run_ok(
                &["systemctl", "daemon-reload"],
                context.deadline(deadline::SYSTEM),
            )?;
            context.daemon_reload_needed = false;
        }
        let unit = self.name.as_str();
        let mut done: Vec<String> = Vec::new();
        let mut fine: Vec<String> = Vec::new();
        let enablement = systemctl_word(&["systemctl", "is-enabled", "--", unit])?;

        if let Some(masked) = self.masked {
            let is_masked = enablement.starts_with("masked");
            if is_masked == masked {
                fine.push(if masked { "masked" } else { "not masked" }.to_string());
            } else {
                self.act(
                    context,
                    if masked {
                        &["mask", "--now"]
                    } else {
                        &["unmask"]
                    },
                )?;
                done.push(if masked { "mask" } else { "unmask" }.to_string());
            }
        }
        if let Some(enabled) = self.enabled {
            // Units that `systemctl enable/disable` cannot change (static ones, aliases,
            // generated units) are left as they are, so that a second run stays quiet.
            let fixed = matches!(
                enablement.as_str(),
                "static" | "indirect" | "generated" | "alias"
            );
            let is_enabled = matches!(enablement.as_str(), "enabled" | "enabled-runtime");
            if fixed {
                fine.push(enablement.clone());
            } else if enablement == "not-found" && !enabled {
                fine.push("not installed".to_string());
            } else if enablement == "not-found" && !context.check {
                anyhow::bail!(
                    "unit {unit} does not exist on this host (is its package installed?)"
                );
            } else if is_enabled == enabled {
                fine.push(if enabled { "enabled" } else { "disabled" }.to_string());
            } else {
                self.act(context, if enabled { &["enable"] } else { &["disable"] })?;
                done.push(if enabled { "enable" } else { "disable" }.to_string());
            }
        }
        match self.state {
            None => {}
            Some(ServiceState::Restarted) => {
                self.act(context, &["restart"])?;
                done.push("restart".to_string());
            }
            Some(ServiceState::Reloaded) => {
                self.reload(context)?;
                done.push("reload".to_string());
            }
            Some(state) => {
                let active = systemctl_word(&["systemctl", "is-active", "--", unit])?;
                let want_running = state == ServiceState::Started;
                let is_running = matches!(active.as_str(), "active" | "reloading" | "activating");
                if is_running == want_running {
                    fine.push(if want_running { "running" } else { "stopped" }.to_string());
                } else {
                    self.act(context, if want_running { &["start"] } else { &["stop"] })?;
                    done.push(if want_running { "start" } else { "stop" }.to_string());
                }
            }
        }
        if done.is_empty() {
            Ok(Outcome::unchanged(format!(
                "service {unit} is {}",
                fine.join(" and ")
            )))
        } else {
            Ok(Outcome::changed(format!("{} {unit}", done.join(", "))))
        }
    }

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
        let waited = std::time::Instant::now();
        while waited.elapsed() < RELOAD_WAIT {
            if has_new_child(&before, &children_of(master)) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        anyhow::bail!(
            "{unit} was told to reload but started no new worker within {seconds} s, so it \
             may still serve its old configuration; see `journalctl -u {unit}`",
            unit = self.name,
            seconds = RELOAD_WAIT.as_secs()
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

/// The one word systemctl answers `is-enabled` and `is-active` with, whatever its exit code.
fn systemctl_word(argv: &[&str]) -> Result<String> {
    let output = command::Program::new(argv, deadline::QUERY).output()?;
    let word = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if word.is_empty() {
        // is-enabled prints nothing and fails for a unit it does not know.
        return Ok("not-found".to_string());
    }
    Ok(word)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
