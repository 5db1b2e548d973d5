//! The message of the merge commit of `etc upgrade`: a summary line, then what the admin
//! reads in `git log` of /etc: the files merged, the site values kept over Debian's new
//! defaults, the settings translated by rule, the dropped conffiles, and the conflicts.

use super::UpgradeReport;

/// The summary and body of the merge commit, from the report of the merge (`base` and
/// `tip`: the distro commits of the two releases).
pub fn merge_commit(report: &UpgradeReport, base: &str, tip: &str) -> (String, String) {
    let mut body = format!(
        "Debian {} → {}: the distro's changes merged into the locally modified files\n(base: distro {}, theirs: distro {}).\n",
        report.from,
        report.to,
        short(base),
        short(tip)
    );
    if !report.merged.is_empty() {
        body.push_str("\nMerged:\n");
        body.push_str(&list(
            report
                .merged
                .iter()
                .map(|m| m.path.clone())
                .collect::<Vec<_>>()
                .as_slice(),
        ));
        body.push('\n');
    }
    let notices: Vec<String> = report
        .merged
        .iter()
        .flat_map(|m| {
            m.notices
                .iter()
                .map(move |n| format!("{}: {}", m.path, n.message))
        })
        .collect();
    if !notices.is_empty() {
        body.push_str("\nSite values kept over Debian's new defaults:\n");
        body.push_str(&list(&notices));
        body.push('\n');
    }
    let translations: Vec<String> = report
        .merged
        .iter()
        .flat_map(|m| {
            m.translations
                .iter()
                .map(move |t| format!("{}: {}", m.path, t.message))
        })
        .collect();
    if !translations.is_empty() {
        body.push_str("\nRenamed settings translated by rule:\n");
        body.push_str(&list(&translations));
        body.push('\n');
    }
    let moved: Vec<String> = report
        .moved
        .iter()
        .map(|m| format!("{} → {} ({})", m.path, m.successor, m.settings.join(", ")))
        .chain(
            report
                .kept
                .iter()
                .map(|k| format!("{}: kept as it was: {}", k.path, k.reason)),
        )
        .collect();
    if !moved.is_empty() {
        body.push_str("\nConffiles the new release dropped:\n");
        body.push_str(&list(&moved));
        body.push('\n');
    }
    if !report.still_invalid.is_empty() {
        body.push_str("\nStill invalid:\n");
        let lines: Vec<String> = report.still_invalid.iter().map(|s| s.line()).collect();
        body.push_str(&list(&lines));
        body.push('\n');
    }
    if !report.conflicts.is_empty() {
        body.push_str(&format!(
            "\nConflicts, left with markers in {} (live files kept):\n",
            report.worktree
        ));
        body.push_str(&list(
            report
                .conflicts
                .iter()
                .map(|c| c.path.clone())
                .collect::<Vec<_>>()
                .as_slice(),
        ));
        body.push('\n');
    }
    let summary = format!(
        "placard etc upgrade: merged Debian {}'s conffiles ({} merged, {} in conflict)",
        report.to,
        report.merged.len(),
        report.conflicts.len()
    );
    (summary, body.trim_end().to_string())
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Paths (or lines), one per line, indented: a commit body's list.
pub fn list(files: &[String]) -> String {
    files
        .iter()
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}
