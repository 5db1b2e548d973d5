//! Unified diffs of file content, for `--diff` and `plan`: pure text, used by the
//! resources, distro and the report alike.

use similar::TextDiff;

/// A unified diff between the old and new content of `path` (None: the file is absent).
pub fn unified(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> String {
    let old_text = old.map(String::from_utf8_lossy).unwrap_or_default();
    let new_text = new.map(String::from_utf8_lossy).unwrap_or_default();
    if old.is_some_and(is_binary) || new.is_some_and(is_binary) {
        return format!("--- {path}\n+++ {path}\nbinary content differs\n");
    }
    let old_header = if old.is_some() {
        path.to_string()
    } else {
        "/dev/null".to_string()
    };
    let new_header = if new.is_some() {
        path.to_string()
    } else {
        "/dev/null".to_string()
    };
    TextDiff::from_lines(old_text.as_ref(), new_text.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&old_header, &new_header)
        .to_string()
}

/// What stands for the diff of a file whose content holds a secret.
pub fn hidden(path: &str) -> String {
    format!("--- {path}\n+++ {path}\n(content holds a secret; diff hidden)\n")
}

fn is_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8000).any(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_lines_with_context() {
        let diff = unified("/etc/motd", Some(b"one\ntwo\n"), Some(b"one\nthree\n"));
        assert_eq!(
            diff,
            "--- /etc/motd\n+++ /etc/motd\n@@ -1,2 +1,2 @@\n one\n-two\n+three\n"
        );
    }

    #[test]
    fn a_new_file_comes_from_dev_null() {
        assert!(unified("/etc/x", None, Some(b"a\n")).starts_with("--- /dev/null\n+++ /etc/x\n"));
    }
}
