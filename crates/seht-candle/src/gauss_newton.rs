//! The generalised Gauss–Newton trace `tr(G)` of a softmax cross-entropy
//! loss, estimated from labels sampled from the model, and a penalty
//! `λ·tr̂(G)` whose gradient needs second-order autodiff only (or none).
//! The penalty is a [`Penalty`](crate::Penalty) like the Hessian's
//! ([`Penalty::gauss_newton`](crate::Penalty::gauss_newton)); this module
//! holds the estimate of `tr(G)` alone and the label sampler.
//!
//! ## What is estimated
//!
//! For a batch of `N` rows with logits `z_n = f(x_n; w)` (`C` classes), the
//! mean loss `L = (1/N) Σ_n ℓ(z_n, y_n)` has the generalised Gauss–Newton
//! matrix (Schraudolph 2002; Martens 2020, "New insights and perspectives on
//! the natural gradient method", JMLR 21, §8)
//!
//! ```text
//! G = (1/N) Σ_n J_nᵀ H_n J_n,   J_n = ∂z_n/∂w,   H_n = ∂²ℓ/∂z² = diag(p_n) − p_n p_nᵀ,
//! ```
//!
//! with `p_n = softmax(z_n)`. `G ⪰ 0` always, and for softmax cross-entropy it
//! equals the Fisher information of the model's predictive distribution. For
//! a linear model `H = G`; for a deep network `H = G + Σ (∂ℓ/∂z)·∂²z/∂w²`, and
//! only the first part is guaranteed positive semi-definite (the trace of
//! `H` of a BatchNorm network is negative at initialisation, see issue 18).
//!
//! ## The estimator (first-order passes only)
//!
//! Draw `ŷ_n ~ Categorical(p_n)` independently per row and let
//! `L̂ = (1/N) Σ_n ℓ(z_n, ŷ_n)`. Then `∇ℓ(z_n, ŷ_n) = J_nᵀ (p_n − e_{ŷ_n})`
//! with `E[p_n − e_{ŷ_n}] = 0` and `E[(p_n − e_{ŷ_n})(p_n − e_{ŷ_n})ᵀ] = H_n`,
//! so the cross terms of different rows vanish in expectation and
//!
//! ```text
//! E_ŷ ‖∇_w L̂‖² = (1/N²) Σ_n tr(J_nᵀ H_n J_n) = tr(G)/N,   i.e.   tr(G) = N · E_ŷ ‖∇_w L̂‖².
//! ```
//!
//! Each label draw `k` gives one unbiased sample `N‖∇_S L̂_k‖²` over the
//! penalised blocks `S` (the weights, as for SEHT); the estimate is their
//! mean, with the standard error over draws. This is the "Fisher penalty" of
//! Jastrzębski et al. 2021 ("Catastrophic Fisher explosion", ICML), there
//! with one draw per step and the batch-mean gradient.
//!
//! ## The penalty's gradient
//!
//! With the labels held fixed, `∇_θ (N‖g_S‖²) = 2N · (∂g_S/∂θ)ᵀ g_S`, a
//! Hessian-vector product of the sampled-label loss `L̂` with the vector
//! `g_S` (zero outside `S`). [`Gradient::ExactPerProbe`] (or `Exact`) forms it
//! by differentiating `‖g_S‖²` through the first backward pass (second-order
//! autodiff, the cost and memory of one HVP);
//! [`Gradient::FirstOrder`] by the central difference
//! `(∇L̂(w + h·g_S) − ∇L̂(w − h·g_S)) / 2h` with the base pass's activation
//! pattern replayed ([`crate::pattern`]), so that ReLU and max-pool networks
//! are differentiated on one linear region.
//!
//! **The score-function term.** The labels' distribution depends on `w`, so
//! `∇_w E_ŷ[f(w, ŷ)] = E_ŷ[∇_w f] + E_ŷ[f · ∇_w log p(ŷ | w)]`. Both paths
//! return the first term only, as the Fisher-penalty literature does: the
//! second is the gradient of the label distribution, whose Monte-Carlo
//! estimate has a variance that grows with `f` (no baseline is available
//! within one draw) and whose exact value needs all `C^N` label vectors. It
//! is not small: measured exactly by enumeration on a 3-4-3 tanh network with
//! 2 rows (`tests/gauss_newton.rs`), its norm is 0.38 of the kept term's and
//! the full gradient's cosine with the kept one is 0.93. The kept term is
//! still a descent direction for `tr(G)` there, but it is a biased gradient
//! of `E_ŷ[tr̂(G)]` — a documented bias, not a silent one.

