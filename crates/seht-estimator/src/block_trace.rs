//! Per-block traces: one Hutchinson estimate of `tr(H_bb)` for each parameter
//! block `b` (each layer's weight), each with its standard error.
//!
//! **Formula** (Hutchinson 1990; the block-diagonal reading used by Yao et
//! al., PyHessian 2020, and by HAWQ-V2, Dong et al. 2020, for per-layer
//! traces). For i.i.d. probe entries with `E[σσᵀ] = c·I`, the diagonal block
//! `H_bb` of the Hessian has
//!
//! ```text
//! tr(H_bb) = E[σ_bᵀ (Hσ)_b] / c = E[σ_bᵀ H_bb σ_b] / c.
//! ```
//!
//! Two ways to probe ([`BlockProbing`]):
//!
//! - **Joint**: one product `Hσ` with `σ` over all blocks gives a sample for
//!   every block at once (`σ_bᵀ(Hσ)_b`, whose cross terms `σ_bᵀH_bcσ_c` have
//!   mean zero). `K` products in all; the per-probe block samples sum to the
//!   ordinary Hutchinson sample of `tr(H)`. With Rademacher probes,
//!   `Var = Σ_{i∈b} Σ_j h_ij² + Σ_{i,j∈b} h_ij² − 2Σ_{i∈b} h_ii²`.
//! - **Separate**: `σ` is non-zero only on block `b` (`σ_bᵀH_bbσ_b`, the
//!   quadratic form of [`HvpOperator::quadratic_form`]): no cross terms, so
//!   `Var = 2(‖H_bb‖_F² − Σ_{i∈b} h_ii²)`, but `K` products per block.

use std::num::NonZeroUsize;

use crate::block::BlockVec;
use crate::error::{Error, Result};
use crate::estimate::mean_and_std_error;
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::sample::to_operator;

/// How [`BlockTraces`] draws its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BlockProbing {
    /// One product per probe for all blocks (`K` products).
    #[default]
    Joint,
    /// One product per probe and block (`K · B` products), lower variance.
    Separate,
}

/// The trace estimate of one block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTrace {
    /// Block index in the operator's order.
    pub block: usize,
    /// The block's name (e.g. `layer1.0.conv1.weight`).
    pub name: String,
    /// Entries in the block.
    pub len: usize,
    /// One sample per probe.
    pub samples: Vec<f64>,
    /// Mean of the samples: the estimate of `tr(H_bb)`.
    pub mean: f64,
    /// Standard error of the mean (`None` for one probe).
    pub std_error: Option<f64>,
}

/// The result of [`BlockTraces::estimate`].
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTraceEstimate {
    /// One estimate per block, in the operator's order.
    pub blocks: Vec<BlockTrace>,
    /// `tr(H) = Σ_b tr(H_bb)`: the mean and its standard error (joint:
    /// from the per-probe sums; separate: the blocks' errors in quadrature,
    /// their probes being independent).
    pub total: (f64, Option<f64>),
    /// Hessian-vector products spent.
    pub hvps: usize,
}

/// Hutchinson's estimator of every diagonal block's trace (see the module
/// documentation), with `K` probes from `D`.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTraces<D = Rademacher> {
    probes: NonZeroUsize,
    probing: BlockProbing,
    distribution: D,
}

impl BlockTraces<Rademacher> {
    /// `probes ≥ 1` Rademacher probes.
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for zero probes.
    pub fn rademacher(probes: usize, probing: BlockProbing) -> Result<Self> {
        Self::new(probes, probing, Rademacher)
    }
}

impl<D: ProbeDistribution> BlockTraces<D> {
    /// `probes ≥ 1` probes from `distribution`.
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for zero probes.
    pub fn new(probes: usize, probing: BlockProbing, distribution: D) -> Result<Self> {
        let probes = NonZeroUsize::new(probes).ok_or(Error::ZeroCount { name: "probes" })?;
        Ok(Self { probes, probing, distribution })
    }

    /// Products this estimator spends on an operator of `blocks` blocks.
    pub fn budget(&self, blocks: usize) -> usize {
        match self.probing {
            BlockProbing::Joint => self.probes.get(),
            BlockProbing::Separate => self.probes.get() * blocks,
        }
    }

    /// Estimates every block's trace; `on_product` is called after each
    /// product (for progress reports).
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`], [`Error::NonFinite`], and the operator's errors.
    pub fn estimate<O: HvpOperator>(
        &self,
        op: &O,
        rng: &mut ProbeRng,
        mut on_product: impl FnMut(),
    ) -> Result<BlockTraceEstimate> {
        let blocks = op.blocks();
        if blocks.is_empty() {
            return Err(Error::EmptyBlockSet);
        }
        let nb = blocks.len();
        let k = self.probes.get();
        let c = self.distribution.second_moment();
        let mut samples = vec![Vec::with_capacity(k); nb];
        let mut hvps = 0;
        match self.probing {
            BlockProbing::Joint => {
                for _ in 0..k {
                    let mut host = BlockVec::zeros(nb);
                    for (b, blk) in blocks.iter().enumerate() {
                        host.set(b, self.distribution.sample(rng, blk.len));
                    }
                    let hv = op.hvp(&to_operator(op, &host)?).map_err(Error::operator)?;
                    hvps += 1;
                    on_product();
                    for (b, s) in samples.iter_mut().enumerate() {
                        let sigma = host.get(b).map(Vec::as_slice).unwrap_or_default();
                        let value = match hv.get(b) {
                            Some(p) => {
                                let h = op.part_to_host(b, p).map_err(Error::operator)?;
                                if h.len() != sigma.len() {
                                    return Err(Error::DimensionMismatch {
                                        context: format!("Hv block {b} ({})", blocks[b].name),
                                        expected: sigma.len(),
                                        actual: h.len(),
                                    });
                                }
                                h.iter().zip(sigma).map(|(x, y)| x * y).sum::<f64>() / c
                            }
                            None => 0.0,
                        };
                        s.push(value);
                    }
                }
            }
            BlockProbing::Separate => {
                for _ in 0..k {
                    for (b, s) in samples.iter_mut().enumerate() {
                        let mut host = BlockVec::zeros(nb);
                        host.set(b, self.distribution.sample(rng, blocks[b].len));
                        let q = op.quadratic_form(&to_operator(op, &host)?).map_err(Error::operator)?;
                        hvps += 1;
                        on_product();
                        s.push(op.scalar_value(&q).map_err(Error::operator)? / c);
                    }
                }
            }
        }
        if samples.iter().flatten().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { context: "per-block trace samples".into() });
        }
        let per_block: Vec<BlockTrace> = samples
            .into_iter()
            .enumerate()
            .map(|(b, s)| {
                let (mean, std_error) = mean_and_std_error(&s);
                BlockTrace { block: b, name: blocks[b].name.clone(), len: blocks[b].len, samples: s, mean, std_error }
            })
            .collect();
        let total = match self.probing {
            BlockProbing::Joint => {
                let sums: Vec<f64> = (0..k).map(|j| per_block.iter().map(|b| b.samples[j]).sum()).collect();
                mean_and_std_error(&sums)
            }
            BlockProbing::Separate => {
                let mean = per_block.iter().map(|b| b.mean).sum();
                let se = per_block.iter().map(|b| b.std_error.map(|e| e * e)).sum::<Option<f64>>().map(f64::sqrt);
                (mean, se)
            }
        };
        Ok(BlockTraceEstimate { blocks: per_block, total, hvps })
    }
}
