//! Sharpness-aware minimisation: SAM (Foret et al. 2021, "Sharpness-Aware
//! Minimization for Efficiently Improving Generalization", Algorithm 1) and
//! ASAM (Kwon et al. 2021, "ASAM: Adaptive Sharpness-Aware Minimization for
//! Scale-Invariant Learning of Deep Neural Networks", Algorithm 1). These are
//! the flat-minimum methods users pick instead of a Hessian-trace penalty;
//! they are compared with SEHT in the reproduction tables (not in the paper).
//!
//! With `g = ∇L(w)` the minibatch gradient:
//!
//! ```text
//! SAM:   ε = ρ · g / ‖g‖
//! ASAM:  ε = ρ · T²g / ‖Tg‖,   T = diag(|w| + η)   (elementwise)
//! step:  ∇L(w + ε), taken at w + ε, applied at w
//! ```
//!
//! `‖·‖` is the global L2 norm over every perturbed variable. When `‖g‖ = 0`
//! (or `‖Tg‖ = 0`) the perturbation is zero and the step is the plain one.
//!
//! **Which parameters.** Every trainable variable is perturbed (weights,
//! biases, BatchNorm's γ and β), as in the reference implementations of both
//! papers (`davda54/sam`, `SamsungLabs/ASAM`), which perturb every parameter
//! with a gradient. For ASAM this crate uses `T = |w| + η` for every
//! variable, the paper's equation (η keeps a zero bias movable); the public
//! ASAM code uses `|w| + η` for parameters named `weight` and `T = 1` for
//! biases. Buffers (BatchNorm running statistics) are never perturbed.
//!
//! **Same function twice.** The `loss` closure must compute the same function
//! of the weights at both calls: the same minibatch with the same
//! augmentation, the same dropout masks (a fixed `Phase::Train { seed }`),
//! the same draws of any generator it uses. BatchNorm's running statistics
//! are updated by the first pass only: `buffers` are restored after the
//! second.
//!
//! Cost: two forward and backward passes per step (about 2× a plain step).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};

use crate::error::{Error, Result};

/// Which sharpness-aware method, with its own settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sharpness {
    /// SAM: `ε = ρ·g/‖g‖`.
    Sam,
    /// ASAM: `ε = ρ·T²g/‖Tg‖` with `T = diag(|w| + η)`.
    Asam {
        /// η, the offset that keeps zero-valued entries movable (Kwon et al.: 0.01).
        eta: f64,
    },
}

/// What one sharpness-aware gradient evaluation gives.
pub struct SamGradients<T> {
    /// What the loss closure returned at the unperturbed weights `w` (the
    /// step's reported loss and metrics come from this pass).
    pub first: T,
    /// `∇L(w + ε)`: the gradients of the second pass, keyed by the variables
    /// (which hold `w` again on return).
    pub grads: GradStore,
    /// `‖ε‖`, the L2 norm of the perturbation (ρ for SAM unless `g = 0`).
    pub perturbation_norm: f64,
}

fn sum_sq(ts: &[Tensor]) -> Result<f64> {
    let mut s = 0.0;
    for t in ts {
        s += t.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
    }
    Ok(s)
}

/// The perturbation `ε` for each of `vars`, given their gradients `g` at `w`.
///
/// # Errors
///
/// Candle errors only (shapes of `grads` are those of `vars`).
pub fn perturbation(vars: &[Var], grads: &[Tensor], rho: f64, method: Sharpness) -> Result<Vec<Tensor>> {
    match method {
        Sharpness::Sam => {
            let norm = sum_sq(grads)?.sqrt();
            let c = if norm > 0.0 { rho / norm } else { 0.0 };
            Ok(grads.iter().map(|g| g.affine(c, 0.0)).collect::<candle_core::Result<_>>()?)
        }
        Sharpness::Asam { eta } => {
            let t: Vec<Tensor> =
                vars.iter().map(|v| v.as_tensor().abs()?.affine(1.0, eta)).collect::<candle_core::Result<_>>()?;
            let tg: Vec<Tensor> = t.iter().zip(grads).map(|(t, g)| t * g).collect::<candle_core::Result<_>>()?;
            let norm = sum_sq(&tg)?.sqrt();
            let c = if norm > 0.0 { rho / norm } else { 0.0 };
            Ok(t.iter().zip(&tg).map(|(t, tg)| (t * tg)?.affine(c, 0.0)).collect::<candle_core::Result<_>>()?)
        }
    }
}

/// The sharpness-aware gradient `∇L(w + ε)` of every variable in `vars`.
///
/// * `vars` — the trainable variables: perturbed, and given a gradient;
/// * `buffers` — state the forward pass writes (BatchNorm running
///   statistics): kept as the first pass left them;
/// * `rho` — ρ, the radius of the neighbourhood (SAM: an L2 ball; ASAM: an
///   ellipsoid scaled by `T`);
/// * `method` — SAM or ASAM;
/// * `loss` — computes the objective (a scalar) from the variables' current
///   values, with the same batch, masks and draws at each call, and returns
///   it with anything the caller wants back from the first pass.
///
/// On return the variables hold `w` again (bit for bit: the values are
/// copied, not recomputed as `w + ε − ε`).
///
/// # Errors
///
/// [`Error::Internal`] for an empty `vars`; the loss closure's errors;
/// candle errors. (A variable the loss does not use gets a zero gradient at
/// the first pass and no entry in `grads`.)
pub fn sam_gradients<T>(
    vars: &[Var],
    buffers: &[Var],
    rho: f64,
    method: Sharpness,
    loss: &mut dyn FnMut() -> Result<(Tensor, T)>,
) -> Result<SamGradients<T>> {
    if vars.is_empty() {
        return Err(Error::Internal("sharpness-aware step over no variables"));
    }
    // First pass at w: the step's own forward (updates the buffers once).
    let (objective, first) = loss()?;
    let g = seht_candle::backward_no_graph(&objective)?;
    let grads: Vec<Tensor> = vars
        .iter()
        .map(|v| match g.get(v.as_tensor()) {
            Some(t) => Ok(t.detach()),
            None => v.zeros_like(),
        })
        .collect::<candle_core::Result<_>>()?;
    drop((g, objective)); // free the first pass's graph before the second
    let eps = perturbation(vars, &grads, rho, method)?;
    let perturbation_norm = sum_sq(&eps)?.sqrt();
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let w0: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    for ((v, w), e) in vars.iter().zip(&w0).zip(&eps) {
        v.set(&(w + e)?)?;
    }
    // Second pass at w + ε; whatever happens, w and the buffers come back.
    let second = loss().and_then(|(o, _)| Ok(seht_candle::backward_no_graph(&o)?));
    for (v, w) in vars.iter().zip(&w0) {
        v.set(w)?;
    }
    for (b, s) in buffers.iter().zip(&saved) {
        b.set(s)?;
    }
    Ok(SamGradients { first, grads: second?, perturbation_norm })
}
