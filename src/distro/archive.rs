//! The target release's package lists, for `placard capture`: does each package the old
//! host installed by hand exist in the release the site will be rebuilt on, under the
//! same name or another?
//!
//! The lists come from the archive itself: apt-get downloads the target's Packages
//! index into a temporary folder, with a sources list of its own and its own
//! `Dir::State::Lists`, so the host's apt state is never touched. The parser and the
//! verdicts are pure functions; the apt-get call is the only I/O, and it runs with an
//! argv, never a shell line.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

use crate::system::command::{self, deadline};

pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// The keys of every Debian release, shipped by debian-archive-keyring; the host's own
/// trusted keys may not cover a newer release.
const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// One package of the target's lists, with what a rename check needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// The first line of its description.
    pub summary: String,
    /// The first alternative of each Depends.
    pub depends: Vec<String>,
}

/// The target release's packages, and who provides which virtual name.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub packages: BTreeMap<String, Entry>,
    pub provided_by: BTreeMap<String, Vec<String>>,
}

/// What became of one package in the target release.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Verdict {
    /// It exists under the same name.
    Present,
    /// Another package takes its place; `how` says what apt knows.
    Renamed { to: String, how: String },
    /// No package of that name, and no single package that provides it.
    Missing { note: String },
    /// The lists could not be read; the message says why.
    Unchecked { message: String },
}

/// Adds a Packages file's stanzas to `index`.
pub fn parse_packages(text: &str, index: &mut Index) {
    for stanza in text.split("\n\n") {
        let mut name = None;
        let mut entry = Entry::default();
        let mut provides = Vec::new();
        for line in stanza.lines() {
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            if line.starts_with(' ') {
                continue;
            }
            let value = value.trim();
            match field {
                "Package" => name = Some(value.to_string()),
                "Description" => entry.summary = value.to_string(),
                "Depends" | "Pre-Depends" => entry.depends.extend(first_alternatives(value)),
                "Provides" => provides.extend(first_alternatives(value)),
                _ => {}
            }
        }
        let Some(name) = name else { continue };
        for provided in provides {
            let providers = index.provided_by.entry(provided).or_default();
            if !providers.contains(&name) {
                providers.push(name.clone());
            }
        }
        index.packages.entry(name).or_insert(entry);
    }
}

