//! What the paper's released code computes as its "Hessian trace", as it
//! computes it: a baseline for the published numbers, not an estimator.
//!
//! The authors' repository (GitHub `Dean-lyc/Hessian-Regularization`,
//! `hess.py` at commit `aec5938`, `run.py` at `682d18e`, with `prob = 1`)
//! does, every `hess_interval` (10) steps:
//!
//! 1. `params = [outputs] + [every parameter whose name contains "weight"]`
//!    — the logits, and the weights *and* BatchNorm scales;
//! 2. `grads = autograd.grad(loss, params, create_graph=True)`;
//! 3. `Hiter` (5) times: `v = randint_like(p, high=1)` — always 0 — with
//!    every 0 then set to −1, so `v = −1` everywhere, the same each time;
//!    `Hv = autograd.grad(grads, params, grad_outputs=v)`;
//!    `trace += Σ (Hv · v)` — the quadratic form `1ᵀH1` (the sum of every
//!    entry of the joint Hessian over logits and weights), not a trace
//!    estimate;
//! 4. `loss = loss_super + N(λ·trace/Hiter, noise_std)`: the value is a
//!    Python float (`.item()`), so the term is a constant and **sends no
//!    gradient to the weights**; the step's gradient is the baseline's.
//!
//! [`paper_code_value`] reproduces steps 1–3 (the noise of step 4 changes
//! only the reported objective and is not modelled). The logits enter the
//! differentiated list as an independent variable: the loss is recomputed
//! from `logits + z`, `z` a zero variable of the logits' shape, so that
//! `∂/∂z` is PyTorch's `∂/∂outputs` (the paths through the logits' node)
//! while the weights' derivatives are total, as in PyTorch.

use candle_core::{DType, Tensor, Var};

use crate::autodiff::{backward_create_graph, backward_no_graph, check_higher_order};
use crate::error::{Error, Result};
use crate::params::Param;

/// The value of the paper code's "Hessian trace" and what it cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaperCodeValue {
    /// `(1/K)·Σₖ vᵀHv` with `v = −1` over the logits and `weights`: the sum
    /// of all entries of that joint Hessian (each of the `K` products gives
    /// the same number; the code adds `λ·trace/Hiter`, this mean).
    pub value: f64,
    /// Hessian-vector products computed (`K`, as the code does).
    pub hvps: usize,
}

/// `vᵀHv` with `v = −1` over `[logits] + weights`, `H` the Hessian of
/// `loss_of(logits + z)` at `z = 0`, computed `probes` times by double
/// backprop as the paper's code does (see the module docs), and detached.
///
/// * `logits` — the step's logits `(N, C)`, on the forward graph;
/// * `loss_of` — the loss as a function of the logits (the code's
///   `CrossEntropyLoss`);
/// * `weights` — the tensors the code differentiates besides the logits
///   (every parameter named `weight`: in this project's roles, weights and
///   normalisation scales);
/// * `probes` — the code's `Hiter` (default 5).
///
/// # Errors
///
/// [`Error::HigherOrderDisabled`] when this thread cannot differentiate
/// twice; [`Error::NoParameters`] when `probes` is 0; candle's.
pub fn paper_code_value(
    logits: &Tensor,
    loss_of: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>,
    weights: &[Param],
    probes: usize,
) -> Result<PaperCodeValue> {
    if probes == 0 {
        return Err(Error::NoParameters("the paper code's quadratic form needs at least one probe (Hiter)".into()));
    }
    check_higher_order()?;
    let z = Var::zeros(logits.shape(), logits.dtype(), logits.device())?;
    let loss = loss_of(&(logits + z.as_tensor())?)?;
    let grads = backward_create_graph(&loss)?;
    let mut tensors: Vec<&Tensor> = vec![z.as_tensor()];
    tensors.extend(weights.iter().map(|p| p.var.as_tensor()));
    // s = Σ_p ⟨g_p, v_p⟩ with v = −1: its gradient is Hv.
    let mut s: Option<Tensor> = None;
    for t in &tensors {
        let Some(g) = grads.get(t) else { continue };
        let term = g.sum_all()?.to_dtype(DType::F64)?.neg()?;
        s = Some(match s {
            Some(acc) => (acc + term)?,
            None => term,
        });
    }
    let s = s.ok_or_else(|| Error::NoParameters("the loss depends on none of the paper code's tensors".into()))?;
    let mut total = 0.0;
    for _ in 0..probes {
        let hv = backward_no_graph(&s)?;
        let mut q = 0.0;
        for t in &tensors {
            if let Some(h) = hv.get(t) {
                q -= h.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
        total += q;
    }
    Ok(PaperCodeValue { value: total / probes as f64, hvps: probes })
}
