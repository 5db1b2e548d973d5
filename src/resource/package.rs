//! `package`: Debian packages through apt, with debconf answers and holds.
//!
//! What is installed is read from dpkg's status file (see [`crate::facts::dpkg`]), which
//! is fast enough to do for every task; apt only runs when something must change.
//! `apt-get update` runs at most once per run, and only when the package lists are
//! older than a day or a package is missing from them.

use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, one_or_many, Context, FieldError, Outcome, Resource};
use crate::facts::dpkg;
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
        let status = dpkg::read_status()?;
        let names: Vec<&str> = self.names.iter().map(String::as_str).collect();
        match self.state {
            PackageState::Present => {
                let missing: Vec<&str> = names
                    .iter()
                    .copied()
                    .filter(|n| !status.is_installed(n))
                    .collect();
                let mut done = Vec::new();
                if !missing.is_empty() {
                    if !context.check {
                        self.preseed(context)?;
                        install(&missing, self.recommends, context)?;
                    }
                    done.push(format!("install {}", missing.join(", ")));
                }
                if let Some(hold) = self.hold {
                    let to_change: Vec<&str> = names
                        .iter()
                        .copied()
                        .filter(|n| status.is_held(n) != hold)
                        .collect();
                    if !to_change.is_empty() {
                        if !context.check {
                            let mut argv = vec!["apt-mark", if hold { "hold" } else { "unhold" }];
                            argv.extend(&to_change);
                            command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                        }
                        done.push(format!(
                            "{} {}",
                            if hold { "hold" } else { "unhold" },
                            to_change.join(", ")
                        ));
                    }
                }
                if done.is_empty() {
                    Ok(Outcome::unchanged(format!(
                        "{} installed",
                        describe(&names)
                    )))
                } else {
                    Ok(Outcome::changed(done.join("; ")))
                }
            }
            PackageState::Absent => remove(
                &names,
                |n| status.is_installed(n),
                "remove",
                "not installed",
                context,
            ),
            // dpkg keeps a removed package's conffiles until it is purged.
            PackageState::Purged => remove(
                &names,
                |n| status.get(n).is_some_and(|p| p.state != "not-installed"),
                "purge",
                "not installed, nor its configuration",
                context,
            ),
        }
    }
}

impl PackageSpec {
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

fn describe(names: &[&str]) -> String {
    match names {
        [one] => format!("package {one} is"),
        many => format!("packages {} are", many.join(", ")),
    }
}

/// `apt-get remove` or `purge` of the packages for which `present` holds.
fn remove(
    names: &[&str],
    present: impl Fn(&str) -> bool,
    verb: &str,
    absent: &str,
    context: &Context,
) -> Result<Outcome> {
    let present: Vec<&str> = names.iter().copied().filter(|n| present(n)).collect();
    if present.is_empty() {
        return Ok(Outcome::unchanged(format!("{} {absent}", describe(names))));
    }
    if !context.check {
        let mut argv = vec!["apt-get", verb, "-y", "-q", "-o", APT_LOCK_WAIT, "--"];
        argv.extend(&present);
        command::run_ok(&argv, context.deadline(deadline::APT))?;
    }
    Ok(Outcome::changed(format!("{verb} {}", present.join(", "))))
}

fn install(names: &[&str], recommends: Option<bool>, context: &mut Context) -> Result<()> {
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
    argv.extend(names);
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

fn all_known_to_apt(names: &[&str]) -> bool {
    let mut argv = vec!["apt-cache", "show", "--no-all-versions", "--"];
    argv.extend(names);
    // A question apt cannot answer is taken as "not known": the lists are refreshed.
    command::succeeds(&argv, deadline::QUERY).unwrap_or(false)
}
