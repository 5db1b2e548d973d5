//! `package`: Debian packages through apt, with debconf answers and holds.
//!
//! What is installed is read from dpkg's status file (see [`crate::facts::dpkg`]), which
//! is fast enough to do for every task; apt only runs when something must change.
//! `apt-get update` runs at most once per run, and only when the package lists are
//! older than a day or a package is missing from them.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{
    check, one_or_many, run_planned, Change, Context, FieldError, Outcome, Planned, Resource,
};
use crate::facts::dpkg::{self, DpkgStatus};
use crate::system::command::{self, deadline};

/// apt waits this long for dpkg's lock instead of failing at once: on a host with
/// unattended-upgrades, apt-daily-upgrade holds it now and then.
const APT_LOCK_WAIT: &str = "DPkg::Lock::Timeout=300";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// One package (`name: nginx`) or several (`names: [nginx, certbot]`).
    #[serde(alias = "name", deserialize_with = "one_or_many")]
    pub names: Vec<String>,
    #[serde(default)]
    pub state: PackageState,
    /// `true`: apt-mark hold, so upgrades and autoremove leave it alone; `false`: unhold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<bool>,
    /// Install recommended packages too (apt's default is yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommends: Option<bool>,
    /// Answers to debconf questions, given before the package is installed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub debconf: Vec<Preseed>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum PackageState {
    #[default]
    Present,
    Absent,
    /// Removed with its configuration files, as `apt-get purge` does: nothing of it is
    /// left in /etc.
    Purged,
}

/// One debconf answer, as `debconf-set-selections` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Preseed {
    /// The package that owns the question; defaults to the task's first package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package: Option<String>,
    pub question: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl Resource for PackageSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::not_empty("names", &self.names)?;
        for (index, name) in self.names.iter().enumerate() {
            check::plain_name(&format!("names[{index}]"), name)?;
        }
        for (index, preseed) in self.debconf.iter().enumerate() {
            let field = format!("debconf[{index}]");
            if preseed.question.contains(char::is_whitespace)
                || preseed.kind.contains(char::is_whitespace)
            {
                return Err(FieldError::new(
                    &field,
                    "a debconf question and type are single words",
                ));
            }
            if preseed.value.contains('\n') {
                return Err(FieldError::new(
                    &format!("{field}.value"),
                    "a debconf answer is one line",
                ));
            }
            if let Some(package) = &preseed.package {
                check::plain_name(&format!("{field}.package"), package)?;
            }
        }
        if self.state != PackageState::Present && self.hold == Some(true) {
            return Err(FieldError::new("hold", "an absent package cannot be held"));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What apt must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Install the missing packages (after giving debconf its answers), then hold or
    /// unhold, as the spec's `hold` says, those whose hold differs.
    Install {
        missing: Vec<String>,
        mark: Vec<String>,
    },
    /// `apt-get remove` (or `purge`, as the spec's state says) these packages.
    Remove(Vec<String>),
}

impl Planned for PackageSpec {
    type Current = Arc<DpkgStatus>;
    type Action = Action;

    fn observe(&self, _context: &mut Context) -> Result<Arc<DpkgStatus>> {
        dpkg::read_status()
    }

    fn plan(&self, status: &Arc<DpkgStatus>, _context: &Context) -> Result<Change<Action>> {
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        Ok(match self.state {
            PackageState::Present => {
                let missing = those(&names, |name| !status.is_installed(name));
                let mark = match self.hold {
                    Some(hold) => those(&names, |name| status.is_held(name) != hold),
                    None => Vec::new(),
                };
                let mut done = Vec::new();
                if !missing.is_empty() {
                    done.push(format!("install {}", missing.join(", ")));
                }
                if !mark.is_empty() {
                    done.push(format!("{} {}", self.mark_verb(), mark.join(", ")));
                }
                if done.is_empty() {
                    Change::none(format!("{} installed", describe(&names)))
                } else {
                    Change::to(Action::Install { missing, mark }, done.join("; "))
                }
            }
            PackageState::Absent => removal(
                &names,
                those(&names, |name| status.is_installed(name)),
                self.removal_verb(),
                "not installed",
            ),
            // dpkg keeps a removed package's conffiles until it is purged.
            PackageState::Purged => removal(
                &names,
                those(&names, |name| {
                    status.get(name).is_some_and(|p| p.state != "not-installed")
                }),
                self.removal_verb(),
                "not installed, nor its configuration",
            ),
        })
    }

