//! The gateway's errors: a configuration that cannot be used
//! ([`ConfigError`], one [`Diagnostic`] per problem, each with its place in
//! the file and a fix), and a gateway that cannot start ([`StartError`]).

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// 1-based line of the offending text.
    pub line: usize,
    /// 1-based column (in characters) of the offending text.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

/// A configuration that cannot be used: every problem found, in file order.
///
/// `Display` prints each as `FILE:LINE:COL: what is wrong` followed by a
/// `fix: ...` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the configuration came from.
    pub file: PathBuf,
    /// The problems, sorted by position.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    /// An error with one diagnostic.
    pub(crate) fn one(file: &Path, d: Diagnostic) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            diagnostics: vec![d],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}:{}:{}: {}\nfix: {}",
                self.file.display(),
                d.line,
                d.column,
                d.message,
                d.fix
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Why [`crate::Gateway::start`] failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The verification gate could not be built from the configuration.
    #[error("cannot build the token gate: {0}")]
    Gate(String),
}

/// Byte offset to 1-based (line, column), the column counted in characters.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_to_lines_and_columns() {
        let t = "a = 1\nbé = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 4), (1, 5));
        assert_eq!(line_col(t, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_col(t, 9), (2, 3));
        assert_eq!(line_col(t, 1000), (3, 1));
    }

    #[test]
    fn display_has_place_and_fix() {
        let e = ConfigError::one(
            Path::new("g.toml"),
            Diagnostic {
                line: 3,
                column: 7,
                message: "bad".into(),
                fix: "write good".into(),
            },
        );
        assert_eq!(e.to_string(), "g.toml:3:7: bad\nfix: write good");
    }
}
