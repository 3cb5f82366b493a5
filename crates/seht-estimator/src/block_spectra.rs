//! Blockwise spectral densities and their heterogeneity: the eigenvalue
//! density of each diagonal block `H_bb` of `H` (one block per parameter
//! tensor) by stochastic Lanczos quadrature, and `JS₀`, the mean
//! Jensen–Shannon divergence between the blocks' densities.
//!
//! **Source.** Zhang, Chen, Ding, Li, Sun & Luo, "Why Transformers Need Adam:
//! A Hessian Perspective", NeurIPS 2024: the blockwise Hessian spectra of a
//! Transformer differ from block to block ("block heterogeneity"), a CNN's
//! are alike, and `JS₀`, the average Jensen–Shannon distance between the
//! blockwise spectra at initialisation, measures it. Their code runs SLQ on
//! each block with products `v_b ↦ (H [0,…,v_b,…,0])_b`, as [`DiagonalBlock`]
//! does.
//!
//! **What is computed here.** For blocks `b = 1…B`, `φ̂_b` is the smoothed
//! SLQ density of `H_bb` ([`crate::Slq`]); all `φ̂_b` are evaluated on one
//! grid `t₁ < … < t_G` that covers every block's Ritz values and `6σ` beyond,
//! with one broadening `σ` for all blocks (a fraction of the common range, or
//! absolute), and normalised on the grid to probability vectors `p_b`. Then
//!
//! ```text
//! JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m),   m = (p + q)/2,   in nats, 0 ≤ JS ≤ ln 2,
//! JS₀ = (2 / (B(B − 1))) Σ_{b < c} JS(p_b, p_c).
//! ```
//!
//! Two scales ([`SpectrumScale`]): the spectra as measured (blocks whose
//! eigenvalues differ in scale differ in distribution; a few outliers then
//! set the common range, and the bulk of every block falls within a few
//! `σ` of zero), or each block's Ritz values divided by that block's largest
//! absolute one, so that the densities on `[−1, 1]` differ by their shape
//! only (the paper draws its blockwise spectra so normalised, by the 10th
//! largest eigenvalue). `JS₀` is bounded by `ln 2 ≈ 0.693`; the paper's
//! grid, broadening and normalisation may differ, so its absolute values
//! are not this one's — compare models measured the same way.

use crate::block::{Block, BlockVec};
use crate::error::{Error, Result};
use crate::operator::HvpOperator;
use crate::probe::ProbeRng;
use crate::slq::{Broadening, Slq, SpectralDensity};

/// The diagonal block `H_bb` of an operator, as an operator of its own (one
/// block): `v_b ↦ (H [0,…,v_b,…,0])_b`. Each product is one product of the
/// whole operator, read on block `b`.
pub struct DiagonalBlock<'a, O: HvpOperator> {
    op: &'a O,
    index: usize,
    block: [Block; 1],
}

impl<'a, O: HvpOperator> DiagonalBlock<'a, O> {
    /// Block `index` of `op`.
    ///
    /// # Errors
    /// [`Error::DimensionMismatch`] when `op` has no block `index`.
    pub fn new(op: &'a O, index: usize) -> Result<Self> {
        let block = op.blocks().get(index).cloned().ok_or_else(|| Error::DimensionMismatch {
            context: "DiagonalBlock: block index".into(),
            expected: op.blocks().len(),
            actual: index,
        })?;
        Ok(Self { op, index, block: [block] })
    }

    /// The vector of `op` that is `v`'s single block at this block's place.
    fn embed(&self, v: &BlockVec<O::Part>) -> BlockVec<O::Part> {
        let mut full = BlockVec::zeros(self.op.blocks().len());
        if let Some(p) = v.get(0) {
            full.set(self.index, p.clone());
        }
        full
    }
}

