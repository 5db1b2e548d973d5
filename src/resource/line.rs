//! `line` and `setting`: change one line or one setting of a file the distro owns,
//! without owning the whole file — the file stays mergeable when the distro changes it.
//!
//! `setting` understands files that are lists of `key value` settings (sshd_config,
//! Postfix's main.cf, sysctl.conf, key=value files). It changes the first active
//! occurrence of the key (the one that wins in sshd), or uncomments the distro's
//! commented-out example line's neighbour by inserting right after it, or appends.
//! The edits themselves are pure functions, tested below.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context as _, Result};
use regex::Regex;
use serde::{Deserialize, Serialize};

use super::file::replace;
use super::{check, run_planned, Change, Context, FieldError, Outcome, Planned, Resource};
use crate::system::atomic::Attributes;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineSpec {
    pub path: String,
    /// The whole line as it should read.
    pub line: String,
    /// A regular expression for the line to replace (or remove); without it, the line
    /// itself is looked for.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default)]
    pub state: LineState,
    /// Create the file when it does not exist (a minimal Debian has no /etc/hosts);
    /// otherwise that is an error: the file is expected to come from a package.
    #[serde(default)]
    pub create: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum LineState {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettingSpec {
    pub path: String,
    pub key: String,
    pub value: String,
    /// What stands between key and value: " " (sshd_config, the default), " = "
    /// (main.cf), "=" (key=value files).
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Create the file when it does not exist (otherwise that is an error: the file is
    /// expected to come from a package).
    #[serde(default)]
    pub create: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<Vec<String>>,
}

fn default_separator() -> String {
    " ".to_string()
}

impl Resource for LineSpec {
    fn path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("path", &self.path)?;
        if self.line.contains('\n') {
            return Err(FieldError::new(
                "line",
                "one line only; use a `file` task for more",
            ));
        }
        if let Some(pattern) = &self.pattern {
            compiled(pattern).map_err(|e| {
                FieldError::new("match", format!("not a valid regular expression: {e}"))
            })?;
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

/// `pattern` compiled once per process: a line task's pattern is checked when the task
/// is rendered and used when it runs, and compiling one costs more than the rest of a
/// no-op line task (about 0.3 ms).
fn compiled(pattern: &str) -> Result<Regex, regex::Error> {
    thread_local! {
        static COMPILED: std::cell::RefCell<std::collections::HashMap<String, Regex>> =
            Default::default();
    }
    COMPILED.with(|cache| {
        if let Some(regex) = cache.borrow().get(pattern) {
            return Ok(regex.clone());
        }
        let regex = Regex::new(pattern)?;
        cache
            .borrow_mut()
            .insert(pattern.to_string(), regex.clone());
        Ok(regex)
    })
}

impl Planned for LineSpec {
    type Current = Found;
    type Action = Write;

    fn observe(&self, _context: &mut Context) -> Result<Found> {
        Found::read(&self.path, self.create)
    }

    fn plan(&self, found: &Found, context: &Context) -> Result<Change<Write>> {
        let pattern = self.pattern.as_deref().map(compiled).transpose()?;
        let edited = edit_line(&found.text, &self.line, pattern.as_ref(), self.state);
        Ok(plan_edit(&self.path, found, edited, "line", context))
    }

    fn apply(&self, write: &Write, context: &mut Context) -> Result<()> {
        write.apply(&self.path, self.validate.as_deref(), context)
    }
}

impl Resource for SettingSpec {
    fn path(&self) -> Option<&str> {
        Some(&self.path)
    }

    fn validate(&self) -> Result<(), FieldError> {
        check::absolute_path("path", &self.path)?;
        if self.key.is_empty()
            || self.key.contains(char::is_whitespace)
            || self.key.starts_with('#')
        {
            return Err(FieldError::new(
                "key",
                format!("`{}` is not a setting name", self.key),
            ));
        }
        if self.value.contains('\n') {
            return Err(FieldError::new("value", "a setting's value is one line"));
        }
        if self.separator.trim().len() > 1 {
            return Err(FieldError::new(
                "separator",
                "a separator is spaces around at most one character, such as \" = \"",
            ));
        }
        Ok(())
    }

    fn run(&self, context: &mut Context) -> Result<Outcome> {
        run_planned(self, context)
    }
}

impl Planned for SettingSpec {
    type Current = Found;
    type Action = Write;

    fn observe(&self, _context: &mut Context) -> Result<Found> {
        Found::read(&self.path, self.create)
    }

    fn plan(&self, found: &Found, context: &Context) -> Result<Change<Write>> {
        let edited = edit_setting(&found.text, &self.key, &self.value, &self.separator);
        let what = format!("{} {}", self.key, self.value);
        Ok(plan_edit(&self.path, found, edited, &what, context))
    }

    fn apply(&self, write: &Write, context: &mut Context) -> Result<()> {
        write.apply(&self.path, self.validate.as_deref(), context)
    }
}

/// The file a line or setting task edits, as it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    /// Empty when the file is missing and the task may create it.
    pub text: String,
    /// The file's uid, gid and permission bits; None when there is no file yet.
    pub attributes: Option<(u32, u32, u32)>,
}

impl Found {
    fn read(path: &str, create: bool) -> Result<Found> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        };
        let attributes = fs::metadata(path)
            .ok()
            .map(|m| (m.uid(), m.gid(), m.mode() & 0o7777));
        Ok(Found { text, attributes })
    }
}

/// The one thing a line or setting task does: write the edited text, keeping the
/// file's owner and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    pub text: String,
    pub attributes: Attributes,
}

impl Write {
    fn apply(&self, path: &str, validate: Option<&[String]>, context: &mut Context) -> Result<()> {
        let path = Path::new(path);
        context.record_change(path);
        replace(
            path,
            self.text.as_bytes(),
            self.attributes,
            validate,
            context,
        )
    }
}

/// What writing `edited` (None: the file already reads as wanted) over the file means:
/// the reason names `what` was set, unless it holds a secret.
fn plan_edit(
    path: &str,
    found: &Found,
    edited: Option<String>,
    what: &str,
    context: &Context,
) -> Change<Write> {
    let what = if context.sensitive {
        "a setting that holds a secret"
    } else {
        what
    };
    let Some(edited) = edited else {
        return Change::none(format!("{path} already has {what}"));
    };
    let diff = if context.sensitive {
        crate::diff::hidden(path)
    } else {
        crate::diff::unified(path, Some(found.text.as_bytes()), Some(edited.as_bytes()))
    };
    // A new file holding a secret is root's alone.
    let fresh = if context.sensitive { 0o600 } else { 0o644 };
    let attributes = match found.attributes {
        Some((uid, gid, mode)) => Attributes {
            mode,
            uid: Some(uid),
            gid: Some(gid),
        },
        None => Attributes::mode(fresh),
    };
    let write = Write {
        text: edited,
        attributes,
    };
    Change::to(write, format!("{path}: set {what}")).with_diff(Some(diff))
}

/// The text with `line` present (or absent), or None when it already is.
pub fn edit_line(
    text: &str,
    line: &str,
    pattern: Option<&Regex>,
    state: LineState,
) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let matches = |l: &str| match pattern {
        Some(p) => p.is_match(l),
        None => l == line,
    };
    match state {
        LineState::Present => {
            if lines.contains(&line)
                && pattern
                    .is_none_or(|p| lines.iter().filter(|l| p.is_match(l)).all(|l| *l == line))
            {
                return None;
            }
            let mut out: Vec<&str> = Vec::with_capacity(lines.len() + 1);
            let mut placed = false;
            for l in &lines {
                if matches(l) {
                    if !placed {
                        out.push(line);
                        placed = true;
                    }
                } else {
                    out.push(l);
                }
            }
            if !placed {
                out.push(line);
            }
            Some(join_lines(&out))
        }
        LineState::Absent => {
            let kept: Vec<&str> = lines.iter().copied().filter(|l| !matches(l)).collect();
            (kept.len() != lines.len()).then(|| join_lines(&kept))
        }
    }
}

