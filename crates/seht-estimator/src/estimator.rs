//! The common interface of the estimators.

use crate::error::Result;
use crate::estimate::{Target, TraceEstimate};
use crate::operator::HvpOperator;
use crate::plan::{Planned, ProbePlan};
use crate::probe::ProbeRng;

/// A stochastic estimator of the trace of an [`HvpOperator`].
pub trait TraceEstimator {
    /// Draws probes from `rng` and estimates the trace of `op`.
    ///
    /// The returned [`TraceEstimate::value`] is built from the operator's
    /// quadratic forms with [`HvpOperator::weighted_sum`] only, so it is
    /// differentiable wherever the operator's scalars are.
    fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<O::Scalar>>;

    /// What the estimate estimates.
    fn target(&self) -> Target;
}

/// Any estimator of this crate, chosen at run time (e.g. from a config file).
///
/// With the `serde` feature it reads and writes as a table tagged by `kind`:
/// `{ kind = "hutchinson", probes = 1, distribution = "rademacher" }` (SEHT-H),
/// `{ kind = "seht-d", probes = 1, p1 = 0.01, p2 = 0.01, reading = "partial-sum" }`,
/// `{ kind = "hutch-plus-plus", sketch = 2, residual_probes = 2 }`; values are
/// validated as they are read.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "kebab-case"))]
pub enum Estimator {
    /// Hutchinson with any probe distribution ([`crate::SehtH`] is the Rademacher case).
    Hutchinson(crate::Hutchinson<crate::Distribution>),
    /// SEHT-D, in either reading.
    SehtD(crate::SehtD),
    /// Hutch++.
    HutchPlusPlus(crate::HutchPlusPlus),
}

impl Estimator {
    /// SEHT-H with `probes` Rademacher probes.
    pub fn seht_h(probes: usize) -> Result<Self> {
        Ok(Estimator::Hutchinson(crate::Hutchinson::new(probes, crate::Distribution::Rademacher)?))
    }
}

impl From<crate::Hutchinson<crate::Distribution>> for Estimator {
    fn from(e: crate::Hutchinson<crate::Distribution>) -> Self {
        Estimator::Hutchinson(e)
    }
}

impl From<crate::SehtH> for Estimator {
    fn from(e: crate::SehtH) -> Self {
        Estimator::Hutchinson(e.into_dynamic())
    }
}

impl From<crate::SehtD> for Estimator {
    fn from(e: crate::SehtD) -> Self {
        Estimator::SehtD(e)
    }
}

impl From<crate::HutchPlusPlus> for Estimator {
    fn from(e: crate::HutchPlusPlus) -> Self {
        Estimator::HutchPlusPlus(e)
    }
}

impl Planned for Estimator {
    type Distribution = crate::Distribution;

    /// The plan of Hutchinson or SEHT-D.
    ///
    /// # Errors
    ///
    /// [`Error::NoProbePlan`](crate::Error::NoProbePlan) for Hutch++;
    /// [`Error::EmptyBlockSet`](crate::Error::EmptyBlockSet) when `n_blocks` is 0.
    fn plan(&self, n_blocks: usize, rng: &mut ProbeRng) -> Result<ProbePlan> {
        match self {
            Estimator::Hutchinson(e) => e.plan(n_blocks, rng),
            Estimator::SehtD(e) => Ok(e.plan(n_blocks, rng)?.into_dynamic()),
            Estimator::HutchPlusPlus(_) => Err(crate::Error::NoProbePlan {
                estimator: "Hutch++",
                why: "its residual probes are projected with products already taken",
            }),
        }
    }
}

impl TraceEstimator for Estimator {
    fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<O::Scalar>> {
        match self {
            Estimator::Hutchinson(e) => e.estimate(op, rng),
            Estimator::SehtD(e) => e.estimate(op, rng),
            Estimator::HutchPlusPlus(e) => e.estimate(op, rng),
        }
    }

    fn target(&self) -> Target {
        match self {
            Estimator::Hutchinson(e) => e.target(),
            Estimator::SehtD(e) => e.target(),
            Estimator::HutchPlusPlus(e) => e.target(),
        }
    }
}