impl<O: HvpOperator> HvpOperator for DiagonalBlock<'_, O> {
    type Part = O::Part;
    type Scalar = O::Scalar;
    type Error = O::Error;

    fn blocks(&self) -> &[Block] {
        &self.block
    }

    fn part_from_host(&self, _block: usize, values: &[f64]) -> std::result::Result<O::Part, O::Error> {
        self.op.part_from_host(self.index, values)
    }

    fn part_to_host(&self, _block: usize, part: &O::Part) -> std::result::Result<Vec<f64>, O::Error> {
        self.op.part_to_host(self.index, part)
    }

    fn hvp(&self, v: &BlockVec<O::Part>) -> std::result::Result<BlockVec<O::Part>, O::Error> {
        let full = self.op.hvp(&self.embed(v))?;
        Ok(BlockVec::from_parts(vec![full.into_parts().into_iter().nth(self.index).flatten()]))
    }

    fn quadratic_form(&self, v: &BlockVec<O::Part>) -> std::result::Result<O::Scalar, O::Error> {
        self.op.quadratic_form(&self.embed(v))
    }

    fn scalar_value(&self, s: &O::Scalar) -> std::result::Result<f64, O::Error> {
        self.op.scalar_value(s)
    }

    fn weighted_sum(&self, terms: &[(f64, O::Scalar)]) -> std::result::Result<O::Scalar, O::Error> {
        self.op.weighted_sum(terms)
    }

    fn constant(&self, value: f64) -> std::result::Result<O::Scalar, O::Error> {
        self.op.constant(value)
    }
}

/// The SLQ density of one diagonal block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockDensity {
    /// The block's name.
    pub name: String,
    /// Its density (quadrature rules, dimension, products spent).
    pub density: SpectralDensity,
}

/// The densities of `blocks` (indices into `op.blocks()`), each by `slq` on
/// [`DiagonalBlock`], probes drawn from `rng` in block order. `on_block` is
/// called after each block (for progress reports).
///
/// # Errors
/// An index that is not a block of `op`; those of [`Slq::density`].
pub fn block_densities<O: HvpOperator>(
    op: &O,
    blocks: &[usize],
    slq: &Slq,
    rng: &mut ProbeRng,
    mut on_block: impl FnMut(usize),
) -> Result<Vec<BlockDensity>> {
    let mut out = Vec::with_capacity(blocks.len());
    for (k, &b) in blocks.iter().enumerate() {
        let block = DiagonalBlock::new(op, b)?;
        let density = slq.density(&block, rng, |_| {})?;
        out.push(BlockDensity { name: block.block[0].name.clone(), density });
        on_block(k + 1);
    }
    Ok(out)
}

/// How the blocks' spectra are put on one axis before they are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpectrumScale {
    /// The eigenvalues as measured.
    AsMeasured,
    /// Each block's Ritz values divided by its largest absolute Ritz value
    /// (over all its probes): the shape of each spectrum on `[−1, 1]`.
    PerBlockMaximum,
}

/// The blocks' densities on one grid, normalised there, and their
/// heterogeneity (module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Heterogeneity {
    /// The common grid `t₁ < … < t_G`.
    pub grid: Vec<f64>,
    /// The common broadening `σ`.
    pub sigma: f64,
    /// Each block's probability vector on the grid (sums to 1), in block order.
    pub densities: Vec<Vec<f64>>,
    /// `JS(p_b, p_c)` for every pair `b < c`, as `(b, c, divergence)`.
    pub pairs: Vec<(usize, usize, f64)>,
    /// `JS₀`, the mean over the pairs (nats).
    pub js0: f64,
    /// The noise floor of `JS₀`: for each block with at least two probes,
    /// the divergence between the densities of the first and the second half
    /// of its probes (the same block, so only SLQ's randomness differs),
    /// averaged over those blocks; `None` when no block has two probes. A
    /// `JS₀` near it says nothing about heterogeneity.
    pub floor: Option<f64>,
}

