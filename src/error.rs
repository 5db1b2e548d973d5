//! Invalid input: the errors that stop a run before any host is contacted.
//!
//! Every problem found while loading the inventory, the roles and the templates becomes
//! a [`Diagnostic`]: a file, a position when we know one, what is wrong and what to do
//! about it. They are collected (one bad file should not hide the next) and rendered in
//! one place, with the offending line and a caret, the way compilers do. The binary maps
//! [`InvalidInput`] to exit code 3.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::source::{Position, SourceFile, StructureProblem, MAX_YAML_DEPTH};

/// One problem in one input file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub position: Option<Position>,
    /// The offending line, for the caret display.
    pub line_text: Option<String>,
    pub message: String,
    /// What the admin can do about it.
    pub help: Option<String>,
    /// A warning does not stop the run: input that still works but should change.
    pub warning: bool,
}

impl Diagnostic {
    pub fn new(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            position: None,
            line_text: None,
            message: message.into(),
            help: None,
            warning: false,
        }
    }

    /// The same, as a warning: printed, but the run goes on.
    pub fn warning(mut self) -> Diagnostic {
        self.warning = true;
        self
    }

    /// A diagnostic at the value found at `path` in `source` (see [`SourceFile::position`]).
    pub fn at(source: &SourceFile, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&source.path, message).with_position(source, source.position(path))
    }

    /// A diagnostic at the key found at `path`: for unknown or misplaced keys.
    pub fn at_key(source: &SourceFile, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&source.path, message).with_position(source, source.key_position(path))
    }

    pub fn with_position(mut self, source: &SourceFile, position: Option<Position>) -> Diagnostic {
        self.position = position;
        self.line_text = position
            .and_then(|p| source.line_text(p.line))
            .map(str::to_string);
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// A serde_yaml error, which carries its own position when it has one.
    pub fn from_yaml(source: &SourceFile, error: &serde_yaml::Error) -> Diagnostic {
        let position = error.location().map(|l| Position {
            line: l.line(),
            column: l.column(),
        });
        // serde_yaml appends " at line N column M" to its messages; we show the position ourselves.
        let message = error.to_string();
        let message = match message.find(" at line ") {
            Some(cut) => message[..cut].to_string(),
            None => message,
        };
        let mut position = position;
        let help = if message.contains("unknown field") {
            Some("remove the key, or check its spelling against the documentation".to_string())
        } else if message.contains("repetition limit exceeded") {
            // Aliases of aliases: a few lines that would expand to gigabytes.
            position = position.or(source.first_alias());
            Some(
                "the aliases (`*name`) here expand to too many values; write the values out"
                    .to_string(),
            )
        } else {
            None
        };
        let mut diagnostic = Diagnostic::new(&source.path, message).with_position(source, position);
        diagnostic.help = help;
        diagnostic
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Messages quote the admin's values, which may be a megabyte long.
        let message = shorten(&self.message, MESSAGE_WIDTH);
        let level = if self.warning { "warning" } else { "error" };
        match self.position {
            Some(p) => writeln!(f, "{level}: {}:{}: {}", self.file.display(), p, message)?,
            None => writeln!(f, "{level}: {}: {}", self.file.display(), message)?,
        }
        if let (Some(p), Some(text)) = (self.position, &self.line_text) {
            let gutter = p.line.to_string().len();
            let (shown, offset) = line_window(text, p.column);
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", p.line, shown)?;
            // The caret is padded by hand: a formatting width past 65,535 panics.
            writeln!(f, "{:gutter$} | {}^", "", " ".repeat(offset))?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
}

/// The longest message shown whole; longer ones keep their start and end.
const MESSAGE_WIDTH: usize = 400;

fn shorten(text: &str, width: usize) -> std::borrow::Cow<'_, str> {
    let length = text.chars().count();
    if length <= width {
        return text.into();
    }
    let half = width / 2;
    let start: String = text.chars().take(half).collect();
    let end: String = text.chars().skip(length - half).collect();
    format!(
        "{start} … ({} characters left out) … {end}",
        length - 2 * half
    )
    .into()
}

/// The widest line shown whole under a diagnostic; longer lines are cut around the column.
const LINE_WINDOW: usize = 100;

/// The part of `line` to show for a caret at 1-based `column` (in characters), and the
/// caret's offset in it. A long line is cut to a window around the column, marked with
/// `…` where text was left out, so that a megabyte-long line still gives a short message.
fn line_window(line: &str, column: usize) -> (String, usize) {
    let length = line.chars().count();
    // Past the end means the end: the parser points there for a missing closing bracket.
    let target = column.saturating_sub(1).min(length);
    if length <= LINE_WINDOW {
        return (line.to_string(), target);
    }
    let start = target.saturating_sub(LINE_WINDOW / 2);
    let end = (start + LINE_WINDOW).min(length);
    let start = end.saturating_sub(LINE_WINDOW).min(start);
    let mut shown = String::new();
    if start > 0 {
        shown.push('…');
    }
    shown.extend(line.chars().skip(start).take(end - start));
    if end < length {
        shown.push('…');
    }
    (shown, target - start + usize::from(start > 0))
}

/// Everything wrong with the input, found before any host was contacted.
#[derive(Debug, Clone, Default)]
pub struct InvalidInput {
    pub diagnostics: Vec<Diagnostic>,
}

impl InvalidInput {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// Ok when nothing was found, so callers can end a validation pass with `?`.
    pub fn into_result(self) -> Result<(), InvalidInput> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl From<Diagnostic> for InvalidInput {
    fn from(diagnostic: Diagnostic) -> InvalidInput {
        InvalidInput {
            diagnostics: vec![diagnostic],
        }
    }
}

/// The most diagnostics shown; past that, a file repeating one mistake a thousand times
/// would bury the others.
const SHOWN_DIAGNOSTICS: usize = 50;

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in self.diagnostics.iter().take(SHOWN_DIAGNOSTICS) {
            write!(f, "{diagnostic}")?;
        }
        let count = self.diagnostics.len();
        if count > SHOWN_DIAGNOSTICS {
            writeln!(f, "… and {} more", count - SHOWN_DIAGNOSTICS)?;
        }
        write!(
            f,
            "{count} error{} in the input; no host was contacted",
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for InvalidInput {}

/// The structure problems of a source, as diagnostics: here rather than in
/// [`crate::source`], which only finds them, so that the source index does not depend
/// on its renderer.
impl SourceFile {
    /// Duplicate keys, excessive nesting and extra documents, as diagnostics. Loaders
    /// call it before serde, which keeps a duplicate's last value silently (or reports
    /// the first occurrence), takes quadratic time on deep flow nesting (libyaml's
    /// simple keys: 45 s for 100,000 levels), and does not say where a second document
    /// starts.
    pub fn check_structure(&self) -> Result<(), InvalidInput> {
        let mut problems = InvalidInput::default();
        for problem in self.problems() {
            problems.push(match problem {
                StructureProblem::DuplicateKey {
                    path,
                    key,
                    first,
                    second,
                } => {
                    let place = if path.is_empty() {
                        "at the top level".to_string()
                    } else {
                        format!("in `{path}`")
                    };
                    Diagnostic::new(
                        &self.path,
                        format!("`{key}` is given twice {place} (first at {first})"),
                    )
                    .with_position(self, Some(*second))
                    .help("keep one of them: YAML would silently use only one")
                }
                StructureProblem::TooDeep { position } => Diagnostic::new(
                    &self.path,
                    format!("mappings and lists are nested more than {MAX_YAML_DEPTH} levels deep"),
                )
                .with_position(self, Some(*position))
                .help("flatten the structure; no inventory or role needs this depth"),
                StructureProblem::SecondDocument { position } => Diagnostic::new(
                    &self.path,
                    "a second YAML document starts here; the file must hold one",
                )
                .with_position(self, Some(*position))
                .help("remove this `---` line, or merge what follows it into the first document"),
            });
        }
        problems.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_diagnostic_shows_the_line_and_a_caret() {
        let source = SourceFile::new(
            Path::new("inventory/club.yml"),
            "hosts:\n  cupboard:\n    port: 22\n    vars: {mail_domain: not a domain}\n"
                .to_string(),
        );
        let diagnostic = Diagnostic::at(
            &source,
            "hosts.cupboard.vars.mail_domain",
            "variable `mail_domain` (role mail): \"not a domain\" is not a domain name",
        )
        .help("`mail_domain`: the domain the club's addresses end in");
        let invalid = InvalidInput::from(diagnostic);
        insta::assert_snapshot!(invalid.to_string());
    }

    #[test]
    fn a_caret_past_column_65535_shows_a_window_of_the_line() {
        // Issue 14: `{:>width$}` panics past u16::MAX; a long line must still render.
        let line = format!("vars: {{note: {}x}}", "a".repeat(200_000));
        let source = SourceFile::new(Path::new("inventory.yml"), format!("{line}\n"));
        let column = line.len() - 1;
        let diagnostic = Diagnostic::new(Path::new("inventory.yml"), "something is wrong")
            .with_position(&source, Some(Position { line: 1, column }));
        let text = diagnostic.to_string();
        assert!(
            text.contains(&format!("inventory.yml:1:{column}:")),
            "{text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let (shown, caret) = (lines[2], lines[3]);
        assert!(shown.len() < 300 && caret.len() < 300, "{text}");
        let caret_at = caret.chars().count() - 1;
        assert_eq!(shown.chars().nth(caret_at), Some('x'), "{text}");
        assert!(shown.contains('…'), "{text}");
        let quoted = Diagnostic::new(
            Path::new("inventory.yml"),
            format!("\"{}\" is not a port number", "9".repeat(100_000)),
        )
        .to_string();
        assert!(quoted.len() < 600, "{quoted}");
        assert!(quoted.ends_with("is not a port number\n"), "{quoted}");
    }

    #[test]
    fn a_caret_fits_any_column_and_line() {
        for (line, column) in [
            ("", 0),
            ("", 5),
            ("short", 1),
            ("short", 6),
            ("short", usize::MAX),
            ("ééééé", 3),
        ] {
            let (shown, offset) = line_window(line, column);
            assert!(offset <= shown.chars().count(), "{line:?} {column}");
        }
        let long = "é".repeat(1_000);
        for column in [0, 1, 50, 51, 500, 999, 1_000, 1_001, usize::MAX] {
            let (shown, offset) = line_window(&long, column);
            assert!(shown.chars().count() <= LINE_WINDOW + 2, "{column}");
            assert!(offset <= shown.chars().count(), "{column}");
        }
    }
}
