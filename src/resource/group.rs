//! `group`: a Unix group, created with groupadd when missing.

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
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
        run_planned(self, context)
    }
}

/// The one thing a group task does: create the group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Create;

impl Planned for GroupSpec {
    /// The gid of the group of that name, when it exists.
    type Current = Option<u32>;
    type Action = Create;

    fn observe(&self, _context: &mut Context) -> Result<Option<u32>> {
        Ok(nix::unistd::Group::from_name(&self.name)?.map(|group| group.gid.as_raw()))
    }

    fn plan(&self, current: &Option<u32>, _context: &Context) -> Result<Change<Create>> {
        match *current {
            Some(gid) => {
                if let Some(wanted) = self.gid.filter(|wanted| *wanted != gid) {
                    anyhow::bail!("group {} exists with gid {gid}, not {wanted}; changing a gid is left to the admin", self.name);
                }
                Ok(Change::none(format!("group {} exists", self.name)))
            }
            None => Ok(Change::to(Create, format!("create group {}", self.name))),
        }
    }

    fn apply(&self, _: &Create, context: &mut Context) -> Result<()> {
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
        context.record_change(std::path::Path::new("/etc/group"));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::testing::expect_plan;

    #[test]
    fn plan_cases() {
        let spec = |gid: Option<u32>| GroupSpec {
            name: "radio".into(),
            gid,
            system: true,
        };
        let context = Context::new(false);
        // (spec's gid, the group's gid on the host, the action, the reason or error)
        let cases = [
            (None, None, Some(Create), "create group radio"),
            (Some(900), None, Some(Create), "create group radio"),
            (None, Some(120), None, "group radio exists"),
            (Some(120), Some(120), None, "group radio exists"),
            (Some(900), Some(120), None, "exists with gid 120, not 900"),
        ];
        for (wanted, found, action, says) in cases {
            expect_plan(&spec(wanted), &found, &context, action, says);
        }
    }
}
