//! Source positions for YAML documents.
//!
//! serde_yaml gives a position for errors it finds itself (syntax, unknown keys, wrong
//! types), but once a document is deserialized the positions are gone. This module keeps
//! a second, cheap index of the same text — every key and value by its path, such as
//! `tasks[3].file.mode` — so that errors found later (a missing variable in a template,
//! an invalid mode) can still point at `file:line:col`. Rendering the diagnostic itself
//! is left to [`crate::error`].
//!
//! The index is also where two problems serde cannot see well are caught, before serde
//! runs: a key given twice in one mapping (serde keeps the last, or points at the
//! first), and nesting so deep that recursive parsers would spend seconds or the stack
//! on it. See [`SourceFile::check_structure`].

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// The deepest nesting of mappings and lists a YAML file may have. Real inventories and
/// roles stay under 10; the bound keeps the index and serde linear in the file's size.
pub const MAX_YAML_DEPTH: usize = 128;

/// A position in a source file, 1-based line and column, as editors show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// A YAML file's text with the positions of its keys and values.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
    positions: HashMap<String, Position>,
    /// Duplicate keys, excessive nesting and extra documents, found while indexing.
    problems: Vec<StructureProblem>,
    first_alias: Option<Position>,
    /// Where each line starts, in bytes: a file with thousands of problems gets each
    /// line for its caret without reading the file from the top each time.
    line_starts: Vec<usize>,
}

/// A problem in the shape of a YAML document, found by the index rather than by serde.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StructureProblem {
    /// `key` appears twice in the mapping at `path`: at `first`, then at `second`.
    DuplicateKey {
        path: String,
        key: String,
        first: Position,
        second: Position,
    },
    /// A mapping or list opened at `position` is nested deeper than [`MAX_YAML_DEPTH`].
    TooDeep { position: Position },
    /// A second YAML document starts at `position`.
    SecondDocument { position: Position },
}

impl SourceFile {
    /// Indexes `text`. A document the index cannot parse still loads: serde_yaml reports
    /// the syntax error with its own position, which is the better message.
    pub fn new(path: &Path, text: String) -> SourceFile {
        let mut index = Indexer::default();
        let mut parser = Parser::new_from_str(&text);
        // Events are pulled one by one rather than with `Parser::load`, which recurses
        // once per level of nesting: a deep document must stop here, not overflow.
        loop {
            match parser.next_token() {
                Ok((Event::StreamEnd, _)) => break,
                Ok((Event::DocumentEnd, _)) => {
                    // Our files are one document; serde_yaml refuses more without saying
                    // where the second one starts.
                    if let Ok((Event::DocumentStart, marker)) = parser.next_token() {
                        index.problems.push(StructureProblem::SecondDocument {
                            position: position(marker),
                        });
                    }
                    break;
                }
                // The scanner looks ahead for keys through flow collections and gives up
                // past 255 levels, before any event of them reaches the index; that is
                // too deep all the same. Other syntax errors are serde_yaml's to report.
                Err(error) => {
                    if error.info().contains("recursion limit") {
                        index.problems.push(StructureProblem::TooDeep {
                            position: position(*error.marker()),
                        });
                    }
                    break;
                }
                Ok((event, marker)) => {
                    if !index.on_event(event, marker) {
                        break;
                    }
                }
            }
        }
        SourceFile {
            path: path.to_path_buf(),
            positions: index.positions,
            problems: index.problems,
            first_alias: index.first_alias,
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(at, _)| at + 1))
                .filter(|start| *start < text.len())
                .collect(),
            text,
        }
    }

    /// Where the first alias (`*name`) is: serde_yaml's "repetition limit exceeded",
    /// for aliases that expand exponentially, comes without a position.
    pub fn first_alias(&self) -> Option<Position> {
        self.first_alias
    }

    /// Duplicate keys, excessive nesting and extra documents found while indexing
    /// (turned into diagnostics by [`SourceFile::check_structure`], in [`crate::error`]).
    pub fn problems(&self) -> &[StructureProblem] {
        &self.problems
    }

    /// The position of the value at `path`; for a path that is absent (a field that
    /// should be there), the key of its nearest ancestor, so that the error points at
    /// the mapping the field belongs in.
    pub fn position(&self, path: &str) -> Option<Position> {
        let mut path = path.to_string();
        loop {
            // A scalar's own position; for a mapping or list, the key that introduces it.
            let found = [
                path.clone(),
                format!("{path}#key"),
                format!("{path}#collection"),
            ]
            .into_iter()
            .find_map(|p| self.positions.get(&p).copied());
            if found.is_some() {
                return found;
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }

    /// The position of the key at `path` (for unknown or duplicate keys), falling back to
    /// the value's position.
    pub fn key_position(&self, path: &str) -> Option<Position> {
        self.positions
            .get(&format!("{path}#key"))
            .copied()
            .or_else(|| self.position(path))
    }

    /// The text of a 1-based line, for the caret display.
    pub fn line_text(&self, line: usize) -> Option<&str> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let rest = &self.text[start..];
        let line = rest.split('\n').next().unwrap_or_default();
        Some(line.strip_suffix('\r').unwrap_or(line))
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

fn position(marker: Marker) -> Position {
    Position {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

/// Walks the parser's events, keeping a stack of where we are in the document.
#[derive(Default)]
struct Indexer {
    positions: HashMap<String, Position>,
    stack: Vec<Frame>,
    problems: Vec<StructureProblem>,
    first_alias: Option<Position>,
}

enum Frame {
    /// In a mapping: the path of the mapping and the key whose value comes next, if any,
    /// and the keys seen so far with their positions, to find duplicates.
    Mapping {
        path: String,
        pending_key: Option<String>,
        keys: HashMap<String, Position>,
    },
    /// In a sequence: the path of the sequence and the index of the next item.
    Sequence { path: String, next: usize },
}

impl Indexer {
    /// The path of the node that starts now, or None when the node is a mapping key.
    fn node_path(&mut self) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Sequence { path, next }) => {
                let here = format!("{path}[{next}]");
                *next += 1;
                Some(here)
            }
            Some(Frame::Mapping {
                path, pending_key, ..
            }) => pending_key.take().map(|key| {
                if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                }
            }),
        }
    }
}

