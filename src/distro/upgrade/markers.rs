//! The text left for the admin when a merge does not come out clean: git-style conflict
//! markers around each decision, so that the file cannot be taken in by mistake
//! (`etc resolve` refuses a file that still holds a marker) and any editor's merge mode
//! can help.
//!
//! A line-based merge already comes with its markers (diff3 style). A merge by setting
//! comes back as the new release's file with the new release's value in place of each
//! conflicting setting; here each such setting gets a block with the site's lines, the
//! old pristine ones and the new release's, and each setting the new release renamed or
//! removed gets a block at the end of the file naming the new setting. Pure functions.

use crate::merge::{Issue, Merged, Method, Syntax};

pub const OURS: &str = "<<<<<<<";
pub const BASE: &str = "|||||||";
pub const SEPARATOR: &str = "=======";
pub const THEIRS: &str = ">>>>>>>";

/// Whether `text` still holds a conflict marker line.
pub fn has_markers(text: &str) -> bool {
    text.lines().any(|line| {
        line.starts_with(OURS)
            || line.starts_with(THEIRS)
            || line.starts_with(BASE)
            || line == SEPARATOR
    })
}

/// The file to leave for the admin: the merged text with a marked block per issue.
/// `base` and `ours` are the old pristine and live texts; `release` names the new one.
pub fn conflict_text(merged: &Merged, base: &str, ours: &str, release: &str) -> String {
    let syntax = match merged.method {
        Method::Lines => return merged.text.clone(),
        Method::Settings(syntax) => syntax,
    };
    let mut lines: Vec<String> = merged
        .text
        .split_inclusive('\n')
        .map(str::to_string)
        .collect();
    if lines.last().is_some_and(|l| !l.ends_with('\n')) {
        if let Some(last) = lines.last_mut() {
            last.push('\n');
        }
    }
    let mut tail = String::new();
    for issue in &merged.issues {
        match issue {
            Issue::Conflict { section, key, .. } => {
                let site = setting_text(ours, syntax, section, key);
                let old = setting_text(base, syntax, section, key);
                let spans = setting_spans(&merged.text, syntax, section, key);
                let theirs: String = spans
                    .iter()
                    .flat_map(|(start, end)| lines[*start..*end].iter().cloned())
                    .collect();
                let block = format!(
                    "{OURS} live /etc (the site's `{key}`)\n{}{BASE} old pristine\n{}{SEPARATOR}\n{}{THEIRS} new pristine ({release})\n",
                    or_unset(&site),
                    or_unset(&old),
                    or_unset(&theirs)
                );
                match spans.split_first() {
                    Some(((start, end), rest)) => {
                        lines[*start] = block;
                        for line in &mut lines[start + 1..*end] {
                            line.clear();
                        }
                        for (start, end) in rest {
                            for line in &mut lines[*start..*end] {
                                line.clear();
                            }
                        }
                    }
                    None => tail.push_str(&block),
                }
            }
            Issue::Renamed {
                key,
                new_names,
                note,
                ..
            } => {
                let site = setting_text(ours, syntax, "", key);
                let site = if site.is_empty() {
                    // The setting sits in a section: find it wherever it is.
                    any_section_text(ours, syntax, key)
                } else {
                    site
                };
                let now = if new_names.is_empty() {
                    "removed".to_string()
                } else {
                    format!("renamed to {}", new_names.join(", "))
                };
                tail.push_str(&format!(
                    "{OURS} live /etc: `{key}` ({now} in {release}: {note})\n{}{SEPARATOR}\n{THEIRS} new pristine ({release}): no `{key}`\n",
                    or_unset(&site)
                ));
            }
            Issue::FileRemoved => {
                return format!(
                    "{OURS} live /etc ({release} no longer ships this file: keep what you need, or delete this file to accept the removal)\n{}{SEPARATOR}\n{THEIRS} new pristine ({release}): no such file\n",
                    or_unset(&with_newline(ours))
                );
            }
            Issue::Lines { .. } => {}
        }
    }
    let mut text: String = lines.concat();
    text.push_str(&tail);
    text
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn or_unset(text: &str) -> String {
    if text.is_empty() {
        "# (not set)\n".to_string()
    } else {
        with_newline(text)
    }
}

/// The lines that set `key` in `section`, as written.
fn setting_text(text: &str, syntax: Syntax, section: &str, key: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    setting_spans(text, syntax, section, key)
        .into_iter()
        .flat_map(|(start, end)| lines[start..end].iter().copied())
        .collect()
}

fn any_section_text(text: &str, syntax: Syntax, key: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut spans = Vec::new();
    walk(text, syntax, |index, end, _, found| {
        if found == key {
            spans.push((index, end));
        }
    });
    spans
        .into_iter()
        .flat_map(|(start, end)| lines[start..end].iter().copied())
        .collect()
}

/// Line ranges (end exclusive) of the settings of `key` in `section`.
pub fn setting_spans(text: &str, syntax: Syntax, section: &str, key: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    walk(text, syntax, |index, end, in_section, found| {
        if found == key && in_section == section {
            spans.push((index, end));
        }
    });
    spans
}

/// Calls `visit(first line, end line, section, key)` for each setting, naming sections
/// and keys as [`crate::merge::settings`] does: sshd keys in lower case; Dovecot
/// sections as their normalized headers joined by " / "; sshd's `Match` and ini's
/// `[section]` lines as written, normalized.
fn walk(text: &str, syntax: Syntax, mut visit: impl FnMut(usize, usize, &str, &str)) {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let comment = |t: &str| match syntax {
        Syntax::KeyValue | Syntax::Ini => t.starts_with(['#', ';']),
        _ => t.starts_with('#'),
    };
    let mut stack: Vec<String> = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        let trimmed = lines[index].trim();
        let section = stack.last().cloned().unwrap_or_default();
        if trimmed.is_empty() || comment(trimmed) {
            index += 1;
            continue;
        }
        match syntax {
            Syntax::Dovecot if trimmed == "}" => {
                stack.pop();
                index += 1;
                continue;
            }
            Syntax::Dovecot if trimmed.ends_with('{') => {
                let header = normalize(trimmed.trim_end_matches('{'));
                stack.push(if section.is_empty() {
                    header
                } else {
                    format!("{section} / {header}")
                });
                index += 1;
                continue;
            }
            Syntax::Ini if trimmed.starts_with('[') && trimmed.ends_with(']') => {
                stack = vec![normalize(trimmed)];
                index += 1;
                continue;
            }
            Syntax::Sshd
                if trimmed
                    .split_whitespace()
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("match")) =>
            {
                stack = vec![normalize(trimmed)];
                index += 1;
                continue;
            }
            _ => {}
        }
        let key = match syntax {
            Syntax::Sshd => trimmed
                .split(|c: char| c.is_whitespace() || c == '=')
                .next()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            _ => match trimmed.split_once('=') {
                Some((key, _)) if !key.trim().contains(char::is_whitespace) => {
                    key.trim().to_string()
                }
                _ => normalize(trimmed),
            },
        };
        let mut end = index + 1;
        // Postfix: lines starting with white space continue the setting.
        if syntax == Syntax::Postfix {
            while end < lines.len()
                && lines[end].starts_with([' ', '\t'])
                && !lines[end].trim().is_empty()
                && !lines[end].trim_start().starts_with('#')
            {
                end += 1;
            }
        }
        visit(index, end, &section, &key);
        index = end;
    }
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge;

    #[test]
    fn a_setting_both_sides_changed_gets_a_marked_block_with_all_three_values() {
        let base = "# Authentication\nauth_mechanisms = plain\n!include auth-system.conf.ext\n";
        let ours =
            "# Authentication\nauth_mechanisms = plain login\n!include auth-system.conf.ext\n";
        let theirs = "# Authentication, rewritten\nauth_mechanisms = plain oauthbearer\n!include auth-system.conf.ext\n";
        // The merge by setting keeps the site's value here (a notice, no issue); the block
        // is drawn for an `Issue::Conflict` however it came about.
        let clean = merge::merge("dovecot/conf.d/10-auth.conf", base, ours, Some(theirs));
        assert!(clean.is_clean() && clean.notices.len() == 1);
        let merged = Merged {
            method: Method::Settings(Syntax::Dovecot),
            text: theirs.to_string(),
            replayed: Vec::new(),
            notices: Vec::new(),
            translations: Vec::new(),
            issues: vec![Issue::Conflict {
                section: String::new(),
                key: "auth_mechanisms".into(),
                base: Some(vec!["plain".into()]),
                ours: Some(vec!["plain login".into()]),
                theirs: Some(vec!["plain oauthbearer".into()]),
            }],
        };
        let text = conflict_text(&merged, base, ours, "trixie");
        assert_eq!(
            text,
            "# Authentication, rewritten\n<<<<<<< live /etc (the site's `auth_mechanisms`)\nauth_mechanisms = plain login\n||||||| old pristine\nauth_mechanisms = plain\n=======\nauth_mechanisms = plain oauthbearer\n>>>>>>> new pristine (trixie)\n!include auth-system.conf.ext\n"
        );
        assert!(has_markers(&text));
        assert!(
            !has_markers(&merged.text),
            "the merged text itself has none"
        );
    }

    #[test]
    fn a_renamed_setting_gets_a_block_naming_the_new_setting() {
        let base = "#disable_plaintext_auth = yes\nauth_mechanisms = plain\n";
        let ours = "disable_plaintext_auth = no\nauth_mechanisms = plain\n";
        let theirs = "#auth_allow_cleartext = no\nauth_mechanisms = plain\n";
        // A value the rule cannot translate (disable_plaintext_auth is yes or no).
        let ours = &ours.replace("= no", "= sometimes");
        let merged = merge::merge("dovecot/conf.d/10-auth.conf", base, ours, Some(theirs));
        let text = conflict_text(&merged, base, ours, "trixie");
        assert!(text.starts_with(theirs), "{text}");
        assert!(
            text.contains("<<<<<<< live /etc: `disable_plaintext_auth` (renamed to auth_allow_cleartext in trixie:")
                && text.contains("\ndisable_plaintext_auth = sometimes\n=======\n>>>>>>> new pristine (trixie): no `disable_plaintext_auth`\n"),
            "{text}"
        );
    }

    #[test]
    fn sshd_keys_are_found_whatever_their_case_and_line_merges_keep_their_markers() {
        let text =
            "Port 22\npasswordauthentication no\nMatch User backup\n  PasswordAuthentication yes\n";
        assert_eq!(
            setting_spans(text, Syntax::Sshd, "", "passwordauthentication"),
            [(1, 2)]
        );
        assert_eq!(
            setting_spans(
                text,
                Syntax::Sshd,
                "Match User backup",
                "passwordauthentication"
            ),
            [(3, 4)]
        );
        let merged = merge::merge(
            "nut/upsmon.conf",
            "a\nb\nc\n",
            "a\nB\nc\n",
            Some("a\nX\nc\n"),
        );
        assert_eq!(conflict_text(&merged, "", "", "trixie"), merged.text);
        assert!(has_markers(&merged.text));
        assert!(!has_markers("a = b\n# ======= a banner\n"));
    }
}
