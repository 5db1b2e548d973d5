//! `user`: a Unix account, its shell, home and supplementary groups.
//!
//! Supplementary groups are added, never removed: an account may belong to groups that
//! packages or the admin gave it, and removing those would surprise.

use std::collections::BTreeSet;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
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
        run_planned(self, context)
    }
}

/// An existing account, as far as the spec cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub uid: u32,
    pub shell: String,
    pub home: String,
    pub comment: String,
    /// The groups that list it as a member.
    pub groups: BTreeSet<String>,
    /// Whether it has a usable password; only looked up when the spec has
    /// `password_secret` (false otherwise).
    pub has_password: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Create,
    /// usermod's options (none when only the password is set), then the password from
    /// its secret when `set_password`.
    Modify {
        options: Vec<String>,
        set_password: bool,
    },
}

impl Planned for UserSpec {
    /// The account of that name, when it exists.
    type Current = Option<Account>;
    type Action = Action;

    fn observe(&self, _context: &mut Context) -> Result<Option<Account>> {
        let Some(user) = nix::unistd::User::from_name(&self.name)? else {
            return Ok(None);
        };
        Ok(Some(Account {
            uid: user.uid.as_raw(),
            shell: user.shell.to_string_lossy().into_owned(),
            home: user.dir.to_string_lossy().into_owned(),
            comment: user.gecos.to_string_lossy().into_owned(),
            groups: supplementary_groups(&self.name)?,
            has_password: self.password_secret.is_some() && has_password(&self.name)?,
        }))
    }

    fn plan(&self, current: &Option<Account>, _context: &Context) -> Result<Change<Action>> {
        let Some(account) = current else {
            return Ok(Change::to(
                Action::Create,
                format!("create user {}", self.name),
            ));
        };
        if let Some(uid) = self.uid.filter(|u| *u != account.uid) {
            anyhow::bail!(
                "user {} exists with uid {}, not {uid}; changing a uid is left to the admin",
                self.name,
                account.uid
            );
        }
        let mut options: Vec<String> = Vec::new();
        let mut changes = Vec::new();
        if let Some(shell) = self.shell.as_ref().filter(|s| account.shell != **s) {
            options.extend(["--shell".into(), shell.clone()]);
            changes.push(format!("shell {shell}"));
        }
        if let Some(home) = self.home.as_ref().filter(|h| account.home != **h) {
            options.extend(["--home".into(), home.clone(), "--move-home".into()]);
            changes.push(format!("home {home}"));
        }
        if let Some(comment) = self.comment.as_ref().filter(|c| account.comment != **c) {
            options.extend(["--comment".into(), comment.clone()]);
            changes.push("comment".to_string());
        }
        let missing: Vec<&str> = self
            .groups
            .iter()
            .map(String::as_str)
            .filter(|g| !account.groups.contains(*g))
            .collect();
        if !missing.is_empty() {
            options.extend(["--append".into(), "--groups".into(), missing.join(",")]);
            changes.push(format!("join {}", missing.join(", ")));
        }
        let set_password = self.password_secret.is_some() && !account.has_password;
        if set_password {
            changes.push("set password from its secret".to_string());
        }
        if changes.is_empty() {
            return Ok(Change::none(format!("user {} is as wanted", self.name)));
        }
        Ok(Change::to(
            Action::Modify {
                options,
                set_password,
            },
            format!("user {}: {}", self.name, changes.join(", ")),
        ))
    }

    fn apply(&self, action: &Action, context: &mut Context) -> Result<()> {
        match action {
            Action::Create => {
                let argv = self.useradd();
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                if let Some(secret) = &self.password_secret {
                    set_password(&self.name, secret)?;
                }
            }
            Action::Modify {
                options,
                set_password: needed,
            } => {
                if !options.is_empty() {
                    let mut argv = vec!["usermod"];
                    argv.extend(options.iter().map(String::as_str));
                    argv.extend(["--", self.name.as_str()]);
                    command::run_ok(&argv, context.deadline(deadline::SYSTEM))?;
                }
                if let (true, Some(secret)) = (*needed, &self.password_secret) {
                    set_password(&self.name, secret)?;
                }
            }
        }
        context.record_change(std::path::Path::new("/etc/passwd"));
        Ok(())
    }
}

