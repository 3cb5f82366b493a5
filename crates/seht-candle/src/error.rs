//! The crate's error type.

/// Errors of the candle backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An error from candle itself.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// An error from the estimator crate (invalid configuration, …).
    #[error(transparent)]
    Estimator(#[from] seht_estimator::Error),
    /// Second derivatives came out missing or wrong in the self-check, so any
    /// Hessian-vector product would be silently wrong.
    #[error(
        "higher-order autodiff does not work on this thread ({detail}): a backward pass \
         lost the graph of its gradients; the candle in use must keep it under \
         seht_candle::backward_create_graph (this workspace's patch, vendor/candle-core)"
    )]
    HigherOrderDisabled {
        /// What the self-check observed.
        detail: String,
    },
    /// The loss handed to the operator is not a scalar.
    #[error("the loss must be a scalar (rank 0 or one element), got shape {0:?}")]
    NonScalarLoss(candle_core::Shape),
    /// A selection picked no parameter.
    #[error("no parameter selected ({0}): the Hessian over an empty set has no trace")]
    NoParameters(String),
    /// A selection named a parameter that does not exist.
    #[error("unknown parameter `{0}` in selection")]
    UnknownParameter(String),
    /// A selection named a buffer (e.g. BatchNorm running statistics).
    #[error("`{0}` is a buffer (e.g. BatchNorm running statistics), not a trainable parameter")]
    BufferSelected(String),
    /// A parameter has an integer dtype.
    #[error("parameter `{name}` has dtype {dtype:?}; Hessians need a floating-point dtype")]
    NonFloatParameter {
        /// Parameter name.
        name: String,
        /// Its dtype.
        dtype: candle_core::DType,
    },
    /// A penalty setting is out of range.
    #[error("penalty: {field} = {value} {reason}")]
    InvalidPenalty {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        reason: &'static str,
    },
    /// Invalid arguments to one of the building blocks in [`crate::ops`].
    #[error("{op}: {message}")]
    InvalidOp {
        /// The operation.
        op: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A replayed activation pattern does not fit the pass that replays it
    /// (see [`crate::pattern`]).
    #[error("activation pattern replay failed at {op}: {detail}")]
    PatternMismatch {
        /// The op that found the mismatch.
        op: &'static str,
        /// What did not match.
        detail: String,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
