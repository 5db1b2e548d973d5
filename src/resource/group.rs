//! `group`: a Unix group, created with groupadd when missing.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome, Resource};
use crate::system::command::{self, deadline};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// A system group (a gid below 1000), for services.
    #[serde(default)]
    pub system: bool,
}

impl Resource for GroupSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::account_name("name", &self.name)
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        match nix::unistd::Group::from_name(&self.name)? {
            Some(group) => {
                if let Some(gid) = self.gid.filter(|gid| *gid != group.gid.as_raw()) {
                    anyhow::bail!("group {} exists with gid {}, not {gid}; changing a gid is left to the admin", self.name, group.gid);
                }
                Ok(Outcome::unchanged(format!("group {} exists", self.name)))
            }
            None => {
                if !context.check {
                    let gid = self.gid.map(|g| g.to_string());
                    let mut argv = vec!["groupadd"];
                    if self.system {
                        argv.push("--system");
                    }
                    if let Some(gid) = &gid {
                        argv.extend(["--gid", gid]);
                    }
                    argv.extend(["--", self.name.as_str()]);
                    command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                }
                context.record_change(std::path::Path::new("/etc/group"));
                Ok(Outcome::changed(format!("create group {}", self.name)))
            }
        }
    }
}
