//! Shared helpers of the test files: seeded f64 tensors and an assertion
//! around `seht_candle::gradcheck`.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use seht_estimator::probe_rng;

pub const DEV: Device = Device::Cpu;

/// A parameter `Var` with N(0, std²) entries, seeded.
pub fn var(shape: &[usize], std: f64, seed: u64) -> Var {
    let n: usize = shape.iter().product();
    let mut rng = probe_rng(seed);
    let data: Vec<f64> = (0..n).map(|_| std * rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
    Var::from_tensor(&Tensor::from_vec(data, shape, &DEV).expect("tensor")).expect("var")
}

/// A constant tensor with N(0, std²) entries, seeded.
pub fn randn(shape: &[usize], std: f64, seed: u64) -> Tensor {
    var(shape, std, seed).as_tensor().detach()
}

/// `Σ c ⊙ tanh(out)`: a smooth head with non-zero derivatives of every order.
pub fn tanh_head(out: &Tensor, seed: u64) -> Result<Tensor> {
    let c = randn(out.dims(), 1.0, seed);
    (out.tanh()? * c)?.sum_all()
}

/// Runs the finite-difference check for seeds 1–3 and asserts both relative
/// errors ≤ `tol`, printing them (visible with `--nocapture`).
pub fn assert_fd(name: &str, vars: &[Var], loss: &dyn Fn() -> Result<Tensor>, eps: f64, tol: f64) {
    for seed in [1u64, 2, 3] {
        let r = seht_candle::gradcheck::fd_check(vars, loss, eps, seed).expect("finite-difference check ran");
        eprintln!(
            "{name} seed {seed}: HVP rel. error {:.2e}, ∇(σᵀHσ) rel. error {:.2e} (σᵀHσ = {:.4})",
            r.hvp, r.grad_quadratic, r.quadratic
        );
        assert!(
            r.hvp <= tol && r.grad_quadratic <= tol,
            "{name} seed {seed}: HVP rel. error {:.2e}, ∇(σᵀHσ) rel. error {:.2e}, tolerance {tol:.0e}",
            r.hvp,
            r.grad_quadratic
        );
        assert!(r.quadratic.abs() > 1e-8, "{name}: σᵀHσ = {} is trivially zero", r.quadratic);
    }
}

pub fn f64_varbuilder(varmap: &candle_nn::VarMap) -> candle_nn::VarBuilder<'static> {
    candle_nn::VarBuilder::from_varmap(varmap, DType::F64, &DEV)
}

/// Vars of a varmap in name order, excluding BatchNorm running statistics.
pub fn trainable(varmap: &candle_nn::VarMap) -> Vec<Var> {
    seht_candle::ParamSet::from_varmap(varmap).trainable_vars()
}