/// `a (>= 1) | b, c:any` → [a, c]: names only, the first alternative of each.
fn first_alternatives(value: &str) -> Vec<String> {
    value
        .split(',')
        .filter_map(|group| {
            let first = group.split('|').next()?.trim();
            let name = first.split([' ', '(']).next()?.split(':').next()?;
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// The verdict on `name`: present, a transitional package (renamed to what it depends
/// on), provided by exactly one other package (renamed to it), or missing.
pub fn check(name: &str, index: &Index) -> Verdict {
    if let Some(entry) = index.packages.get(name) {
        let summary = entry.summary.to_lowercase();
        if summary.contains("transitional") || summary.contains("dummy package") {
            if let Some(to) = entry.depends.iter().find(|d| *d != name) {
                return Verdict::Renamed {
                    to: to.clone(),
                    how: format!("{name} is a transitional package (\"{}\")", entry.summary),
                };
            }
        }
        return Verdict::Present;
    }
    match index.provided_by.get(name).map(Vec::as_slice) {
        Some([only]) => Verdict::Renamed {
            to: only.clone(),
            how: format!("{only} provides {name}"),
        },
        Some(many) if !many.is_empty() => Verdict::Missing {
            note: format!(
                "no package {name}; provided by {}: choose one",
                many.join(", ")
            ),
        },
        _ => Verdict::Missing {
            note: format!("no package {name} in the release"),
        },
    }
}

/// The value of field `name` in a deb822 stanza (apt sources, Packages lists), trimmed.
pub fn stanza_field(stanza: &str, name: &str) -> Option<String> {
    stanza.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// The host's Debian mirror and components, from its apt sources (deb822 `.sources`
/// files and one-line `sources.list` files); the security archive is skipped, it
/// holds updates only.
pub fn mirror_and_components(sources: &[String]) -> (String, Vec<String>) {
    for text in sources {
        // deb822 stanzas.
        for stanza in text.split("\n\n") {
            let field = |name: &str| stanza_field(stanza, name);
            if let (Some(uris), Some(suites), Some(components)) =
                (field("URIs"), field("Suites"), field("Components"))
            {
                if suites.contains("-security") {
                    continue;
                }
                if let Some(uri) = uris.split_whitespace().next() {
                    return (
                        uri.to_string(),
                        components.split_whitespace().map(str::to_string).collect(),
                    );
                }
            }
        }
        // One-line entries: deb [options] URI SUITE COMPONENTS…
        for line in text.lines() {
            let mut words = line.split_whitespace().peekable();
            if words.next() != Some("deb") {
                continue;
            }
            if words.peek().is_some_and(|w| w.starts_with('[')) {
                for word in words.by_ref() {
                    if word.ends_with(']') {
                        break;
                    }
                }
            }
            let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
                continue;
            };
            if suite.contains("-security") {
                continue;
            }
            let components: Vec<String> = words.map(str::to_string).collect();
            if !components.is_empty() {
                return (uri.to_string(), components);
            }
        }
    }
    (DEFAULT_MIRROR.to_string(), vec!["main".to_string()])
}

/// The host's apt sources, as text.
pub fn read_host_sources(etc: &Path) -> Vec<String> {
    let mut texts: Vec<String> = fs::read_to_string(etc.join("apt/sources.list"))
        .into_iter()
        .collect();
    if let Ok(entries) = fs::read_dir(etc.join("apt/sources.list.d")) {
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        texts.extend(paths.iter().filter_map(|p| fs::read_to_string(p).ok()));
    }
    texts
}

/// Downloads the Packages index of `release` from `mirror` into a temporary folder and
/// reads it. Fails with apt's own message when the archive cannot be reached.
pub fn fetch(release: &str, mirror: &str, components: &[String]) -> Result<Index> {
    if release.is_empty()
        || !release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        bail!("{release:?} is not a release name (e.g. trixie)");
    }
    let folder = tempfile::Builder::new()
        .prefix("placard-lists-")
        .tempdir()
        .context("cannot make a temporary folder for the package lists")?;
    let root = folder.path();
    for sub in ["lists/partial", "cache/archives/partial", "parts"] {
        fs::create_dir_all(root.join(sub))?;
    }
    let signed_by = if Path::new(ARCHIVE_KEYRING).exists() {
        format!("[signed-by={ARCHIVE_KEYRING}] ")
    } else {
        String::new()
    };
    let sources = format!(
        "deb {signed_by}{mirror} {release} {}\n",
        components.join(" ")
    );
    fs::write(root.join("sources.list"), sources)?;
    let option = |name: &str, value: &Path| format!("{name}={}", value.display());
    let argv = [
        "apt-get".to_string(),
        "update".into(),
        "-q".into(),
        "-o".into(),
        option("Dir::Etc::SourceList", &root.join("sources.list")),
        "-o".into(),
        option("Dir::Etc::SourceParts", &root.join("parts")),
        "-o".into(),
        option("Dir::State::Lists", &root.join("lists")),
        "-o".into(),
        option("Dir::Cache", &root.join("cache")),
        "-o".into(),
        // The temporary folder is root's only: apt's _apt user could not write there.
        "APT::Sandbox::User=root".into(),
        "-o".into(),
        "Acquire::Languages=none".into(),
        "-o".into(),
        "APT::Update::Error-Mode=any".into(),
    ];
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    command::run_ok(&argv, deadline::APT)
        .with_context(|| format!("cannot download the package lists of {release} from {mirror}"))?;
    let mut index = Index::default();
    let mut found = false;
    for entry in fs::read_dir(root.join("lists"))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("_Packages") {
            let text = fs::read_to_string(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            parse_packages(&text, &mut index);
            found = true;
        }
    }
    if !found {
        bail!("apt-get update found no Packages index for {release} at {mirror}");
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stanzas as Debian 13's Packages index has them (trimmed).
    const PACKAGES: &str = "Package: nut-client
Version: 2.8.1-5
Depends: adduser, lsb-base (>= 3.0-6) | sysvinit-utils, libc6 (>= 2.34)
Description: network UPS tools - clients

Package: libssl3t64
Provides: libssl3 (= 3.5.1-1)
Description: Secure Sockets Layer toolkit - shared libraries

Package: exim4-daemon-light
Provides: mail-transport-agent
Description: lightweight Exim MTA

Package: postfix
Provides: mail-transport-agent
Description: High-performance mail transport agent

Package: procps
Description: /proc file system utilities

Package: dnsutils
Depends: bind9-dnsutils
Description: Transitional package for bind9-dnsutils
 This is a transitional dummy package. It can be safely removed.
";

    #[test]
    fn verdicts_on_a_recorded_index() {
        let mut index = Index::default();
        parse_packages(PACKAGES, &mut index);
        assert_eq!(check("procps", &index), Verdict::Present);
        assert_eq!(
            index.packages["nut-client"].depends,
            ["adduser", "lsb-base", "libc6"]
        );
        assert_eq!(
            check("libssl3", &index),
            Verdict::Renamed {
                to: "libssl3t64".into(),
                how: "libssl3t64 provides libssl3".into()
            }
        );
        assert!(matches!(
            check("dnsutils", &index),
            Verdict::Renamed { to, .. } if to == "bind9-dnsutils"
        ));
        assert!(matches!(
            check("mail-transport-agent", &index),
            Verdict::Missing { note } if note.contains("exim4-daemon-light, postfix")
        ));
        assert!(matches!(check("icedtea", &index), Verdict::Missing { .. }));
    }

    #[test]
    fn the_mirror_comes_from_the_hosts_sources_not_the_security_archive() {
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: http://ftp.fr.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main contrib\n".to_string();
        assert_eq!(
            mirror_and_components(&[deb822]),
            (
                "http://ftp.fr.debian.org/debian".to_string(),
                vec!["main".to_string(), "contrib".to_string()]
            )
        );
        let one_line =
            "# the club\ndeb [arch=amd64] http://mirror.example/debian bookworm main non-free\n"
                .to_string();
        assert_eq!(
            mirror_and_components(&[one_line]).0,
            "http://mirror.example/debian"
        );
        assert_eq!(mirror_and_components(&[]).0, DEFAULT_MIRROR);
    }

    #[test]
    fn a_release_name_is_checked_before_it_reaches_apt() {
        let error = fetch("trixie main\ndeb http://evil", DEFAULT_MIRROR, &[]).unwrap_err();
        assert!(error.to_string().contains("not a release name"));
    }
}
