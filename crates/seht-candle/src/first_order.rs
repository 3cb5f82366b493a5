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
//! mode. The unperturbed pass runs first and updates the buffers (BatchNorm
//! running statistics); the perturbed passes' updates are undone.
//!
//! **Piecewise-smooth networks.** ReLU and max pooling make the gradient
//! jump where an activation changes sign or a window changes its winner;
//! points `w ± εσ` generally lie on different sides of such boundaries, and
//! the plain second difference then measures the jumps (relative error ≈ 1e3
//! at `ε_rel = 1e-2` on a conv → ReLU network, growing like `1/ε`). The
//! perturbed passes therefore replay the unperturbed pass's activation
//! pattern ([`crate::pattern`]): all three passes evaluate the same smooth
//! piece, whose Hessian is exactly what autodiff gives at `w`, and the error
//! is back to `O(ε²)`. This holds for every op that consults the pattern
//! ([`crate::ops::relu`], [`crate::ops::max_pool2d`], [`crate::ops::pool2d`]);
//! a model using candle's own `relu` or max reductions is not covered.

use candle_core::{DType, Tensor, Var};
use seht_estimator::{ProbeDistribution, ProbeRng};

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
    let g = crate::autodiff::backward_no_graph(loss)?;
    let grads = vars
        .iter()
        .map(|v| Ok(g.get(v.as_tensor()).map(Tensor::detach).map(Ok).unwrap_or_else(|| v.zeros_like())?))
        .collect::<Result<Vec<_>>>()?;
    Ok((value, grads))
}

/// `‖w‖` over several tensors, summed in their own dtype (one elementwise
/// pass each; the norm only sets the step size).
fn norm(ts: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    }
    Ok(s.sqrt())
}

/// One probe block drawn on the host in f64, kept in the variable's dtype.
enum HostBlock {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

impl HostBlock {
    /// Draws `n` entries; returns the block and its `Σσᵢ²`.
    fn draw(dist: &impl ProbeDistribution, rng: &mut ProbeRng, n: usize, dtype: DType) -> (Self, f64) {
        let mut chunk = vec![0.0f64; n.min(1 << 14)];
        let mut sq = 0.0;
        let mut block =
            if dtype == DType::F64 { Self::F64(Vec::with_capacity(n)) } else { Self::F32(Vec::with_capacity(n)) };
        let mut left = n;
        while left > 0 {
            let c = &mut chunk[..left.min(1 << 14)];
            dist.fill(rng, c);
            sq += c.iter().map(|x| x * x).sum::<f64>();
            match &mut block {
                Self::F32(v) => v.extend(c.iter().map(|&x| x as f32)),
                Self::F64(v) => v.extend_from_slice(c),
            }
            left -= c.len();
        }
        (block, sq)
    }

    /// `ε·σ` as a tensor of `like`'s shape, dtype and device.
    fn scaled(self, eps: f64, like: &Tensor) -> Result<Tensor> {
        let t = match self {
            Self::F32(mut v) => {
                let e = eps as f32;
                v.iter_mut().for_each(|x| *x *= e);
                Tensor::from_vec(v, like.shape(), like.device())?
            }
            Self::F64(mut v) => {
                v.iter_mut().for_each(|x| *x *= eps);
                Tensor::from_vec(v, like.shape(), like.device())?
            }
        };
        Ok(t.to_dtype(like.dtype())?)
    }
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
    let probe = FirstOrderProbes { dist, probes, scale, lambda, relative_step };
    first_order_inner(vars, penalised, buffers, probe, rng, loss, true)
}

/// The probe settings of [`first_order_penalty`].
pub(crate) struct FirstOrderProbes<'a, D> {
    pub dist: &'a D,
    pub probes: usize,
    pub scale: f64,
    pub lambda: f64,
    pub relative_step: f64,
}