/// The text with `key` set to `value`, or None when it already is.
pub fn edit_setting(text: &str, key: &str, value: &str, separator: &str) -> Option<String> {
    let wanted = format!("{key}{separator}{value}");
    let lines: Vec<&str> = text.lines().collect();
    let active = lines
        .iter()
        .position(|l| setting_value(l, key, separator).is_some());
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    match active {
        Some(index) => {
            if setting_value(lines[index], key, separator) == Some(value) {
                return None;
            }
            let indent: String = lines[index]
                .chars()
                .take_while(|c| c.is_whitespace())
                .collect();
            out[index] = format!("{indent}{wanted}");
        }
        None => {
            // Put it next to the distro's commented example, where an admin would look.
            let commented = lines.iter().rposition(|l| {
                let uncommented = l.trim_start().strip_prefix('#').map(str::trim_start);
                uncommented.is_some_and(|u| setting_value(u, key, separator).is_some())
            });
            match commented {
                Some(index) => out.insert(index + 1, wanted),
                None => out.push(wanted),
            }
        }
    }
    Some(join_lines(&out))
}

/// The value of `key` on an active line, if this line sets it.
fn setting_value<'a>(line: &'a str, key: &str, separator: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(key)?;
    let mark = separator.trim();
    let value = if mark.is_empty() {
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        rest.trim_start()
    } else {
        rest.trim_start().strip_prefix(mark)?.trim_start()
    };
    Some(value.trim_end())
}