    fn apply(&self, action: &Action, context: &mut Context) -> Result<()> {
        match action {
            Action::Install { missing, mark } => {
                if !missing.is_empty() {
                    self.preseed(context)?;
                    install(missing, self.recommends, context)?;
                }
                if !mark.is_empty() {
                    let mut argv = vec!["apt-mark", self.mark_verb()];
                    argv.extend(mark.iter().map(String::as_str));
                    command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                }
            }
            Action::Remove(present) => {
                let mut argv = vec![
                    "apt-get",
                    self.removal_verb(),
                    "-y",
                    "-q",
                    "-o",
                    APT_LOCK_WAIT,
                    "--",
                ];
                argv.extend(present.iter().map(String::as_str));
                command::run_ok(&argv, context.deadline(deadline::APT))?;
            }
        }
        Ok(())
    }
}

impl PackageSpec {
    /// What `apt-get` is asked to do to remove the packages: purge drops their
    /// configuration too.
    fn removal_verb(&self) -> &'static str {
        if self.state == PackageState::Purged {
            "purge"
        } else {
            "remove"
        }
    }

    /// What `apt-mark` is asked to do (only called when the spec has `hold:`).
    fn mark_verb(&self) -> &'static str {
        if self.hold == Some(true) {
            "hold"
        } else {
            "unhold"
        }
    }

    fn preseed(&self, context: &Context) -> Result<()> {
        if self.debconf.is_empty() {
            return Ok(());
        }
        let mut selections = String::new();
        for preseed in &self.debconf {
            let owner = preseed.package.as_deref().unwrap_or(&self.names[0]);
            selections.push_str(&format!(
                "{owner} {} {} {}\n",
                preseed.question, preseed.kind, preseed.value
            ));
        }
        command::Program::new(
            &["debconf-set-selections"],
            context.deadline(deadline::SYSTEM),
        )
        .stdin(selections)
        .run_ok()
        .context("cannot give debconf its answers")?;
        Ok(())
    }
}

/// The names for which `keep` holds.
fn those(names: &[&str], keep: impl Fn(&str) -> bool) -> Vec<String> {
    names
        .iter()
        .filter(|name| keep(name))
        .map(|name| name.to_string())
        .collect()
}

/// Removing (`verb`) the packages still `present`, or saying that they are `absent`.
fn removal(names: &[&str], present: Vec<String>, verb: &str, absent: &str) -> Change<Action> {
    if present.is_empty() {
        return Change::none(format!("{} {absent}", describe(names)));
    }
    let reason = format!("{verb} {}", present.join(", "));
    Change::to(Action::Remove(present), reason)
}

fn describe(names: &[&str]) -> String {
    match names {
        [one] => format!("package {one} is"),
        many => format!("packages {} are", many.join(", ")),
    }
}

fn install(names: &[String], recommends: Option<bool>, context: &mut Context) -> Result<()> {
    if !context.apt_updated && (lists_are_stale() || !all_known_to_apt(names)) {
        command::run_ok(
            &["apt-get", "update", "-q", "-o", APT_LOCK_WAIT],
            context.deadline(deadline::APT),
        )
        .context("apt-get update failed")?;
        context.apt_updated = true;
    }
    let mut argv = vec![
        "apt-get",
        "install",
        "-y",
        "-q",
        "-o",
        APT_LOCK_WAIT,
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
    ];
    match recommends {
        Some(true) => argv.push("--install-recommends"),
        Some(false) => argv.push("--no-install-recommends"),
        None => {}
    }
    argv.push("--");
    argv.extend(names.iter().map(String::as_str));
    command::run_ok(&argv, context.deadline(deadline::APT))?;
    Ok(())
}

