//! Settings that a release renamed or removed, and how to translate them: a small
//! documented table of rules, by syntax, each with its source.
//!
//! The merge consults it for a setting the site changed that the new pristine file no
//! longer sets (and either no longer shows at all, or shows next to one of its new
//! names): the site's line is not carried over blindly — a daemon refuses an unknown
//! setting, and a renamed one can change meaning. When the rule can translate the
//! site's value, the new settings take its place and the merge names the translation
//! ([`Translation`]); when it cannot (a value the rule does not know), the setting is
//! reported by name, with its new names, for the admin. A setting that is not in the
//! table is carried over as it is.
//!
//! Sources:
//! - Dovecot: "Upgrading Dovecot CE from 2.3 to 2.4" (doc.dovecot.org, installation/
//!   upgrade/2.3-to-2.4: "Renamed settings", "mail_location split"), checked against
//!   Debian 13's dovecot-core 2.4.1 conf.d files, which show `#auth_allow_cleartext`
//!   where Debian 12's showed `#disable_plaintext_auth`, and `mail_driver`/`mail_path`
//!   where 12 set `mail_location`;
//! - OpenSSH: release notes of 7.4 (protocol 1 and its options removed), 7.5
//!   (UsePrivilegeSeparation), 8.5 (`*KeyTypes` → `*Algorithms`), 8.7
//!   (ChallengeResponseAuthentication → KbdInteractiveAuthentication);
//! - Postfix: RELEASE_NOTES-3.9 and postconf(5) of 3.10 (Debian 13), "deprecated
//!   features": `smtp(d)_use_tls`/`_enforce_tls` → `*_tls_security_level`,
//!   `disable_dns_lookups` → `smtp_dns_support_level`, `*_per_record_deadline` →
//!   `*_per_request_deadline`.

use super::syntax::Syntax;

/// How a rule turns the old setting's value into new settings.
#[derive(Debug, Clone, Copy)]
pub enum Rule {
    /// The same value under the new name (`new[0]`).
    Same,
    /// A yes/no value, inverted, under the new name (`new[0]`).
    Inverted,
    /// Dovecot 2.3's `<path` (read the file) becomes a plain path under `new[0]`.
    FileValue,
    /// Known values, each with the settings that replace it (none: the setting is
    /// simply dropped, what it asked for being the new default or the only behaviour).
    /// A value not listed is left for a human.
    Values(&'static [(&'static str, &'static [(&'static str, &'static str)])]),
    /// Dovecot 2.3's `mail_location = driver:path[:KEY=value…]`, split.
    DovecotMailLocation,
}

/// One renamed or removed setting.
#[derive(Debug, Clone, Copy)]
pub struct Rename {
    pub syntax: Syntax,
    /// As the parser keys it (lower case for sshd).
    pub old: &'static str,
    /// The settings that replace it; empty when it was removed outright.
    pub new: &'static [&'static str],
    pub rule: Rule,
    pub note: &'static str,
}

impl Rename {
    pub fn new_names(&self) -> Vec<String> {
        self.new.iter().map(|s| s.to_string()).collect()
    }

    /// The settings that replace `value`, or `None` when the rule does not know how.
    pub fn translate(&self, value: &str) -> Option<Translated> {
        let value = value.trim();
        let settings = match self.rule {
            Rule::Same => vec![(self.new.first()?.to_string(), value.to_string())],
            Rule::Inverted => {
                let inverted = match value.to_ascii_lowercase().as_str() {
                    "yes" => "no",
                    "no" => "yes",
                    _ => return None,
                };
                vec![(self.new.first()?.to_string(), inverted.to_string())]
            }
            Rule::FileValue => {
                let path = value.strip_prefix('<')?.trim();
                if path.is_empty() {
                    return None;
                }
                vec![(self.new.first()?.to_string(), path.to_string())]
            }
            Rule::Values(known) => {
                let (_, settings) = known
                    .iter()
                    .find(|(old, _)| old.eq_ignore_ascii_case(value))?;
                settings
                    .iter()
                    .map(|(key, value)| (key.to_string(), value.to_string()))
                    .collect()
            }
            Rule::DovecotMailLocation => dovecot_mail_location(value)?,
        };
        // The settings of the rule's family that the old value left unset: the old
        // value said all there was to say, so the new release's defaults for them (an
        // mbox INBOX under /var/mail for a maildir site) must not apply.
        let unset = match self.rule {
            Rule::DovecotMailLocation => self
                .new
                .iter()
                .filter(|name| !settings.iter().any(|(key, _)| key == *name))
                .map(|name| name.to_string())
                .collect(),
            _ => Vec::new(),
        };
        Some(Translated { settings, unset })
    }
}

