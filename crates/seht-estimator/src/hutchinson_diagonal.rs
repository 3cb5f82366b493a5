//! Hutchinson's diagonal estimator (Bekas, Kokiopoulou & Saad, "An estimator
//! for the diagonal of a matrix", Appl. Numer. Math. 57(11–12), 2007, eq. 2.1
//! with Rademacher probes).
//!
//! **Formula.** For i.i.d. probes `σ` with `E[σσᵀ] = c·I`,
//! `E[σ ⊙ Hσ] = c·diag(H)`, so with `K` probes
//!
//! ```text
//! diaĝ(H) = (1/K) Σₖ σₖ ⊙ Hσₖ / c        (⊙: entrywise product)
//! ```
//!
//! With Rademacher probes (`c = 1`, `σⱼ² = 1`) entry `j` of one sample is
//! `hⱼⱼ + Σ_{l≠j} hⱼₗσⱼσₗ`, so it is exact for a diagonal `H` and has variance
//! `Σ_{l≠j} hⱼₗ²`; with Gaussian probes, `hⱼⱼ² + Σₗ hⱼₗ²`. Each probe costs one
//! Hessian-vector product and gives a sample of every entry at once; the
//! per-entry standard error is the samples' `s/√K`.

use std::num::NonZeroUsize;

use crate::error::{Error, Result};
use crate::estimate::{DiagonalEstimate, EntryStats};
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::sample::hvp_flat;

/// Hutchinson's estimator of `diag(H)` with `K` probes from `D` (see the
/// module documentation).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct HutchinsonDiagonal<D = Rademacher> {
    probes: NonZeroUsize,
    distribution: D,
}

impl HutchinsonDiagonal<Rademacher> {
    /// `probes ≥ 1` Rademacher probes (Bekas et al.'s choice).
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for zero probes.
    pub fn rademacher(probes: usize) -> Result<Self> {
        Self::new(probes, Rademacher)
    }
}

impl<D: ProbeDistribution> HutchinsonDiagonal<D> {
    /// `probes ≥ 1` probes from `distribution`.
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for zero probes.
    pub fn new(probes: usize, distribution: D) -> Result<Self> {
        let probes = NonZeroUsize::new(probes).ok_or(Error::ZeroCount { name: "probes" })?;
        Ok(Self { probes, distribution })
    }

    /// Number of probes `K` (and of Hessian-vector products).
    pub fn probes(&self) -> NonZeroUsize {
        self.probes
    }

    /// Estimates `diag(H)` over all blocks of `op`, with a standard error per
    /// entry (none for a single probe); spends `K` products.
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`] for an operator without entries,
    /// [`Error::NonFinite`] if a product is not finite, and the operator's errors.
    pub fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<DiagonalEstimate> {
        let blocks = op.blocks();
        let n = crate::block::total_len(blocks);
        if n == 0 {
            return Err(Error::EmptyBlockSet);
        }
        let c = self.distribution.second_moment();
        let mut stats = EntryStats::new(n);
        let mut sample = vec![0.0; n];
        for _ in 0..self.probes.get() {
            let sigma = self.distribution.sample(rng, n);
            let hs = hvp_flat(op, &sigma)?;
            for ((x, s), h) in sample.iter_mut().zip(&sigma).zip(&hs) {
                *x = s * h / c;
            }
            if sample.iter().any(|x| !x.is_finite()) {
                return Err(Error::NonFinite { context: "Hutchinson diagonal sample σ ⊙ Hσ".into() });
            }
            stats.push(&sample);
        }
        let (diagonal, std_error) = stats.finish();
        Ok(DiagonalEstimate { diagonal, std_error, blocks: blocks.to_vec(), hvps: self.probes.get() })
    }
}
