//! Merging by setting: files that are lists of settings are parsed into items (a
//! setting, a comment, a section boundary) and the site's settings are replayed onto the
//! new pristine file, which keeps its comments and layout.
//!
//! This module owns the parsers of the syntaxes placard knows (sshd, Postfix's main.cf,
//! Dovecot, key=value, ini) and the replay. It does no I/O and knows nothing of
//! packages; [`super::renames`] says which settings a release renamed, and
//! [`super::merge`] chooses between this and the line-based merge.
//!
//! A setting is named by its section and key; its value is the list of the values of
//! every line that sets it, in order, so that repeated keywords (sshd's `HostKey`,
//! `AcceptEnv`) are compared as a whole. A line that is neither a comment nor a
//! `key value` pair (Dovecot's `!include auth-system.conf.ext`) is a setting whose key
//! is the whole line: present or absent.

use std::collections::{BTreeMap, BTreeSet};

use super::renames;
use super::syntax::Syntax;
use super::{Issue, Notice, Translation};

/// A setting's name: the section it is in ("" at the top) and its key.
pub type SettingId = (String, String);

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Blank,
    Comment,
    Setting {
        key: String,
        value: String,
    },
    /// Opens a section; its full path (enclosing sections joined by " / ").
    Open(String),
    /// Closes the innermost section (Dovecot's `}`).
    Close,
}

/// One logical line (a setting with its continuation lines), as written.
#[derive(Debug, Clone)]
struct Item {
    text: String,
    kind: Kind,
    /// The section the item is in (for an opening line: the section it opens).
    section: String,
}

struct Parsed {
    items: Vec<Item>,
}