impl Indexer {
    /// Records one event; false when indexing must stop (the document is too deep).
    fn on_event(&mut self, event: Event, marker: Marker) -> bool {
        match event {
            Event::Scalar(value, ..) => match self.node_path() {
                Some(path) => {
                    self.positions.insert(path, position(marker));
                }
                None => {
                    if let Some(Frame::Mapping {
                        path,
                        pending_key,
                        keys,
                    }) = self.stack.last_mut()
                    {
                        let key_path = if path.is_empty() {
                            value.clone()
                        } else {
                            format!("{path}.{value}")
                        };
                        let here = position(marker);
                        match keys.get(&value) {
                            // The first occurrence keeps its position: later lookups of
                            // the key point where a reader finds it first.
                            Some(first) => self.problems.push(StructureProblem::DuplicateKey {
                                path: path.clone(),
                                key: value.clone(),
                                first: *first,
                                second: here,
                            }),
                            None => {
                                keys.insert(value.clone(), here);
                                self.positions.insert(format!("{key_path}#key"), here);
                            }
                        }
                        *pending_key = Some(value);
                    }
                }
            },
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                if self.stack.len() >= MAX_YAML_DEPTH {
                    self.problems.push(StructureProblem::TooDeep {
                        position: position(marker),
                    });
                    return false;
                }
                // A collection used as a mapping key is not something our files do.
                let path = self.node_path().unwrap_or_default();
                // Only scalars are recorded under their bare path: a collection's marker
                // is where the parser noticed it, which is not where a reader looks.
                self.positions
                    .insert(format!("{path}#collection"), position(marker));
                self.stack.push(match event {
                    Event::MappingStart(..) => Frame::Mapping {
                        path,
                        pending_key: None,
                        keys: HashMap::new(),
                    },
                    _ => Frame::Sequence { path, next: 0 },
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                self.first_alias.get_or_insert(position(marker));
                if let Some(path) = self.node_path() {
                    self.positions.insert(path, position(marker));
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_nested_paths_with_one_based_positions() {
        let text = "hosts:\n  web:\n    port: 22\n    roles: [base, mail]\n".to_string();
        let source = SourceFile::new(Path::new("inventory.yml"), text);
        assert_eq!(
            source.position("hosts.web.port"),
            Some(Position {
                line: 3,
                column: 11
            })
        );
        assert_eq!(
            source.key_position("hosts.web.port"),
            Some(Position { line: 3, column: 5 })
        );
        assert_eq!(
            source.position("hosts.web.roles[1]"),
            Some(Position {
                line: 4,
                column: 19
            })
        );
    }

    #[test]
    fn a_duplicate_key_is_found_at_the_duplicate() {
        let text = "hosts:\n  web: {port: 22}\n  db: {}\n  web: {port: 2222}\n".to_string();
        let source = SourceFile::new(Path::new("inventory.yml"), text);
        assert_eq!(
            source.problems,
            [StructureProblem::DuplicateKey {
                path: "hosts".into(),
                key: "web".into(),
                first: Position { line: 2, column: 3 },
                second: Position { line: 4, column: 3 },
            }]
        );
        // Positions stay those of the first occurrence, which serde_yaml would not keep.
        assert_eq!(
            source.key_position("hosts.web"),
            Some(Position { line: 2, column: 3 })
        );
        // The same key in two mappings is no duplicate.
        let text = "a: {x: 1}\nb: {x: 1}\nc: [{x: 1}, {x: 2}]\n".to_string();
        assert!(SourceFile::new(Path::new("r.yml"), text)
            .check_structure()
            .is_ok());
    }

    #[test]
    fn deep_nesting_stops_the_index_quickly() {
        // Issue 14: a 100,000-deep list took 45 s to be refused.
        let started = std::time::Instant::now();
        for text in [
            format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)),
            format!("a:\n  {}x\n", "- ".repeat(100_000)),
        ] {
            let source = SourceFile::new(Path::new("deep.yml"), text);
            assert!(
                matches!(source.problems[..], [StructureProblem::TooDeep { position }] if position.line <= 2),
                "{:?}",
                source.problems
            );
            assert!(source.check_structure().is_err());
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let depth = MAX_YAML_DEPTH - 1;
        let fits = format!("a: {}{}\n", "[".repeat(depth), "]".repeat(depth));
        assert!(SourceFile::new(Path::new("ok.yml"), fits)
            .check_structure()
            .is_ok());
    }

    #[test]
    fn falls_back_to_the_nearest_ancestor() {
        let text = "tasks:\n  - name: Install.\n    file:\n      path: /etc/x\n".to_string();
        let source = SourceFile::new(Path::new("r.yml"), text);
        assert_eq!(
            source.position("tasks[0].file.mode"),
            Some(Position { line: 3, column: 5 }),
            "the `file:` key"
        );
        assert_eq!(
            source.position("tasks[0].file.path"),
            Some(Position {
                line: 4,
                column: 13
            })
        );
    }
}
