//! The crate's error type.

/// Everything that can go wrong when configuring or running an estimator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A probability parameter lies outside the range its role allows.
    #[error("{name} = {value} is outside {range}")]
    InvalidProbability {
        /// Which parameter (e.g. `"p"` of `Q(p)`, `"p1"` of the layer draw).
        name: &'static str,
        /// The value that was given.
        value: f64,
        /// The allowed range, written out (e.g. `"(0, 1/2]"`).
        range: &'static str,
    },
    /// A count that must be positive (probes, sketch size) was zero.
    #[error("{name} must be at least 1, got 0")]
    ZeroCount {
        /// Which count.
        name: &'static str,
    },
    /// Hutch++ needs at least three matrix-vector products.
    #[error("Hutch++ needs a budget of at least 3 Hessian-vector products, got {0}")]
    HutchPlusPlusBudget(usize),
    /// The operator exposes no parameter blocks, so there is nothing to estimate.
    #[error("the operator has no parameter blocks: nothing to estimate a trace over")]
    EmptyBlockSet,
    /// A vector handed to an operator does not fit its blocks.
    #[error("dimension mismatch in {context}: expected {expected}, got {actual}")]
    DimensionMismatch {
        /// Where the mismatch was found.
        context: String,
        /// The expected length.
        expected: usize,
        /// The length that was found.
        actual: usize,
    },
    /// A matrix that must be symmetric is not.
    #[error("matrix is not symmetric: a[{row},{col}] differs from a[{col},{row}]")]
    NotSymmetric {
        /// Row of the offending entry.
        row: usize,
        /// Column of the offending entry.
        col: usize,
    },
    /// A numeric parameter is outside its allowed range.
    #[error("{name} = {value}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// The value that was given.
        value: f64,
        /// What it must satisfy.
        reason: String,
    },
    /// A product or a derived quantity is NaN or infinite.
    #[error("non-finite value in {context} (NaN or infinity in a Hessian-vector product?)")]
    NonFinite {
        /// Where it was found.
        context: String,
    },
    /// An estimator has no probe plan (Hutch++: its residual probes depend on
    /// products already taken), so a path that needs one cannot run it.
    #[error("{estimator} has no probe plan drawn in advance ({why}); use SEHT-H, SEHT-D or Hutchinson")]
    NoProbePlan {
        /// The estimator.
        estimator: &'static str,
        /// Why it has none.
        why: &'static str,
    },
    /// A count is below the least value an estimator can work with (XTrace,
    /// XNysTrace and XDiag need two test vectors to leave one out).
    #[error("{name} must be at least {min}, got {got}")]
    TooSmall {
        /// Which count (e.g. `"test_vectors"`, `"budget"`).
        name: &'static str,
        /// The least allowed value.
        min: usize,
        /// The value that was given.
        got: usize,
    },
    /// An estimator for positive semi-definite operators (XNysTrace) met a
    /// sketch `ΩᵀHΩ` that is not positive definite even after its stabilising
    /// shift: the operator has a negative eigenvalue.
    #[error(
        "{estimator} needs a positive semi-definite operator, but the sketch ΩᵀHΩ has a negative direction \
         (an indefinite Hessian? use XTrace, or the Gauss–Newton matrix)"
    )]
    NotPositiveSemidefinite {
        /// The estimator.
        estimator: &'static str,
    },
    /// The test vectors drawn are linearly dependent, so a sketch built from
    /// them is singular (with Rademacher entries this happens only in very
    /// small dimensions).
    #[error(
        "the {count} test vectors drawn for {estimator} are linearly dependent; draw again with another seed \
         or use Gaussian test vectors"
    )]
    DependentTestVectors {
        /// The estimator.
        estimator: &'static str,
        /// How many test vectors were drawn.
        count: usize,
    },
    /// The backend operator failed (e.g. an autodiff error in candle).
    #[error("Hessian-vector-product operator failed: {0}")]
    Operator(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

impl Error {
    /// Wraps a backend error.
    pub fn operator<E: std::error::Error + Send + Sync + 'static>(err: E) -> Self {
        Error::Operator(Box::new(err))
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
