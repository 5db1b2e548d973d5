//! The validators of the files `etc upgrade`, `etc migrate` and `etc resolve` write: one
//! documented table of the programs that check a daemon's whole configuration, the unit
//! to reload once a checked configuration is in place, and the one rule by which a group
//! of files is written ([`write_group`]).
//!
//! | files (under /etc)                  | validator      | unit reloaded |
//! |-------------------------------------|----------------|---------------|
//! | `ssh/sshd_config`, `ssh/sshd_config.d/*` | `sshd -t` | ssh           |
//! | `postfix/*`                         | `postfix check`| postfix       |
//! | `dovecot/*`                         | `doveconf -n`  | dovecot       |
//! | `sudoers`, `sudoers.d/*`            | `visudo -c`    | (none)        |
//!
//! A validator checks the configuration as the daemon will read it, so files of one
//! daemon are written together and checked once: a failure is blamed on all of them.
//!
//! The rule, the same for the three commands (until issue 16, migrate had its own table
//! and rolled back on any failure, while upgrade spared a configuration that was already
//! broken; resolve rolled back always). The validator runs on the live configuration
//! first:
//! - when it passes (or is not installed), the group is written and checked, and a
//!   failure puts the old files back: a configuration that fails its validator never
//!   replaces a working one;
//! - when the live configuration already fails (Debian 13 leaves Dovecot 2.3's files
//!   live, which 2.4 refuses), there is no working configuration to protect: the group is
//!   written anyway, since it cannot make the daemon's state worse, and the verdict says
//!   the configuration is still invalid. Rolling back there would keep the host broken
//!   and throw away the part of the repair that is ready (the clean merges, or the files
//!   the admin resolved so far), and the admin's next step (the remaining conflicts)
//!   would then be checked against files that are known to be wrong.
//!
//! When the program is not installed, the files are written unchecked and the verdict
//! says so. Programs run with an argv, never a shell line.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::system::atomic::{self, Attributes};
use crate::system::command::{deadline, Program, PATH};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validator {
    /// How the report names it: the command line.
    pub name: &'static str,
    pub argv: &'static [&'static str],
    /// The systemd unit to reload (or restart) once its files changed and passed.
    pub unit: Option<&'static str>,
}

const SSHD: Validator = Validator {
    name: "sshd -t",
    argv: &["sshd", "-t"],
    unit: Some("ssh"),
};
const POSTFIX: Validator = Validator {
    name: "postfix check",
    argv: &["postfix", "check"],
    unit: Some("postfix"),
};
const DOVECOT: Validator = Validator {
    name: "doveconf -n",
    argv: &["doveconf", "-n"],
    unit: Some("dovecot"),
};
const SUDO: Validator = Validator {
    name: "visudo -c",
    argv: &["visudo", "-c"],
    unit: None,
};

/// The validator of `path` (relative to /etc), when the table has one.
pub fn for_path(path: &str) -> Option<Validator> {
    if path == "ssh/sshd_config" || path.starts_with("ssh/sshd_config.d/") {
        Some(SSHD)
    } else if path.starts_with("postfix/") {
        Some(POSTFIX)
    } else if path.starts_with("dovecot/") {
        Some(DOVECOT)
    } else if path == "sudoers" || path.starts_with("sudoers.d/") {
        Some(SUDO)
    } else {
        None
    }
}

/// What a validator said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// The program's message.
    Failed(String),
    /// The program is not installed: nothing was checked.
    NotInstalled,
}

impl Validator {
    /// Whether its program is installed (on root's PATH).
    pub fn is_installed(&self) -> bool {
        PATH.split(':')
            .any(|folder| Path::new(folder).join(self.argv[0]).is_file())
    }

