//! GRUB's boot menu, read from `/boot/grub/grub.cfg`: submenus, entries, their titles
//! and their ids (`$menuentry_id_option 'gnulinux-…'`), and the kernel each entry boots.
//!
//! grub.cfg is a script in GRUB's shell-like language, written by grub-mkconfig from
//! /etc/grub.d. This parser reads only what a menu needs: it splits the text into words
//! the way GRUB does (quotes, `'\''` escapes, `${…}` expansions, comments), follows
//! `menuentry` and `submenu` blocks and their braces, and looks inside each entry for
//! its `linux` line. Everything else — `if`, functions, `insmod` — is stepped over, so
//! entries inside `if … fi` (the UEFI firmware entry) are still found.
//!
//! Pinning a kernel (see [`crate::resource::grub_pin`]) names an entry by its *id path*,
//! `submenu-id>entry-id`, which is what GRUB_DEFAULT accepts: ids, unlike titles, do not
//! change when GRUB_DISTRIBUTOR does. The parser is pure and tested on grub.cfg files
//! written by grub-mkconfig (tests/fixtures/grub/).

use serde::{Deserialize, Serialize};

pub const GRUB_CFG: &str = "/boot/grub/grub.cfg";

/// The whole menu, in the order GRUB shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Menu {
    pub items: Vec<Item>,
    /// The literal value of `set default="…"` (an index, an id or an id path), when
    /// grub.cfg sets one that is not a variable such as `${next_entry}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Item {
    Entry(Entry),
    Submenu(Submenu),
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The kernel image the entry's `linux` command loads, as written (`/boot/vmlinuz-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Submenu {
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub items: Vec<Item>,
}

/// An entry with the ids of the submenus that hold it.
#[derive(Debug, Clone, PartialEq)]
pub struct Located<'a> {
    pub entry: &'a Entry,
    /// Ids from the top: the submenus', then the entry's. `None` where one has no id.
    pub ids: Vec<Option<&'a str>>,
}

impl Located<'_> {
    /// `submenu-id>entry-id`, as GRUB_DEFAULT takes it; None when a level has no id.
    pub fn id_path(&self) -> Option<String> {
        let ids: Option<Vec<&str>> = self.ids.iter().copied().collect();
        ids.map(|ids| ids.join(">"))
    }
}

impl Entry {
    /// The kernel version of the image, `6.1.0-18-amd64` for `/boot/vmlinuz-6.1.0-18-amd64`.
    pub fn kernel_version(&self) -> Option<&str> {
        let kernel = self.kernel.as_deref()?;
        let file = kernel.rsplit('/').next().unwrap_or(kernel);
        file.strip_prefix("vmlinuz-")
            .or_else(|| file.strip_prefix("vmlinux-"))
            .filter(|v| !v.is_empty())
    }

    /// Debian and Ubuntu add a "(recovery mode)" entry per kernel, booting single-user.
    pub fn is_recovery(&self) -> bool {
        self.id
            .as_deref()
            .is_some_and(|id| id.contains("-recovery-"))
            || self.title.ends_with("(recovery mode)")
    }
}

