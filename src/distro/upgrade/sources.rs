//! Pointing apt at the new release, the way an admin does it by hand: in every apt
//! source (`/etc/apt/sources.list`, `sources.list.d/*.list` in one-line format and
//! `sources.list.d/*.sources` in deb822), each suite naming the old release becomes the
//! new one, suffix kept: `bookworm` → `trixie`, `bookworm-updates` → `trixie-updates`,
//! `bookworm-security` → `trixie-security`. Nothing else is touched: URIs, components,
//! options, comments and third-party suites stay as they are. Sources the site disabled
//! (commented out) stay disabled and unchanged.
//!
//! The rewriting is pure; [`switch`] reads and writes the files (atomically, keeping
//! their modes) and says which changed. /etc's git records the change.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// `suite` renamed from the `old` release to the `new` one, when it names `old`.
fn renamed(suite: &str, old: &str, new: &str) -> Option<String> {
    if suite == old {
        return Some(new.to_string());
    }
    let suffix = suite.strip_prefix(old)?.strip_prefix('-')?;
    Some(format!("{new}-{suffix}"))
}

/// A deb822 `.sources` file with its `Suites:` fields renamed.
pub fn switch_deb822(text: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let Some((field, value)) = line.split_once(':') else {
            out.push_str(line);
            continue;
        };
        if !field.trim().eq_ignore_ascii_case("suites") || line.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let ending = if line.ends_with('\n') { "\n" } else { "" };
        let suites: Vec<String> = value
            .split_whitespace()
            .map(|s| renamed(s, old, new).unwrap_or_else(|| s.to_string()))
            .collect();
        out.push_str(&format!("{field}: {}{ending}", suites.join(" ")));
    }
    out
}

/// A one-line-format `sources.list` with the suite of each `deb`/`deb-src` line renamed.
pub fn switch_one_line(text: &str, old: &str, new: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if !(trimmed.starts_with("deb ") || trimmed.starts_with("deb-src ")) {
            out.push_str(line);
            continue;
        }
        // deb [options] uri suite components…: the suite is the second word after the
        // options, which may hold spaces inside their brackets.
        let (prefix, rest) = match (trimmed.find('['), trimmed.find(']')) {
            (Some(open), Some(close)) if open < close && trimmed[..open].trim().len() <= 7 => {
                trimmed.split_at(close + 1)
            }
            _ => match trimmed.find(' ') {
                Some(space) => trimmed.split_at(space),
                None => (trimmed, ""),
            },
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            out.push_str(line);
            continue;
        };
        let Some(suite) = renamed(suite, old, new) else {
            out.push_str(line);
            continue;
        };
        let indent = &line[..line.len() - trimmed.len()];
        let components: Vec<&str> = words.collect();
        let ending = if line.ends_with('\n') { "\n" } else { "" };
        let mut rewritten = format!("{indent}{} {uri} {suite}", prefix.trim_end());
        for component in components {
            rewritten.push(' ');
            rewritten.push_str(component);
        }
        out.push_str(&rewritten);
        out.push_str(ending);
    }
    out
}

/// The apt source files under `etc`: sources.list, then sources.list.d's .list and
/// .sources files, sorted.
pub fn source_files(etc: &Path) -> Vec<PathBuf> {
    let mut files = vec![etc.join("apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir(etc.join("apt/sources.list.d")) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files.into_iter().filter(|p| p.is_file()).collect()
}

/// Switches every apt source under `etc` from `old` to `new`; the files that changed,
/// relative to `etc`.
pub fn switch(etc: &Path, old: &str, new: &str) -> Result<Vec<String>> {
    let mut changed = Vec::new();
    for file in source_files(etc) {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let switched = if file.extension().is_some_and(|e| e == "sources") {
            switch_deb822(&text, old, new)
        } else {
            switch_one_line(&text, old, new)
        };
        if switched != text {
            crate::distro::validate::write_file(&file, switched.as_bytes())?;
            let relative = file.strip_prefix(etc).unwrap_or(&file);
            changed.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(changed)
}

/// Whether some apt source still names `old` (in an active line), after a switch.
pub fn still_names(etc: &Path, old: &str) -> Vec<String> {
    source_files(etc)
        .into_iter()
        .filter(|file| {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let switched = if file.extension().is_some_and(|e| e == "sources") {
                switch_deb822(&text, old, "\u{0}")
            } else {
                switch_one_line(&text, old, "\u{0}")
            };
            switched != text
        })
        .map(|f| f.to_string_lossy().into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sandbox image's file, as debootstrap and Debian's installer write it.
    const DEBIAN_SOURCES: &str = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn deb822_suites_are_renamed_with_their_suffixes() {
        let switched = switch_deb822(DEBIAN_SOURCES, "bookworm", "trixie");
        assert_eq!(
            switched,
            DEBIAN_SOURCES
                .replace(
                    "Suites: bookworm bookworm-updates",
                    "Suites: trixie trixie-updates"
                )
                .replace("Suites: bookworm-security", "Suites: trixie-security")
        );
        let third_party = "Types: deb\nURIs: https://packages.example.org/debian\nSuites: stable\nComponents: main\n# Suites: bookworm\n";
        assert_eq!(
            switch_deb822(third_party, "bookworm", "trixie"),
            third_party,
            "another suite and a comment stay"
        );
    }

    #[test]
    fn one_line_sources_keep_options_and_comments() {
        let text = "deb http://deb.debian.org/debian bookworm main contrib\n# deb http://deb.debian.org/debian bookworm-backports main\ndeb-src http://deb.debian.org/debian bookworm main\ndeb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://security.debian.org/debian-security bookworm-security main\ndeb https://repo.example.org/apt stable main\n";
        let expected = "deb http://deb.debian.org/debian trixie main contrib\n# deb http://deb.debian.org/debian bookworm-backports main\ndeb-src http://deb.debian.org/debian trixie main\ndeb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://security.debian.org/debian-security trixie-security main\ndeb https://repo.example.org/apt stable main\n";
        assert_eq!(switch_one_line(text, "bookworm", "trixie"), expected);
        assert_eq!(
            switch_one_line(expected, "bookworm", "trixie"),
            expected,
            "switching twice changes nothing"
        );
    }

    #[test]
    fn switches_the_files_of_a_folder() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let etc = dir.path();
        std::fs::create_dir_all(etc.join("apt/sources.list.d")).expect("folders");
        std::fs::write(
            etc.join("apt/sources.list.d/debian.sources"),
            DEBIAN_SOURCES,
        )
        .expect("write");
        std::fs::write(
            etc.join("apt/sources.list.d/club.list"),
            "deb https://repo.example.org/apt stable main\n",
        )
        .expect("write");
        assert_eq!(
            switch(etc, "bookworm", "trixie").expect("a switch"),
            ["apt/sources.list.d/debian.sources"]
        );
        assert!(still_names(etc, "bookworm").is_empty());
        assert!(switch(etc, "bookworm", "trixie")
            .expect("a switch")
            .is_empty());
    }
}
