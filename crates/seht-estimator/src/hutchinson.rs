//! Hutchinson's estimator; with Rademacher probes it is the paper's SEHT-H.
//!
//! **Formula** (Hutchinson 1990; Avron & Toledo 2011; the paper's eq. 11 and
//! Algorithm 1): for i.i.d. probes `σ` with `E[σσᵀ] = c·I`,
//!
//! ```text
//! tr(H) = E[σᵀHσ] / c,      tr̂(H) = (1/K) Σₖ σₖᵀHσₖ / c
//! ```
//!
//! With Rademacher probes (`c = 1`), `Var[σᵀHσ] = 2(‖H‖_F² − Σᵢ hᵢᵢ²)`; with
//! Gaussian probes, `2‖H‖_F²`. Each `σᵀHσ` costs one Hessian-vector product,
//! computed as `σᵀ ∂(gᵀσ)/∂w` (eq. 12), where `g` is the loss gradient.

use std::num::NonZeroUsize;

use crate::error::{Error, Result};
use crate::estimate::{Target, TraceEstimate};
use crate::estimator::TraceEstimator;
use crate::operator::HvpOperator;
use crate::plan::{Planned, ProbePlan};
use crate::probe::{Distribution, ProbeDistribution, ProbeRng, Rademacher};
use crate::sample::mean_quadratic_forms;

/// Hutchinson's estimator over all blocks of the operator, with `K` probes
/// drawn from `D`. [`Hutchinson::seht_h`] is the paper's SEHT-H.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Hutchinson<D = Rademacher> {
    probes: NonZeroUsize,
    distribution: D,
}

/// The paper's SEHT-H: Hutchinson with Rademacher probes (Algorithm 1).
pub type SehtH = Hutchinson<Rademacher>;

impl Hutchinson<Rademacher> {
    /// SEHT-H with `probes` Rademacher probes (the paper's `maxIter`).
    pub fn seht_h(probes: usize) -> Result<Self> {
        Self::new(probes, Rademacher)
    }
}

impl<D: ProbeDistribution> Hutchinson<D> {
    /// Hutchinson's estimator with `probes ≥ 1` probes from `distribution`.
    pub fn new(probes: usize, distribution: D) -> Result<Self> {
        let probes = NonZeroUsize::new(probes).ok_or(Error::ZeroCount { name: "probes" })?;
        Ok(Self { probes, distribution })
    }

    /// Number of probes `K`.
    pub fn probes(&self) -> NonZeroUsize {
        self.probes
    }

    /// The probe distribution.
    pub fn distribution(&self) -> &D {
        &self.distribution
    }

    /// The same estimator with the distribution as the run-time enum.
    pub fn into_dynamic(self) -> Hutchinson<Distribution>
    where
        D: Into<Distribution>,
    {
        Hutchinson { probes: self.probes, distribution: self.distribution.into() }
    }
}

impl<D: ProbeDistribution + Clone> Planned for Hutchinson<D> {
    type Distribution = D;

    /// Every block, `K` probes from `D`, scale `1/E[σᵢ²]`; draws nothing.
    fn plan(&self, n_blocks: usize, _rng: &mut ProbeRng) -> Result<ProbePlan<D>> {
        if n_blocks == 0 {
            return Err(Error::EmptyBlockSet);
        }
        Ok(ProbePlan {
            blocks: (0..n_blocks).collect(),
            distribution: self.distribution.clone(),
            probes: self.probes.get(),
            scale: 1.0 / self.distribution.second_moment(),
            target: Target::FullTrace,
        })
    }
}

impl<D: ProbeDistribution + Clone> TraceEstimator for Hutchinson<D> {
    fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<O::Scalar>> {
        let plan = self.plan(op.blocks().len(), rng)?;
        mean_quadratic_forms(op, plan, rng)
    }

    fn target(&self) -> Target {
        Target::FullTrace
    }
}
