//! The probes of a Hutchinson-type estimate, decided before any product is
//! taken: which blocks are probed, from which distribution, how many probes,
//! and the factor on each `σᵀHσ`.
//!
//! SEHT-H and SEHT-D differ only in their plan (all blocks and Rademacher
//! entries, against a random layer draw, `Q(p2)` entries and, in the unbiased
//! reading, the factor `1/(p1·2p2)`; the paper's Algorithms 1 and 2). Every way
//! of forming the penalty's gradient — the exact one in one pass, the exact one
//! a probe at a time, the first-order one — draws the plan here, with the same
//! generator, so the same seed gives the same layers, probes and scale on
//! every path.

use crate::error::{Error, Result};
use crate::estimate::Target;
use crate::probe::{Distribution, ProbeDistribution, ProbeRng};

/// A drawn plan: `probes` probes over `blocks` with entries from
/// `distribution`; each sample is `scale·σᵀHσ`, and the estimate is their mean.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePlan<D = Distribution> {
    /// Indices of the probed blocks, ascending (SEHT-D: the layer draw; it
    /// may be empty, and then every sample is 0 and no product is spent).
    pub blocks: Vec<usize>,
    /// The distribution of the probe entries inside the probed blocks.
    pub distribution: D,
    /// Number of probes `K`.
    pub probes: usize,
    /// The factor on each `σᵀHσ`: `1/E[σᵢ²]` for Hutchinson, 1 or `1/(p1·2p2)`
    /// for SEHT-D.
    pub scale: f64,
    /// What the mean of the samples estimates.
    pub target: Target,
}

impl<D: ProbeDistribution> ProbePlan<D> {
    /// Checks the plan against an operator of `n_blocks` blocks.
    pub(crate) fn check(&self, n_blocks: usize) -> Result<()> {
        if n_blocks == 0 {
            return Err(Error::EmptyBlockSet);
        }
        if let Some(&bad) = self.blocks.iter().find(|&&b| b >= n_blocks) {
            return Err(Error::DimensionMismatch {
                context: "probe plan (block index out of range)".into(),
                expected: n_blocks,
                actual: bad,
            });
        }
        Ok(())
    }
}

impl<D: Into<Distribution>> ProbePlan<D> {
    /// The same plan with the distribution as the run-time enum.
    pub fn into_dynamic(self) -> ProbePlan<Distribution> {
        ProbePlan {
            blocks: self.blocks,
            distribution: self.distribution.into(),
            probes: self.probes,
            scale: self.scale,
            target: self.target,
        }
    }
}

/// Estimators whose estimate is the mean of `scale·σᵀHσ` over probes drawn
/// from a plan (Hutchinson, SEHT-H, SEHT-D; not Hutch++, whose probes depend
/// on products already taken).
pub trait Planned {
    /// The distribution of the probe entries.
    type Distribution: ProbeDistribution;

    /// Draws the plan for an operator of `n_blocks` blocks (SEHT-D draws its
    /// layer selection from `rng` here; Hutchinson draws nothing).
    ///
    /// # Errors
    ///
    /// [`Error::EmptyBlockSet`] when `n_blocks` is 0.
    fn plan(&self, n_blocks: usize, rng: &mut ProbeRng) -> Result<ProbePlan<Self::Distribution>>;
}
