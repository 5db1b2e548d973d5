//! The line-based three-way merge, for files placard cannot read as settings, and as the
//! yardstick the merge by setting is measured against.
//!
//! It is `diffy`'s merge (the diff3 algorithm git uses). A conflict comes back as text
//! with git-style markers; the caller decides where that text may go — a worktree for
//! the admin, never live /etc.

/// A line-based merge: the text, and how many conflict hunks it holds (0 when clean).
#[derive(Debug, Clone, PartialEq)]
pub struct LineMerge {
    pub text: String,
    pub conflicts: usize,
}

pub fn merge(base: &str, ours: &str, theirs: &str) -> LineMerge {
    let mut options = diffy::MergeOptions::new();
    options.set_conflict_style(diffy::ConflictStyle::Diff3);
    match options.merge(base, ours, theirs) {
        Ok(text) => LineMerge { text, conflicts: 0 },
        Err(text) => {
            let conflicts = text.lines().filter(|l| l.starts_with("<<<<<<<")).count();
            LineMerge { text, conflicts }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separate_changes_merge_and_overlapping_ones_conflict() {
        let clean = merge("a\nb\nc\nd\ne\n", "A\nb\nc\nd\ne\n", "a\nb\nc\nd\nE\n");
        assert_eq!(
            clean,
            LineMerge {
                text: "A\nb\nc\nd\nE\n".into(),
                conflicts: 0
            }
        );
        let conflict = merge("a\nb\nc\n", "a\nB\nc\n", "a\nX\nc\n");
        assert_eq!(conflict.conflicts, 1);
        assert!(conflict.text.contains("<<<<<<<") && conflict.text.contains("|||||||"));
    }
}
