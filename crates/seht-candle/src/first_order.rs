//! The Hessian-trace penalty's gradient from first-order gradients only: no
//! third backward pass, no double-backward support needed from any op, and
//! about 3 plain steps of cost (1 + 2 per probe).
//!
//! For a probe `σ` over the penalised blocks and `g(w) = ∇L(w)`:
//!
//! ```text
//! σᵀHσ        ≈ σᵀ(g(w + εσ) − g(w − εσ)) / 2ε                 (error O(ε²))
//! ∇_w(σᵀHσ)   ≈ (g(w + εσ) + g(w − εσ) − 2 g(w)) / ε²           (error O(ε²))
//! ```
//!
//! The second line is the central second difference of the gradient along
//! `σ`, i.e. the third-derivative tensor contracted twice with `σ`; it holds
//! for every variable, penalised or not.
//!
//! **Choice of ε.** `ε = ε_rel · ‖w_S‖ / ‖σ_S‖` over the probed blocks `S`, so
//! that the step moves the weights by a fixed fraction `ε_rel` of their norm
//! whatever the probe's size and sparsity. The second difference has
//! truncation error `O(ε²)` and rounding error `O(u·‖g‖/ε²)` (`u` the unit
//! roundoff), balanced at `ε_rel ≈ u^{1/4}`: about 1e-4 in f64 and 2e-2 in f32
//! ([`default_relative_step`]).
//!
//! **Same function three times.** The caller's `loss` closure must compute the
//! same function of the weights at each call: the same minibatch, the same
//! dropout masks (e.g. a fixed `Phase::Train { seed }`), BatchNorm in training
//! mode. The perturbed passes' updates of the buffers (BatchNorm running
//! statistics) are undone: `buffers` are restored before the unperturbed pass.

use candle_core::{DType, Tensor, Var};
use seht_estimator::{BlockVec, ProbeDistribution, ProbeRng};

use crate::error::{Error, Result};
use crate::params::Param;

/// `u^{1/4}` for the dtype: the relative step that balances truncation and
/// rounding in a second difference.
pub fn default_relative_step(dtype: DType) -> f64 {
    match dtype {
        DType::F64 => 1e-4,
        DType::F32 => 2e-2,
        _ => 1e-1,
    }
}

/// The outcome of one first-order penalised evaluation.
#[derive(Debug, Clone)]
pub struct FirstOrderStep {
    /// The loss at `w` (unperturbed).
    pub loss: f64,
    /// Gradient of `loss + λ·σᵀHσ` for each of `vars` (detached).
    pub grads: Vec<Tensor>,
    /// The per-probe estimates `σᵀHσ` (by the central difference).
    pub samples: Vec<f64>,
    /// The absolute steps ε used, one per probe.
    pub steps: Vec<f64>,
}

fn gradient(loss: &Tensor, vars: &[Var]) -> Result<(f64, Vec<Tensor>)> {
    let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let g = loss.backward()?;
    let grads = vars
        .iter()
        .map(|v| Ok(g.get(v.as_tensor()).map(Tensor::detach).map(Ok).unwrap_or_else(|| v.zeros_like())?))
        .collect::<Result<Vec<_>>>()?;
    Ok((value, grads))
}

