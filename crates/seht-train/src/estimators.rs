//! The trace and diagonal estimators that `seht analyze` and `seht trace`
//! can be asked for (`--estimator`, `--diagonal`), run on any
//! [`HvpOperator`] within a budget of Hessian-vector products, and the
//! summaries they write.
//!
//! | `--estimator` | `seht-estimator` | products for a budget `m` | error it reports |
//! | --- | --- | --- | --- |
//! | `hutchinson` (default) | [`Hutchinson`] (Rademacher) | `m` | standard error over probes |
//! | `hutch++` | [`HutchPlusPlus`] (`k = ⌊m/3⌋`) | `m` | none (one estimate) |
//! | `xtrace` | [`XTrace`] (`⌊m/2⌋` test vectors) | `≤ m` | its own, `s/√(m/2)` |
//! | `xnystrace` | [`XNysTrace`] (`m` test vectors) **on the Gauss–Newton matrix `G`** | `m` products with `G` | its own |
//!
//! | `--diagonal` | `seht-estimator` | products for a budget `m` |
//! | --- | --- | --- |
//! | `hutchinson` | [`HutchinsonDiagonal`] (Bekas et al. 2007) | `m` |
//! | `xdiag` | [`XDiag`] (Epperly, Tropp & Webber 2024, `⌊m/2⌋` test vectors) | `≤ m` |
//!
//! Which to choose for which budget is measured in `docs/analysis/estimators.md`.
//! XNysTrace needs a positive semi-definite operator and a loss Hessian is
//! indefinite in general, so `seht analyze` and `seht trace` run it on the
//! generalised Gauss–Newton matrix of the same batches
//! ([`seht_candle::GaussNewtonOperator`], exact products): it estimates
//! `tr(G)`, not `tr(H)` ([`Curvature`] says which one a [`TotalTrace`] is
//! of). For a ReLU/max-pool network with BatchNorm in evaluation mode the
//! two traces are equal (docs/analysis/estimators.md); in training mode, or
//! with smooth activations, they differ.

use std::time::Instant;

use seht_estimator::{
    HutchPlusPlus, Hutchinson, HutchinsonDiagonal, HvpOperator, ProbeRng, TraceEstimate, TraceEstimator, XDiag,
    XNysTrace, XTrace,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The estimator of a whole-model trace `tr(H)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum TraceMethod {
    /// Hutchinson with Rademacher probes (SEHT-H): one product per probe.
    #[default]
    #[serde(rename = "hutchinson")]
    Hutchinson,
    /// Hutch++ (Meyer et al. 2021).
    #[serde(rename = "hutch++")]
    HutchPlusPlus,
    /// XTrace (Epperly, Tropp & Webber 2024).
    #[serde(rename = "xtrace")]
    XTrace,
    /// XNysTrace (Epperly, Tropp & Webber 2024), positive semi-definite
    /// operators only: the commands run it on the Gauss–Newton matrix.
    #[serde(rename = "xnystrace")]
    XNysTrace,
}

/// The matrix a whole-model trace is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Curvature {
    /// The loss Hessian `H`.
    #[default]
    Hessian,
    /// The generalised Gauss–Newton matrix `G = (1/N) Σ_n J_nᵀ(diag p_n −
    /// p_n p_nᵀ)J_n` of the mean cross-entropy
    /// ([`seht_candle::GaussNewtonOperator`]).
    GaussNewton,
}

impl Curvature {
    /// Whether this is the Hessian (the outputs before the choice existed).
    pub fn is_hessian(&self) -> bool {
        *self == Curvature::Hessian
    }

    /// `tr(H)` or `tr(G)`.
    pub fn trace_symbol(self) -> &'static str {
        match self {
            Curvature::Hessian => "tr(H)",
            Curvature::GaussNewton => "tr(G)",
        }
    }

    /// `Hessian` or `Gauss–Newton`.
    pub fn label(self) -> &'static str {
        match self {
            Curvature::Hessian => "Hessian",
            Curvature::GaussNewton => "Gauss–Newton",
        }
    }
}