/// What a rule made of the site's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The new settings and their values, in order.
    pub settings: Vec<(String, String)>,
    /// Settings of the rule's family the old value left at their default: commented out
    /// where the new release sets them.
    pub unset: Vec<String>,
}

/// Dovecot 2.3's `%` variables and their 2.4 forms (the 2.4 guide, "Variable
/// expansion"). A value with another variable is not translated.
const DOVECOT_VARIABLES: &[(&str, &str)] = &[
    ("%u", "%{user}"),
    ("%n", "%{user|username}"),
    ("%d", "%{user|domain}"),
    ("%h", "%{home}"),
    ("%Lu", "%{user|lower}"),
    ("%Ln", "%{user|username|lower}"),
    ("%Ld", "%{user|domain|lower}"),
    ("%%", "%"),
];

/// Rewrites Dovecot 2.3 variables into 2.4's syntax, or `None` for one it does not know.
pub fn dovecot_variables(value: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (from, to) = DOVECOT_VARIABLES
            .iter()
            .find(|(from, _)| tail.starts_with(from))?;
        out.push_str(to);
        rest = &tail[from.len()..];
    }
    out.push_str(rest);
    Some(out)
}

/// Whether `value` holds a Dovecot 2.3 short variable (`%u`, `%Lu`, `%%`…): a `%` not
/// followed by `{`.
pub fn has_dovecot_23_variables(value: &str) -> bool {
    value
        .match_indices('%')
        .any(|(at, _)| !value[at + 1..].starts_with('{'))
}

/// Settings only Dovecot 2.4's files name, and its variable syntax: a pristine file that
/// shows one of them, where the old pristine file shows none, is for Dovecot 2.4, so a
/// kept site value's 2.3 variables must be rewritten (2.4 refuses them).
pub const DOVECOT_24_MARKS: &[&str] = &[
    "%{user",
    "dovecot_config_version",
    "auth_allow_cleartext",
    "mail_driver",
    "ssl_server_cert_file",
];

/// The note of the variable rewrite, with its source.
pub const DOVECOT_VARIABLES_NOTE: &str =
    "Dovecot 2.4's variable syntax (doc.dovecot.org, upgrading 2.3 to 2.4: variable expansion)";

/// The `KEY=value` parameters of `mail_location` and the 2.4 settings they became.
const MAIL_LOCATION_KEYS: &[(&str, &str)] = &[
    ("INBOX", "mail_inbox_path"),
    ("INDEX", "mail_index_path"),
    ("INDEXPVT", "mail_index_private_path"),
    ("CONTROL", "mail_control_path"),
    ("ALT", "mail_alt_path"),
    ("LAYOUT", "mailbox_list_layout"),
    ("VOLATILEDIR", "mail_volatile_path"),
    ("SUBSCRIPTIONS", "mailbox_subscriptions_filename"),
    ("DIRNAME", "mailbox_directory_name"),
    ("MAILBOXDIR", "mailbox_root_directory_name"),
];

const MAIL_DRIVERS: &[&str] = &[
    "maildir", "mbox", "sdbox", "mdbox", "dbox", "imapc", "pop3c",
];

/// `maildir:~/Maildir:INDEX=/var/index/%u` → `mail_driver = maildir`,
/// `mail_path = ~/Maildir`, `mail_index_path = /var/index/%{user}`.
fn dovecot_mail_location(value: &str) -> Option<Vec<(String, String)>> {
    let mut parts = value.split(':');
    let driver = parts.next()?.trim();
    // Dovecot 2.3 calls single-dbox `dbox`; 2.4 names it sdbox.
    let driver = match driver {
        "dbox" => "sdbox",
        other => other,
    };
    if !MAIL_DRIVERS.contains(&driver) {
        return None;
    }
    let mut settings = vec![("mail_driver".to_string(), driver.to_string())];
    if let Some(path) = parts.next() {
        if !path.is_empty() {
            settings.push(("mail_path".to_string(), dovecot_variables(path)?));
        }
    }
    for part in parts {
        let (key, parameter) = part.split_once('=')?;
        let (_, name) = MAIL_LOCATION_KEYS
            .iter()
            .find(|(known, _)| *known == key.trim())?;
        let parameter = if *name == "mailbox_list_layout" {
            parameter.trim().to_ascii_lowercase()
        } else {
            dovecot_variables(parameter.trim())?
        };
        settings.push((name.to_string(), parameter));
    }
    Some(settings)
}

