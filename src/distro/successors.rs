//! Conffiles a release dropped, and where their function went: a small documented
//! table, and the pure logic that moves the site's settings there.
//!
//! The rule (issue 13, item 1): no setting the site made leaves the live system unless
//! a human says so. When a new release no longer ships a conffile the site changed,
//! dpkg moves the site's file aside (`.dpkg-bak`) and nothing reads it any more. Where
//! the release moved the file's function to another place, the site's settings are
//! replayed there (merged by setting, as any settings file), and the report names the
//! move. Where the table knows no successor, the site's file is put back at its path,
//! as it was, and listed for the admin.
//!
//! | dropped file (under /etc) | successor | source |
//! |---|---|---|
//! | `sysctl.conf` | `sysctl.d/99-site.conf` | Debian 13 release notes, "/etc/sysctl.conf is no longer honored"; procps 2:4.0.4-8 |
//!
//! Why 99: on Debian 12, systemd read sysctl.conf through the link
//! `/etc/sysctl.d/99-sysctl.conf`, after every package's file in /usr/lib/sysctl.d
//! (50-default.conf, 50-pid-max.conf…) and every other file named below 99, since
//! systemd-sysctl applies files in the lexical order of their names. `99-site.conf`
//! keeps the site's settings in that place, so they still win over the packages'
//! defaults as they did.

use crate::merge;

/// A conffile a release dropped, and the file that now does its job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Successor {
    /// The dropped conffile, relative to /etc.
    pub path: &'static str,
    /// Where its settings go, relative to /etc.
    pub successor: &'static str,
    pub source: &'static str,
}

pub const SUCCESSORS: &[Successor] = &[Successor {
    path: "sysctl.conf",
    successor: "sysctl.d/99-site.conf",
    source: "Debian 13 release notes (issues for trixie: /etc/sysctl.conf is no longer read; use /etc/sysctl.d/*.conf); 99 keeps the place Debian 12's /etc/sysctl.d/99-sysctl.conf link gave it",
}];

/// The table's entry for a dropped conffile.
pub fn lookup(path: &str) -> Option<&'static Successor> {
    SUCCESSORS.iter().find(|s| s.path == path)
}

/// The successor's new content: the site's changes to the dropped file (`base` →
/// `ours`) replayed onto the successor as it is (`existing`, or a header naming where
/// the settings came from). `None` when the file is not one placard merges by setting,
/// or the merge is not clean: then the dropped file is kept for the admin.
pub fn moved_text(
    successor: &Successor,
    base: &str,
    ours: &str,
    existing: Option<&str>,
) -> Option<merge::Merged> {
    let header = format!(
        "# The site's settings from /etc/{}, which the new release no longer ships or reads;\n# moved here by placard etc upgrade ({}).\n",
        successor.path, successor.source
    );
    let theirs = existing.map_or(header, str::to_string);
    // Merged under the successor's name: its syntax decides.
    let merged = merge::merge(successor.successor, base, ours, Some(&theirs));
    (matches!(merged.method, merge::Method::Settings(_)) && merged.is_clean()).then_some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_conf_moves_to_sysctl_d_with_only_the_sites_settings() {
        let successor = lookup("sysctl.conf").expect("in the table");
        assert_eq!(successor.successor, "sysctl.d/99-site.conf");
        let base = "# /etc/sysctl.conf\n#kernel.printk = 3 4 1 3\n#net.ipv4.ip_forward=1\n";
        let ours = "# /etc/sysctl.conf\n#kernel.printk = 3 4 1 3\nnet.ipv4.ip_forward=1\n# less swapping\nvm.swappiness = 10\n";
        let merged = moved_text(successor, base, ours, None).expect("a clean move");
        assert!(merged
            .text
            .starts_with("# The site's settings from /etc/sysctl.conf"));
        assert!(merged.text.contains("\nnet.ipv4.ip_forward=1\n"));
        assert!(merged
            .text
            .contains("\n# less swapping\nvm.swappiness = 10\n"));
        assert!(!merged.text.contains("kernel.printk"), "{}", merged.text);
        assert_eq!(merged.replayed.len(), 2);
        // A successor the site already has keeps its own lines.
        let existing = "fs.file-max = 100000\n";
        let merged = moved_text(successor, base, ours, Some(existing)).expect("clean");
        assert!(merged.text.starts_with(existing));
        assert!(merged.text.contains("vm.swappiness = 10\n"));
    }

    #[test]
    fn a_file_without_a_successor_is_not_in_the_table() {
        assert!(lookup("network/ip-down.d/postfix").is_none());
    }
}