impl UserSpec {
    /// The useradd command that creates the account as the spec says.
    fn useradd(&self) -> Vec<String> {
        let mut argv = vec!["useradd".to_string()];
        argv.push(
            if self.system {
                "--system"
            } else {
                "--create-home"
            }
            .into(),
        );
        let default_shell = if self.system {
            "/usr/sbin/nologin"
        } else {
            "/bin/bash"
        };
        let shell = self.shell.as_deref().unwrap_or(default_shell);
        argv.extend(["--shell".into(), shell.into()]);
        if let Some(uid) = self.uid {
            argv.extend(["--uid".into(), uid.to_string()]);
        }
        if let Some(home) = &self.home {
            argv.extend(["--home-dir".into(), home.clone()]);
        }
        if let Some(comment) = &self.comment {
            argv.extend(["--comment".into(), comment.clone()]);
        }
        if !self.groups.is_empty() {
            argv.extend(["--groups".into(), self.groups.join(",")]);
        }
        argv.extend(["--".into(), self.name.clone()]);
        argv
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::testing::expect_plan;

    fn spec() -> UserSpec {
        UserSpec {
            name: "ana".into(),
            uid: None,
            groups: vec!["sudo".into(), "adm".into()],
            shell: Some("/bin/bash".into()),
            home: None,
            comment: None,
            system: false,
            password_secret: None,
        }
    }

    fn account() -> Account {
        Account {
            uid: 1000,
            shell: "/bin/bash".into(),
            home: "/home/ana".into(),
            comment: "Ana".into(),
            groups: ["adm", "sudo", "dialout"].map(String::from).into(),
            has_password: false,
        }
    }

    fn modify(options: &[&str], set_password: bool) -> Option<Action> {
        Some(Action::Modify {
            options: options.iter().map(|o| o.to_string()).collect(),
            set_password,
        })
    }

    #[test]
    fn plan_cases() {
        let context = Context::new(false);
        // (the spec, the account on the host, the action, the reason or error)
        let cases: Vec<(UserSpec, Option<Account>, Option<Action>, &str)> = vec![
            (spec(), None, Some(Action::Create), "create user ana"),
            (spec(), Some(account()), None, "user ana is as wanted"),
            (
                UserSpec {
                    uid: Some(1000),
                    comment: Some("Ana".into()),
                    home: Some("/home/ana".into()),
                    ..spec()
                },
                Some(account()),
                None,
                "user ana is as wanted",
            ),
            (
                UserSpec {
                    uid: Some(1001),
                    ..spec()
                },
                Some(account()),
                None,
                "user ana exists with uid 1000, not 1001",
            ),
            (
                UserSpec {
                    shell: Some("/usr/bin/zsh".into()),
                    ..spec()
                },
                Some(account()),
                modify(&["--shell", "/usr/bin/zsh"], false),
                "user ana: shell /usr/bin/zsh",
            ),
            (
                UserSpec {
                    home: Some("/srv/ana".into()),
                    comment: Some("Ana B.".into()),
                    ..spec()
                },
                Some(account()),
                modify(
                    &["--home", "/srv/ana", "--move-home", "--comment", "Ana B."],
                    false,
                ),
                "user ana: home /srv/ana, comment",
            ),
            (
                UserSpec {
                    groups: vec!["sudo".into(), "radio".into(), "audio".into()],
                    ..spec()
                },
                Some(account()),
                modify(&["--append", "--groups", "radio,audio"], false),
                "user ana: join radio, audio",
            ),
            (
                UserSpec {
                    password_secret: Some("ana-console".into()),
                    ..spec()
                },
                Some(account()),
                modify(&[], true),
                "user ana: set password from its secret",
            ),
            (
                UserSpec {
                    password_secret: Some("ana-console".into()),
                    ..spec()
                },
                Some(Account {
                    has_password: true,
                    ..account()
                }),
                None,
                "user ana is as wanted",
            ),
        ];
        for (spec, found, action, says) in cases {
            expect_plan(&spec, &found, &context, action, says);
        }
    }

    #[test]
    fn useradd_takes_the_spec_and_system_defaults() {
        assert_eq!(
            spec().useradd(),
            [
                "useradd",
                "--create-home",
                "--shell",
                "/bin/bash",
                "--groups",
                "sudo,adm",
                "--",
                "ana"
            ]
        );
        let service = UserSpec {
            name: "icecast2".into(),
            uid: Some(120),
            groups: Vec::new(),
            shell: None,
            home: Some("/var/lib/icecast2".into()),
            comment: Some("Icecast".into()),
            system: true,
            password_secret: None,
        };
        assert_eq!(
            service.useradd(),
            [
                "useradd",
                "--system",
                "--shell",
                "/usr/sbin/nologin",
                "--uid",
                "120",
                "--home-dir",
                "/var/lib/icecast2",
                "--comment",
                "Icecast",
                "--",
                "icecast2"
            ]
        );
    }
}
