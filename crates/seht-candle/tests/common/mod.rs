//! Finite-difference checks of Hessian-vector products and of the gradient of
//! `σᵀHσ`, in f64, shared by the test files.
#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use seht_candle::{HessianOperator, Param, Role};
use seht_estimator::{BlockVec, HvpOperator, ProbeDistribution, Rademacher, probe_rng};

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

pub fn params(vars: &[Var]) -> Vec<Param> {
    vars.iter().enumerate().map(|(i, v)| Param { name: format!("p{i}"), var: v.clone(), role: Role::Weight }).collect()
}

fn probe(vars: &[Var], seed: u64) -> Vec<Tensor> {
    let mut rng = probe_rng(seed);
    vars.iter()
        .map(|v| Tensor::from_vec(Rademacher.sample(&mut rng, v.elem_count()), v.shape(), &DEV).expect("probe"))
        .collect()
}

fn flat(ts: &[Tensor]) -> Vec<f64> {
    ts.iter().flat_map(|t| t.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("f64 tensor")).collect()
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}

/// Sets every var to `w + t·d` (with `w` the saved values).
fn shift(vars: &[Var], w: &[Tensor], d: &[Tensor], t: f64) {
    for ((v, w), d) in vars.iter().zip(w).zip(d) {
        v.set(&(w + (d * t).expect("scale")).expect("add")).expect("set");
    }
}

fn restore(vars: &[Var], w: &[Tensor]) {
    for (v, w) in vars.iter().zip(w) {
        v.set(w).expect("restore");
    }
}

fn gradient(vars: &[Var], loss: &Tensor) -> Vec<Tensor> {
    let g = loss.backward().expect("backward");
    vars.iter().map(|v| g.get(v.as_tensor()).cloned().unwrap_or_else(|| v.zeros_like().expect("zeros")).detach()).collect()
}

fn quadratic(vars: &[Var], loss: &Tensor, sigma: &[Tensor]) -> Tensor {
    let op = HessianOperator::new(loss, &params(vars)).expect("operator");
    let v = BlockVec::from_parts(sigma.iter().cloned().map(Some).collect());
    op.quadratic_form(&v).expect("quadratic form")
}

/// The relative errors of one check.
#[derive(Debug, Clone, Copy)]
pub struct FdReport {
    /// ‖Hσ − FD‖/‖FD‖, FD = (g(w+εσ) − g(w−εσ))/2ε.
    pub hvp: f64,
    /// Relative error of ∇(σᵀHσ) along 3 random directions against central
    /// differences of σᵀHσ.
    pub grad_quadratic: f64,
    /// σᵀHσ itself, so a report shows the check was not trivially zero.
    pub quadratic: f64,
}

/// Checks the HVP and the gradient of `σᵀHσ` (third order) of `loss()` over
/// `vars` against central finite differences with step `eps`.
pub fn fd_check(vars: &[Var], loss: &dyn Fn() -> Result<Tensor>, eps: f64, seed: u64) -> FdReport {
    let w: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().expect("copy")).collect();
    let sigma = probe(vars, seed);

    // Hσ by double backprop.
    let op = HessianOperator::new(&loss().expect("loss"), &params(vars)).expect("operator");
    let v = BlockVec::from_parts(sigma.iter().cloned().map(Some).collect());
    let hv = op.hvp(&v).expect("hvp");
    let hv: Vec<Tensor> = hv.parts().iter().map(|p| p.clone().expect("all blocks present")).collect();
    drop(op);

    // Central differences of the gradient along σ.
    shift(vars, &w, &sigma, eps);
    let gp = gradient(vars, &loss().expect("loss"));
    shift(vars, &w, &sigma, -eps);
    let gm = gradient(vars, &loss().expect("loss"));
    restore(vars, &w);
    let fd: Vec<f64> = flat(&gp).iter().zip(flat(&gm)).map(|(p, m)| (p - m) / (2.0 * eps)).collect();
    let hvp = rel_err(&flat(&hv), &fd);

    // ∇(σᵀHσ) by a third backward pass, against differences of σᵀHσ.
    let q = quadratic(vars, &loss().expect("loss"), &sigma);
    let quadratic_value = q.to_scalar::<f64>().expect("scalar");
    let grad_q = gradient(vars, &q);
    let mut rng = probe_rng(seed ^ 0x5eed);
    let (mut ad, mut fdq) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let u: Vec<Tensor> = vars
            .iter()
            .map(|v| {
                let d: Vec<f64> = (0..v.elem_count()).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
                Tensor::from_vec(d, v.shape(), &DEV).expect("direction")
            })
            .collect();
        ad.push(flat(&grad_q).iter().zip(flat(&u)).map(|(g, u)| g * u).sum::<f64>());
        shift(vars, &w, &u, eps);
        let qp = quadratic(vars, &loss().expect("loss"), &sigma).to_scalar::<f64>().expect("scalar");
        shift(vars, &w, &u, -eps);
        let qm = quadratic(vars, &loss().expect("loss"), &sigma).to_scalar::<f64>().expect("scalar");
        restore(vars, &w);
        fdq.push((qp - qm) / (2.0 * eps));
    }
    FdReport { hvp, grad_quadratic: rel_err(&ad, &fdq), quadratic: quadratic_value }
}

/// Runs [`fd_check`] for several seeds and asserts both errors ≤ `tol`,
/// printing the errors (visible with `--nocapture`) and naming them on failure.
pub fn assert_fd(name: &str, vars: &[Var], loss: &dyn Fn() -> Result<Tensor>, eps: f64, tol: f64) {
    for seed in [1u64, 2, 3] {
        let r = fd_check(vars, loss, eps, seed);
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
