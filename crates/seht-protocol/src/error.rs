//! The protocol's error: what is wrong, naming the file (and field or row)
//! and what to do, as the messages `cargo xtask` prints.

/// Errors of the protocol.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file, setting or result that is not what the protocol needs: the
    /// message names it and what to do.
    #[error("{0}")]
    Invalid(String),
    /// A TOML file that does not parse.
    #[error("{0}")]
    Toml(String),
    /// A config that does not read as an experiment config.
    #[error(transparent)]
    Config(#[from] seht_config::Error),
    /// A run record (`metrics.json`, `log.jsonl`) that does not read back.
    #[error(transparent)]
    Record(#[from] seht_records::Error),
    /// An error with what was being done when it happened.
    #[error("{context}: {cause}")]
    Context {
        /// What was being done (or the file and what to do about it).
        context: String,
        /// What went wrong.
        cause: Box<Error>,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<toml::de::Error> for Error {
    fn from(e: toml::de::Error) -> Self {
        Error::Toml(e.to_string())
    }
}

impl From<toml::ser::Error> for Error {
    fn from(e: toml::ser::Error) -> Self {
        Error::Toml(e.to_string())
    }
}

impl From<std::io::Error> for Error {
    /// An I/O error; the context added to it names the file.
    fn from(error: std::io::Error) -> Self {
        Error::Invalid(error.to_string())
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(e: std::num::ParseIntError) -> Self {
        Error::Invalid(e.to_string())
    }
}

impl From<std::fmt::Error> for Error {
    fn from(e: std::fmt::Error) -> Self {
        Error::Invalid(e.to_string())
    }
}

/// Adds what was being done to an error, or turns a `None` into one.
pub trait Context<T> {
    /// With a fixed context.
    fn context(self, context: impl std::fmt::Display) -> Result<T>;
    /// With a context made only on failure.
    fn with_context<C: std::fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error::Context { context: context.to_string(), cause: Box::new(e.into()) })
    }

    fn with_context<C: std::fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| Error::Context { context: context().to_string(), cause: Box::new(e.into()) })
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, context: impl std::fmt::Display) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(context.to_string()))
    }

    fn with_context<C: std::fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.ok_or_else(|| Error::Invalid(context().to_string()))
    }
}

/// Returns an [`Error::Invalid`] with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::Invalid(format!($($arg)*)))
    };
}

/// Returns an [`Error::Invalid`] unless the condition holds.
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::error::Error::Invalid(format!($($arg)*)));
        }
    };
}

pub(crate) use {bail, ensure};