    /// Runs the validator on the configuration as it is now on disk.
    pub fn check(&self) -> Verdict {
        if !self.is_installed() {
            return Verdict::NotInstalled;
        }
        let output = Program::new(self.argv, deadline::VALIDATE).output();
        match output {
            Ok(output) if output.status.success() => Verdict::Passed,
            Ok(output) => {
                let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
                if message.is_empty() {
                    message = String::from_utf8_lossy(&output.stdout).trim().to_string();
                }
                // doveconf -n prints the whole configuration on success only; on failure
                // the first lines say why, and the rest would drown the report.
                let lines: Vec<&str> = message.lines().take(8).collect();
                Verdict::Failed(format!("`{}` failed: {}", self.name, lines.join("; ")))
            }
            // It names the program and what went wrong (not found, or past its deadline).
            Err(error) => Verdict::Failed(error.to_string()),
        }
    }

    /// Reloads the unit (restarts it when it is not running: a daemon the upgrade left
    /// stopped for want of a valid configuration comes back) when it is enabled.
    pub fn reload(&self) -> Option<String> {
        let unit = self.unit?;
        let systemctl = |args: &[&str]| {
            let mut argv = vec!["systemctl"];
            argv.extend(args);
            Program::new(&argv, deadline::SYSTEM).output()
        };
        let enabled = systemctl(&["is-enabled", "--quiet", unit]).is_ok_and(|o| o.status.success());
        if !enabled {
            return None;
        }
        let active = |unit: &str| {
            systemctl(&["is-active", "--quiet", unit]).is_ok_and(|o| o.status.success())
        };
        Some(match systemctl(&["reload-or-restart", unit]) {
            // A release upgrade can change how a daemon is run: Debian 13's postfix.service
            // runs the master itself, where Debian 12's started postfix@-.service, so a
            // reload of the old master leaves the new unit stopped. It is started again.
            Ok(output) if output.status.success() && !active(unit) => {
                // Started, not restarted: a restart is passed on to the units that are
                // PartOf it, and Debian 12's postfix@- is, while it is being stopped;
                // systemd then refuses the transaction ("conflicting jobs 'restart' and
                // 'stop' for postfix@-.service"), seen in e2e_etc_upgrade. A start job
                // carries no restart. Should the old instance still be stopping, a few
                // tries, a second apart.
                let mut restarted = systemctl(&["start", unit]);
                for _ in 0..10 {
                    let conflicting = restarted.as_ref().is_ok_and(|o| {
                        !o.status.success()
                            && String::from_utf8_lossy(&o.stderr).contains("conflicting jobs")
                    });
                    if !conflicting {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_secs(1));
                    restarted = systemctl(&["start", unit]);
                }
                match restarted {
                    Ok(output) if output.status.success() => {
                        format!("started {unit} again (it was stopped after its reload)")
                    }
                    Ok(output) => format!(
                        "`systemctl start {unit}` failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                    Err(error) => error.to_string(),
                }
            }
            Ok(output) if output.status.success() => format!("reloaded {unit}"),
            Ok(output) => format!(
                "`systemctl reload-or-restart {unit}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => error.to_string(),
        })
    }
}

/// What became of a group of files written by [`write_group`], with the line for the
/// report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Written; the validator passed, or there is none to run (the line says which).
    Passed(String),
    /// The live configuration already failed its validator: the files were written and it
    /// still fails.
    StillInvalid(StillInvalid),
    /// The live configuration passed, the files made it fail: the old files are back.
    RolledBack(String),
}

impl Outcome {
    pub fn line(&self) -> String {
        match self {
            Outcome::Passed(line) | Outcome::RolledBack(line) => line.clone(),
            Outcome::StillInvalid(still) => still.line(),
        }
    }
}

/// A group of files written although their validator fails, because the live
/// configuration failed it already (the module's rule): what the reports of `etc
/// upgrade`, `etc migrate` and `etc resolve` list for the admin to repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StillInvalid {
    /// The validator's command line (`doveconf -n`).
    pub validator: String,
    /// The unit to reload once it passes, when there is one.
    pub unit: Option<String>,
    /// The files written, relative to /etc.
    pub files: Vec<String>,
    /// What the validator said.
    pub message: String,
}

/// A daemon as the admin knows it: its unit, or else its validator's program.
pub fn daemon<'a>(unit: Option<&'a str>, validator: &'a str) -> &'a str {
    unit.unwrap_or_else(|| validator.split(' ').next().unwrap_or_default())
}