impl Menu {
    /// Every entry, depth first, in menu order.
    pub fn entries(&self) -> Vec<Located<'_>> {
        fn walk<'a>(items: &'a [Item], ids: &mut Vec<Option<&'a str>>, out: &mut Vec<Located<'a>>) {
            for item in items {
                match item {
                    Item::Entry(entry) => {
                        let mut path = ids.clone();
                        path.push(entry.id.as_deref());
                        out.push(Located { entry, ids: path });
                    }
                    Item::Submenu(submenu) => {
                        ids.push(submenu.id.as_deref());
                        walk(&submenu.items, ids, out);
                        ids.pop();
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.items, &mut Vec::new(), &mut out);
        out
    }

    /// Whether an entry has this id path.
    pub fn has_id_path(&self, path: &str) -> bool {
        self.entries()
            .iter()
            .any(|e| e.id_path().as_deref() == Some(path))
    }

    /// The id path of the entry that boots kernel `version` normally: not its recovery
    /// entry, and rather the entry named after the version than the top "simple" entry,
    /// which boots whatever kernel is newest at the next update-grub.
    pub fn resolve_kernel(&self, version: &str) -> Result<String, String> {
        let entries = self.entries();
        let candidates: Vec<&Located> = entries
            .iter()
            .filter(|e| e.entry.kernel_version() == Some(version) && !e.entry.is_recovery())
            .collect();
        let named = candidates
            .iter()
            .find(|e| e.entry.id.as_deref().is_some_and(|id| id.contains(version)));
        let chosen = named.or(candidates.first()).ok_or_else(|| {
            let known: Vec<&str> = entries.iter().filter_map(|e| e.entry.kernel_version()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
            format!("{GRUB_CFG} has no entry booting kernel {version} (it has entries for: {}); run update-grub", if known.is_empty() { "none".to_string() } else { known.join(", ") })
        })?;
        chosen.id_path().ok_or_else(|| format!("the entry `{}` for kernel {version} has no id in {GRUB_CFG}, so it cannot be pinned by id", chosen.entry.title))
    }
}

/// One word of grub.cfg, or the punctuation that structures it.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word {
        text: String,
        quoted: bool,
    },
    OpenBrace,
    CloseBrace,
    /// A newline or `;`: the next word starts a command.
    End,
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let finish =
        |tokens: &mut Vec<Token>, word: &mut String, in_word: &mut bool, quoted: &mut bool| {
            if *in_word {
                let text = std::mem::take(word);
                tokens.push(match (text.as_str(), *quoted) {
                    ("{", false) => Token::OpenBrace,
                    ("}", false) => Token::CloseBrace,
                    _ => Token::Word {
                        text,
                        quoted: *quoted,
                    },
                });
            }
            *in_word = false;
            *quoted = false;
        };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\r' => finish(&mut tokens, &mut word, &mut in_word, &mut quoted),
            '\n' | ';' => {
                finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
                tokens.push(Token::End);
            }
            '#' if !in_word => {
                for next in chars.by_ref() {
                    if next == '\n' {
                        tokens.push(Token::End);
                        break;
                    }
                }
            }
            '\'' => {
                in_word = true;
                quoted = true;
                for next in chars.by_ref() {
                    if next == '\'' {
                        break;
                    }
                    word.push(next);
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                while let Some(next) = chars.next() {
                    match next {
                        '"' => break,
                        '\\' => match chars.peek() {
                            Some(&escaped @ ('"' | '\\' | '$' | '\n')) => {
                                chars.next();
                                if escaped != '\n' {
                                    word.push(escaped);
                                }
                            }
                            _ => word.push('\\'),
                        },
                        other => word.push(other),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(escaped) => {
                    in_word = true;
                    word.push(escaped);
                }
                None => {}
            },
            '$' if chars.peek() == Some(&'{') => {
                // `${name}` is an expansion, not a block: keep its braces in the word.
                in_word = true;
                word.push('$');
                for next in chars.by_ref() {
                    word.push(next);
                    if next == '}' {
                        break;
                    }
                }
            }
            other => {
                in_word = true;
                word.push(other);
            }
        }
    }
    finish(&mut tokens, &mut word, &mut in_word, &mut quoted);
    tokens
}

/// Parses grub.cfg into its menu. It never fails: what it cannot read as a menu, it
/// steps over, and an unbalanced file yields the entries found so far.
pub fn parse(text: &str) -> Menu {
    let tokens = tokenize(text);
    let mut position = 0;
    let mut menu = Menu::default();
    // A stray `}` ends a block early; the rest of the file is still read.
    while position < tokens.len() {
        let block = parse_block(&tokens, &mut position, &mut menu.default);
        menu.items.extend(block.items);
    }
    menu
}

#[derive(Default)]
struct Block {
    items: Vec<Item>,
    /// The first `linux` command's image, for the entry this block is the body of.
    kernel: Option<String>,
}

/// Reads commands until the `}` closing this block (or the end), collecting menu items.
fn parse_block(tokens: &[Token], position: &mut usize, default: &mut Option<String>) -> Block {
    let mut block = Block::default();
    let mut command: Vec<(String, bool)> = Vec::new();
    while let Some(token) = tokens.get(*position) {
        *position += 1;
        match token {
            Token::CloseBrace => break,
            Token::End => {
                finish_command(&command, &mut block, default);
                command.clear();
            }
            Token::Word { text, quoted } => {
                // `if …; then menuentry …` — these words introduce a command.
                if !quoted && command.is_empty() && matches!(text.as_str(), "then" | "else" | "do")
                {
                    continue;
                }
                command.push((text.clone(), *quoted));
            }
            Token::OpenBrace => {
                let kind = command.first().map(|(word, _)| word.as_str());
                let body = parse_block(tokens, position, default);
                match kind {
                    Some("menuentry") => {
                        let (title, id) = title_and_id(&command[1..]);
                        block.items.push(Item::Entry(Entry {
                            title,
                            id,
                            kernel: body.kernel,
                        }));
                    }
                    Some("submenu") => {
                        let (title, id) = title_and_id(&command[1..]);
                        block.items.push(Item::Submenu(Submenu {
                            title,
                            id,
                            items: body.items,
                        }));
                    }
                    // A function body, or anything else in braces: keep what it holds.
                    _ => block.items.extend(body.items),
                }
                command.clear();
            }
        }
    }
    finish_command(&command, &mut block, default);
    block
}

fn finish_command(command: &[(String, bool)], block: &mut Block, default: &mut Option<String>) {
    let Some((name, _)) = command.first() else {
        return;
    };
    match name.as_str() {
        "linux" | "linux16" | "linuxefi" if block.kernel.is_none() => {
            block.kernel = command.get(1).map(|(image, _)| image.clone());
        }
        "set" => {
            if let Some(value) = command
                .get(1)
                .and_then(|(arg, _)| arg.strip_prefix("default="))
            {
                if !value.contains('$') {
                    *default = Some(value.to_string());
                }
            }
        }
        _ => {}
    }
}

/// A menuentry's or submenu's arguments: its title, and its id from `--id ID` or
/// `$menuentry_id_option ID` (which grub.cfg sets to `--id`).
fn title_and_id(arguments: &[(String, bool)]) -> (String, Option<String>) {
    let mut title = None;
    let mut id = None;
    let mut words = arguments.iter();
    while let Some((word, quoted)) = words.next() {
        let is_id_option = word == "--id"
            || (!quoted && (word == "$menuentry_id_option" || word == "${menuentry_id_option}"));
        if is_id_option {
            id = words.next().map(|(value, _)| value.clone());
        } else if !quoted
            && matches!(
                word.as_str(),
                "--class" | "--users" | "--hotkey" | "--source"
            )
        {
            words.next();
        } else if !quoted && word.starts_with("--") {
            // --unrestricted and other flags without a value.
        } else if title.is_none() {
            title = Some(word.clone());
        }
    }
    (title.unwrap_or_default(), id)
}

/// Reads and parses the host's grub.cfg; None when there is none (no GRUB, or a container).
pub fn read() -> Option<Menu> {
    std::fs::read_to_string(GRUB_CFG)
        .ok()
        .map(|text| parse(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "6c4b2f1e-8d0a-4f6e-9a53-2b7d1e0c9f41";

    fn fixture(name: &str) -> Menu {
        let path = format!("{}/tests/fixtures/grub/{name}", env!("CARGO_MANIFEST_DIR"));
        parse(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
    }

    fn titles(items: &[Item]) -> Vec<&str> {
        items
            .iter()
            .map(|item| match item {
                Item::Entry(e) => e.title.as_str(),
                Item::Submenu(s) => s.title.as_str(),
            })
            .collect()
    }

    #[test]
    fn debian_12_with_submenu() {
        let menu = fixture("debian12-submenu.cfg");
        assert_eq!(
            titles(&menu.items),
            ["Debian GNU/Linux", "Advanced options for Debian GNU/Linux"]
        );
        let Item::Submenu(advanced) = &menu.items[1] else {
            panic!("a submenu")
        };
        assert_eq!(
            advanced.id.as_deref(),
            Some(format!("gnulinux-advanced-{UUID}").as_str())
        );
        assert_eq!(
            advanced.items.len(),
            6,
            "three kernels, each with its recovery entry"
        );
        let Item::Entry(first) = &advanced.items[0] else {
            panic!("an entry")
        };
        assert_eq!(
            first.title,
            "Debian GNU/Linux, with Linux 6.12.117+deb12-cloud-amd64"
        );
        assert_eq!(
            first.kernel.as_deref(),
            Some("/boot/vmlinuz-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(menu.default.as_deref(), Some("0"));
        let versions: Vec<&str> = menu
            .entries()
            .iter()
            .filter(|e| !e.entry.is_recovery())
            .filter_map(|e| e.entry.kernel_version())
            .collect();
        assert_eq!(
            versions,
            [
                "6.12.117+deb12-cloud-amd64",
                "6.12.117+deb12-cloud-amd64",
                "6.1.0-50-cloud-amd64",
                "6.1.0-47-cloud-amd64"
            ]
        );
    }

    #[test]
    fn a_kernel_resolves_to_its_advanced_entry_not_the_simple_one_nor_recovery() {
        let menu = fixture("debian12-submenu.cfg");
        assert_eq!(
            menu.resolve_kernel("6.12.117+deb12-cloud-amd64").as_deref(),
            Ok(format!(
                "gnulinux-advanced-{UUID}>gnulinux-6.12.117+deb12-cloud-amd64-advanced-{UUID}"
            )
            .as_str()),
            "the newest kernel is also the top entry, but that one follows the next update"
        );
        assert_eq!(
            menu.resolve_kernel("6.1.0-47-cloud-amd64").as_deref(),
            Ok(
                format!("gnulinux-advanced-{UUID}>gnulinux-6.1.0-47-cloud-amd64-advanced-{UUID}")
                    .as_str()
            )
        );
        let missing = menu.resolve_kernel("6.1.0-18-amd64").unwrap_err();
        assert!(
            missing.contains("no entry booting kernel 6.1.0-18-amd64")
                && missing.contains("6.1.0-50-cloud-amd64"),
            "{missing}"
        );
    }

    #[test]
    fn debian_12_without_submenu_has_flat_ids() {
        let menu = fixture("debian12-no-submenu.cfg");
        assert!(
            menu.items.iter().all(|i| matches!(i, Item::Entry(_))),
            "GRUB_DISABLE_SUBMENU=y puts every entry at the top"
        );
        assert_eq!(menu.items.len(), 6);
        assert_eq!(
            menu.resolve_kernel("6.1.0-50-cloud-amd64"),
            Ok(format!("gnulinux-6.1.0-50-cloud-amd64-advanced-{UUID}"))
        );
    }

    #[test]
    fn a_pinned_grub_cfg_names_its_default() {
        let menu = fixture("debian12-pinned.cfg");
        let pin = format!("gnulinux-advanced-{UUID}>gnulinux-6.1.0-47-cloud-amd64-advanced-{UUID}");
        assert_eq!(
            menu.default.as_deref(),
            Some(pin.as_str()),
            "`set default=\"${{next_entry}}\"` is not the default"
        );
        assert!(menu.has_id_path(&pin));
        assert!(
            !menu.has_id_path(&format!("gnulinux-6.1.0-47-cloud-amd64-advanced-{UUID}")),
            "without its submenu the id is not a path"
        );
    }

    #[test]
    fn debian_13_finds_the_uefi_entry_inside_if() {
        let menu = fixture("debian13-submenu.cfg");
        assert_eq!(
            titles(&menu.items),
            [
                "Debian GNU/Linux",
                "Advanced options for Debian GNU/Linux",
                "UEFI Firmware Settings"
            ]
        );
        let uefi = menu
            .entries()
            .into_iter()
            .find(|e| e.entry.title == "UEFI Firmware Settings")
            .expect("the UEFI entry");
        assert_eq!(uefi.id_path().as_deref(), Some("uefi-firmware"));
        assert_eq!(uefi.entry.kernel, None);
        assert_eq!(
            menu.resolve_kernel("6.12.115+deb13.1-cloud-amd64"),
            Ok(format!(
                "gnulinux-advanced-{UUID}>gnulinux-6.12.115+deb13.1-cloud-amd64-advanced-{UUID}"
            ))
        );
        let flat = fixture("debian13-no-submenu.cfg");
        assert_eq!(
            flat.resolve_kernel("6.12.117+deb13-cloud-amd64"),
            Ok(format!(
                "gnulinux-6.12.117+deb13-cloud-amd64-advanced-{UUID}"
            ))
        );
    }

    #[test]
    fn ubuntu_entries_with_recordfail_and_vt_handoff() {
        let menu = fixture("ubuntu-flavoured.cfg");
        assert_eq!(
            titles(&menu.items)[..2],
            ["Ubuntu", "Advanced options for Ubuntu"]
        );
        assert_eq!(
            menu.resolve_kernel("6.8.0-88-generic"),
            Ok(format!(
                "gnulinux-advanced-{UUID}>gnulinux-6.8.0-88-generic-advanced-{UUID}"
            ))
        );
        let recovery = menu
            .entries()
            .into_iter()
            .filter(|e| e.entry.is_recovery())
            .count();
        assert_eq!(recovery, 2);
    }

    #[test]
    fn quotes_escapes_and_expansions() {
        let text = "menuentry 'Bob'\\''s kernel' --class os --unrestricted $menuentry_id_option 'bob' {\n  if [ \"${x}\" ]; then linux /vmlinuz-1.2 root=/dev/sda1; fi\n}\n# menuentry 'commented out' {\n# }\nif true; then menuentry \"Two\" --id two { linux16 /boot/vmlinuz-2.0 ; } fi\nset default=\"${saved_entry}\"\nset default=\"two\"\n";
        let menu = parse(text);
        assert_eq!(menu.entries().len(), 2, "{menu:?}");
        let entries = menu.entries();
        assert_eq!(entries[0].entry.title, "Bob's kernel");
        assert_eq!(entries[0].entry.id.as_deref(), Some("bob"));
        assert_eq!(entries[0].entry.kernel_version(), Some("1.2"));
        assert_eq!(entries[1].entry.kernel_version(), Some("2.0"));
        assert_eq!(menu.default.as_deref(), Some("two"));
    }

    #[test]
    fn broken_input_yields_what_was_found() {
        let menu = parse("submenu 'a' --id a {\n menuentry 'b' --id b {\n linux /vmlinuz-3\n");
        assert_eq!(
            menu.entries().first().and_then(|e| e.id_path()).as_deref(),
            Some("a>b")
        );
        assert_eq!(parse("").items, Vec::new());
        assert_eq!(parse("}}} {").items, Vec::new());
    }
}