/// The settings `mail_location` may become, which its rule owns.
const MAIL_LOCATION_FAMILY: &[&str] = &[
    "mail_driver",
    "mail_path",
    "mail_inbox_path",
    "mail_index_path",
    "mail_index_private_path",
    "mail_control_path",
    "mail_alt_path",
    "mailbox_list_layout",
    "mail_volatile_path",
    "mailbox_subscriptions_filename",
    "mailbox_directory_name",
    "mailbox_root_directory_name",
];

const DOVECOT_FILE: &str = "Dovecot 2.4; the value is a path, without the leading `<`";

pub const RENAMES: &[Rename] = &[
    Rename {
        syntax: Syntax::Dovecot,
        old: "disable_plaintext_auth",
        new: &["auth_allow_cleartext"],
        rule: Rule::Inverted,
        note: "Dovecot 2.4; the meaning is inverted: disable_plaintext_auth = yes is auth_allow_cleartext = no",
    },
    Rename {
        syntax: Syntax::Dovecot,
        old: "mail_location",
        new: MAIL_LOCATION_FAMILY,
        rule: Rule::DovecotMailLocation,
        note: "Dovecot 2.4 splits `driver:path:KEY=value` into separate settings: mbox:~/mail:INBOX=/var/mail/%u is mail_driver = mbox, mail_path = ~/mail, mail_inbox_path = /var/mail/%{user}",
    },
    Rename { syntax: Syntax::Dovecot, old: "ssl_cert", new: &["ssl_server_cert_file"], rule: Rule::FileValue, note: DOVECOT_FILE },
    Rename { syntax: Syntax::Dovecot, old: "ssl_key", new: &["ssl_server_key_file"], rule: Rule::FileValue, note: DOVECOT_FILE },
    Rename { syntax: Syntax::Dovecot, old: "ssl_ca", new: &["ssl_server_ca_file"], rule: Rule::FileValue, note: DOVECOT_FILE },
    Rename { syntax: Syntax::Dovecot, old: "ssl_dh", new: &["ssl_server_dh_file"], rule: Rule::FileValue, note: DOVECOT_FILE },
    Rename { syntax: Syntax::Dovecot, old: "ssl_cert_username_field", new: &["ssl_server_cert_username_field"], rule: Rule::Same, note: "Dovecot 2.4" },
    Rename {
        syntax: Syntax::Dovecot,
        old: "ssl_prefer_server_ciphers",
        new: &["ssl_server_prefer_ciphers"],
        rule: Rule::Values(&[("yes", &[("ssl_server_prefer_ciphers", "server")]), ("no", &[("ssl_server_prefer_ciphers", "client")])]),
        note: "Dovecot 2.4; the value is now `client` or `server`",
    },
    Rename {
        syntax: Syntax::Dovecot,
        old: "auth_debug",
        new: &["log_debug"],
        rule: Rule::Values(&[("yes", &[("log_debug", "category=auth")]), ("no", &[])]),
        note: "Dovecot 2.4: log_debug = category=auth",
    },
    Rename {
        syntax: Syntax::Dovecot,
        old: "mail_debug",
        new: &["log_debug"],
        rule: Rule::Values(&[("yes", &[("log_debug", "category=mail")]), ("no", &[])]),
        note: "Dovecot 2.4: log_debug = category=mail",
    },
    Rename {
        syntax: Syntax::Sshd,
        old: "challengeresponseauthentication",
        new: &["KbdInteractiveAuthentication"],
        rule: Rule::Same,
        note: "OpenSSH 8.7; the old name is a deprecated alias",
    },
    Rename { syntax: Syntax::Sshd, old: "pubkeyacceptedkeytypes", new: &["PubkeyAcceptedAlgorithms"], rule: Rule::Same, note: "OpenSSH 8.5; the old name is a deprecated alias" },
    Rename { syntax: Syntax::Sshd, old: "hostbasedacceptedkeytypes", new: &["HostbasedAcceptedAlgorithms"], rule: Rule::Same, note: "OpenSSH 8.5; the old name is a deprecated alias" },
    Rename {
        syntax: Syntax::Sshd,
        old: "useprivilegeseparation",
        new: &[],
        rule: Rule::Values(&[("yes", &[]), ("sandbox", &[])]),
        note: "removed in OpenSSH 7.5; privilege separation is always on (sandboxed)",
    },
    Rename { syntax: Syntax::Sshd, old: "protocol", new: &[], rule: Rule::Values(&[("2", &[])]), note: "removed in OpenSSH 7.4 with SSH protocol 1; protocol 2 is the only one" },
    Rename { syntax: Syntax::Sshd, old: "rsaauthentication", new: &[], rule: Rule::Values(&[("yes", &[]), ("no", &[])]), note: "removed in OpenSSH 7.4 with SSH protocol 1, which it applied to" },
    Rename { syntax: Syntax::Sshd, old: "rhostsrsaauthentication", new: &[], rule: Rule::Values(&[("no", &[])]), note: "removed in OpenSSH 7.4 with SSH protocol 1; rhosts authentication is off" },
    Rename { syntax: Syntax::Sshd, old: "uselogin", new: &[], rule: Rule::Values(&[("no", &[])]), note: "removed in OpenSSH 7.4; login(1) is never used" },
    Rename {
        syntax: Syntax::Postfix,
        old: "smtpd_use_tls",
        new: &["smtpd_tls_security_level"],
        rule: Rule::Values(&[("yes", &[("smtpd_tls_security_level", "may")]), ("no", &[("smtpd_tls_security_level", "none")])]),
        note: "Postfix 3.9 deprecates it for smtpd_tls_security_level",
    },
    Rename {
        syntax: Syntax::Postfix,
        old: "smtpd_enforce_tls",
        new: &["smtpd_tls_security_level"],
        rule: Rule::Values(&[("yes", &[("smtpd_tls_security_level", "encrypt")])]),
        note: "Postfix 3.9 deprecates it for smtpd_tls_security_level",
    },
    Rename {
        syntax: Syntax::Postfix,
        old: "smtp_use_tls",
        new: &["smtp_tls_security_level"],
        rule: Rule::Values(&[("yes", &[("smtp_tls_security_level", "may")]), ("no", &[("smtp_tls_security_level", "none")])]),
        note: "Postfix 3.9 deprecates it for smtp_tls_security_level",
    },
    Rename {
        syntax: Syntax::Postfix,
        old: "smtp_enforce_tls",
        new: &["smtp_tls_security_level"],
        rule: Rule::Values(&[("yes", &[("smtp_tls_security_level", "encrypt")])]),
        note: "Postfix 3.9 deprecates it for smtp_tls_security_level",
    },
    Rename {
        syntax: Syntax::Postfix,
        old: "disable_dns_lookups",
        new: &["smtp_dns_support_level"],
        rule: Rule::Values(&[("yes", &[("smtp_dns_support_level", "disabled")]), ("no", &[])]),
        note: "Postfix 3.9 deprecates it for smtp_dns_support_level",
    },
    Rename { syntax: Syntax::Postfix, old: "smtpd_per_record_deadline", new: &["smtpd_per_request_deadline"], rule: Rule::Same, note: "Postfix 3.9 deprecates it for smtpd_per_request_deadline" },
    Rename { syntax: Syntax::Postfix, old: "smtp_per_record_deadline", new: &["smtp_per_request_deadline"], rule: Rule::Same, note: "Postfix 3.9 deprecates it for smtp_per_request_deadline" },
    Rename { syntax: Syntax::Postfix, old: "lmtp_per_record_deadline", new: &["lmtp_per_request_deadline"], rule: Rule::Same, note: "Postfix 3.9 deprecates it for lmtp_per_request_deadline" },
];

