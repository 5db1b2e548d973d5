//! The validators of merged files: a small documented table of the programs that check
//! a daemon's whole configuration, and the unit to reload once a checked configuration
//! is in place.
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
//! The validator runs on the live configuration first: when it passes, a group that
//! makes it fail is not written (the old files go back, the merges become conflicts) —
//! a configuration that fails its validator never replaces a working one. When the live
//! configuration already fails (Debian 13 leaves Dovecot 2.3's files live, which 2.4
//! refuses), it is not a working one: the clean merges are written anyway, since they
//! cannot make it worse, and the report says the daemon's configuration is still
//! invalid until the conflicts are resolved.
//! When the program is not installed, the file is written unchecked and the report says
//! so. Programs run with an argv, never a shell line.

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
    fn installed(&self) -> bool {
        PATH.split(':')
            .any(|folder| Path::new(folder).join(self.argv[0]).is_file())
    }

    /// Runs the validator on the configuration as it is now on disk.
    pub fn check(&self) -> Verdict {
        if !self.installed() {
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
            Err(error) => Verdict::Failed(format!("cannot run `{}`: {error}", self.name)),
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
                match systemctl(&["restart", unit]) {
                    Ok(output) if output.status.success() => {
                        format!("restarted {unit} (it was stopped after its reload)")
                    }
                    Ok(output) => format!(
                        "`systemctl restart {unit}` failed: {}",
                        String::from_utf8_lossy(&output.stderr).trim()
                    ),
                    Err(error) => format!("cannot run systemctl: {error}"),
                }
            }
            Ok(output) if output.status.success() => format!("reloaded {unit}"),
            Ok(output) => format!(
                "`systemctl reload-or-restart {unit}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => format!("cannot run systemctl: {error}"),
        })
    }
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
}
