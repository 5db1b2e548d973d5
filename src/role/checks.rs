//! Health checks a role declares for `placard verify`: is the service active, does the
//! port answer with the right banner, does a command succeed. They run on the host, in
//! the agent (see [`crate::agent::verify`]).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    pub name: String,
    /// A systemd unit that must be active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// A TCP port that must accept a connection (and send `expect`, when given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortCheck>,
    /// A command that must exit 0; its first line of output is reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCheck {
    pub port: u16,
    #[serde(default = "loopback")]
    pub host: String,
    /// Text the server's first line must contain, such as `SSH-2.0` or `220`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

fn loopback() -> String {
    "127.0.0.1".to_string()
}

impl CheckSpec {
    pub fn validate(&self) -> Result<(), String> {
        let kinds = [
            self.service.is_some(),
            self.port.is_some(),
            self.command.is_some(),
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds != 1 {
            return Err(format!(
                "check `{}` needs exactly one of `service`, `port` or `command`",
                self.name
            ));
        }
        if self.command.as_ref().is_some_and(Vec::is_empty) {
            return Err(format!("check `{}`: the command is empty", self.name));
        }
        Ok(())
    }
}
