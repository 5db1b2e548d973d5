//! Settings that a release renamed or removed: a small documented table, by syntax.
//!
//! The merge consults it only for a setting the site changed and the new pristine file
//! no longer mentions at all (neither set nor shown as a commented example): then the
//! site's line is not carried over blindly — a daemon refuses an unknown setting, and a
//! renamed one can change meaning — but reported by name, with the new name where
//! known. A setting that is not in the table is carried over as it is.
//!
//! Sources: Dovecot's "Upgrading Dovecot CE from 2.3 to 2.4" guide (doc.dovecot.org),
//! checked against Debian 13's dovecot-core 2.4.1 conf.d files, which show
//! `#auth_allow_cleartext` where Debian 12's showed `#disable_plaintext_auth`; OpenSSH's
//! release notes (7.4 removed protocol 1 and its options; 8.7 renamed
//! ChallengeResponseAuthentication).

use super::settings::Syntax;

/// One renamed or removed setting.
#[derive(Debug, Clone, Copy)]
pub struct Rename {
    pub syntax: Syntax,
    pub old: &'static str,
    /// The settings that replace it; empty when it was removed outright.
    pub new: &'static [&'static str],
    pub note: &'static str,
}

impl Rename {
    pub fn new_names(&self) -> Vec<String> {
        self.new.iter().map(|s| s.to_string()).collect()
    }
}

pub const RENAMES: &[Rename] = &[
    Rename {
        syntax: Syntax::Dovecot,
        old: "disable_plaintext_auth",
        new: &["auth_allow_cleartext"],
        note: "Dovecot 2.4; the meaning is inverted: disable_plaintext_auth = yes is auth_allow_cleartext = no",
    },
    Rename {
        syntax: Syntax::Dovecot,
        old: "mail_location",
        new: &["mail_driver", "mail_path", "mail_inbox_path", "mail_index_path"],
        note: "Dovecot 2.4 splits `driver:path:KEY=value` into separate settings: mbox:~/mail:INBOX=/var/mail/%u is mail_driver = mbox, mail_path = ~/mail, mail_inbox_path = /var/mail/%{user}",
    },
    Rename { syntax: Syntax::Dovecot, old: "ssl_cert", new: &["ssl_server_cert_file"], note: "Dovecot 2.4; the value is a path, without the leading `<`" },
    Rename { syntax: Syntax::Dovecot, old: "ssl_key", new: &["ssl_server_key_file"], note: "Dovecot 2.4; the value is a path, without the leading `<`" },
    Rename { syntax: Syntax::Dovecot, old: "ssl_ca", new: &["ssl_server_ca_file"], note: "Dovecot 2.4; the value is a path, without the leading `<`" },
    Rename { syntax: Syntax::Dovecot, old: "ssl_dh", new: &["ssl_server_dh_file"], note: "Dovecot 2.4; the value is a path, without the leading `<`" },
    Rename { syntax: Syntax::Dovecot, old: "ssl_cert_username_field", new: &["ssl_server_cert_username_field"], note: "Dovecot 2.4" },
    Rename { syntax: Syntax::Dovecot, old: "ssl_prefer_server_ciphers", new: &["ssl_server_prefer_ciphers"], note: "Dovecot 2.4; the value is now `client` or `server`" },
    Rename { syntax: Syntax::Dovecot, old: "auth_debug", new: &["log_debug"], note: "Dovecot 2.4: log_debug = category=auth" },
    Rename { syntax: Syntax::Dovecot, old: "mail_debug", new: &["log_debug"], note: "Dovecot 2.4: log_debug = category=mail" },
    Rename {
        syntax: Syntax::Sshd,
        old: "challengeresponseauthentication",
        new: &["KbdInteractiveAuthentication"],
        note: "OpenSSH 8.7; the old name is a deprecated alias",
    },
    Rename { syntax: Syntax::Sshd, old: "useprivilegeseparation", new: &[], note: "removed in OpenSSH 7.5; privilege separation is always on" },
    Rename { syntax: Syntax::Sshd, old: "protocol", new: &[], note: "removed in OpenSSH 7.4 with SSH protocol 1" },
    Rename { syntax: Syntax::Sshd, old: "rsaauthentication", new: &[], note: "removed in OpenSSH 7.4 with SSH protocol 1" },
    Rename { syntax: Syntax::Sshd, old: "uselogin", new: &[], note: "removed in OpenSSH 7.4" },
];

/// The table's entry for `key` (as the parser names it: lower case for sshd).
pub fn lookup(syntax: Syntax, key: &str) -> Option<&'static Rename> {
    RENAMES.iter().find(|r| r.syntax == syntax && r.old == key)
}
