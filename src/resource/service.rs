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
        let UnitState { enablement, active } = unit_state(unit)?;

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
                // A unit that cannot reload gets restarted, which is what an admin would do.
                self.act(context, &["reload-or-restart"])?;
                done.push("reload".to_string());
            }
            Some(state) => {
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

/// What `systemctl is-enabled` and `is-active` would answer for a unit.
#[derive(Debug, PartialEq)]
struct UnitState {
    /// enabled, disabled, static, masked…; `not-found` for a unit systemd does not know.
    enablement: String,
    /// active, inactive, failed, activating…
    active: String,
}

/// Both answers in one `systemctl show` (one program instead of two per service task:
/// they are most of a no-op service task's time).
fn unit_state(unit: &str) -> Result<UnitState> {
    let output = command::Program::new(
        &[
            "systemctl",
            "show",
            "--property=LoadState,UnitFileState,ActiveState",
            "--",
            unit,
        ],
        deadline::QUERY,
    )
    .output()?;
    Ok(parse_show(&String::from_utf8_lossy(&output.stdout)))
}

/// The `KEY=value` lines of `systemctl show`, as is-enabled's and is-active's words. A
/// unit without a unit file state (a transient or runtime-generated one) cannot be
/// enabled or disabled: `static`, which leaves it as it is.
fn parse_show(text: &str) -> UnitState {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let (load, file_state, active) = (
        value("LoadState"),
        value("UnitFileState"),
        value("ActiveState"),
    );
    let enablement = match (load.as_str(), file_state.as_str()) {
        ("" | "not-found", "") => "not-found".to_string(),
        ("masked", "") => "masked".to_string(),
        (_, "") => "static".to_string(),
        (_, state) => state.to_string(),
    };
    UnitState {
        enablement,
        active: if active.is_empty() {
            "inactive".to_string()
        } else {
            active
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            parse_show("LoadState=loaded\nActiveState=active\nUnitFileState=enabled\n"),
            state("enabled", "active")
        );
        assert_eq!(
            parse_show("LoadState=not-found\nActiveState=inactive\nUnitFileState=\n"),
            state("not-found", "inactive")
        );
        assert_eq!(
            parse_show("LoadState=masked\nActiveState=inactive\nUnitFileState=masked\n"),
            state("masked", "inactive")
        );
        assert_eq!(
            parse_show("LoadState=loaded\nActiveState=inactive\nUnitFileState=static\n"),
            state("static", "inactive")
        );
        assert_eq!(
            parse_show("LoadState=loaded\nActiveState=active\nUnitFileState=\n"),
            state("static", "active")
        );
        assert_eq!(parse_show(""), state("not-found", "inactive"));
    }
}