impl StillInvalid {
    /// The daemon, as the admin knows it: see [`daemon`].
    pub fn daemon(&self) -> &str {
        daemon(self.unit.as_deref(), &self.validator)
    }

    /// One line for a commit message or a merged file's verdict.
    pub fn line(&self) -> String {
        format!(
            "{}: configuration still invalid until the conflicts are resolved: {}",
            self.daemon(),
            self.message
        )
    }
}

/// Writes `content` to `path` atomically, keeping the mode and owner of the file it
/// replaces (sudoers is 0440, root:nut 0640 stays); a new file is 0644.
pub fn write_file(path: &Path, content: &[u8]) -> Result<()> {
    let attributes = Attributes::of_existing(path, Attributes::mode(0o644));
    atomic::write_atomic(path, content, attributes, None)
}

/// Writes a group of files under `etc` (`None` removes one) by the module's rule: see
/// the module's documentation. Files put back keep their owner and mode.
pub fn write_group(
    etc: &Path,
    validator: Option<Validator>,
    files: &[(String, Option<Vec<u8>>)],
) -> Result<Outcome> {
    let broken_before = validator.is_some_and(|v| matches!(v.check(), Verdict::Failed(_)));
    let mut previous = Vec::new();
    for (path, content) in files {
        let live = etc.join(path);
        let attributes = Attributes::of_existing(&live, Attributes::mode(0o644));
        previous.push((live.clone(), fs::read(&live).ok(), attributes));
        match content {
            Some(content) => write_file(&live, content)?,
            None if live.exists() => fs::remove_file(&live)
                .with_context(|| format!("cannot remove {}", live.display()))?,
            None => {}
        }
    }
    let verdict = validator.map_or(Verdict::NotInstalled, |v| v.check());
    Ok(match (verdict, validator) {
        (Verdict::Failed(message), Some(v)) if broken_before => {
            Outcome::StillInvalid(StillInvalid {
                validator: v.name.to_string(),
                unit: v.unit.map(str::to_string),
                files: files.iter().map(|(path, _)| path.clone()).collect(),
                message,
            })
        }
        (Verdict::Failed(message), _) => {
            for (live, content, attributes) in previous {
                match content {
                    Some(content) => atomic::write_atomic(&live, &content, attributes, None)?,
                    None => {
                        let _ = fs::remove_file(&live);
                    }
                }
            }
            Outcome::RolledBack(message)
        }
        (Verdict::Passed, Some(v)) if broken_before => Outcome::Passed(format!(
            "{} passed (it failed on the live configuration before)",
            v.name
        )),
        (Verdict::Passed, Some(v)) => Outcome::Passed(format!("{} passed", v.name)),
        (Verdict::NotInstalled, Some(v)) => {
            Outcome::Passed(format!("not checked: {} is not installed", v.argv[0]))
        }
        (_, None) => Outcome::Passed("no validator for this file".to_string()),
    })
}

/// Items of one validator (`None`: files no validator checks).
pub type Group<T> = (Option<Validator>, Vec<(String, T)>);