fn norm(ts: &[&Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(s.sqrt())
}

/// Gradients of `L + λ·(1/K)Σ σₖᵀHσₖ` with first-order passes only.
///
/// * `vars` — every variable to return a gradient for (the trainable ones);
/// * `penalised` — the blocks of the Hessian (usually the weights);
/// * `buffers` — state the forward pass writes (BatchNorm running statistics),
///   restored after the perturbed passes;
/// * `dist`, `probes`, `rng` — the probe distribution (Rademacher for SEHT-H,
///   `Sparse` for SEHT-D's entries), the number of probes, the generator;
///   `scale` multiplies each `σᵀHσ` (1, or SEHT-D's `1/(p1·2p2)`);
/// * `relative_step` — `ε_rel` (see the module docs);
/// * `loss` — recomputes the loss from the current values of the variables.
#[allow(clippy::too_many_arguments)]
pub fn first_order_penalty(
    vars: &[Var],
    penalised: &[Param],
    buffers: &[Var],
    dist: &impl ProbeDistribution,
    probes: usize,
    scale: f64,
    lambda: f64,
    relative_step: f64,
    rng: &mut ProbeRng,
    loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
) -> Result<FirstOrderStep> {
    if penalised.is_empty() {
        return Err(Error::NoParameters("first-order penalty over an empty parameter list".into()));
    }
    // Where each penalised block sits in `vars` (its gradient is needed for σᵀHσ).
    let index: Vec<usize> = penalised
        .iter()
        .map(|p| {
            vars.iter()
                .position(|v| v.as_tensor().id() == p.var.as_tensor().id())
                .ok_or_else(|| Error::UnknownParameter(p.name.clone()))
        })
        .collect::<Result<_>>()?;
    let w0: Vec<Tensor> = penalised.iter().map(|p| p.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let w_norm = norm(&w0.iter().collect::<Vec<_>>())?;

    let mut sum2: Option<Vec<Tensor>> = None; // Σ_k (g+ + g−)/ε_k²
    let mut inv_eps2 = 0.0; // Σ_k 1/ε_k²
    let (mut samples, mut steps) = (Vec::with_capacity(probes), Vec::with_capacity(probes));
    for _ in 0..probes {
        let host: BlockVec<Vec<f64>> =
            BlockVec::from_parts(penalised.iter().map(|p| Some(dist.sample(rng, p.var.elem_count()))).collect());
        let sigma: Vec<Tensor> = penalised
            .iter()
            .zip(host.parts())
            .map(|(p, v)| {
                Ok(Tensor::from_slice(v.as_deref().unwrap_or(&[]), p.var.shape(), p.var.device())?
                    .to_dtype(p.var.dtype())?)
            })
            .collect::<Result<_>>()?;
        let s_norm = norm(&sigma.iter().collect::<Vec<_>>())?;
        if s_norm == 0.0 {
            samples.push(0.0);
            continue;
        }
        let eps = relative_step * w_norm.max(1e-12) / s_norm;
        let mut pass = |sign: f64| -> Result<Vec<Tensor>> {
            for ((p, w), s) in penalised.iter().zip(&w0).zip(&sigma) {
                p.var.set(&(w + s.affine(sign * eps, 0.0)?)?)?;
            }
            let (_, g) = gradient(&loss()?, vars)?;
            Ok(g)
        };
        let gp = pass(1.0)?;
        let gm = pass(-1.0)?;
        for (p, w) in penalised.iter().zip(&w0) {
            p.var.set(w)?;
        }
        let mut q = 0.0;
        for (k, s) in index.iter().zip(&sigma) {
            q += ((&gp[*k] - &gm[*k])? * s)?.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()? / (2.0 * eps);
        }
        samples.push(scale * q);
        steps.push(eps);
        let contrib: Vec<Tensor> = gp
            .iter()
            .zip(&gm)
            .map(|(a, b)| (a + b)?.affine(1.0 / (eps * eps), 0.0))
            .collect::<candle_core::Result<_>>()?;
        sum2 = Some(match sum2 {
            None => contrib,
            Some(acc) => acc.iter().zip(&contrib).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?,
        });
        inv_eps2 += 1.0 / (eps * eps);
    }
    for (b, s) in buffers.iter().zip(&saved) {
        b.set(s)?;
    }
    // The unperturbed pass: the step's own forward (updates the buffers once).
    let (value, g0) = gradient(&loss()?, vars)?;
    let k = probes as f64;
    let grads = match sum2 {
        None => g0,
        Some(s2) => g0
            .iter()
            .zip(&s2)
            .map(|(g, s)| {
                // ∇(mean σᵀHσ) = (1/K) Σ_k (g+ + g− − 2g0)/ε_k²
                let third = (s - g.affine(2.0 * inv_eps2, 0.0)?)?.affine(scale / k, 0.0)?;
                g + third.affine(lambda, 0.0)?
            })
            .collect::<candle_core::Result<_>>()?,
    };
    Ok(FirstOrderStep { loss: value, grads, samples, steps })
}
