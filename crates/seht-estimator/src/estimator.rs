//! The common interface of the estimators.

use crate::error::Result;
use crate::estimate::{Target, TraceEstimate};
use crate::operator::HvpOperator;
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
#[derive(Debug, Clone, PartialEq)]
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