impl TraceMethod {
    /// The name the command line and the outputs use (`hutch++`, `xtrace`, …).
    pub fn name(self) -> &'static str {
        match self {
            TraceMethod::Hutchinson => "hutchinson",
            TraceMethod::HutchPlusPlus => "hutch++",
            TraceMethod::XTrace => "xtrace",
            TraceMethod::XNysTrace => "xnystrace",
        }
    }

    /// Whether this is the default (Hutchinson), whose outputs are those of
    /// the commands before the choice existed.
    pub fn is_hutchinson(&self) -> bool {
        *self == TraceMethod::Hutchinson
    }

    /// The matrix `seht analyze` and `seht trace` run this estimator on:
    /// the Gauss–Newton matrix for XNysTrace (it needs a positive
    /// semi-definite operator), the Hessian for the others.
    pub fn curvature(self) -> Curvature {
        match self {
            TraceMethod::XNysTrace => Curvature::GaussNewton,
            _ => Curvature::Hessian,
        }
    }

    /// The smallest budget (products) the estimator accepts.
    pub fn min_budget(self) -> usize {
        match self {
            TraceMethod::Hutchinson => 1,
            TraceMethod::HutchPlusPlus => 3,
            TraceMethod::XTrace => 4,
            TraceMethod::XNysTrace => 2,
        }
    }
}

/// The estimator of `diag(H)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DiagonalMethod {
    /// Hutchinson's diagonal estimator with Rademacher probes.
    Hutchinson,
    /// XDiag.
    Xdiag,
}

impl DiagonalMethod {
    /// The name the command line and the outputs use.
    pub fn name(self) -> &'static str {
        match self {
            DiagonalMethod::Hutchinson => "hutchinson",
            DiagonalMethod::Xdiag => "xdiag",
        }
    }

    /// The smallest budget (products) the estimator accepts.
    pub fn min_budget(self) -> usize {
        match self {
            DiagonalMethod::Hutchinson => 1,
            DiagonalMethod::Xdiag => 4,
        }
    }
}

/// Checks that `budget` products are enough for `method`.
///
/// # Errors
/// [`Error::InvalidOption`] naming `option` (the flag that sets the budget).
pub fn check_trace_budget(method: TraceMethod, budget: usize, option: &'static str) -> Result<()> {
    if budget < method.min_budget() {
        return Err(Error::InvalidOption {
            option,
            value: budget.to_string(),
            reason: format!(
                "{} needs a budget of at least {} Hessian-vector products",
                method.name(),
                method.min_budget()
            ),
        });
    }
    Ok(())
}

/// Checks that `budget` products are enough for `method`.
///
/// # Errors
/// [`Error::InvalidOption`] naming `option` (the flag that sets the budget).
pub fn check_diagonal_budget(method: DiagonalMethod, budget: usize, option: &'static str) -> Result<()> {
    if budget < method.min_budget() {
        return Err(Error::InvalidOption {
            option,
            value: budget.to_string(),
            reason: format!(
                "the {} diagonal estimator needs a budget of at least {} Hessian-vector products",
                method.name(),
                method.min_budget()
            ),
        });
    }
    Ok(())
}

