//! The errors of reading and checking a config.

use std::path::PathBuf;

/// A config that cannot be read, or a value in it that is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config file could not be parsed (unknown field, wrong type, …).
    #[error("{path}: {message}")]
    ConfigParse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the field and line).
        message: String,
    },
    /// A config value is invalid.
    #[error("{}config field `{field}` = {value}: {reason}", in_file(.path.as_deref()))]
    Config {
        /// The config file, when the value was read from one.
        path: Option<PathBuf>,
        /// The field, dotted (e.g. `regularizer.p`).
        field: String,
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A config file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An invalid value of the dotted field `field`.
pub fn config(field: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Config { path: None, field: field.into(), value: value.to_string(), reason: reason.into() }
}

/// `"<path>: "` for a message that names its file, else nothing.
fn in_file(path: Option<&std::path::Path>) -> String {
    path.map(|p| format!("{}: ", p.display())).unwrap_or_default()
}

impl Error {
    /// The error with the config file it was read from, where it names a
    /// config field but no file yet.
    pub fn in_config_file(self, file: &std::path::Path) -> Self {
        match self {
            Error::Config { path: None, field, value, reason } => {
                Error::Config { path: Some(file.to_path_buf()), field, value, reason }
            }
            e => e,
        }
    }
}
