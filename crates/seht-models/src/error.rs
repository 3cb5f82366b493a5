//! The crate's error type.

/// Errors of model construction and evaluation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from seht-candle.
    #[error(transparent)]
    Seht(#[from] seht_candle::Error),
    /// A configuration field has an invalid value.
    #[error("invalid model config: {field} = {value}: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Its value, printed.
        value: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A variable in the `VarMap` that the model did not declare (e.g. a
    /// `VarMap` shared between models).
    #[error("variable `{0}` in the VarMap was not created by this model")]
    UndeclaredVariable(String),
    /// A variable the model declared is missing from the `VarMap`.
    #[error("variable `{0}` declared by the model is missing from the VarMap")]
    MissingVariable(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn invalid(field: &'static str, value: impl std::fmt::Display, reason: &'static str) -> Error {
    Error::InvalidConfig { field, value: value.to_string(), reason }
}
