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

use super::{check, Context, FieldError, Outcome, Resource};
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
        if let Some(creates) = &self.creates {
            if Path::new(creates).exists() {
                return Ok(Outcome::unchanged(format!("{creates} exists")));
            }
        }
        if let Some(unless) = &self.unless {
            let argv: Vec<&str> = unless.iter().map(String::as_str).collect();
            if Program::new(&argv, context.deadline(deadline::QUERY))
                .shown_as(self.guard_shown(context))
                .succeeds()?
            {
                let shown = if context.sensitive {
                    "the guard command".to_string()
                } else {
                    format!("`{}`", unless.join(" "))
                };
                return Ok(Outcome::unchanged(format!("{shown} succeeded")));
            }
        }
        // A command whose arguments hold a secret is never spelled out in the report.
        let shown = if context.sensitive {
            "a command whose arguments hold a secret".to_string()
        } else {
            self.describe()
        };
        if context.check {
            return Ok(Outcome::changed(format!("run {shown}")));
        }
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
        Ok(Outcome::changed(format!("ran {shown}")))
    }
}

impl CommandSpec {
    /// Whether this command has a guard; tasks must have one (handlers need not).
    pub fn is_guarded(&self) -> bool {
        self.creates.is_some() || self.unless.is_some()
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