fn join_lines<S: AsRef<str>>(lines: &[S]) -> String {
    let mut text = lines
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("\n");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSHD: &str = "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\n#PasswordAuthentication yes\nX11Forwarding yes\n";

    #[test]
    fn a_setting_goes_after_its_commented_example() {
        let edited = edit_setting(SSHD, "PasswordAuthentication", "no", " ").expect("changed");
        assert_eq!(
            edited,
            "Include /etc/ssh/sshd_config.d/*.conf\n#PermitRootLogin prohibit-password\n#PasswordAuthentication yes\nPasswordAuthentication no\nX11Forwarding yes\n"
        );
        assert_eq!(
            edit_setting(&edited, "PasswordAuthentication", "no", " "),
            None,
            "second edit changes nothing"
        );
    }

    #[test]
    fn an_active_setting_is_replaced_in_place() {
        let edited = edit_setting(SSHD, "X11Forwarding", "no", " ").expect("changed");
        assert!(edited.ends_with("X11Forwarding no\n"));
        assert_eq!(edited.lines().count(), 4);
    }

    #[test]
    fn key_value_files_with_separators() {
        let main_cf = "# myhostname = host.example\nsmtpd_banner = $myhostname ESMTP\n";
        let edited =
            edit_setting(main_cf, "myhostname", "mail.club.example", " = ").expect("changed");
        assert_eq!(edited, "# myhostname = host.example\nmyhostname = mail.club.example\nsmtpd_banner = $myhostname ESMTP\n");
        assert_eq!(
            edit_setting("net.ipv4.ip_forward=1\n", "net.ipv4.ip_forward", "1", "="),
            None
        );
        assert!(edit_setting("", "a", "b", "=").is_some_and(|t| t == "a=b\n"));
    }

    #[test]
    fn a_key_is_not_a_prefix_of_another_key() {
        let text = "PermitRootLoginX yes\n";
        assert_eq!(
            edit_setting(text, "PermitRootLogin", "no", " ").as_deref(),
            Some("PermitRootLoginX yes\nPermitRootLogin no\n")
        );
    }

    #[test]
    fn lines_are_added_replaced_and_removed() {
        let pattern = Regex::new("^GRUB_TIMEOUT=").ok();
        let text = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n";
        assert_eq!(
            edit_line(text, "GRUB_TIMEOUT=2", pattern.as_ref(), LineState::Present).as_deref(),
            Some("GRUB_DEFAULT=0\nGRUB_TIMEOUT=2\n")
        );
        assert_eq!(
            edit_line(text, "GRUB_TIMEOUT=5", None, LineState::Present),
            None
        );
        assert_eq!(
            edit_line(text, "GRUB_X=1", None, LineState::Present).as_deref(),
            Some("GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_X=1\n")
        );
        assert_eq!(
            edit_line(text, "GRUB_TIMEOUT=5", None, LineState::Absent).as_deref(),
            Some("GRUB_DEFAULT=0\n")
        );
    }

    fn line(line: &str, pattern: Option<&str>, state: LineState) -> LineSpec {
        LineSpec {
            path: "/etc/default/grub".into(),
            line: line.into(),
            pattern: pattern.map(String::from),
            state,
            create: false,
            validate: None,
        }
    }

    fn found(text: &str) -> Found {
        Found {
            text: text.into(),
            attributes: Some((0, 4, 0o640)),
        }
    }

    #[test]
    fn line_plan_cases() {
        let text = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\n";
        let context = Context::new(false);
        // (the spec, what the plan writes (None: nothing), the reason)
        let cases = [
            (
                line("GRUB_TIMEOUT=5", None, LineState::Present),
                None,
                "/etc/default/grub already has line",
            ),
            (
                line("GRUB_X=1", None, LineState::Present),
                Some("GRUB_DEFAULT=0\nGRUB_TIMEOUT=5\nGRUB_X=1\n"),
                "/etc/default/grub: set line",
            ),
            (
                line("GRUB_TIMEOUT=2", Some("^GRUB_TIMEOUT="), LineState::Present),
                Some("GRUB_DEFAULT=0\nGRUB_TIMEOUT=2\n"),
                "/etc/default/grub: set line",
            ),
            (
                line("GRUB_TIMEOUT=5", None, LineState::Absent),
                Some("GRUB_DEFAULT=0\n"),
                "/etc/default/grub: set line",
            ),
            (
                line("", Some("^GRUB_X="), LineState::Absent),
                None,
                "/etc/default/grub already has line",
            ),
        ];
        for (spec, writes, says) in cases {
            let change = spec.plan(&found(text), &context).expect("a plan");
            let written = change.action.as_ref().map(|w| w.text.as_str());
            assert_eq!(written, writes, "{spec:?}");
            assert_eq!(change.reason, says);
            assert_eq!(change.diff.is_some(), writes.is_some());
            if let Some(write) = change.action {
                assert_eq!(
                    write.attributes,
                    Attributes {
                        mode: 0o640,
                        uid: Some(0),
                        gid: Some(4)
                    },
                    "the file keeps its owner and mode"
                );
            }
        }
    }

    #[test]
    fn setting_plan_cases() {
        let spec = |key: &str, value: &str| SettingSpec {
            path: "/etc/ssh/sshd_config".into(),
            key: key.into(),
            value: value.into(),
            separator: " ".into(),
            create: true,
            validate: None,
        };
        let mut secret = Context::new(false);
        secret.sensitive = true;
        let missing = Found {
            text: String::new(),
            attributes: None,
        };
        // (the spec, the file, whether the task holds a secret, the text written, the
        // mode of a new file, the reason)
        let cases = [
            (
                spec("X11Forwarding", "yes"),
                found(SSHD),
                false,
                None,
                None,
                "/etc/ssh/sshd_config already has X11Forwarding yes",
            ),
            (
                spec("X11Forwarding", "no"),
                found(SSHD),
                false,
                Some(SSHD.replace("X11Forwarding yes", "X11Forwarding no")),
                Some(0o640),
                "/etc/ssh/sshd_config: set X11Forwarding no",
            ),
            (
                spec("PasswordAuthentication", "no"),
                found(SSHD),
                false,
                Some(SSHD.replace(
                    "#PasswordAuthentication yes\n",
                    "#PasswordAuthentication yes\nPasswordAuthentication no\n",
                )),
                Some(0o640),
                "/etc/ssh/sshd_config: set PasswordAuthentication no",
            ),
            (
                spec("Port", "2222"),
                missing.clone(),
                false,
                Some("Port 2222\n".to_string()),
                Some(0o644),
                "/etc/ssh/sshd_config: set Port 2222",
            ),
            (
                spec("Password", "hunter2"),
                missing,
                true,
                Some("Password hunter2\n".to_string()),
                Some(0o600),
                "/etc/ssh/sshd_config: set a setting that holds a secret",
            ),
            (
                spec("X11Forwarding", "yes"),
                found(SSHD),
                true,
                None,
                None,
                "/etc/ssh/sshd_config already has a setting that holds a secret",
            ),
        ];
        for (spec, found, sensitive, writes, mode, says) in cases {
            let context = if sensitive {
                &secret
            } else {
                &Context::new(false)
            };
            let change = spec.plan(&found, context).expect("a plan");
            assert_eq!(change.action.as_ref().map(|w| &w.text), writes.as_ref());
            assert_eq!(change.action.as_ref().map(|w| w.attributes.mode), mode);
            assert_eq!(change.reason, says);
            if let Some(diff) = change.diff {
                assert!(!diff.contains("hunter2"), "{diff}");
                assert_eq!(diff.contains("diff hidden"), sensitive, "{diff}");
            }
        }
    }
}