/// [`first_order_penalty`]; without `with_loss`, its `grads` are those of
/// `λ·(1/K)Σ σₖᵀHσₖ` alone (the loss's own gradient left out, not subtracted).
pub(crate) fn first_order_inner<D: ProbeDistribution>(
    vars: &[Var],
    penalised: &[Param],
    buffers: &[Var],
    FirstOrderProbes { dist, probes, scale, lambda, relative_step }: FirstOrderProbes<'_, D>,
    rng: &mut ProbeRng,
    loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
    with_loss: bool,
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
    // The unperturbed pass comes first: the step's own forward (it updates
    // the buffers, once), and it records the activation pattern — ReLU masks
    // and max-pool winners — that the perturbed passes replay, so that all
    // three passes evaluate the same smooth piece of the network (see
    // `crate::pattern`; without it the differences measure the jumps at
    // ReLU kinks and max-pool switches, with an error growing like 1/ε).
    let (base, pattern) = crate::pattern::record(|| -> Result<(f64, Vec<Tensor>)> { gradient(&loss()?, vars) });
    let (value, g0) = base?;
    let w0: Vec<Tensor> = penalised.iter().map(|p| p.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let w_norm = norm(&w0)?;

    // Σ_k (g₊ + g₋)/ε_k², kept divided by the first probe's 1/ε² (`base`) so
    // that the first probe costs one addition and no scaling.
    let mut sum2: Option<Vec<Tensor>> = None;
    let mut base = 0.0;
    let mut inv_eps2 = 0.0; // Σ_k 1/ε_k²
    let (mut samples, mut steps) = (Vec::with_capacity(probes), Vec::with_capacity(probes));
    for _ in 0..probes {
        // The probe is drawn on the host straight into the weights' dtype, and
        // `ε` is folded into it there: one tensor per block, `εσ`.
        let mut s_sq = 0.0;
        let host: Vec<HostBlock> = penalised
            .iter()
            .map(|p| {
                let (b, sq) = HostBlock::draw(dist, rng, p.var.elem_count(), p.var.dtype());
                s_sq += sq;
                b
            })
            .collect();
        if s_sq == 0.0 {
            samples.push(0.0);
            continue;
        }
        let eps = relative_step * w_norm.max(1e-12) / s_sq.sqrt();
        let es: Vec<Tensor> = host.into_iter().zip(&w0).map(|(b, w)| b.scaled(eps, w)).collect::<Result<_>>()?;
        let mut pass = |plus: bool| -> Result<Vec<Tensor>> {
            for ((p, w), d) in penalised.iter().zip(&w0).zip(&es) {
                p.var.set(&if plus { w + d } else { w - d }?)?;
            }
            let (_, g) = crate::pattern::replay(&pattern, || gradient(&loss()?, vars))??;
            Ok(g)
        };
        let gp = pass(true);
        let gm = gp.as_ref().ok().map(|_| pass(false));
        // The weights and buffers are restored whatever happened.
        for (p, w) in penalised.iter().zip(&w0) {
            p.var.set(w)?;
        }
        for (b, s) in buffers.iter().zip(&saved) {
            b.set(s)?;
        }
        let (gp, gm) = (gp?, gm.unwrap_or_else(|| Ok(Vec::new()))?);
        // σᵀHσ ≈ σᵀ(g₊ − g₋)/2ε = (εσ)ᵀ(g₊ − g₋)/2ε²
        let mut q = 0.0;
        for (k, d) in index.iter().zip(&es) {
            q += ((&gp[*k] - &gm[*k])? * d)?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        }
        samples.push(scale * q / (2.0 * eps * eps));
        steps.push(eps);
        let a = 1.0 / (eps * eps);
        sum2 = Some(match sum2 {
            None => {
                base = a;
                gp.iter().zip(&gm).map(|(x, y)| x + y).collect::<candle_core::Result<_>>()?
            }
            Some(acc) => acc
                .iter()
                .zip(gp.iter().zip(&gm))
                .map(|(s, (x, y))| s + (x + y)?.affine(a / base, 0.0)?)
                .collect::<candle_core::Result<_>>()?,
        });
        inv_eps2 += a;
    }
    let keep = if with_loss { 1.0 } else { 0.0 };
    let grads = match sum2 {
        None if with_loss => g0,
        None => g0.iter().map(Tensor::zeros_like).collect::<candle_core::Result<_>>()?,
        Some(s2) => {
            // g₀ + λ·scale·(1/K)Σ_k (g₊ + g₋ − 2g₀)/ε_k² (without the first g₀
            // when the loss's gradient is left out)
            let c = lambda * scale / probes as f64;
            g0.iter()
                .zip(&s2)
                .map(|(g, s)| g.affine(keep - 2.0 * c * inv_eps2, 0.0)? + s.affine(c * base, 0.0)?)
                .collect::<candle_core::Result<_>>()?
        }
    };
    Ok(FirstOrderStep { loss: value, grads, samples, steps })
}
