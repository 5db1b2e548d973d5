//! `service`: a systemd unit enabled, started, masked — or, from a handler, restarted or
//! reloaded.
//!
//! Restarting and reloading are not states a host can be in, so they are refused in
//! tasks (a second run would restart again) and allowed in handlers, which run only
//! when something they watch changed.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome, Resource};
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

impl Resource for ServiceSpec {
    fn validate(&self) -> Result<(), FieldError> {
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

    fn run(&self, context: &mut Context) -> Result<Outcome> {
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
                // A unit that cannot reload gets restarted, which is what an admin would do.
                self.act(context, &["reload-or-restart"])?;
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
}

impl ServiceSpec {
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
