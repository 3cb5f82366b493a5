//! The abstract Hessian operator that every estimator works through.

use crate::block::{Block, BlockVec};

/// A symmetric linear map `H` known only through products `v ↦ Hv`.
///
/// For a network, `H` is the Hessian of the loss with respect to the selected
/// parameter blocks, and a backend computes products by double backprop. The
/// backend chooses its per-block storage ([`Part`](Self::Part), e.g. one tensor
/// per parameter) and its scalar type ([`Scalar`](Self::Scalar)), which may stay
/// on an autodiff graph: then the estimators of this crate, which only ever add
/// and scale scalars through [`weighted_sum`](Self::weighted_sum), return a
/// trace estimate that can itself be differentiated (a training penalty).
///
/// Probes are drawn on the host by the estimators (so the same seed gives the
/// same probe on every backend) and handed over with
/// [`part_from_host`](Self::part_from_host).
pub trait HvpOperator {
    /// Storage of one block of a vector.
    type Part: Clone;
    /// A scalar result; may carry an autodiff graph.
    type Scalar: Clone;
    /// The backend's error type.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The parameter blocks `H` acts on, in a fixed order.
    fn blocks(&self) -> &[Block];

    /// Builds block `block` of a vector from host values (`values.len()` equals
    /// the block's `len`).
    fn part_from_host(&self, block: usize, values: &[f64]) -> Result<Self::Part, Self::Error>;

    /// Reads block `block` of a vector back to the host.
    fn part_to_host(&self, block: usize, part: &Self::Part) -> Result<Vec<f64>, Self::Error>;

    /// The product `Hv`, with every block present. Absent blocks of `v` are zero.
    fn hvp(&self, v: &BlockVec<Self::Part>) -> Result<BlockVec<Self::Part>, Self::Error>;

    /// The quadratic form `vᵀHv`. Absent blocks of `v` are zero, and a backend
    /// should exploit that: only the rows of `H` in `v`'s support are needed.
    fn quadratic_form(&self, v: &BlockVec<Self::Part>) -> Result<Self::Scalar, Self::Error>;

    /// The numeric value of a scalar.
    fn scalar_value(&self, s: &Self::Scalar) -> Result<f64, Self::Error>;

    /// `Σ cᵢ·sᵢ`, kept on the backend's graph where it has one.
    fn weighted_sum(&self, terms: &[(f64, Self::Scalar)]) -> Result<Self::Scalar, Self::Error>;

    /// A constant scalar (with no dependence on any parameter).
    fn constant(&self, value: f64) -> Result<Self::Scalar, Self::Error>;
}