/// Items by the validator of their path (`validator_for`), for [`write_group`]: each
/// group with its validator.
pub fn by_validator<T>(
    items: Vec<(String, T)>,
    validator_for: &dyn Fn(&str) -> Option<Validator>,
) -> Vec<Group<T>> {
    let mut groups: BTreeMap<Option<&'static str>, Group<T>> = BTreeMap::new();
    for (path, item) in items {
        let validator = validator_for(&path);
        groups
            .entry(validator.map(|v| v.name))
            .or_insert_with(|| (validator, Vec::new()))
            .1
            .push((path, item));
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_by_path() {
        assert_eq!(for_path("ssh/sshd_config"), Some(SSHD));
        assert_eq!(for_path("ssh/sshd_config.d/club.conf"), Some(SSHD));
        assert_eq!(for_path("ssh/ssh_config"), None, "the client's file");
        assert_eq!(for_path("postfix/main.cf"), Some(POSTFIX));
        assert_eq!(for_path("dovecot/conf.d/10-auth.conf"), Some(DOVECOT));
        assert_eq!(for_path("sudoers.d/club"), Some(SUDO));
        assert_eq!(for_path("nut/upsmon.conf"), None);
    }

    const FAILS: Validator = Validator {
        name: "false",
        argv: &["false"],
        unit: None,
    };
    const PASSES: Validator = Validator {
        name: "true",
        argv: &["true"],
        unit: None,
    };

    /// A validator that fails when `file` holds the word "broken".
    fn refusing_broken(file: &Path) -> Validator {
        let file: &'static str = Box::leak(file.display().to_string().into_boxed_str());
        Validator {
            name: "no broken",
            argv: Box::leak(Box::new(["sh", "-c", "! grep -q broken \"$0\"", file])),
            unit: None,
        }
    }

    #[test]
    fn a_working_configuration_is_never_replaced_by_a_failing_one() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        let live = etc.path().join("a.conf");
        fs::write(&live, "old\n").expect("written");
        let files = [
            ("a.conf".to_string(), Some(b"broken\n".to_vec())),
            ("b.conf".to_string(), Some(b"new\n".to_vec())),
        ];
        let outcome = write_group(etc.path(), Some(refusing_broken(&live)), &files).expect("run");
        assert!(matches!(outcome, Outcome::RolledBack(_)), "{outcome:?}");
        assert_eq!(fs::read_to_string(&live).ok(), Some("old\n".into()));
        assert!(
            !etc.path().join("b.conf").exists(),
            "a new file of the group goes too"
        );
    }

    /// A validator that fails on the live configuration and after the write: there was
    /// no working configuration, so the files stay written and the outcome says so.
    /// (`false` fails before and after: the "already broken" branch.)
    #[test]
    fn a_broken_configuration_is_written_and_still_invalid() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        fs::write(etc.path().join("a.conf"), "old\n").expect("written");
        let files = [("a.conf".to_string(), Some(b"new\n".to_vec()))];
        let outcome = write_group(etc.path(), Some(FAILS), &files).expect("run");
        let Outcome::StillInvalid(still) = &outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(still.files, ["a.conf"]);
        assert_eq!(still.daemon(), "false", "no unit: the program");
        assert!(
            still
                .line()
                .starts_with("false: configuration still invalid until the conflicts are resolved: `false` failed"),
            "{}",
            still.line()
        );
        assert_eq!(
            fs::read_to_string(etc.path().join("a.conf")).ok(),
            Some("new\n".into())
        );
    }

    #[test]
    fn a_passing_validator_keeps_the_files_and_none_writes_unchecked() {
        let etc = tempfile::tempdir().expect("a temporary folder");
        let files = [
            ("a.conf".to_string(), Some(b"new\n".to_vec())),
            ("gone.conf".to_string(), None),
        ];
        fs::write(etc.path().join("gone.conf"), "x").expect("written");
        let outcome = write_group(etc.path(), Some(PASSES), &files).expect("run");
        assert_eq!(outcome, Outcome::Passed("true passed".into()));
        assert!(!etc.path().join("gone.conf").exists());
        let outcome = write_group(etc.path(), None, &files).expect("run");
        assert_eq!(
            outcome,
            Outcome::Passed("no validator for this file".into())
        );
    }

    #[test]
    fn groups_by_validator() {
        let groups = by_validator(
            vec![
                ("postfix/main.cf".to_string(), 1),
                ("ssh/sshd_config".to_string(), 2),
                ("postfix/master.cf".to_string(), 3),
                ("hosts".to_string(), 4),
            ],
            &for_path,
        );
        let shape: Vec<(Option<&str>, Vec<i32>)> = groups
            .iter()
            .map(|(v, items)| (v.map(|v| v.name), items.iter().map(|(_, i)| *i).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                (None, vec![4]),
                (Some("postfix check"), vec![1, 3]),
                (Some("sshd -t"), vec![2])
            ]
        );
    }
}
