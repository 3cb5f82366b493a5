//! SEHT-D, the paper's sparse ("dropout") estimator (Algorithm 2, eq. 13–14).
//!
//! **Draw.** Each block (layer) is selected with probability `p1`; inside the
//! selected blocks each probe has i.i.d. entries from `Q(p2)`
//! (`±1` with probability `p2` each, `0` with `1 − 2p2`). The layer draw is made
//! once per call and shared by the `K` probes, as in Algorithm 2, whose input
//! is "the parameters in the selected layers". The paper sets `p1 = p2 = p`.
//!
//! **Two readings of the same samples `σₖᵀHσₖ`:**
//!
//! * [`Reading::PartialSum`] — the paper's `t̃r(H)`: by eq. 13,
//!   `E[σσᵀ | zero positions] = Ĩ`, so `σᵀHσ` is an unbiased estimate of the
//!   sum of the *selected* diagonal entries (eq. 14). Over the random selection
//!   its expectation is `p1·2p2·tr(H)`. This is what the paper's tables used:
//!   the penalty `λ·t̃r(H)` is added as is, so the effective weight on the full
//!   trace is `λ·p1·2p2`, and λ's best value moves with `p`.
//! * [`Reading::Unbiased`] — the same samples divided by `p1·2p2`: an unbiased
//!   estimate of the full `tr(H)`, so that `λ` means the same for SEHT-D at any
//!   `p` as for SEHT-H, and trace values can be compared across estimators. Its
//!   variance is larger by the factor `1/(p1·2p2)²` on the rescaled samples.
//!
//! A draw that selects no block, or a probe whose entries all came out zero,
//! costs no Hessian-vector product and contributes exactly zero. The standard
//! error reported is over the `K` probes given the layer draw.

use std::num::NonZeroUsize;

use rand::Rng;

use crate::error::{Error, Result};
use crate::estimate::{Target, TraceEstimate};
use crate::estimator::TraceEstimator;
use crate::operator::HvpOperator;
use crate::plan::{Planned, ProbePlan};
use crate::probe::{HalfProbability, Probability, ProbeRng, Sparse};
use crate::sample::mean_quadratic_forms;

/// Which quantity SEHT-D's samples are read as (see the module docs). With
/// the `serde` feature: `"partial-sum"` or `"unbiased"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Reading {
    /// The paper's partial sum of the selected diagonal entries, `t̃r(H)`.
    PartialSum,
    /// The full trace, unbiased: samples rescaled by `1/(p1·2p2)`.
    Unbiased,
}

/// SEHT-D: layers drawn with `p1`, entries from `Q(p2)`, `K` probes. With the
/// `serde` feature it reads and writes as `{ probes, p1, p2, reading }`, every
/// field stated and validated as in [`SehtD::with_layer_probability`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "SehtDFields", into = "SehtDFields"))]
pub struct SehtD {
    probes: NonZeroUsize,
    p1: Probability,
    entries: Sparse,
    reading: Reading,
}

/// SEHT-D's fields as written in a config.
#[cfg(feature = "serde")]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SehtDFields {
    probes: usize,
    p1: f64,
    p2: f64,
    reading: Reading,
}

#[cfg(feature = "serde")]
impl TryFrom<SehtDFields> for SehtD {
    type Error = Error;
    fn try_from(f: SehtDFields) -> Result<Self> {
        SehtD::with_layer_probability(f.probes, f.p1, f.p2, f.reading)
    }
}

#[cfg(feature = "serde")]
impl From<SehtD> for SehtDFields {
    fn from(d: SehtD) -> Self {
        SehtDFields { probes: d.probes.get(), p1: d.p1.get(), p2: d.entries.p().get(), reading: d.reading }
    }
}

impl SehtD {
    /// SEHT-D as the paper runs it: `p1 = p2 = p`, with `p ∈ (0, 1/2]`.
    pub fn new(probes: usize, p: f64, reading: Reading) -> Result<Self> {
        HalfProbability::new("p", p)?;
        Self::with_layer_probability(probes, p, p, reading)
    }

    /// SEHT-D with separate layer probability `p1 ∈ (0, 1]` and entry
    /// probability `p2 ∈ (0, 1/2]`.
    pub fn with_layer_probability(probes: usize, p1: f64, p2: f64, reading: Reading) -> Result<Self> {
        let probes = NonZeroUsize::new(probes).ok_or(Error::ZeroCount { name: "probes" })?;
        let p1 = Probability::new("p1", p1)?;
        let entries = Sparse::from_probability(HalfProbability::new("p2", p2)?);
        Ok(Self { probes, p1, entries, reading })
    }

    /// Number of probes `K` (the paper's `maxIter`).
    pub fn probes(&self) -> NonZeroUsize {
        self.probes
    }

    /// Layer-selection probability `p1`.
    pub fn p1(&self) -> Probability {
        self.p1
    }

    /// Entry probability `p2` of `Q(p2)`.
    pub fn p2(&self) -> HalfProbability {
        self.entries.p()
    }

    /// The reading of the samples.
    pub fn reading(&self) -> Reading {
        self.reading
    }

    /// The factor applied to each `σᵀHσ`: 1, or `1/(p1·2p2)`.
    pub fn sample_scale(&self) -> f64 {
        match self.reading {
            Reading::PartialSum => 1.0,
            Reading::Unbiased => 1.0 / (self.p1.get() * 2.0 * self.entries.p().get()),
        }
    }

    /// Draws the layer selection: each of `n` blocks with probability `p1`.
    pub fn draw_blocks(&self, n: usize, rng: &mut ProbeRng) -> Vec<usize> {
        let p1 = self.p1.get();
        (0..n).filter(|_| p1 >= 1.0 || rng.random::<f64>() < p1).collect()
    }

    /// The plan for a given layer selection (instead of a drawn one).
    pub fn plan_on_blocks(&self, selected: Vec<usize>) -> ProbePlan<Sparse> {
        ProbePlan {
            blocks: selected,
            distribution: self.entries,
            probes: self.probes.get(),
            scale: self.sample_scale(),
            target: self.target(),
        }
    }

    /// Estimates with a given layer selection (instead of drawing one), e.g. to
    /// check the partial-sum reading against the selected diagonal.
    pub fn estimate_on_blocks<O: HvpOperator>(
        &self,
        op: &O,
        selected: Vec<usize>,
        rng: &mut ProbeRng,
    ) -> Result<TraceEstimate<O::Scalar>> {
        mean_quadratic_forms(op, self.plan_on_blocks(selected), rng)
    }
}

impl Planned for SehtD {
    type Distribution = Sparse;

    /// The layer draw (each block with probability `p1`, from `rng`), `K`
    /// probes from `Q(p2)`, and the reading's scale.
    fn plan(&self, n_blocks: usize, rng: &mut ProbeRng) -> Result<ProbePlan<Sparse>> {
        if n_blocks == 0 {
            return Err(Error::EmptyBlockSet);
        }
        Ok(self.plan_on_blocks(self.draw_blocks(n_blocks, rng)))
    }
}

impl TraceEstimator for SehtD {
    fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<O::Scalar>> {
        let plan = self.plan(op.blocks().len(), rng)?;
        mean_quadratic_forms(op, plan, rng)
    }

    fn target(&self) -> Target {
        match self.reading {
            Reading::PartialSum => Target::PartialSum,
            Reading::Unbiased => Target::FullTrace,
        }
    }
}
