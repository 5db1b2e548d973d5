//! `user`: a Unix account, its shell, home and supplementary groups.
//!
//! Supplementary groups are added, never removed: an account may belong to groups that
//! packages or the admin gave it, and removing those would surprise.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, Context, FieldError, Outcome, Resource};
use crate::system::command::{self, deadline};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Supplementary groups, which must exist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// A system account (no home by default, uid below 1000), for services.
    #[serde(default)]
    pub system: bool,
    /// A secret (see the `secret` resource) to set as the password when the account has
    /// none — for a console login when SSH is down. Set once; never compared after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<String>,
}

impl Resource for UserSpec {
    fn validate(&self) -> Result<(), FieldError> {
        check::account_name("name", &self.name)?;
        for (index, group) in self.groups.iter().enumerate() {
            check::account_name(&format!("groups[{index}]"), group)?;
        }
        if let Some(shell) = &self.shell {
            check::absolute_path("shell", shell)?;
        }
        if let Some(home) = &self.home {
            check::absolute_path("home", home)?;
        }
        if let Some(secret) = &self.password_secret {
            super::secret::valid_name(secret).map_err(|m| FieldError::new("password_secret", m))?;
        }
        if self
            .comment
            .as_deref()
            .is_some_and(|c| c.contains([':', '\n']))
        {
            return Err(FieldError::new(
                "comment",
                "a comment cannot contain `:` or a line break",
            ));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        let uid = self.uid.map(|u| u.to_string());
        let groups = self.groups.join(",");
        let Some(user) = nix::unistd::User::from_name(&self.name)? else {
            if !context.check {
                let mut argv = vec!["useradd"];
                if self.system {
                    argv.push("--system");
                } else {
                    argv.push("--create-home");
                }
                argv.extend([
                    "--shell",
                    self.shell.as_deref().unwrap_or(if self.system {
                        "/usr/sbin/nologin"
                    } else {
                        "/bin/bash"
                    }),
                ]);
                if let Some(uid) = &uid {
                    argv.extend(["--uid", uid]);
                }
                if let Some(home) = &self.home {
                    argv.extend(["--home-dir", home]);
                }
                if let Some(comment) = &self.comment {
                    argv.extend(["--comment", comment]);
                }
                if !self.groups.is_empty() {
                    argv.extend(["--groups", &groups]);
                }
                argv.extend(["--", self.name.as_str()]);
                command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                if let Some(secret) = &self.password_secret {
                    set_password(&self.name, secret)?;
                }
            }
            context.record_change(std::path::Path::new("/etc/passwd"));
            return Ok(Outcome::changed(format!("create user {}", self.name)));
        };

        if let Some(uid) = self.uid.filter(|u| *u != user.uid.as_raw()) {
            anyhow::bail!(
                "user {} exists with uid {}, not {uid}; changing a uid is left to the admin",
                self.name,
                user.uid
            );
        }
        let mut argv: Vec<String> = vec!["usermod".into()];
        let mut changes = Vec::new();
        if let Some(shell) = self
            .shell
            .as_ref()
            .filter(|s| user.shell.to_string_lossy() != s.as_str())
        {
            argv.extend(["--shell".into(), shell.clone()]);
            changes.push(format!("shell {shell}"));
        }
        if let Some(home) = self
            .home
            .as_ref()
            .filter(|h| user.dir.to_string_lossy() != h.as_str())
        {
            argv.extend(["--home".into(), home.clone(), "--move-home".into()]);
            changes.push(format!("home {home}"));
        }
        if let Some(comment) = self
            .comment
            .as_ref()
            .filter(|c| user.gecos.to_string_lossy() != c.as_str())
        {
            argv.extend(["--comment".into(), comment.clone()]);
            changes.push("comment".to_string());
        }
        let current = supplementary_groups(&self.name)?;
        let missing: Vec<&String> = self
            .groups
            .iter()
            .filter(|g| !current.contains(g.as_str()))
            .collect();
        if !missing.is_empty() {
            argv.extend([
                "--append".into(),
                "--groups".into(),
                missing
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
            changes.push(format!(
                "join {}",
                missing
                    .iter()
                    .map(|g| g.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let needs_password = self.password_secret.is_some() && !has_password(&self.name)?;
        if needs_password {
            changes.push("set password from its secret".to_string());
        }
        if changes.is_empty() {
            return Ok(Outcome::unchanged(format!(
                "user {} is as wanted",
                self.name
            )));
        }
        if !context.check {
            if argv.len() > 1 {
                argv.extend(["--".into(), self.name.clone()]);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
            }
            if let (true, Some(secret)) = (needs_password, &self.password_secret) {
                set_password(&self.name, secret)?;
            }
        }
        context.record_change(std::path::Path::new("/etc/passwd"));
        Ok(Outcome::changed(format!(
            "user {}: {}",
            self.name,
            changes.join(", ")
        )))
    }
}

/// Sets the password from a host secret; the password goes to chpasswd on stdin only.
fn set_password(name: &str, secret: &str) -> Result<()> {
    let password = super::secret::read(secret)?.ok_or_else(|| {
        anyhow::anyhow!("secret {secret} does not exist yet; add a `secret` task before this one")
    })?;
    command::Program::new(&["chpasswd"], deadline::SYSTEM)
        .stdin(format!("{name}:{password}\n"))
        .shown_as("chpasswd")
        .run_ok()?;
    Ok(())
}

/// Whether the account has a usable password in /etc/shadow (not empty, `*` or `!`).
fn has_password(name: &str) -> Result<bool> {
    let shadow = std::fs::read_to_string("/etc/shadow")?;
    let hash = shadow.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name)).then(|| fields.next().unwrap_or_default().to_string())
    });
    Ok(hash.is_some_and(|h| h.len() > 2 && !h.starts_with('!') && !h.starts_with('*')))
}

/// The groups that list `name` as a member in /etc/group.
fn supplementary_groups(name: &str) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string("/etc/group")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let members = fields.get(3)?;
            members
                .split(',')
                .any(|m| m == name)
                .then(|| fields[0].to_string())
        })
        .collect())
}
