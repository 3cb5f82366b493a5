//! The Hessian-trace penalty `λ·tr̂(H)` and the estimate-only path.

use candle_core::Tensor;
use seht_estimator::{ProbeRng, TraceEstimate, TraceEstimator};

use crate::error::{Error, Result};
use crate::operator::{GraphMode, HessianOperator};
use crate::params::Param;

fn estimate_with(
    loss: &Tensor,
    params: &[Param],
    estimator: &impl TraceEstimator,
    rng: &mut ProbeRng,
    mode: GraphMode,
) -> Result<TraceEstimate<Tensor>> {
    let op = HessianOperator::with_mode(loss, params, mode)?;
    estimator.estimate(&op, rng).map_err(operator_error)
}

/// Unwraps our own error from the estimator's operator error.
pub(crate) fn operator_error(e: seht_estimator::Error) -> Error {
    match e {
        seht_estimator::Error::Operator(inner) => match inner.downcast::<Error>() {
            Ok(ours) => *ours,
            Err(other) => Error::Estimator(seht_estimator::Error::Operator(other)),
        },
        e => Error::Estimator(e),
    }
}

/// A trace estimate that stays on the autodiff graph.
///
/// `(loss + λ·est.value).backward()` then yields the exact gradient of the
/// penalised loss for the drawn probes (a third-order pass through candle).
/// `params` are the parameters the Hessian is taken over (usually
/// `ParamSet::select(&Selection::Weights)`); the gradient flows to every
/// variable the loss depends on.
pub fn trace_penalty(
    loss: &Tensor,
    params: &[Param],
    estimator: &impl TraceEstimator,
    rng: &mut ProbeRng,
) -> Result<TraceEstimate<Tensor>> {
    estimate_with(loss, params, estimator, rng, GraphMode::Differentiable)
}

/// `loss + λ·tr̂(H)`, with the estimate, ready for `backward()`.
pub fn penalised_loss(
    loss: &Tensor,
    params: &[Param],
    estimator: &impl TraceEstimator,
    lambda: f64,
    rng: &mut ProbeRng,
) -> Result<(Tensor, TraceEstimate<Tensor>)> {
    let est = trace_penalty(loss, params, estimator, rng)?;
    let total = (loss + est.value.affine(lambda, 0.0)?.to_dtype(loss.dtype())?)?;
    Ok((total, est))
}

/// A detached trace estimate, for monitoring: no third-order pass is possible
/// through it, and none is paid.
pub fn trace_estimate(
    loss: &Tensor,
    params: &[Param],
    estimator: &impl TraceEstimator,
    rng: &mut ProbeRng,
) -> Result<TraceEstimate<Tensor>> {
    estimate_with(loss, params, estimator, rng, GraphMode::Detached)
}