/// Package lists older than a day, or none at all (a fresh debootstrap has none).
fn lists_are_stale() -> bool {
    let Ok(entries) = std::fs::read_dir("/var/lib/apt/lists") else {
        return true;
    };
    let newest = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with("_Packages"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max();
    match newest {
        None => true,
        Some(time) => {
            SystemTime::now().duration_since(time).unwrap_or_default()
                > Duration::from_secs(24 * 3600)
        }
    }
}

fn all_known_to_apt(names: &[String]) -> bool {
    let mut argv = vec!["apt-cache", "show", "--no-all-versions", "--"];
    argv.extend(names.iter().map(String::as_str));
    // A question apt cannot answer is taken as "not known": the lists are refreshed.
    command::succeeds(&argv, deadline::QUERY).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nginx installed, postfix held, exim4 removed with its conffiles left.
    const STATUS: &str = "Package: nginx\nStatus: install ok installed\nVersion: 1.22.1-9\n\n\
        Package: postfix\nStatus: hold ok installed\nVersion: 3.7.11-0\n\n\
        Package: exim4\nStatus: deinstall ok config-files\nVersion: 4.96-15\n";

    fn spec(names: &[&str], state: PackageState, hold: Option<bool>) -> PackageSpec {
        PackageSpec {
            names: names.iter().map(|n| n.to_string()).collect(),
            state,
            hold,
            recommends: None,
            debconf: Vec::new(),
        }
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn plan_cases() {
        use PackageState::{Absent, Present, Purged};
        let status = Arc::new(dpkg::parse_status(STATUS));
        let install = |missing: &[&str], mark: &[&str]| {
            Some(Action::Install {
                missing: names(missing),
                mark: names(mark),
            })
        };
        // (the spec's packages, state and hold; the action; the reason)
        let cases = [
            (
                spec(&["nginx"], Present, None),
                None,
                "package nginx is installed",
            ),
            (
                spec(&["nginx", "postfix"], Present, None),
                None,
                "packages nginx, postfix are installed",
            ),
            (
                spec(&["nginx", "certbot"], Present, None),
                install(&["certbot"], &[]),
                "install certbot",
            ),
            (
                spec(&["exim4"], Present, None),
                install(&["exim4"], &[]),
                "install exim4",
            ),
            (
                spec(&["postfix"], Present, Some(true)),
                None,
                "package postfix is installed",
            ),
            (
                spec(&["nginx", "postfix"], Present, Some(true)),
                install(&[], &["nginx"]),
                "hold nginx",
            ),
            (
                spec(&["nginx", "postfix"], Present, Some(false)),
                install(&[], &["postfix"]),
                "unhold postfix",
            ),
            (
                spec(&["certbot"], Present, Some(true)),
                install(&["certbot"], &["certbot"]),
                "install certbot; hold certbot",
            ),
            (
                spec(&["nginx:amd64"], Present, None),
                None,
                "package nginx:amd64 is installed",
            ),
            (
                spec(&["certbot"], Absent, None),
                None,
                "package certbot is not installed",
            ),
            (
                spec(&["exim4"], Absent, None),
                None,
                "package exim4 is not installed",
            ),
            (
                spec(&["nginx", "certbot"], Absent, None),
                Some(Action::Remove(names(&["nginx"]))),
                "remove nginx",
            ),
            (
                spec(&["exim4"], Purged, None),
                Some(Action::Remove(names(&["exim4"]))),
                "purge exim4",
            ),
            (
                spec(&["certbot", "sendmail"], Purged, None),
                None,
                "packages certbot, sendmail are not installed, nor its configuration",
            ),
        ];
        let context = Context::new(false);
        for (spec, action, says) in cases {
            let change = spec.plan(&status, &context).expect("a plan");
            assert_eq!(change.action, action, "{:?}", spec.names);
            assert_eq!(change.reason, says);
        }
    }
}