/// `JS₀` of blockwise densities on a grid of `points ≥ 2` values, with one
/// broadening for all of them (`Broadening::relative` takes the fraction of
/// the common range of Ritz values), after putting them on one axis as
/// `scale` says.
///
/// # Errors
/// [`Error::TooSmall`] for fewer than two blocks or two grid points;
/// [`Error::NonFinite`] for a density that is not finite or has no mass on
/// the grid.
pub fn heterogeneity(
    blocks: &[BlockDensity],
    points: usize,
    broadening: Broadening,
    scale: SpectrumScale,
) -> Result<Heterogeneity> {
    let scaled: Vec<BlockDensity>;
    let blocks = match scale {
        SpectrumScale::AsMeasured => blocks,
        SpectrumScale::PerBlockMaximum => {
            scaled = blocks.iter().map(rescaled).collect();
            &scaled
        }
    };
    if blocks.len() < 2 {
        return Err(Error::TooSmall { name: "blocks", min: 2, got: blocks.len() });
    }
    if points < 2 {
        return Err(Error::TooSmall { name: "grid points", min: 2, got: points });
    }
    let (lo, hi) = blocks
        .iter()
        .map(|b| b.density.node_range())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (l, h)| (a.min(l), b.max(h)));
    let sigma = broadening.sigma(hi - lo);
    let (a, b) = (lo - 6.0 * sigma, hi + 6.0 * sigma);
    let grid: Vec<f64> = (0..points).map(|i| a + (b - a) * i as f64 / (points - 1) as f64).collect();
    let absolute = Broadening::absolute(sigma)?;
    let densities = blocks
        .iter()
        .map(|bd| normalised(bd.density.evaluate(&grid, absolute), &bd.name))
        .collect::<Result<Vec<_>>>()?;
    let mut pairs = Vec::new();
    for i in 0..densities.len() {
        for j in i + 1..densities.len() {
            pairs.push((i, j, jensen_shannon(&densities[i], &densities[j])));
        }
    }
    let js0 = pairs.iter().map(|p| p.2).sum::<f64>() / pairs.len() as f64;
    let mut halves = Vec::new();
    for bd in blocks.iter().filter(|bd| bd.density.rules.len() >= 2) {
        let k = bd.density.rules.len() / 2;
        let half = |rules: &[crate::slq::QuadratureRule]| {
            let d = SpectralDensity { rules: rules.to_vec(), dim: bd.density.dim, hvps: 0 };
            normalised(d.evaluate(&grid, absolute), &bd.name)
        };
        halves.push(jensen_shannon(&half(&bd.density.rules[..k])?, &half(&bd.density.rules[k..])?));
    }
    let floor = (!halves.is_empty()).then(|| halves.iter().sum::<f64>() / halves.len() as f64);
    Ok(Heterogeneity { grid, sigma, densities, pairs, js0, floor })
}

/// `bd` with its Ritz values divided by their largest absolute value (left
/// as they are when all are zero).
fn rescaled(bd: &BlockDensity) -> BlockDensity {
    let max = bd.density.rules.iter().flat_map(|r| r.nodes.iter()).fold(0.0f64, |m, x| m.max(x.abs()));
    let mut out = bd.clone();
    if max > 0.0 {
        for r in &mut out.density.rules {
            r.nodes.iter_mut().for_each(|x| *x /= max);
        }
    }
    out
}

/// `values` scaled to sum to one.
fn normalised(values: Vec<f64>, name: &str) -> Result<Vec<f64>> {
    let total: f64 = values.iter().sum();
    if !(total > 0.0 && total.is_finite()) || values.iter().any(|x| !x.is_finite() || *x < 0.0) {
        return Err(Error::NonFinite { context: format!("the density of block {name} on the common grid") });
    }
    Ok(values.into_iter().map(|x| x / total).collect())
}

/// The Jensen–Shannon divergence of two probability vectors of one length,
/// in nats: `½ KL(p‖m) + ½ KL(q‖m)`, `m = (p + q)/2`; `0 ≤ JS ≤ ln 2`, zero
/// exactly when `p = q`, `ln 2` when their supports are disjoint.
pub fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let kl_to_mid = |x: f64, y: f64| if x > 0.0 { x * (2.0 * x / (x + y)).ln() } else { 0.0 };
    p.iter().zip(q).map(|(&x, &y)| 0.5 * kl_to_mid(x, y) + 0.5 * kl_to_mid(y, x)).sum::<f64>().max(0.0)
}