/// A whole-model trace estimate by the chosen estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotalTrace {
    /// The estimator.
    pub estimator: TraceMethod,
    /// The matrix whose trace this is (absent from the JSON for the Hessian).
    #[serde(default, skip_serializing_if = "Curvature::is_hessian")]
    pub matrix: Curvature,
    /// The budget asked for (products).
    pub budget: usize,
    /// The estimate of `tr(H)` (or `tr(G)`, see [`matrix`](Self::matrix)).
    pub trace: f64,
    /// Its error estimate: Hutchinson's standard error over probes,
    /// XTrace's and XNysTrace's own (`s/√m` over their exchangeable
    /// samples); `null` for Hutch++ (one estimate, no error of its own).
    pub std_error: Option<f64>,
    /// Hessian-vector products spent (XTrace: `⌊m/2⌋ + rank`, at most the budget).
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// Estimates `tr(op)` with `method` within `budget` products, probes from
/// `rng`; `matrix` says what `op` is, for the record.
///
/// XNysTrace is run as asked: it needs a positive semi-definite `op` (a
/// Gauss–Newton matrix), and fails on a sketch that is not (an indefinite
/// Hessian may pass unnoticed).
///
/// # Errors
/// The estimator's (a budget too small, a non-finite product, XNysTrace on
/// an operator whose sketch is not positive definite) and the operator's.
pub fn estimate_trace<O: HvpOperator>(
    op: &O,
    method: TraceMethod,
    matrix: Curvature,
    budget: usize,
    rng: &mut ProbeRng,
) -> seht_estimator::Result<TotalTrace> {
    let t0 = Instant::now();
    let est: TraceEstimate<f64> = match method {
        TraceMethod::Hutchinson => {
            let e = Hutchinson::seht_h(budget)?.estimate(op, rng)?;
            let mean = e.mean;
            e.with_value(mean)
        }
        TraceMethod::HutchPlusPlus => {
            let e = HutchPlusPlus::with_budget(budget)?.estimate(op, rng)?;
            let mean = e.mean;
            let mut e = e.with_value(mean);
            // Its samples are the terms of one estimate, not independent estimates.
            e.std_error = None;
            e
        }
        TraceMethod::XTrace => XTrace::with_budget(budget)?.estimate(op, rng)?,
        TraceMethod::XNysTrace => XNysTrace::with_budget(budget)?.estimate(op, rng)?,
    };
    Ok(TotalTrace {
        estimator: method,
        matrix,
        budget,
        trace: est.mean,
        std_error: est.std_error,
        hvps: est.hvps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The estimated diagonal of one parameter block (a weight tensor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerDiagonal {
    /// Parameter name.
    pub name: String,
    /// Entries.
    pub len: usize,
    /// Mean of the estimated diagonal entries (`tr(H_bb)/len`).
    pub mean: f64,
    /// Smallest estimated entry (noisy entries spread the extremes outward).
    pub min: f64,
    /// Largest estimated entry.
    pub max: f64,
    /// Root mean square of the entries' standard errors: the error of a
    /// typical single entry (`null` with too few samples).
    pub entry_std_error: Option<f64>,
    /// Mean of the entries' standard errors, an upper bound on the standard
    /// error of [`mean`](Self::mean) (the standard deviation of a sum is at
    /// most the sum of the standard deviations); `null` with too few samples.
    pub mean_std_error_bound: Option<f64>,
}

/// The per-layer summary of a diagonal estimate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiagonalSection {
    /// The estimator.
    pub estimator: DiagonalMethod,
    /// The budget asked for (products).
    pub budget: usize,
    /// One entry per block, in the operator's order.
    pub layers: Vec<LayerDiagonal>,
    /// `Σ diag(H)`, the trace the diagonal estimate implies.
    pub trace: f64,
    /// Hessian-vector products spent.
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// Estimates `diag(op)` with `method` within `budget` products and
/// summarises it per block.
///
/// # Errors
/// The estimator's (a budget too small, a non-finite product) and the operator's.
pub fn estimate_diagonal<O: HvpOperator>(
    op: &O,
    method: DiagonalMethod,
    budget: usize,
    rng: &mut ProbeRng,
) -> seht_estimator::Result<DiagonalSection> {
    let t0 = Instant::now();
    let est = match method {
        DiagonalMethod::Hutchinson => HutchinsonDiagonal::rademacher(budget)?.estimate(op, rng)?,
        DiagonalMethod::Xdiag => XDiag::with_budget(budget)?.estimate(op, rng)?,
    };
    let layers = (0..est.blocks.len())
        .map(|b| {
            let d = est.block(b).unwrap_or(&[]);
            let len = d.len().max(1) as f64;
            let se = est.block_std_error(b);
            LayerDiagonal {
                name: est.blocks[b].name.clone(),
                len: d.len(),
                mean: d.iter().sum::<f64>() / len,
                min: d.iter().copied().fold(f64::INFINITY, f64::min),
                max: d.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                entry_std_error: se.map(|s| (s.iter().map(|x| x * x).sum::<f64>() / len).sqrt()),
                mean_std_error_bound: se.map(|s| s.iter().sum::<f64>() / len),
            }
        })
        .collect();
    Ok(DiagonalSection {
        estimator: method,
        budget,
        layers,
        trace: est.trace(),
        hvps: est.hvps,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// A diagonal estimate to make: which estimator, within how many products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiagonalRequest {
    /// The estimator.
    pub estimator: DiagonalMethod,
    /// Its budget of Hessian-vector products.
    pub hvps: usize,
}
