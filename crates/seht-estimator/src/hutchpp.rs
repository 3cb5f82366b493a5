//! Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic
//! Trace Estimation", SOSA 2021), the first estimator here beyond the paper.
//!
//! **Formula.** With a budget of `m` Hessian-vector products, draw Rademacher
//! `S ∈ ℝⁿˣᵏ` and `G ∈ ℝⁿˣʳ` (`k = ⌊m/3⌋`, `r = m − 2k`), let `Q` be an
//! orthonormal basis of `HS`, and `P = I − QQᵀ`:
//!
//! ```text
//! tr̂(H) = tr(QᵀHQ) + (1/r) Σⱼ gⱼᵀ P H P gⱼ
//! ```
//!
//! The first term captures the top of the spectrum exactly; Hutchinson only
//! estimates the remainder, so for matrices with decaying spectra the error
//! falls like `1/m` instead of `1/√m`.
//!
//! **Differentiability.** For any *fixed* orthonormal `Q`, the estimate is
//! unbiased for `tr(H)`, since `tr(QᵀHQ) + tr(PHP) = tr(H)`. `Q` is computed
//! from detached products on the host and then held fixed, so the returned
//! value's gradient is an unbiased estimate of `∇ tr(H)`.
//!
//! The samples are `tr(QᵀHQ) + gⱼᵀPHPgⱼ`, one per residual probe; their
//! standard error measures the residual term only.

use std::num::NonZeroUsize;

use crate::error::{Error, Result};
use crate::estimate::{Target, TraceEstimate, mean_and_std_error};
use crate::estimator::TraceEstimator;
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::sample::{split_flat, to_host_flat, to_operator};

/// Hutch++ with `k` sketch vectors and `r` residual probes (`2k + r` products).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct HutchPlusPlus {
    sketch: NonZeroUsize,
    residual_probes: NonZeroUsize,
}

impl HutchPlusPlus {
    /// Hutch++ with a total budget of `m ≥ 3` Hessian-vector products, split
    /// as in the paper: `k = ⌊m/3⌋` sketch vectors, `r = m − 2k` probes.
    pub fn with_budget(m: usize) -> Result<Self> {
        if m < 3 {
            return Err(Error::HutchPlusPlusBudget(m));
        }
        let k = m / 3;
        Self::new(k, m - 2 * k)
    }

    /// Hutch++ with `sketch ≥ 1` sketch vectors and `residual_probes ≥ 1` probes.
    pub fn new(sketch: usize, residual_probes: usize) -> Result<Self> {
        Ok(Self {
            sketch: NonZeroUsize::new(sketch).ok_or(Error::ZeroCount { name: "sketch" })?,
            residual_probes: NonZeroUsize::new(residual_probes).ok_or(Error::ZeroCount { name: "residual_probes" })?,
        })
    }

    /// Number of sketch vectors `k`.
    pub fn sketch(&self) -> NonZeroUsize {
        self.sketch
    }

    /// Number of residual probes `r`.
    pub fn residual_probes(&self) -> NonZeroUsize {
        self.residual_probes
    }

    /// Total Hessian-vector products: `2k + r`.
    pub fn budget(&self) -> usize {
        2 * self.sketch.get() + self.residual_probes.get()
    }
}

/// Orthonormal basis of the span of `cols` (each of length `n`), by modified
/// Gram–Schmidt applied twice ("twice is enough", Giraud et al. 2005).
/// Columns that are (numerically) dependent on earlier ones are dropped.
pub(crate) fn orthonormal_basis(cols: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let mut basis: Vec<Vec<f64>> = Vec::with_capacity(cols.len());
    for mut c in cols {
        let norm0 = dot(&c, &c).sqrt();
        if norm0 == 0.0 || !norm0.is_finite() {
            continue;
        }
        for _ in 0..2 {
            for q in &basis {
                let a = dot(q, &c);
                c.iter_mut().zip(q).for_each(|(x, qi)| *x -= a * qi);
            }
        }
        let norm = dot(&c, &c).sqrt();
        if norm > 1e-10 * norm0 {
            c.iter_mut().for_each(|x| *x /= norm);
            basis.push(c);
        }
    }
    basis
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl TraceEstimator for HutchPlusPlus {
    fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<O::Scalar>> {
        let blocks = op.blocks();
        if blocks.is_empty() {
            return Err(Error::EmptyBlockSet);
        }
        let n = crate::block::total_len(blocks);
        let mut hvps = 0;

        // Sketch: Y = H S, on the host, detached.
        let mut ys = Vec::with_capacity(self.sketch.get());
        for _ in 0..self.sketch.get() {
            let s = split_flat(blocks, &Rademacher.sample(rng, n));
            let hs = op.hvp(&to_operator(op, &s)?).map_err(Error::operator)?;
            hvps += 1;
            ys.push(to_host_flat(op, &hs)?);
        }
        let q = orthonormal_basis(ys);

        // tr(QᵀHQ), on the backend's graph.
        let mut terms = Vec::with_capacity(q.len() + self.residual_probes.get());
        let mut top = 0.0;
        for qi in &q {
            let v = to_operator(op, &split_flat(blocks, qi))?;
            let f = op.quadratic_form(&v).map_err(Error::operator)?;
            hvps += 1;
            top += op.scalar_value(&f).map_err(Error::operator)?;
            terms.push((1.0, f));
        }

        // Hutchinson on the deflated remainder P H P.
        let r = self.residual_probes.get();
        let mut samples = Vec::with_capacity(r);
        for _ in 0..r {
            let mut g = Rademacher.sample(rng, n);
            for qi in &q {
                let a = dot(qi, &g);
                g.iter_mut().zip(qi).for_each(|(x, qv)| *x -= a * qv);
            }
            let v = to_operator(op, &split_flat(blocks, &g))?;
            let f = op.quadratic_form(&v).map_err(Error::operator)?;
            hvps += 1;
            samples.push(top + op.scalar_value(&f).map_err(Error::operator)?);
            terms.push((1.0 / r as f64, f));
        }
        let value = op.weighted_sum(&terms).map_err(Error::operator)?;
        let (mean, std_error) = mean_and_std_error(&samples);
        Ok(TraceEstimate {
            value,
            samples,
            mean,
            std_error,
            target: Target::FullTrace,
            blocks: (0..blocks.len()).collect(),
            hvps,
        })
    }

    fn target(&self) -> Target {
        Target::FullTrace
    }
}
