//! The exact penalised gradient one probe at a time.
//!
//! `(loss + λ·tr̂).backward()` ([`penalised_loss`](crate::penalised_loss))
//! keeps the second-order graph of *every* probe alive until the single
//! third-order pass: with K probes the graph holds K Hessian-vector-product
//! subgraphs, and memory grows K-fold (SEHT-D with K = 10 on a small ResNet
//! at batch 32 needed over 22 GB). The estimate is linear in its samples,
//!
//! ```text
//! ∇(L + λ·Σₖ cₖ σₖᵀHσₖ) = ∇L + λ·Σₖ cₖ ∇(σₖᵀHσₖ),
//! ```
//!
//! so [`penalised_gradients`] differentiates each quadratic form as soon as
//! it is formed, keeps only its (detached) gradient, and drops its graph; the
//! coefficients `cₖ` are collected from the estimator's own weighted sums.
//! Peak memory is that of one probe; the price is that the forward and
//! first-backward part of the graph is traversed once per probe instead of
//! once in all (measured in docs/performance.md). For K = 1 both paths do the
//! same work. The result equals `penalised_loss(..).backward()` up to
//! floating-point reassociation (tested to 1e-12 in f64).

use std::cell::RefCell;

use candle_core::{DType, Tensor, Var};
use seht_estimator::{Block, BlockVec, HvpOperator, ProbeRng, TraceEstimate, TraceEstimator};

use crate::error::{Error, Result};
use crate::operator::{GraphMode, HessianOperator};
use crate::params::Param;

/// A scalar of the accumulating operator: a value and its expression as a
/// linear combination of the stored per-probe gradients.
#[derive(Debug, Clone)]
pub struct Combination {
    value: f64,
    terms: Vec<(usize, f64)>,
}

struct Accumulating<'a> {
    op: &'a HessianOperator,
    vars: &'a [Var],
    /// Per quadratic form: the gradient of `σᵀHσ` for each of `vars`.
    stored: RefCell<Vec<Vec<Option<Tensor>>>>,
}

impl HvpOperator for Accumulating<'_> {
    type Part = Tensor;
    type Scalar = Combination;
    type Error = Error;

    fn blocks(&self) -> &[Block] {
        self.op.blocks()
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> Result<Tensor> {
        self.op.part_from_host(block, values)
    }

    fn part_to_host(&self, block: usize, part: &Tensor) -> Result<Vec<f64>> {
        self.op.part_to_host(block, part)
    }

    /// Products are detached: estimators use them only to choose probes
    /// (Hutch++'s sketch, held fixed), never as part of the estimate.
    fn hvp(&self, v: &BlockVec<Tensor>) -> Result<BlockVec<Tensor>> {
        self.op.hvp_with(v, false)
    }

    fn quadratic_form(&self, v: &BlockVec<Tensor>) -> Result<Combination> {
        let q = self.op.quadratic_form(v)?;
        let value = q.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let store = crate::autodiff::backward_no_graph(&q)?;
        let grads = self.vars.iter().map(|var| store.get(var.as_tensor()).map(Tensor::detach)).collect();
        drop(store);
        drop(q);
        let mut stored = self.stored.borrow_mut();
        stored.push(grads);
        Ok(Combination { value, terms: vec![(stored.len() - 1, 1.0)] })
    }

    fn scalar_value(&self, s: &Combination) -> Result<f64> {
        Ok(s.value)
    }

    fn weighted_sum(&self, terms: &[(f64, Combination)]) -> Result<Combination> {
        let mut out = Combination { value: 0.0, terms: Vec::new() };
        for (c, s) in terms {
            out.value += c * s.value;
            out.terms.extend(s.terms.iter().map(|&(i, w)| (i, c * w)));
        }
        Ok(out)
    }

    fn constant(&self, value: f64) -> Result<Combination> {
        Ok(Combination { value, terms: Vec::new() })
    }
}

/// The gradient of `loss + λ·tr̂(H)` and the estimate.
#[derive(Debug, Clone)]
pub struct PenalisedGradients {
    /// For each variable passed in: the gradient (detached), or `None` when
    /// neither the loss nor the penalty depends on it.
    pub grads: Vec<Option<Tensor>>,
    /// The trace estimate (its `value` is the number).
    pub estimate: TraceEstimate<f64>,
}

/// The exact gradient of `loss + λ·tr̂(H)` for each of `vars`, differentiating
/// one probe at a time (see the module docs); the same numbers as
/// `penalised_loss(loss, params, ..).0.backward()` with a K-fold smaller
/// graph. `params` are the blocks of the Hessian (usually the weights),
/// `vars` every variable a gradient is wanted for (usually all trainable
/// ones).
pub fn penalised_gradients(
    loss: &Tensor,
    params: &[Param],
    vars: &[Var],
    estimator: &impl TraceEstimator,
    lambda: f64,
    rng: &mut ProbeRng,
) -> Result<PenalisedGradients> {
    accumulated(loss, params, vars, estimator, lambda, rng, true)
}

/// The gradient of `λ·tr̂(H)` alone (without the loss's), one probe at a
/// time: [`penalised_gradients`] less `∇loss`, computed without it rather
/// than subtracted. For a penalty whose Hessian is taken of another
/// function than the loss that is trained (e.g. the loss with BatchNorm's
/// running statistics).
pub(crate) fn penalty_only_gradients(
    loss: &Tensor,
    params: &[Param],
    vars: &[Var],
    estimator: &impl TraceEstimator,
    lambda: f64,
    rng: &mut ProbeRng,
) -> Result<PenalisedGradients> {
    accumulated(loss, params, vars, estimator, lambda, rng, false)
}

fn accumulated(
    loss: &Tensor,
    params: &[Param],
    vars: &[Var],
    estimator: &impl TraceEstimator,
    lambda: f64,
    rng: &mut ProbeRng,
    with_loss: bool,
) -> Result<PenalisedGradients> {
    let (op, loss_grads) = HessianOperator::build(loss, params, GraphMode::Differentiable, vars)?;
    let loss_grads = if with_loss { loss_grads } else { vec![None; loss_grads.len()] };
    let acc = Accumulating { op: &op, vars, stored: RefCell::new(Vec::new()) };
    let est = estimator.estimate(&acc, rng).map_err(crate::penalty::operator_error)?;
    let stored = acc.stored.into_inner();
    let mut grads = loss_grads;
    for &(k, c) in &est.value.terms {
        for (g, pg) in grads.iter_mut().zip(&stored[k]) {
            let Some(pg) = pg else { continue };
            let term = pg.affine(lambda * c, 0.0)?;
            *g = Some(match g.take() {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
    }
    let value = est.value.value;
    let estimate = est.with_value(value);
    Ok(PenalisedGradients { grads, estimate })
}
