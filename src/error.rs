//! Invalid input: the errors that stop a run before any host is contacted.
//!
//! Every problem found while loading the inventory, the roles and the templates becomes
//! a [`Diagnostic`]: a file, a position when we know one, what is wrong and what to do
//! about it. They are collected (one bad file should not hide the next) and rendered in
//! one place, with the offending line and a caret, the way compilers do. The binary maps
//! [`InvalidInput`] to exit code 3.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::source::{Position, SourceFile};

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
}

impl Diagnostic {
    pub fn new(file: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: file.to_path_buf(),
            position: None,
            line_text: None,
            message: message.into(),
            help: None,
        }
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
        let help = if message.contains("unknown field") {
            Some("remove the key, or check its spelling against the documentation".to_string())
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
        match self.position {
            Some(p) => writeln!(f, "error: {}:{}: {}", self.file.display(), p, self.message)?,
            None => writeln!(f, "error: {}: {}", self.file.display(), self.message)?,
        }
        if let (Some(p), Some(text)) = (self.position, &self.line_text) {
            let gutter = p.line.to_string().len();
            writeln!(f, "{:gutter$} |", "")?;
            writeln!(f, "{} | {}", p.line, text)?;
            writeln!(f, "{:gutter$} | {:>col$}", "", "^", col = p.column)?;
        }
        if let Some(help) = &self.help {
            writeln!(f, "  = help: {help}")?;
        }
        Ok(())
    }
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

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for diagnostic in &self.diagnostics {
            write!(f, "{diagnostic}")?;
        }
        let count = self.diagnostics.len();
        write!(
            f,
            "{count} error{} in the input; no host was contacted",
            if count == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for InvalidInput {}
