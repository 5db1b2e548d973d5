//! Health checks a role declares for `placard verify`: is the service active, does the
//! port answer with the right banner, does a command succeed. They run on the host, in
//! the agent (see [`crate::verify`]). Their strings are templates like a task's,
//! so that a check can name what the variables chose (`upsc {{ups_name}}@localhost`).

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
    /// The check with every string rendered by `render`.
    pub fn render(
        &self,
        render: impl Fn(&str) -> Result<String, String>,
    ) -> Result<CheckSpec, String> {
        let render_all = |values: &[String]| {
            values
                .iter()
                .map(|v| render(v))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(CheckSpec {
            name: render(&self.name)?,
            service: self.service.as_deref().map(&render).transpose()?,
            port: match &self.port {
                Some(port) => Some(PortCheck {
                    port: port.port,
                    host: render(&port.host)?,
                    expect: port.expect.as_deref().map(&render).transpose()?,
                }),
                None => None,
            },
            command: self.command.as_deref().map(render_all).transpose()?,
        })
    }

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
