//! Three-way merges of configuration files: base = the old pristine file, ours = the
//! live file, theirs = the new pristine file. Pure logic, no I/O: `etc upgrade` and
//! `etc migrate` fetch the three texts and decide where the result may be written.
//!
//! A file placard can read as a list of settings ([`Syntax::for_path`]) is
//! merged by setting: the site's changes are replayed onto the new file, whose comments
//! and layout win, so a comment the distro rewrote next to a site setting is no
//! conflict. When the site and the new release both set or changed a setting, to
//! different values, the site's value wins and the merge stays clean: the result names
//! the setting in a [`Notice`] so the admin sees Debian's new default. Settings a release
//! renamed or removed ([`renames`]) are reported by name as issues. Every other file is
//! merged by line ([`line`]), with its conflicts.

pub mod line;
pub mod renames;
pub mod settings;
pub mod syntax;

use serde::Serialize;

pub use syntax::Syntax;

/// How a file was merged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "syntax")]
pub enum Method {
    Settings(Syntax),
    Lines,
}

/// Something the admin must decide; a merge with none is clean.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Issue {
    /// The site and the new release both changed this setting, differently, with the new
    /// release's value in the merged text. The merge by setting no longer produces it
    /// (the site's value wins, see [`Notice`]); the marked text for it is kept in
    /// `distro::upgrade::markers`.
    Conflict {
        section: String,
        key: String,
        base: Option<Vec<String>>,
        ours: Option<Vec<String>>,
        theirs: Option<Vec<String>>,
    },
    /// The site set a setting the new release renamed (`new_names` non-empty) or
    /// removed; it was not carried over.
    Renamed {
        key: String,
        values: Vec<String>,
        new_names: Vec<String>,
        note: String,
    },
    /// Line-based conflicts; the merged text holds this many marked hunks.
    Lines { conflicts: usize },
    /// The new release no longer ships the file; the merged text is the site's file.
    FileRemoved,
}

/// A clean merge's note for the admin: the site (old pristine → live) and the new
/// release (old pristine → new pristine) both set or changed this setting, to different
/// values; the site's value was kept (`ours`, `None` when the site removed it) and
/// Debian's new default (`theirs`, `None` when the new release leaves it unset) was not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    pub section: String,
    pub key: String,
    pub base: Option<Vec<String>>,
    pub ours: Option<Vec<String>>,
    pub theirs: Option<Vec<String>>,
    /// "kept the site's value X; Debian's new default is Y".
    pub message: String,
}

impl Notice {
    pub fn new(
        section: String,
        key: String,
        base: Option<Vec<String>>,
        ours: Option<Vec<String>>,
        theirs: Option<Vec<String>>,
    ) -> Notice {
        let shown = |values: &Option<Vec<String>>| match values {
            Some(values) => format!("`{}`", values.join("; ")),
            None => "unset".to_string(),
        };
        let name = if section.is_empty() {
            key.clone()
        } else {
            format!("{section} / {key}")
        };
        let kept = match &ours {
            Some(_) => format!("kept the site's value {}", shown(&ours)),
            None => "kept the site's removal".to_string(),
        };
        let message = format!("{name}: {kept}; Debian's new default is {}", shown(&theirs));
        Notice {
            section,
            key,
            base,
            ours,
            theirs,
            message,
        }
    }
}

/// A setting the new release renamed, translated by a rule of [`renames`]: the site's
/// line is gone and the new settings carry its meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Translation {
    pub section: String,
    /// The site's line, as `key = value` (sshd: `Key value`).
    pub old: String,
    /// The settings written in its place (empty when the rule drops it).
    pub new: Vec<String>,
    /// Settings of the new release that the old value overrode, commented out (Debian
    /// 13's `mail_inbox_path` for a site whose `mail_location` named no INBOX).
    pub unset: Vec<String>,
    /// The rule's note, with its source.
    pub note: String,
    /// "disable_plaintext_auth = no → auth_allow_cleartext = yes (Dovecot 2.4; …)".
    pub message: String,
}

impl Translation {
    pub fn new(
        section: String,
        old: String,
        new: Vec<String>,
        unset: Vec<String>,
        note: &str,
    ) -> Translation {
        let target = if new.is_empty() {
            "dropped".to_string()
        } else {
            new.join(", ")
        };
        let place = if section.is_empty() {
            String::new()
        } else {
            format!("{section}: ")
        };
        let unset_text = if unset.is_empty() {
            String::new()
        } else {
            format!("; Debian's {} commented out", unset.join(", "))
        };
        let message = format!("{place}{old} → {target}{unset_text} ({note})");
        Translation {
            section,
            old,
            new,
            unset,
            note: note.to_string(),
            message,
        }
    }
}

/// The outcome of merging one file.
#[derive(Debug, Clone, Serialize)]
pub struct Merged {
    pub method: Method,
    /// The merged file. With an [`Issue::Lines`] it holds conflict markers and must
    /// never be written to live /etc.
    pub text: String,
    /// The site settings carried over (merges by setting only).
    pub replayed: Vec<settings::Replayed>,
    /// Settings where the site's value was kept over the new release's (merges by
    /// setting only); they do not make the merge unclean.
    pub notices: Vec<Notice>,
    /// Renamed settings translated by rule (merges by setting only).
    pub translations: Vec<Translation>,
    pub issues: Vec<Issue>,
}

impl Merged {
    pub fn is_clean(&self) -> bool {
        self.issues.is_empty()
    }
}

/// Merges one file; `path` is relative to /etc and chooses the method. `theirs` is
/// `None` when the new release no longer ships the file.
pub fn merge(path: &str, base: &str, ours: &str, theirs: Option<&str>) -> Merged {
    let method = Syntax::for_path(path).map_or(Method::Lines, Method::Settings);
    let Some(theirs) = theirs else {
        return Merged {
            method,
            text: ours.to_string(),
            replayed: Vec::new(),
            notices: Vec::new(),
            translations: Vec::new(),
            issues: vec![Issue::FileRemoved],
        };
    };
    if ours == base {
        return Merged {
            method,
            text: theirs.to_string(),
            replayed: Vec::new(),
            notices: Vec::new(),
            translations: Vec::new(),
            issues: Vec::new(),
        };
    }
    match method {
        Method::Settings(syntax) => {
            let merged = settings::merge(syntax, base, ours, theirs);
            Merged {
                method,
                text: merged.text,
                replayed: merged.replayed,
                notices: merged.notices,
                translations: merged.translations,
                issues: merged.issues,
            }
        }
        Method::Lines => {
            let merged = line::merge(base, ours, theirs);
            let issues = if merged.conflicts > 0 {
                vec![Issue::Lines {
                    conflicts: merged.conflicts,
                }]
            } else {
                Vec::new()
            };
            Merged {
                method,
                text: merged.text,
                replayed: Vec::new(),
                notices: Vec::new(),
                translations: Vec::new(),
                issues,
            }
        }
    }
}

#[cfg(test)]
mod fixtures;
