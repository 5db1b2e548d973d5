//! The syntaxes placard reads as lists of settings, and which files have which: the
//! vocabulary shared by the merge by setting ([`super::settings`]) and the table of
//! renamed settings ([`super::renames`]), kept apart from both so that neither depends
//! on the other to name a syntax.

/// The syntaxes placard merges by setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Syntax {
    /// OpenSSH: `Keyword value`, keywords case-insensitive, `Match` opens a block that
    /// runs to the next `Match` or the end of the file.
    Sshd,
    /// Postfix main.cf: `key = value`, a line starting with white space continues the one
    /// before.
    Postfix,
    /// Dovecot: `key = value`, `name [args] {` … `}` sections, `!include` lines.
    Dovecot,
    /// sysctl.conf, /etc/default/*: `key = value` or `key=value`, `#` and `;` comments.
    KeyValue,
    /// ini: `[section]` headers, then `key = value`.
    Ini,
    /// `KEYWORD value`, keywords case-sensitive, no sections: login.defs.
    Spaced,
}

impl Syntax {
    /// The syntax of a file under /etc (`path` relative to /etc), when placard knows it;
    /// other files are merged by line.
    pub fn for_path(path: &str) -> Option<Syntax> {
        let path = path.trim_start_matches('/').trim_start_matches("etc/");
        let name = path.rsplit('/').next().unwrap_or(path);
        if path == "ssh/sshd_config"
            || path == "ssh/ssh_config"
            || (path.starts_with("ssh/") && path.contains(".d/") && name.ends_with(".conf"))
        {
            Some(Syntax::Sshd)
        } else if path == "postfix/main.cf" {
            Some(Syntax::Postfix)
        } else if path.starts_with("dovecot/")
            && (name.ends_with(".conf") || name.ends_with(".conf.ext"))
        {
            Some(Syntax::Dovecot)
        } else if path == "sysctl.conf"
            || path.starts_with("sysctl.d/")
            || path.starts_with("default/")
        {
            Some(Syntax::KeyValue)
        } else if name.ends_with(".ini") {
            Some(Syntax::Ini)
        } else if path == "login.defs" {
            Some(Syntax::Spaced)
        } else {
            None
        }
    }

    /// A key as the parser names it (sshd's keywords are case-insensitive).
    pub fn key_id(self, key: &str) -> String {
        match self {
            Syntax::Sshd => key.to_ascii_lowercase(),
            _ => key.to_string(),
        }
    }

    /// One setting written in this syntax.
    pub fn setting_line(self, key: &str, value: &str) -> String {
        match self {
            Syntax::Sshd | Syntax::Spaced => format!("{key} {value}"),
            _ => format!("{key} = {value}"),
        }
    }

    pub(super) fn comment_starts(self) -> &'static [char] {
        match self {
            Syntax::KeyValue | Syntax::Ini => &['#', ';'],
            _ => &['#'],
        }
    }
}