use candle_core::{D, DType, Tensor, Var};
use rand::Rng;
use seht_estimator::{ProbeRng, Target, TraceEstimate};

use crate::error::{Error, Result};
use crate::first_order::default_relative_step;
use crate::params::Param;
use crate::step::Gradient;

/// The outcome of one Gauss–Newton-penalised evaluation.
#[derive(Debug, Clone)]
pub(crate) struct GaussNewtonStep {
    /// The loss `L` (mean cross-entropy with the true labels) at `w`.
    pub loss: f64,
    /// `∇(L + λ·tr̂(G))` for each of `vars` (detached; zeros where the loss
    /// does not depend on a variable).
    pub grads: Vec<Tensor>,
    /// The estimate of `tr(G)` over the penalised blocks: one sample
    /// `N‖∇_S L̂_k‖²` per label draw.
    pub estimate: TraceEstimate<f64>,
}

/// Draws one label per row of `logits` `(N, C)` from `softmax(logits)`
/// (inverse-CDF sampling in f64 on the host), as a `u32` tensor `(N,)` on
/// the logits' device.
///
/// # Errors
/// [`Error::InvalidOp`] when `logits` is not 2-D or holds a non-finite value.
pub fn sample_labels(logits: &Tensor, rng: &mut ProbeRng) -> Result<Tensor> {
    let (n, c) = logits
        .dims2()
        .map_err(|_| invalid(format!("expected logits of shape (rows, classes), got {:?}", logits.shape())))?;
    let p = candle_nn::ops::softmax(&logits.detach().to_dtype(DType::F64)?, D::Minus1)?.to_vec2::<f64>()?;
    let mut labels = Vec::with_capacity(n);
    for (row, probs) in p.iter().enumerate() {
        if probs.iter().any(|x| !x.is_finite()) {
            return Err(invalid(format!("row {row} of the logits is not finite")));
        }
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut label = c - 1;
        for (j, &pj) in probs.iter().enumerate() {
            acc += pj;
            if u < acc {
                label = j;
                break;
            }
        }
        labels.push(label as u32);
    }
    Ok(Tensor::from_vec(labels, n, logits.device())?)
}

