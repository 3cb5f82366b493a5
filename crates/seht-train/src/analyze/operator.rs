//! The mean of several batches' curvature operators ([`MeanHessian`]), and
//! the progress bar that counts an analysis's products on any operator
//! ([`WithProgress`]).

use candle_core::Tensor;
use indicatif::ProgressBar;
use seht_candle::HessianOperator;
use seht_estimator::{Block, BlockVec, HvpOperator};

use crate::error::{Error, Result};

/// The curvature of the mean of several batch losses: `H = (1/B) Σ_b H_b`
/// for [`HessianOperator`]s (the default), `G = (1/B) Σ_b G_b` for
/// [`GaussNewtonOperator`](seht_candle::GaussNewtonOperator)s.
///
/// Holds one operator (one backward graph) per batch, so memory grows with
/// `B`; each product costs `B` batch products.
pub struct MeanHessian<O = HessianOperator> {
    ops: Vec<O>,
}

impl<O> MeanHessian<O> {
    /// The mean of `ops` (at least one, all over the same parameters).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming `--batches` for an empty list.
    pub fn new(ops: Vec<O>) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::InvalidOption {
                option: "--batches",
                value: "0".into(),
                reason: "at least one batch is needed".into(),
            });
        }
        Ok(Self { ops })
    }
}

impl<O> HvpOperator for MeanHessian<O>
where
    O: HvpOperator<Part = Tensor, Scalar = Tensor, Error = seht_candle::Error>,
{
    type Part = Tensor;
    type Scalar = f64;
    type Error = seht_candle::Error;

    fn blocks(&self) -> &[Block] {
        self.ops[0].blocks()
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> seht_candle::Result<Tensor> {
        self.ops[0].part_from_host(block, values)
    }

    fn part_to_host(&self, block: usize, part: &Tensor) -> seht_candle::Result<Vec<f64>> {
        self.ops[0].part_to_host(block, part)
    }

    fn hvp(&self, v: &BlockVec<Tensor>) -> seht_candle::Result<BlockVec<Tensor>> {
        let scale = 1.0 / self.ops.len() as f64;
        let mut acc: Option<Vec<Option<Tensor>>> = None;
        for op in &self.ops {
            let hv = op.hvp(v)?.into_parts();
            acc = Some(match acc {
                None => hv,
                Some(a) => a
                    .into_iter()
                    .zip(hv)
                    .map(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => Ok(Some((x + y)?)),
                        (x, None) => Ok(x),
                        (None, y) => Ok(y),
                    })
                    .collect::<candle_core::Result<_>>()?,
            });
        }
        let parts = acc.unwrap_or_default().into_iter().map(|p| p.map(|t| t.affine(scale, 0.0)).transpose());
        Ok(BlockVec::from_parts(parts.collect::<candle_core::Result<_>>()?))
    }

    fn quadratic_form(&self, v: &BlockVec<Tensor>) -> seht_candle::Result<f64> {
        let mut sum = 0.0;
        for op in &self.ops {
            let q = op.quadratic_form(v)?;
            sum += op.scalar_value(&q)?;
        }
        Ok(sum / self.ops.len() as f64)
    }

    fn scalar_value(&self, s: &f64) -> seht_candle::Result<f64> {
        Ok(*s)
    }

    fn weighted_sum(&self, terms: &[(f64, f64)]) -> seht_candle::Result<f64> {
        Ok(terms.iter().map(|(c, s)| c * s).sum())
    }

    fn constant(&self, value: f64) -> seht_candle::Result<f64> {
        Ok(value)
    }
}

/// `op`, its products (`hvp`, `quadratic_form`) each advancing `bar` by one.
pub(super) struct WithProgress<'a, O> {
    op: &'a O,
    bar: &'a ProgressBar,
}

impl<'a, O> WithProgress<'a, O> {
    pub(super) fn new(op: &'a O, bar: &'a ProgressBar) -> Self {
        Self { op, bar }
    }
}

impl<O: HvpOperator> HvpOperator for WithProgress<'_, O> {
    type Part = O::Part;
    type Scalar = O::Scalar;
    type Error = O::Error;

    fn blocks(&self) -> &[Block] {
        self.op.blocks()
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> std::result::Result<O::Part, O::Error> {
        self.op.part_from_host(block, values)
    }

    fn part_to_host(&self, block: usize, part: &O::Part) -> std::result::Result<Vec<f64>, O::Error> {
        self.op.part_to_host(block, part)
    }

    fn hvp(&self, v: &BlockVec<O::Part>) -> std::result::Result<BlockVec<O::Part>, O::Error> {
        let out = self.op.hvp(v)?;
        self.bar.inc(1);
        Ok(out)
    }

    fn quadratic_form(&self, v: &BlockVec<O::Part>) -> std::result::Result<O::Scalar, O::Error> {
        let out = self.op.quadratic_form(v)?;
        self.bar.inc(1);
        Ok(out)
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
