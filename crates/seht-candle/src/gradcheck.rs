//! Finite-difference checks of Hessian-vector products and of the
//! third-order gradient `∇(σᵀHσ)`, for any loss over any `Var`s.
//!
//! Use it on your own model (in f64) before trusting a penalty through an
//! operation this crate has not checked: candle gets some higher-order
//! derivatives silently wrong (see [`crate::ops`]).
//!
//! * **HVP:** `Hσ` by double backprop against
//!   `(g(w + εσ) − g(w − εσ)) / 2ε`, with `g` the first-order gradient.
//! * **Third order:** `uᵀ∇(σᵀHσ)` by a third backward pass against
//!   `(q(w + εu) − q(w − εu)) / 2ε`, `q = σᵀHσ` by double backprop, along
//!   three Gaussian directions `u`.
//!
//! Choosing ε: in f64, ε = 1e-6 keeps the truncation error (O(ε²)) near 1e-12
//! and rounding (O(1e-16/ε)) near 1e-10, and rarely moves a ReLU or max-pool
//! input across its kink; a larger ε (1e-3) does, and then the difference
//! quotient, not the derivative, is wrong.

use candle_core::{Tensor, Var};
use rand::Rng;
use seht_estimator::{BlockVec, HvpOperator, ProbeDistribution, Rademacher, probe_rng};

use crate::error::Result;
use crate::operator::HessianOperator;
use crate::params::{Param, Role};

/// The relative errors of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FdReport {
    /// `‖Hσ − FD‖ / ‖FD‖`.
    pub hvp: f64,
    /// Relative error of `∇(σᵀHσ)` along three random directions.
    pub grad_quadratic: f64,
    /// `σᵀHσ` itself, so that a report shows the check was not trivially zero.
    pub quadratic: f64,
}

fn params(vars: &[Var]) -> Vec<Param> {
    vars.iter().enumerate().map(|(i, v)| Param { name: format!("p{i}"), var: v.clone(), role: Role::Weight }).collect()
}

fn host_tensor(values: Vec<f64>, like: &Var) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, like.shape(), like.device())?.to_dtype(like.dtype())?)
}

/// The entries of several tensors, flattened in order, as `f64` on the host
/// (for comparing gradients).
///
/// # Errors
/// candle's, e.g. a non-float tensor.
pub fn flatten_f64(ts: &[Tensor]) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for t in ts {
        out.extend(t.flatten_all()?.to_dtype(candle_core::DType::F64)?.to_vec1::<f64>()?);
    }
    Ok(out)
}

/// `‖a − b‖ / ‖b‖`: the relative error of `a` against the reference `b`.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}

fn shift(vars: &[Var], w: &[Tensor], d: &[Tensor], t: f64) -> Result<()> {
    for ((v, w), d) in vars.iter().zip(w).zip(d) {
        v.set(&(w + (d * t)?)?)?;
    }
    Ok(())
}

fn restore(vars: &[Var], w: &[Tensor]) -> Result<()> {
    for (v, w) in vars.iter().zip(w) {
        v.set(w)?;
    }
    Ok(())
}

fn gradient(vars: &[Var], loss: &Tensor) -> Result<Vec<Tensor>> {
    let g = crate::autodiff::backward_no_graph(loss)?;
    vars.iter().map(|v| Ok(g.get(v.as_tensor()).cloned().map(Ok).unwrap_or_else(|| v.zeros_like())?.detach())).collect()
}

fn quadratic(vars: &[Var], loss: &Tensor, sigma: &[Tensor]) -> Result<Tensor> {
    let op = HessianOperator::new(loss, &params(vars))?;
    op.quadratic_form(&BlockVec::from_parts(sigma.iter().cloned().map(Some).collect()))
}

/// Checks the HVP and `∇(σᵀHσ)` of `loss()` over `vars` against central
/// differences with step `eps`, for the Rademacher probe drawn from `seed`.
///
/// `loss` must recompute the loss from the current values of `vars` (it is
/// called at shifted values); the values are restored before returning. Use
/// f64 variables: in f32 rounding swamps any ε.
pub fn fd_check(vars: &[Var], loss: &dyn Fn() -> candle_core::Result<Tensor>, eps: f64, seed: u64) -> Result<FdReport> {
    let w: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let result = fd_check_inner(vars, &w, loss, eps, seed);
    restore(vars, &w)?;
    result
}

fn fd_check_inner(
    vars: &[Var],
    w: &[Tensor],
    loss: &dyn Fn() -> candle_core::Result<Tensor>,
    eps: f64,
    seed: u64,
) -> Result<FdReport> {
    let mut rng = probe_rng(seed);
    let sigma: Vec<Tensor> =
        vars.iter().map(|v| host_tensor(Rademacher.sample(&mut rng, v.elem_count()), v)).collect::<Result<_>>()?;

    let op = HessianOperator::with_mode(&loss()?, &params(vars), crate::GraphMode::Detached)?;
    let hv = op.hvp(&BlockVec::from_parts(sigma.iter().cloned().map(Some).collect()))?;
    let hv: Vec<Tensor> = hv.into_parts().into_iter().flatten().collect();
    drop(op);

    shift(vars, w, &sigma, eps)?;
    let gp = flatten_f64(&gradient(vars, &loss()?)?)?;
    shift(vars, w, &sigma, -eps)?;
    let gm = flatten_f64(&gradient(vars, &loss()?)?)?;
    restore(vars, w)?;
    let fd: Vec<f64> = gp.iter().zip(&gm).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
    let hvp = relative_error(&flatten_f64(&hv)?, &fd);

    let q = quadratic(vars, &loss()?, &sigma)?;
    let quadratic_value = q.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
    let grad_q = flatten_f64(&gradient(vars, &q)?)?;
    let mut dir_rng = probe_rng(seed ^ 0x5eed_5eed);
    let (mut ad, mut fdq) = (Vec::with_capacity(3), Vec::with_capacity(3));
    for _ in 0..3 {
        let u: Vec<Vec<f64>> = vars
            .iter()
            .map(|v| (0..v.elem_count()).map(|_| dir_rng.sample::<f64, _>(rand_distr::StandardNormal)).collect())
            .collect();
        ad.push(grad_q.iter().zip(u.iter().flatten()).map(|(g, u)| g * u).sum::<f64>());
        let ut: Vec<Tensor> = u.into_iter().zip(vars).map(|(d, v)| host_tensor(d, v)).collect::<Result<_>>()?;
        shift(vars, w, &ut, eps)?;
        let qp = quadratic(vars, &loss()?, &sigma)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        shift(vars, w, &ut, -eps)?;
        let qm = quadratic(vars, &loss()?, &sigma)?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        restore(vars, w)?;
        fdq.push((qp - qm) / (2.0 * eps));
    }
    Ok(FdReport { hvp, grad_quadratic: relative_error(&ad, &fdq), quadratic: quadratic_value })
}