fn invalid(message: String) -> Error {
    Error::InvalidOp { op: "gauss_newton", message }
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `Σ ‖t‖²` over several tensors, as a tensor (on the graph).
fn sum_sq(ts: &[&Tensor]) -> Result<Tensor> {
    let mut acc: Option<Tensor> = None;
    for t in ts {
        let s = t.sqr()?.sum_all()?;
        acc = Some(match acc {
            None => s,
            Some(a) => (a + s)?,
        });
    }
    acc.ok_or_else(|| invalid("no penalised block has a gradient".into()))
}

/// Index of each penalised block in `vars`.
fn positions(vars: &[Var], penalised: &[Param]) -> Result<Vec<usize>> {
    penalised
        .iter()
        .map(|p| {
            vars.iter()
                .position(|v| v.as_tensor().id() == p.var.as_tensor().id())
                .ok_or_else(|| Error::UnknownParameter(p.name.clone()))
        })
        .collect()
}

/// Gradients of `loss` for each of `vars` (zeros where absent), detached.
fn grads_of(loss: &Tensor, vars: &[Var]) -> Result<Vec<Tensor>> {
    let store = crate::autodiff::backward_no_graph(loss)?;
    vars.iter()
        .map(|v| Ok(store.get(v.as_tensor()).map(Tensor::detach).map(Ok).unwrap_or_else(|| v.zeros_like())?))
        .collect()
}

fn estimate(samples: Vec<f64>, blocks: usize, hvps: usize) -> TraceEstimate<f64> {
    TraceEstimate::from_samples(samples, Target::FullTrace, (0..blocks).collect(), hvps)
}

/// A detached estimate of `tr(G)` over `penalised` from logits `(N, C)`
/// already computed on the graph (`draws` label draws, one backward pass
/// each). For monitoring: no penalty gradient is formed.
///
/// # Errors
/// [`Error::InvalidOp`] for `draws = 0` or bad logits; candle's errors.
pub fn gauss_newton_trace(
    logits: &Tensor,
    penalised: &[Param],
    draws: usize,
    rng: &mut ProbeRng,
) -> Result<TraceEstimate<f64>> {
    if draws == 0 {
        return Err(invalid("at least one label draw is needed".into()));
    }
    let n = logits.dim(0)? as f64;
    let vars: Vec<Var> = penalised.iter().map(|p| p.var.clone()).collect();
    let mut samples = Vec::with_capacity(draws);
    for _ in 0..draws {
        let yhat = sample_labels(logits, rng)?;
        let g = grads_of(&candle_nn::loss::cross_entropy(logits, &yhat)?, &vars)?;
        samples.push(n * scalar(&sum_sq(&g.iter().collect::<Vec<_>>())?)?);
    }
    Ok(estimate(samples, penalised.len(), draws))
}

/// `∇(L + λ·tr̂(G))` for each of `vars`, with `tr(G)` over the blocks
/// `penalised` estimated from `draws` label draws (module docs): the
/// Gauss–Newton path of [`Penalty::gradients`](crate::Penalty::gradients).
///
/// * `vars` — every variable to return a gradient for (the trainable ones);
/// * `penalised` — the blocks of `G` (usually the weights);
/// * `buffers` — state the forward pass writes (BatchNorm running
///   statistics): the first-order path's perturbed passes' updates are undone;
/// * `forward` — computes `(logits (N, C), labels (N,))` from the variables'
///   current values: the same batch and dropout masks at every call (the
///   first-order path calls it `1 + 2K` times, the unperturbed call first),
///   and the loss `L` when it is not their plain cross-entropy.
///
/// # Errors
/// [`Error::InvalidOp`] for `draws = 0`, a non-positive or non-finite λ or
/// step, or bad logits; [`Error::UnknownParameter`] when a penalised block is
/// not among `vars`; [`Error::NoParameters`] for an empty `penalised`;
/// candle's errors.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gauss_newton_penalty(
    vars: &[Var],
    penalised: &[Param],
    buffers: &[Var],
    draws: usize,
    lambda: f64,
    gradient: Gradient,
    rng: &mut ProbeRng,
    forward: &mut dyn FnMut() -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)>,
) -> Result<GaussNewtonStep> {
    if draws == 0 {
        return Err(invalid("at least one label draw is needed".into()));
    }
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(invalid(format!("λ = {lambda} must be finite and ≥ 0")));
    }
    if penalised.is_empty() {
        return Err(Error::NoParameters("Gauss–Newton penalty over an empty parameter list".into()));
    }
    let index = positions(vars, penalised)?;
    match gradient {
        Gradient::Exact | Gradient::ExactPerProbe => {
            crate::autodiff::check_higher_order()?;
            let (logits, ys, loss) = forward()?;
            let n = logits.dim(0)? as f64;
            let loss = match loss {
                Some(l) => l,
                None => candle_nn::loss::cross_entropy(&logits, &ys)?,
            };
            let value = scalar(&loss)?;
            let mut grads = grads_of(&loss, vars)?;
            let mut samples = Vec::with_capacity(draws);
            for _ in 0..draws {
                let yhat = sample_labels(&logits, rng)?;
                let lhat = candle_nn::loss::cross_entropy(&logits, &yhat)?;
                let store = crate::autodiff::backward_create_graph(&lhat)?;
                let gs: Vec<&Tensor> = penalised.iter().filter_map(|p| store.get(p.var.as_tensor())).collect();
                let q = sum_sq(&gs)?;
                samples.push(n * scalar(&q)?);
                // One draw's graph at a time: differentiate, keep the gradient, drop the graph.
                let dq = grads_of(&q.affine(lambda * n / draws as f64, 0.0)?, vars)?;
                drop(store);
                for (g, d) in grads.iter_mut().zip(dq) {
                    *g = (&*g + d)?;
                }
            }
            Ok(GaussNewtonStep { loss: value, grads, estimate: estimate(samples, penalised.len(), draws) })
        }
        Gradient::FirstOrder { relative_step } => {
            let relative_step = relative_step.unwrap_or_else(|| default_relative_step(penalised[0].var.dtype()));
            if !(relative_step > 0.0 && relative_step < 1.0) {
                return Err(invalid(format!("relative step {relative_step} must lie in (0, 1)")));
            }
            // The unperturbed pass: the loss, its gradient, the labels' and
            // the pattern the perturbed passes replay.
            let (base, pattern) = crate::pattern::record(|| -> Result<_> {
                let (logits, ys, loss) = forward()?;
                let loss = match loss {
                    Some(l) => l,
                    None => candle_nn::loss::cross_entropy(&logits, &ys)?,
                };
                let value = scalar(&loss)?;
                let g0 = grads_of(&loss, vars)?;
                let mut draws_out = Vec::with_capacity(draws);
                for _ in 0..draws {
                    let yhat = sample_labels(&logits, rng)?;
                    let g = grads_of(&candle_nn::loss::cross_entropy(&logits, &yhat)?, vars)?;
                    draws_out.push((yhat, g));
                }
                Ok((logits.dim(0)? as f64, value, g0, draws_out))
            });
            let (n, value, mut grads, drawn) = base?;
            let w0: Vec<Tensor> =
                penalised.iter().map(|p| p.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
            let saved: Vec<Tensor> =
                buffers.iter().map(|b| b.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
            let w_norm = scalar(&sum_sq(&w0.iter().collect::<Vec<_>>())?)?.sqrt();
            let mut samples = Vec::with_capacity(draws);
            for (yhat, g) in &drawn {
                let v: Vec<&Tensor> = index.iter().map(|&i| &g[i]).collect();
                let v_sq = scalar(&sum_sq(&v)?)?;
                samples.push(n * v_sq);
                if v_sq == 0.0 || lambda == 0.0 {
                    continue;
                }
                let h = relative_step * w_norm.max(1e-12) / v_sq.sqrt();
                let mut pass = |sign: f64| -> Result<Vec<Tensor>> {
                    for ((p, w), d) in penalised.iter().zip(&w0).zip(&v) {
                        p.var.set(&(w + d.affine(sign * h, 0.0)?)?)?;
                    }
                    let g = crate::pattern::replay(&pattern, || -> Result<_> {
                        let (logits, _, _) = forward()?;
                        grads_of(&candle_nn::loss::cross_entropy(&logits, yhat)?, vars)
                    })??;
                    Ok(g)
                };
                let plus = pass(1.0);
                let minus = plus.as_ref().ok().map(|_| pass(-1.0));
                for (p, w) in penalised.iter().zip(&w0) {
                    p.var.set(w)?;
                }
                for (b, s) in buffers.iter().zip(&saved) {
                    b.set(s)?;
                }
                let (plus, minus) = (plus?, minus.unwrap_or_else(|| Ok(Vec::new()))?);
                // λ·(1/K)·2N·Hv ≈ λ·(N/K)·(g₊ − g₋)/h
                let c = lambda * n / (draws as f64 * h);
                for ((g, a), b) in grads.iter_mut().zip(&plus).zip(&minus) {
                    *g = (&*g + (a - b)?.affine(c, 0.0)?)?;
                }
            }
            let est = estimate(samples, penalised.len(), 2 * draws);
            Ok(GaussNewtonStep { loss: value, grads, estimate: est })
        }
    }
}