/// The table's entry for `key` (as the parser names it: lower case for sshd).
pub fn lookup(syntax: Syntax, key: &str) -> Option<&'static Rename> {
    RENAMES.iter().find(|r| r.syntax == syntax && r.old == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Settings = Option<Vec<(String, String)>>;

    fn translated(syntax: Syntax, key: &str, value: &str) -> Settings {
        lookup(syntax, key)
            .and_then(|rule| rule.translate(value))
            .map(|t| t.settings)
    }

    fn pairs(list: &[(&str, &str)]) -> Settings {
        Some(
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn each_rule_translates_its_known_values_and_refuses_the_others() {
        let cases: &[(Syntax, &str, &str, Settings)] = &[
            (
                Syntax::Dovecot,
                "disable_plaintext_auth",
                "yes",
                pairs(&[("auth_allow_cleartext", "no")]),
            ),
            (
                Syntax::Dovecot,
                "disable_plaintext_auth",
                "no",
                pairs(&[("auth_allow_cleartext", "yes")]),
            ),
            (Syntax::Dovecot, "disable_plaintext_auth", "maybe", None),
            (
                Syntax::Dovecot,
                "mail_location",
                "maildir:~/Maildir",
                pairs(&[("mail_driver", "maildir"), ("mail_path", "~/Maildir")]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "mbox:~/mail:INBOX=/var/mail/%u",
                pairs(&[
                    ("mail_driver", "mbox"),
                    ("mail_path", "~/mail"),
                    ("mail_inbox_path", "/var/mail/%{user}"),
                ]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "sdbox:~/dbox",
                pairs(&[("mail_driver", "sdbox"), ("mail_path", "~/dbox")]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "dbox:~/dbox",
                pairs(&[("mail_driver", "sdbox"), ("mail_path", "~/dbox")]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "mdbox:~/mdbox",
                pairs(&[("mail_driver", "mdbox"), ("mail_path", "~/mdbox")]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "maildir:/srv/mail/%d/%n:LAYOUT=fs:INDEX=/var/index/%u",
                pairs(&[
                    ("mail_driver", "maildir"),
                    ("mail_path", "/srv/mail/%{user|domain}/%{user|username}"),
                    ("mailbox_list_layout", "fs"),
                    ("mail_index_path", "/var/index/%{user}"),
                ]),
            ),
            (
                Syntax::Dovecot,
                "mail_location",
                "maildir:~/Maildir:UNKNOWN=1",
                None,
            ),
            (Syntax::Dovecot, "mail_location", "maildir:/srv/%z", None),
            (Syntax::Dovecot, "mail_location", "cydir:~/cydir", None),
            (
                Syntax::Dovecot,
                "ssl_cert",
                "</etc/ssl/certs/mail.pem",
                pairs(&[("ssl_server_cert_file", "/etc/ssl/certs/mail.pem")]),
            ),
            (Syntax::Dovecot, "ssl_cert", "/etc/ssl/certs/mail.pem", None),
            (Syntax::Dovecot, "auth_debug", "no", pairs(&[])),
            (
                Syntax::Dovecot,
                "ssl_prefer_server_ciphers",
                "yes",
                pairs(&[("ssl_server_prefer_ciphers", "server")]),
            ),
            (
                Syntax::Sshd,
                "challengeresponseauthentication",
                "no",
                pairs(&[("KbdInteractiveAuthentication", "no")]),
            ),
            (Syntax::Sshd, "protocol", "2", pairs(&[])),
            (Syntax::Sshd, "protocol", "1,2", None),
            (Syntax::Sshd, "uselogin", "yes", None),
            (
                Syntax::Postfix,
                "smtpd_use_tls",
                "yes",
                pairs(&[("smtpd_tls_security_level", "may")]),
            ),
            (
                Syntax::Postfix,
                "smtp_enforce_tls",
                "yes",
                pairs(&[("smtp_tls_security_level", "encrypt")]),
            ),
            (
                Syntax::Postfix,
                "disable_dns_lookups",
                "yes",
                pairs(&[("smtp_dns_support_level", "disabled")]),
            ),
            (
                Syntax::Postfix,
                "smtpd_per_record_deadline",
                "yes",
                pairs(&[("smtpd_per_request_deadline", "yes")]),
            ),
            (Syntax::Postfix, "myhostname", "x", None),
        ];
        for (syntax, key, value, expected) in cases {
            assert_eq!(
                &translated(*syntax, key, value),
                expected,
                "{key} = {value}"
            );
        }
    }

    #[test]
    fn a_mail_location_unsets_the_parts_it_does_not_name() {
        let rule = lookup(Syntax::Dovecot, "mail_location").expect("a rule");
        let translated = rule.translate("maildir:~/Maildir").expect("translated");
        assert!(translated.unset.contains(&"mail_inbox_path".to_string()));
        assert!(!translated.unset.contains(&"mail_path".to_string()));
    }

    #[test]
    fn dovecot_variables_are_rewritten_or_refused() {
        assert_eq!(
            dovecot_variables("/var/mail/%u and %%").as_deref(),
            Some("/var/mail/%{user} and %")
        );
        assert_eq!(dovecot_variables("%Lu").as_deref(), Some("%{user|lower}"));
        assert_eq!(
            dovecot_variables("%{user}"),
            None,
            "already 2.4: not ours to touch"
        );
    }

    #[test]
    fn every_rule_names_its_replacements() {
        for rename in RENAMES {
            if let Rule::Same | Rule::Inverted | Rule::FileValue = rename.rule {
                assert_eq!(rename.new.len(), 1, "{}", rename.old);
            }
            if let Rule::Values(values) = rename.rule {
                for (_, settings) in values {
                    for (key, _) in *settings {
                        assert!(rename.new.contains(key), "{}: {key}", rename.old);
                    }
                }
            }
        }
    }
}
