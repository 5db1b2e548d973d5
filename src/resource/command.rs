//! `command`: the escape hatch, for what no resource covers.
//!
//! A command is an argv, run without a shell. `shell:` runs a script with /bin/sh when
//! one is really needed; it is not templated, so a variable can never be spliced into
//! shell code: values reach the script through `env:` and are used as "$NAME".
//! A command is not idempotent by itself, so it needs a guard: `creates:` (skip when
//! that path exists) or `unless:` (skip when that command succeeds). Guards run in check
//! runs too, so they must only look.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
use crate::system::command::{deadline, Program};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chdir: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl Resource for CommandSpec {
    const UNRENDERED: &'static [&'static str] = &["shell"];

    fn validate(&self) -> Result<(), FieldError> {
        match (&self.argv, &self.shell) {
            (Some(argv), None) => check::not_empty("argv", argv)?,
            (None, Some(_)) => {}
            _ => {
                return Err(FieldError::new(
                    "argv",
                    "a command has exactly one of `argv` (preferred) or `shell`",
                ))
            }
        }
        if let Some(creates) = &self.creates {
            check::absolute_path("creates", creates)?;
        }
        if let Some(unless) = &self.unless {
            check::not_empty("unless", unless)?;
        }
        if let Some(chdir) = &self.chdir {
            check::absolute_path("chdir", chdir)?;
        }
        for name in self.env.keys() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(FieldError::new(
                    &format!("env.{name}"),
                    "an environment variable name is letters, digits and _",
                ));
            }
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// What the guards found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guard {
    /// `creates:` exists.
    Created,
    /// `unless:` succeeded.
    Succeeded,
    /// Neither: the command must run.
    NotDone,
}

/// The one thing a command task does: run the command.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Run;

impl Planned for CommandSpec {
    type Current = Guard;
    type Action = Run;

    /// Runs the guard command (`unless:`) only when `creates:` does not already answer.
    fn observe(&self, context: &mut Context) -> Result<Guard> {
        if let Some(creates) = &self.creates {
            if Path::new(creates).exists() {
                return Ok(Guard::Created);
            }
        }
        if let Some(unless) = &self.unless {
            let argv: Vec<&str> = unless.iter().map(String::as_str).collect();
            if Program::new(&argv, context.deadline(deadline::QUERY))
                .shown_as(self.guard_shown(context))
                .succeeds()?
            {
                return Ok(Guard::Succeeded);
            }
        }
        Ok(Guard::NotDone)
    }

    fn plan(&self, guard: &Guard, context: &Context) -> Result<Change<Run>> {
        Ok(match guard {
            Guard::Created => Change::none(format!(
                "{} exists",
                self.creates.as_deref().unwrap_or_default()
            )),
            Guard::Succeeded => {
                let shown = match (&self.unless, context.sensitive) {
                    (Some(unless), false) => format!("`{}`", unless.join(" ")),
                    _ => "the guard command".to_string(),
                };
                Change::none(format!("{shown} succeeded"))
            }
            Guard::NotDone => {
                let shown = self.shown(context);
                Change::to(Run, format!("run {shown}")).once_done(format!("ran {shown}"))
            }
        })
    }

    fn apply(&self, _: &Run, context: &mut Context) -> Result<()> {
        let shown = self.shown(context);
        let argv: Vec<&str> = match (&self.argv, &self.shell) {
            (Some(argv), _) => argv.iter().map(String::as_str).collect(),
            (None, Some(script)) => vec!["/bin/sh", "-e", "-c", script],
            (None, None) => anyhow::bail!("a command has neither argv nor shell"),
        };
        let mut program =
            Program::new(&argv, context.deadline(deadline::COMMAND)).shown_as(shown.clone());
        for (name, value) in &self.env {
            program = program.env(name, value);
        }
        if let Some(chdir) = &self.chdir {
            program = program.directory(chdir);
        }
        program
            .run_ok()
            .with_context(|| format!("the task's command failed: {shown}"))?;
        if let Some(creates) = &self.creates {
            context.record_change(Path::new(creates));
        }
        Ok(())
    }
}

impl CommandSpec {
    pub fn is_guarded(&self) -> bool {
        self.creates.is_some() || self.unless.is_some()
    }

    /// The command as the report names it: a command whose arguments hold a secret is
    /// never spelled out.
    fn shown(&self, context: &Context) -> String {
        if context.sensitive {
            "a command whose arguments hold a secret".to_string()
        } else {
            self.describe()
        }
    }

    fn guard_shown(&self, context: &Context) -> String {
        match (&self.unless, context.sensitive) {
            (Some(unless), false) => unless.join(" "),
            _ => "the guard command".to_string(),
        }
    }

    fn describe(&self) -> String {
        match (&self.argv, &self.shell) {
            (Some(argv), _) => argv.join(" "),
            (None, Some(script)) => format!(
                "shell script `{}`",
                script.lines().next().unwrap_or_default()
            ),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_cases() {
        let spec = |argv: &[&str], shell: Option<&str>| CommandSpec {
            argv: (!argv.is_empty()).then(|| argv.iter().map(|a| a.to_string()).collect()),
            shell: shell.map(str::to_string),
            creates: Some("/var/lib/radio/.created".into()),
            unless: Some(vec!["test".into(), "-e".into(), "/etc/radio".into()]),
            chdir: None,
            env: BTreeMap::new(),
        };
        let plain = Context::new(false);
        let secret = Context {
            sensitive: true,
            ..Context::new(false)
        };
        let make = spec(&["make-radio", "--password", "x"], None);
        let script = spec(&[], Some("first line\nsecond line"));
        // (spec, guard, sensitive, runs, the reason in a check run, after running)
        let cases = [
            (
                &make,
                Guard::Created,
                &plain,
                false,
                "/var/lib/radio/.created exists",
                None,
            ),
            (
                &make,
                Guard::Succeeded,
                &plain,
                false,
                "`test -e /etc/radio` succeeded",
                None,
            ),
            (
                &make,
                Guard::Succeeded,
                &secret,
                false,
                "the guard command succeeded",
                None,
            ),
            (
                &make,
                Guard::NotDone,
                &plain,
                true,
                "run make-radio --password x",
                Some("ran make-radio --password x"),
            ),
            (
                &make,
                Guard::NotDone,
                &secret,
                true,
                "run a command whose arguments hold a secret",
                Some("ran a command whose arguments hold a secret"),
            ),
            (
                &script,
                Guard::NotDone,
                &plain,
                true,
                "run shell script `first line`",
                Some("ran shell script `first line`"),
            ),
        ];
        for (spec, guard, context, runs, says, done) in cases {
            let change = spec.plan(&guard, context).expect("a plan");
            assert_eq!(change.action.is_some(), runs, "{guard:?}");
            assert_eq!(change.reason, says);
            assert_eq!(change.done.as_deref(), done);
        }
    }
}