impl Parsed {
    fn new(text: &str, syntax: Syntax) -> Parsed {
        let mut items: Vec<Item> = Vec::new();
        let mut stack: Vec<String> = Vec::new();
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim();
            // Postfix: white space at the start of a line continues the setting before.
            if syntax == Syntax::Postfix
                && line.starts_with([' ', '\t'])
                && !trimmed.is_empty()
                && !trimmed.starts_with('#')
            {
                if let Some(Item {
                    text,
                    kind: Kind::Setting { value, .. },
                    ..
                }) = items.last_mut()
                {
                    text.push_str(line);
                    if !value.is_empty() {
                        value.push(' ');
                    }
                    value.push_str(trimmed);
                    continue;
                }
            }
            let section = stack.last().cloned().unwrap_or_default();
            let kind = if trimmed.is_empty() {
                Kind::Blank
            } else if trimmed.starts_with(syntax.comment_starts()) {
                Kind::Comment
            } else {
                match syntax {
                    Syntax::Dovecot if trimmed == "}" => Kind::Close,
                    Syntax::Dovecot if trimmed.ends_with('{') => {
                        let header = normalize(trimmed.trim_end_matches('{'));
                        Kind::Open(if section.is_empty() {
                            header
                        } else {
                            format!("{section} / {header}")
                        })
                    }
                    Syntax::Ini if trimmed.starts_with('[') && trimmed.ends_with(']') => {
                        Kind::Open(normalize(trimmed))
                    }
                    Syntax::Sshd if first_word(trimmed).eq_ignore_ascii_case("match") => {
                        Kind::Open(normalize(trimmed))
                    }
                    _ => match parse_setting(trimmed, syntax) {
                        Some((key, value)) => Kind::Setting { key, value },
                        None => Kind::Setting {
                            key: normalize(trimmed),
                            value: String::new(),
                        },
                    },
                }
            };
            let item_section = match &kind {
                Kind::Open(path) => {
                    // sshd's Match and ini's headers end the section before them.
                    if matches!(syntax, Syntax::Sshd | Syntax::Ini) {
                        stack.clear();
                    }
                    stack.push(path.clone());
                    path.clone()
                }
                Kind::Close => {
                    stack.pop();
                    section
                }
                _ => section,
            };
            items.push(Item {
                text: line.to_string(),
                kind,
                section: item_section,
            });
        }
        Parsed { items }
    }

    /// Every setting and its values in order, with the order of first appearance.
    fn settings(&self) -> (BTreeMap<SettingId, Vec<String>>, Vec<SettingId>) {
        let mut map: BTreeMap<SettingId, Vec<String>> = BTreeMap::new();
        let mut order = Vec::new();
        for item in &self.items {
            if let Kind::Setting { key, value } = &item.kind {
                let id = (item.section.clone(), key.clone());
                if !map.contains_key(&id) {
                    order.push(id.clone());
                }
                map.entry(id).or_default().push(value.clone());
            }
        }
        (map, order)
    }

    fn sections(&self) -> BTreeSet<String> {
        self.items
            .iter()
            .filter_map(|i| {
                if let Kind::Open(path) = &i.kind {
                    Some(path.clone())
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The key a comment would set if it were uncommented (`#PasswordAuthentication yes`),
/// when it looks like a setting rather than prose.
fn commented_key(text: &str, syntax: Syntax) -> Option<String> {
    let inner = text
        .trim()
        .trim_start_matches(syntax.comment_starts())
        .trim();
    // Dovecot's directives (`#!include auth-passwdfile.conf.ext`) are keyed by the
    // whole line, as the parser keys them when they are not commented out.
    if syntax == Syntax::Dovecot && inner.starts_with('!') {
        return Some(normalize(inner));
    }
    let (key, value) = parse_setting(inner, syntax)?;
    // Prose in sshd's comments ("# To disable tunneled clear text passwords") splits
    // like a setting too; real keywords are single words of letters.
    if syntax == Syntax::Sshd && (!key.chars().all(|c| c.is_ascii_alphabetic()) || value.is_empty())
    {
        return None;
    }
    // login.defs' prose ("# UMASK is the default umask value…") too: an example is an
    // upper-case keyword and one value.
    if syntax == Syntax::Spaced
        && (!key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            || value.is_empty()
            || value.contains(' '))
    {
        return None;
    }
    Some(key)
}

/// `key value` or `key = value`, by syntax.
fn parse_setting(line: &str, syntax: Syntax) -> Option<(String, String)> {
    match syntax {
        Syntax::Sshd => {
            let end = line.find(|c: char| c.is_whitespace() || c == '=')?;
            let key = line[..end].to_ascii_lowercase();
            let value = line[end..].trim_start().trim_start_matches('=').trim();
            (!key.is_empty()).then(|| (key, normalize(value)))
        }
        Syntax::Spaced => {
            let end = line.find(char::is_whitespace).unwrap_or(line.len());
            let key = &line[..end];
            (!key.is_empty()).then(|| (key.to_string(), normalize(&line[end..])))
        }
        Syntax::Postfix | Syntax::Dovecot | Syntax::KeyValue | Syntax::Ini => {
            let (key, value) = line.split_once('=')?;
            let key = key.trim();
            let valid = !key.is_empty() && !key.contains(char::is_whitespace);
            valid.then(|| (key.to_string(), normalize(value)))
        }
    }
}

fn first_word(text: &str) -> &str {
    text.split_whitespace().next().unwrap_or_default()
}

fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What one setting became in the merge, for the report.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Replayed {
    pub section: String,
    pub key: String,
    /// The site's values; empty when the site removed the setting.
    pub values: Vec<String>,
}

/// The result of a merge by setting: the new file, the site settings carried over, and
/// what could not be.
#[derive(Debug, Clone)]
pub struct SettingsMerge {
    pub text: String,
    pub replayed: Vec<Replayed>,
    /// Settings both sides changed, differently: the site's value was kept.
    pub notices: Vec<Notice>,
    /// Settings the new release renamed, translated by rule ([`renames`]).
    pub translations: Vec<Translation>,
    pub issues: Vec<Issue>,
}

/// Replays the site's changes (`base` → `ours`) onto `theirs`. A setting both sides
/// changed, differently, takes the site's value and is named in a [`Notice`]; only a
/// setting the new release renamed or removed ([`renames`]) is an issue.
pub fn merge(syntax: Syntax, base: &str, ours: &str, theirs: &str) -> SettingsMerge {
    let base_parsed = Parsed::new(base, syntax);
    let ours_parsed = Parsed::new(ours, syntax);
    let theirs_parsed = Parsed::new(theirs, syntax);
    let (base_settings, _) = base_parsed.settings();
    let (ours_settings, ours_order) = ours_parsed.settings();
    let (theirs_settings, _) = theirs_parsed.settings();
    let base_lines: BTreeSet<&str> = base.lines().map(str::trim).collect();

    // Sections the site added and the new release lacks are appended whole, below.
    let theirs_sections = theirs_parsed.sections();
    let base_sections = base_parsed.sections();
    let added_sections: Vec<String> = ours_parsed
        .sections()
        .into_iter()
        .filter(|s| !theirs_sections.contains(s) && !base_sections.contains(s))
        .collect();
    let in_added_section = |section: &str| {
        added_sections
            .iter()
            .any(|a| section == a || section.starts_with(&format!("{a} / ")))
    };

    // Issue 13: a kept Dovecot setting's 2.3 variables, rewritten when the new file is
    // Dovecot 2.4's.
    let dovecot_24 = syntax == Syntax::Dovecot
        && renames::DOVECOT_24_MARKS
            .iter()
            .any(|mark| theirs.contains(mark) && !base.contains(mark));
    let mut plan = Output::new(&theirs_parsed);
    let mut replayed = Vec::new();
    let mut notices = Vec::new();
    let mut translations = Vec::new();
    let mut issues = Vec::new();
    // The site's settings in the order it wrote them, then those it removed.
    let removed = base_settings
        .keys()
        .filter(|id| !ours_settings.contains_key(*id))
        .cloned();
    let changed: Vec<SettingId> = ours_order.into_iter().chain(removed).collect();
    for id in changed {
        let (before, after, distro) = (
            base_settings.get(&id),
            ours_settings.get(&id),
            theirs_settings.get(&id),
        );
        if before == after || after == distro {
            continue; // not a site change, or the new release already agrees
        }
        let (section, key) = id.clone();
        // A setting the new release renamed: it no longer sets the old name, and either
        // no longer shows it or shows one of the new names too.
        let renamed = renames::lookup(syntax, &key).filter(|rename| {
            distro.is_none()
                && (!mentions(&theirs_parsed, syntax, &key)
                    || rename
                        .new
                        .iter()
                        .any(|new| mentions(&theirs_parsed, syntax, &syntax.key_id(new))))
        });
        if let (Some(rename), Some(values)) = (renamed, after) {
            let translated = match values.as_slice() {
                [value] => rename.translate(value),
                _ => None,
            };
            let Some(translated) = translated else {
                issues.push(Issue::Renamed {
                    key,
                    values: values.clone(),
                    new_names: rename.new_names(),
                    note: rename.note.to_string(),
                });
                continue;
            };
            let site_line = site_line(&ours_parsed, &id, &base_lines);
            let indent = indent_of(&site_line).to_string();
            // The key as the site spelled it (sshd's are parsed in lower case).
            let site_key = site_line
                .split(|c: char| c.is_whitespace() || c == '=')
                .find(|word| !word.is_empty())
                .unwrap_or(rename.old)
                .to_string();
            let mut written = Vec::new();
            for (new_key, new_value) in &translated.settings {
                let new_id = (section.clone(), syntax.key_id(new_key));
                // The site's own change to the new name, if any, is replayed as it is.
                let site_value = ours_settings.get(&new_id);
                if site_value != base_settings.get(&new_id) {
                    let shown = site_value.map_or_else(|| "unset".to_string(), |v| v.join("; "));
                    written.push(format!(
                        "{} (the site's own value, kept)",
                        syntax.setting_line(new_key, &shown)
                    ));
                    continue;
                }
                let line = syntax.setting_line(new_key, new_value);
                plan.set(&new_id, format!("{indent}{line}\n"), syntax, &theirs_parsed);
                written.push(line);
            }
            let mut unset = Vec::new();
            for name in &translated.unset {
                let unset_id = (section.clone(), syntax.key_id(name));
                if ours_settings.get(&unset_id) == base_settings.get(&unset_id)
                    && theirs_settings.contains_key(&unset_id)
                {
                    plan.comment_out(&unset_id, syntax);
                    unset.push(name.clone());
                }
            }
            translations.push(Translation::new(
                section,
                syntax.setting_line(&site_key, &values.join(" ")),
                written,
                unset,
                rename.note,
            ));
            continue;
        }
        // Both sides changed it, differently: the site's value is replayed like any
        // other site change, and the admin is told of Debian's new default.
        if distro != before {
            notices.push(Notice::new(
                section.clone(),
                key.clone(),
                before.cloned(),
                after.cloned(),
                distro.cloned(),
            ));
        }
        match after {
            Some(values) if in_added_section(&section) => replayed.push(Replayed {
                section,
                key,
                values: values.clone(),
            }),
            Some(values)
                if dovecot_24 && values.iter().any(|v| renames::has_dovecot_23_variables(v)) =>
            {
                let rewritten: Option<Vec<String>> = values
                    .iter()
                    .map(|v| renames::dovecot_variables(v))
                    .collect();
                let Some(rewritten) = rewritten else {
                    issues.push(Issue::Renamed {
                        key: key.clone(),
                        values: values.clone(),
                        new_names: vec![key],
                        note: format!(
                            "{}: a variable the rules do not know; rewrite it by hand",
                            renames::DOVECOT_VARIABLES_NOTE
                        ),
                    });
                    continue;
                };
                let site_line = site_line(&ours_parsed, &id, &base_lines);
                let indent = indent_of(&site_line);
                let line = syntax.setting_line(&key, &rewritten.join(" "));
                plan.set(&id, format!("{indent}{line}\n"), syntax, &theirs_parsed);
                translations.push(Translation::new(
                    section,
                    syntax.setting_line(&key, &values.join(" ")),
                    vec![line],
                    Vec::new(),
                    renames::DOVECOT_VARIABLES_NOTE,
                ));
            }
            Some(values) => {
                let text = site_text(&ours_parsed, &id, &base_lines);
                plan.set(&id, text, syntax, &theirs_parsed);
                replayed.push(Replayed {
                    section,
                    key,
                    values: values.clone(),
                });
            }
            None => {
                plan.comment_out(&id, syntax);
                replayed.push(Replayed {
                    section,
                    key,
                    values: Vec::new(),
                });
            }
        }
    }
    // Sections the site added come whole; a nested one comes with its parent.
    for section in &added_sections {
        let nested = added_sections
            .iter()
            .any(|other| section.starts_with(&format!("{other} / ")));
        if !nested {
            plan.place_section(section, section_text(&ours_parsed, section), syntax);
        }
    }
    SettingsMerge {
        text: plan.render(),
        replayed,
        notices,
        translations,
        issues,
    }
}

/// Whether `theirs` sets `key` or shows it as a commented example, in any section.
fn mentions(parsed: &Parsed, syntax: Syntax, key: &str) -> bool {
    parsed.items.iter().any(|item| match &item.kind {
        Kind::Setting { key: k, .. } => k == key,
        Kind::Comment => commented_key(&item.text, syntax).as_deref() == Some(key),
        _ => false,
    })
}

/// The site's lines for a setting, with the comments the site wrote just above them.
/// The last line of the site's text for the setting `id` (its own spelling and indent).
fn site_line(ours: &Parsed, id: &SettingId, base_lines: &BTreeSet<&str>) -> String {
    site_text(ours, id, base_lines)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// The leading white space of `line`.
fn indent_of(line: &str) -> &str {
    &line[..line.len() - line.trim_start().len()]
}

fn site_text(ours: &Parsed, id: &SettingId, base_lines: &BTreeSet<&str>) -> String {
    let mut text = String::new();
    for (index, item) in ours.items.iter().enumerate() {
        let Kind::Setting { key, .. } = &item.kind else {
            continue;
        };
        if item.section != id.0 || *key != id.1 {
            continue;
        }
        let mut start = index;
        while start > 0
            && ours.items[start - 1].kind == Kind::Comment
            && !base_lines.contains(ours.items[start - 1].text.trim())
        {
            start -= 1;
        }
        for comment in &ours.items[start..index] {
            text.push_str(&comment.text);
        }
        text.push_str(&item.text);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

/// The new pristine file's items, with text replaced, inserted or commented out.
struct Output {
    items: Vec<Slot>,
    tail: String,
}

#[derive(Clone)]
struct Slot {
    item: Item,
    before: String,
    text: String,
    after: String,
}

impl Output {
    fn new(theirs: &Parsed) -> Output {
        let items = theirs
            .items
            .iter()
            .map(|item| Slot {
                item: item.clone(),
                before: String::new(),
                text: item.text.clone(),
                after: String::new(),
            })
            .collect();
        Output {
            items,
            tail: String::new(),
        }
    }

    fn occurrences(&self, id: &SettingId) -> Vec<usize> {
        let matches = |slot: &Slot| {
            matches!(&slot.item.kind, Kind::Setting { key, .. } if *key == id.1)
                && slot.item.section == id.0
        };
        self.items
            .iter()
            .enumerate()
            .filter(|(_, slot)| matches(slot))
            .map(|(i, _)| i)
            .collect()
    }

    /// Puts the site's lines in place of the setting, or next to its commented example,
    /// or at the end of its section.
    fn set(&mut self, id: &SettingId, text: String, syntax: Syntax, theirs: &Parsed) {
        let found = self.occurrences(id);
        if let Some((first, rest)) = found.split_first() {
            self.items[*first].text = text;
            for index in rest {
                self.items[*index].text.clear();
            }
            return;
        }
        let example = self.items.iter().rposition(|slot| {
            slot.item.section == id.0
                && slot.item.kind == Kind::Comment
                && commented_key(&slot.item.text, syntax).as_deref() == Some(id.1.as_str())
        });
        if let Some(index) = example {
            ensure_newline(&mut self.items[index].text);
            self.items[index].after.push_str(&text);
            return;
        }
        match self.section_end(&id.0, syntax, theirs) {
            Some(End::Before(index)) => self.items[index].before.push_str(&text),
            Some(End::After(index)) => {
                ensure_newline(&mut self.items[index].text);
                self.items[index].after.push_str(&text);
            }
            None => {
                ensure_newline_string(&mut self.tail, &self.items);
                self.tail.push_str(&text);
            }
        }
    }

    fn comment_out(&mut self, id: &SettingId, syntax: Syntax) {
        let marker = syntax.comment_starts()[0];
        for index in self.occurrences(id) {
            let text = &self.items[index].text;
            let indent = text.len() - text.trim_start().len();
            self.items[index].text = format!("{}{marker}{}", &text[..indent], &text[indent..]);
        }
    }

    /// Where a setting new to a section goes: before Dovecot's closing brace, before
    /// sshd's first `Match` for top-level settings, after an ini section's last item.
    fn section_end(&self, section: &str, syntax: Syntax, _theirs: &Parsed) -> Option<End> {
        if section.is_empty() {
            return match syntax {
                Syntax::Sshd | Syntax::Ini => self
                    .items
                    .iter()
                    .position(|s| matches!(s.item.kind, Kind::Open(_)))
                    .map(End::Before),
                _ => None,
            };
        }
        let open = self
            .items
            .iter()
            .position(|s| s.item.kind == Kind::Open(section.to_string()))?;
        match syntax {
            Syntax::Dovecot => {
                // The matching brace: count the sections opened after this one.
                let mut depth = 0usize;
                for (index, slot) in self.items.iter().enumerate().skip(open + 1) {
                    match slot.item.kind {
                        Kind::Open(_) => depth += 1,
                        Kind::Close if depth == 0 => return Some(End::Before(index)),
                        Kind::Close => depth -= 1,
                        _ => {}
                    }
                }
                None
            }
            _ => {
                let last = self.items.iter().rposition(|s| {
                    s.item.section == section && !matches!(s.item.kind, Kind::Blank)
                })?;
                Some(End::After(last))
            }
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        for slot in &self.items {
            text.push_str(&slot.before);
            text.push_str(&slot.text);
            text.push_str(&slot.after);
        }
        text.push_str(&self.tail);
        text
    }

    /// Puts a section the site added after the new release's commented example of it
    /// (Dovecot's `#unix_listener /var/spool/postfix/private/auth {` … `#}`), else at
    /// the end of its parent section, else at the end of the file.
    fn place_section(&mut self, section: &str, text: String, syntax: Syntax) {
        let (parent, header) = section.rsplit_once(" / ").unwrap_or(("", section));
        let uncomment = |text: &str| {
            text.trim()
                .trim_start_matches(syntax.comment_starts())
                .trim()
                .to_string()
        };
        let example = self.items.iter().position(|slot| {
            slot.item.section == parent
                && slot.item.kind == Kind::Comment
                && normalize(uncomment(&slot.item.text).trim_end_matches('{')) == header
        });
        if let Some(start) = example {
            // The example's closing `#}`, within the run of comment lines that follows.
            let closing = self.items[start + 1..]
                .iter()
                .take_while(|slot| slot.item.kind == Kind::Comment)
                .position(|slot| uncomment(&slot.item.text) == "}")
                .map_or(start, |offset| start + 1 + offset);
            ensure_newline(&mut self.items[closing].text);
            self.items[closing].after.push_str(&text);
            return;
        }
        if !parent.is_empty() {
            if let Some(End::Before(index)) =
                self.section_end(parent, syntax, &Parsed { items: Vec::new() })
            {
                self.items[index].before.push_str(&text);
                return;
            }
        }
        ensure_newline_string(&mut self.tail, &self.items);
        self.tail.push_str(&text);
    }
}

/// A section as the site wrote it, from its opening line to its end (the matching `}`,
/// or the next sshd `Match` or ini header).
fn section_text(ours: &Parsed, section: &str) -> String {
    let mut text = String::new();
    let Some(start) = ours
        .items
        .iter()
        .position(|i| i.kind == Kind::Open(section.to_string()))
    else {
        return text;
    };
    let mut depth = 0usize;
    for item in &ours.items[start..] {
        if matches!(item.kind, Kind::Open(_))
            && item.section != section
            && !item.section.starts_with(&format!("{section} / "))
        {
            break;
        }
        text.push_str(&item.text);
        match item.kind {
            Kind::Open(_) => depth += 1,
            Kind::Close => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    ensure_newline(&mut text);
    text
}

enum End {
    Before(usize),
    After(usize),
}

fn ensure_newline(text: &mut String) {
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
}

fn ensure_newline_string(tail: &mut String, items: &[Slot]) {
    if tail.is_empty()
        && items
            .last()
            .is_some_and(|s| !s.after.is_empty() || !s.text.is_empty())
    {
        if let Some(last) = items.last() {
            let written = if last.after.is_empty() {
                &last.text
            } else {
                &last.after
            };
            if !written.ends_with('\n') {
                tail.push('\n');
            }
        }
    }
}

/// Every setting of `text` and its values, by section and key (for tests).
#[cfg(test)]
pub(crate) fn settings_of(text: &str, syntax: Syntax) -> BTreeMap<SettingId, Vec<String>> {
    Parsed::new(text, syntax).settings().0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntaxes_by_path() {
        assert_eq!(Syntax::for_path("ssh/sshd_config"), Some(Syntax::Sshd));
        assert_eq!(
            Syntax::for_path("/etc/ssh/sshd_config.d/50-site.conf"),
            Some(Syntax::Sshd)
        );
        assert_eq!(Syntax::for_path("postfix/main.cf"), Some(Syntax::Postfix));
        assert_eq!(Syntax::for_path("postfix/master.cf"), None);
        assert_eq!(
            Syntax::for_path("dovecot/conf.d/10-auth.conf"),
            Some(Syntax::Dovecot)
        );
        assert_eq!(Syntax::for_path("sysctl.conf"), Some(Syntax::KeyValue));
        assert_eq!(Syntax::for_path("php/8.2/fpm/php.ini"), Some(Syntax::Ini));
        assert_eq!(Syntax::for_path("login.defs"), Some(Syntax::Spaced));
        assert_eq!(Syntax::for_path("nginx/nginx.conf"), None);
    }

    #[test]
    fn postfix_continuation_lines_belong_to_their_setting() {
        let parsed = Parsed::new("smtpd_recipient_restrictions =\n    permit_mynetworks,\n    reject_unauth_destination\n# note\nbiff = no\n", Syntax::Postfix);
        let (settings, order) = parsed.settings();
        assert_eq!(order.len(), 2);
        assert_eq!(
            settings[&(String::new(), "smtpd_recipient_restrictions".into())],
            vec!["permit_mynetworks, reject_unauth_destination"]
        );
    }

    #[test]
    fn dovecot_sections_nest() {
        let text = "service auth {\n  unix_listener auth-userdb {\n    mode = 0600\n  }\n  user = dovecot\n}\n!include auth-system.conf.ext\n";
        let (settings, _) = Parsed::new(text, Syntax::Dovecot).settings();
        assert!(settings.contains_key(&(
            "service auth / unix_listener auth-userdb".into(),
            "mode".into()
        )));
        assert!(settings.contains_key(&("service auth".into(), "user".into())));
        assert!(settings.contains_key(&(String::new(), "!include auth-system.conf.ext".into())));
    }

    #[test]
    fn a_new_setting_lands_inside_its_section_and_a_removed_one_is_commented_out() {
        let base = "service auth {\n  user = dovecot\n}\nauth_mechanisms = plain\n";
        let ours = "service auth {\n  user = dovecot\n  group = mail\n}\n";
        let theirs =
            "# new comment\nservice auth {\n  user = dovecot\n}\nauth_mechanisms = plain\n";
        let merged = merge(Syntax::Dovecot, base, ours, theirs);
        assert!(merged.issues.is_empty());
        assert_eq!(merged.text, "# new comment\nservice auth {\n  user = dovecot\n  group = mail\n}\n#auth_mechanisms = plain\n");
    }

    #[test]
    fn sshd_top_level_settings_go_before_the_first_match_block() {
        let base = "Port 22\nMatch User backup\n  ForceCommand internal-sftp\n";
        let ours = "Port 22\nMaxAuthTries 3\nMatch User backup\n  ForceCommand internal-sftp\n";
        let merged = merge(Syntax::Sshd, base, ours, base);
        assert_eq!(
            merged.text,
            "Port 22\nMaxAuthTries 3\nMatch User backup\n  ForceCommand internal-sftp\n"
        );
    }

    #[test]
    fn a_match_block_the_site_added_stays_at_the_end() {
        let base = "Port 22\n#Match User anoncvs\n#\tX11Forwarding no\n";
        let ours = format!("{base}Match User backup\n  ForceCommand internal-sftp\n");
        let theirs = "# reworded\nPort 22\n#Match User anoncvs\n#\tX11Forwarding no\n";
        let merged = merge(Syntax::Sshd, base, &ours, theirs);
        assert!(merged.issues.is_empty(), "{:?}", merged.issues);
        assert_eq!(
            merged.text,
            format!("{theirs}Match User backup\n  ForceCommand internal-sftp\n")
        );
    }

    #[test]
    fn a_setting_changed_by_both_sides_differently_keeps_the_sites_value_with_a_notice() {
        let merged = merge(Syntax::KeyValue, "a = 1\n", "a = 2\n", "a = 3\n");
        assert!(merged.issues.is_empty(), "{:?}", merged.issues);
        assert_eq!(merged.text, "a = 2\n", "the site's value wins");
        match &merged.notices[..] {
            [notice] => {
                assert_eq!(notice.key, "a");
                assert_eq!(
                    (notice.ours.as_deref(), notice.theirs.as_deref()),
                    (Some(&["2".to_string()][..]), Some(&["3".to_string()][..]))
                );
                assert_eq!(
                    notice.message,
                    "a: kept the site's value `2`; Debian's new default is `3`"
                );
            }
            other => panic!("expected one notice, got {other:?}"),
        }
        // Both sides adding the key, differently, is the same case.
        let added = merge(
            Syntax::KeyValue,
            "b = 0\n",
            "b = 0\na = 2\n",
            "b = 0\na = 3\n",
        );
        assert!(added.issues.is_empty() && added.text == "b = 0\na = 2\n");
        assert_eq!(added.notices.len(), 1);
        // The site removed what the release changed: the removal wins.
        let removed = merge(
            Syntax::KeyValue,
            "a = 1\nb = 0\n",
            "b = 0\n",
            "a = 3\nb = 0\n",
        );
        assert!(removed.issues.is_empty() && removed.text == "#a = 3\nb = 0\n");
        assert!(removed.notices[0]
            .message
            .contains("kept the site's removal"));

        let same = merge(Syntax::KeyValue, "a = 1\n", "a = 2\n", "a = 2\n");
        assert!(same.issues.is_empty() && same.text == "a = 2\n" && same.notices.is_empty());
    }

    #[test]
    fn the_sites_own_comment_travels_with_its_setting() {
        let base = "# defaults\n#a = 1\n";
        let ours = "# defaults\n#a = 1\n# raised for the club's big uploads\na = 5\n";
        let theirs = "# defaults, reworded\n#a = 1\n";
        let merged = merge(Syntax::KeyValue, base, ours, theirs);
        assert_eq!(
            merged.text,
            "# defaults, reworded\n#a = 1\n# raised for the club's big uploads\na = 5\n"
        );
    }
}
