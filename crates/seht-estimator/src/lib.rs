//! Stochastic estimators of the trace of a Hessian, over an abstract
//! Hessian-vector-product operator.
//!
//! This crate holds the mathematics of "Stochastic Estimators of Hessian Trace"
//! (SEHT-H, SEHT-D) and Hutch++, and nothing of any deep-learning framework:
//! a backend (such as `seht-candle`) implements [`HvpOperator`] for a network's
//! loss, and every estimator here then works on it, including, when the
//! backend's scalars carry an autodiff graph, as a differentiable penalty.
//!
//! | estimator | file | estimates |
//! | --- | --- | --- |
//! | [`Hutchinson`] / [`SehtH`] | `hutchinson.rs` | `tr(H)` (Algorithm 1) |
//! | [`SehtD`] with [`Reading::PartialSum`] | `seht_d.rs` | the paper's `t̃r(H)` (Algorithm 2) |
//! | [`SehtD`] with [`Reading::Unbiased`] | `seht_d.rs` | `tr(H)` |
//! | [`HutchPlusPlus`] | `hutchpp.rs` | `tr(H)`, lower variance on decaying spectra |
//! | [`BlockTraces`] | `block_trace.rs` | `tr(H_bb)` of every block (layer), each with its error |
//! | [`Lanczos`] | `lanczos.rs` | the top (or bottom) `k` eigenpairs, with residuals |
//! | [`Slq`] | `slq.rs` | the eigenvalue density (stochastic Lanczos quadrature) |
//! | [`block_densities`], [`heterogeneity`] | `block_spectra.rs` | each diagonal block's density, and `JS₀` between them (Zhang et al. 2024) |
//! | [`XTrace`] | `xtrace.rs` | `tr(H)` with its own error estimate, exchangeable (Epperly, Tropp & Webber 2024) |
//! | [`XNysTrace`] | `xnystrace.rs` | `tr(H)` of a positive semi-definite `H`, with its own error estimate |
//! | [`HutchinsonDiagonal`] | `hutchinson_diagonal.rs` | `diag(H)`, with a standard error per entry (Bekas et al. 2007) |
//! | [`XDiag`] | `xdiag.rs` | `diag(H)`, exchangeable, with a standard error per entry |
//!
//! XTrace, XNysTrace and XDiag return numbers, not differentiable values (their
//! bases are non-linear in the products), so they measure curvature but are no
//! [`TraceEstimator`] and no training penalty.
//!
//! ```
//! use seht_estimator::{DenseOperator, SehtH, TraceEstimator, probe_rng};
//!
//! // diag(1, 2, 3) has trace 6; Rademacher probes give it exactly on a diagonal matrix.
//! let a = vec![1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0];
//! let op = DenseOperator::single_block(3, a)?;
//! let est = SehtH::seht_h(4)?.estimate(&op, &mut probe_rng(7))?;
//! assert!((est.mean - 6.0).abs() < 1e-12);
//! # Ok::<(), seht_estimator::Error>(())
//! ```

mod block;
mod block_spectra;
mod block_trace;
mod cholesky;
mod dense;
mod error;
mod estimate;
mod estimator;
mod gradient;
mod hutchinson;
mod hutchinson_diagonal;
mod hutchpp;
mod lanczos;
mod operator;
mod plan;
mod probe;
mod qr;
mod sample;
mod seht_d;
mod slq;
pub mod streams;
mod symmetric_eigen;
mod xdiag;
mod xnystrace;
mod xtrace;

pub use block::{Block, BlockVec, total_len};
pub use block_spectra::{
    BlockDensity, DiagonalBlock, Heterogeneity, SpectrumScale, block_densities, heterogeneity, jensen_shannon,
};
pub use block_trace::{BlockProbing, BlockTrace, BlockTraceEstimate, BlockTraces};
pub use dense::DenseOperator;
pub use error::{Error, Result};
pub use estimate::{DiagonalEstimate, Target, TraceEstimate, mean_and_std_error};
pub use estimator::{Estimator, TraceEstimator};
pub use gradient::Gradient;
pub use hutchinson::{Hutchinson, SehtH};
pub use hutchinson_diagonal::HutchinsonDiagonal;
pub use hutchpp::HutchPlusPlus;
pub use lanczos::{BasisPrecision, Eigenpair, Eigenpairs, Lanczos, Reorthogonalisation, Which};
pub use operator::HvpOperator;
pub use plan::{Planned, ProbePlan};
pub use probe::{
    Distribution, Gaussian, HalfProbability, Probability, ProbeDistribution, ProbeRng, Rademacher, Sparse, probe_rng,
};
pub use seht_d::{Reading, SehtD};
pub use slq::{Broadening, QuadratureRule, Slq, SpectralDensity};
pub use streams::{Stream, step_key};
pub use xdiag::XDiag;
pub use xnystrace::XNysTrace;
pub use xtrace::XTrace;
