//! The first-order penalty gradient against the exact triple-backprop one.

mod common;

use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, VarMap};
use common::*;
use seht_candle::first_order::{default_relative_step, first_order_penalty};
use seht_candle::{Param, ParamSet, Role, Selection, penalised_loss};
use seht_estimator::{Rademacher, SehtH, probe_rng};

fn flat(ts: &[Tensor]) -> Vec<f64> {
    seht_candle::gradcheck::flatten_f64(ts).expect("flat")
}

fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    (seht_candle::gradcheck::relative_error(a, b), dot / (na * nb))
}

/// The first-order penalised gradient (SEHT-H, `k` probes from `seed`) of
/// `n`'s loss over its weights.
fn first_order(n: &Net, k: usize, lambda: f64, rel: f64, seed: u64) -> seht_candle::first_order::FirstOrderStep {
    let (vars, weights, buffers) = n.params();
    first_order_penalty(&vars, &weights, &buffers, &Rademacher, k, 1.0, lambda, rel, &mut probe_rng(seed), &mut || {
        n.loss()
    })
    .expect("first order")
}

/// What follows the convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Body {
    /// BatchNorm → tanh: smooth.
    BnTanh,
    /// ReLU, no normalisation.
    Relu,
    /// 2×2 max pooling and nothing else.
    MaxPool,
    /// BatchNorm → ReLU → 2×2 max pooling.
    BnReluMaxPool,
}

struct Net {
    body: Body,
    varmap: VarMap,
    bn: candle_nn::BatchNorm,
    c1: Var,
    fc: Var,
    x: Tensor,
    y: Tensor,
}

fn net(dtype: DType) -> Net {
    net_with(dtype, Body::BnTanh)
}

fn net_with(dtype: DType, body: Body) -> Net {
    let varmap = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, dtype, &DEV);
    let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb.pp("bn")).expect("bn");
    let to = |v: Var| Var::from_tensor(&v.as_tensor().to_dtype(dtype).expect("dtype")).expect("var");
    Net {
        body,
        varmap,
        bn,
        c1: to(var(&[4, 2, 3, 3], 0.4, 1)),
        fc: to(var(&[3, 4], 0.5, 2)),
        x: randn(&[6, 2, 6, 6], 1.0, 3).to_dtype(dtype).expect("x"),
        y: Tensor::new(&[0u32, 1, 2, 0, 1, 2], &DEV).expect("y"),
    }
}

impl Net {
    fn loss(&self) -> candle_core::Result<Tensor> {
        use seht_candle::ops;
        let wrap = candle_core::Error::wrap;
        let h = self.x.conv2d(&self.c1, 1, 1, 1, 1)?;
        let h = match self.body {
            Body::BnTanh => self.bn.forward_t(&h, true)?.tanh()?,
            Body::Relu => ops::relu(&h).map_err(wrap)?,
            Body::MaxPool => ops::max_pool2d(&h, 2).map_err(wrap)?,
            Body::BnReluMaxPool => {
                ops::max_pool2d(&ops::relu(&self.bn.forward_t(&h, true)?).map_err(wrap)?, 2).map_err(wrap)?
            }
        };
        let h = ops::global_avg_pool(&h).map_err(wrap)?;
        candle_nn::loss::cross_entropy(&h.matmul(&self.fc.t()?)?, &self.y)
    }

    fn params(&self) -> (Vec<Var>, Vec<Param>, Vec<Var>) {
        let mut set = ParamSet::from_varmap(&self.varmap);
        set.push("c1.weight", self.c1.clone(), Role::Weight);
        set.push("fc.weight", self.fc.clone(), Role::Weight);
        let buffers = set.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
        (set.trainable_vars(), set.select(&Selection::Weights).expect("weights"), buffers)
    }
}

#[test]
fn first_order_gradient_converges_to_the_exact_one_in_f64() {
    let n = net(DType::F64);
    let (vars, weights, buffers) = n.params();
    let (lambda, k) = (0.5, 2);
    let (total, est) =
        penalised_loss(&n.loss().expect("loss"), &weights, &SehtH::seht_h(k).expect("cfg"), lambda, &mut probe_rng(11))
            .expect("exact");
    let g = total.backward().expect("backward");
    let exact = flat(&vars.iter().map(|v| g.get(v.as_tensor()).expect("grad").clone()).collect::<Vec<_>>());
    let mut errors = Vec::new();
    for rel in [1e-2, 1e-3, 1e-4] {
        let before: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect();
        let fo = first_order(&n, k, lambda, rel, 11);
        let after_fo = flat(&buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect::<Vec<_>>());
        // The running statistics must have moved exactly as one plain forward pass moves them.
        for (b, v) in buffers.iter().zip(&before) {
            b.set(v).expect("restore");
        }
        n.loss().expect("plain pass");
        let after_plain = flat(&buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect::<Vec<_>>());
        assert_eq!(after_fo, after_plain, "perturbed passes must not touch the running statistics");
        let (err, cos) = compare(&flat(&fo.grads), &exact);
        let trace_err = (fo.samples.iter().sum::<f64>() / k as f64 - est.mean).abs() / est.mean.abs();
        eprintln!("ε_rel = {rel:.0e}: gradient rel. error {err:.2e}, cosine {cos:.9}, σᵀHσ rel. error {trace_err:.2e}");
        errors.push(err);
        assert!(cos > 0.999, "ε_rel {rel}: cosine {cos}");
        assert!(trace_err < 1e-3, "ε_rel {rel}: trace {trace_err}");
    }
    assert!(
        errors[1] < errors[0] / 10.0 && errors[2] < 1e-6,
        "errors should shrink like ε² until rounding: {errors:?}"
    );
}

#[test]
fn first_order_gradient_in_f32_agrees_with_the_exact_one() {
    let n = net(DType::F32);
    let (vars, weights, _) = n.params();
    let lambda = 0.5;
    let (total, _) =
        penalised_loss(&n.loss().expect("loss"), &weights, &SehtH::seht_h(1).expect("cfg"), lambda, &mut probe_rng(5))
            .expect("exact");
    let g = total.backward().expect("backward");
    let exact = flat(&vars.iter().map(|v| g.get(v.as_tensor()).expect("grad").clone()).collect::<Vec<_>>());
    let rel = default_relative_step(DType::F32);
    let fo = first_order(&n, 1, lambda, rel, 5);
    let (err, cos) = compare(&flat(&fo.grads), &exact);
    eprintln!("f32, ε_rel = {rel}: gradient rel. error {err:.2e}, cosine {cos:.6}");
    assert!(cos > 0.99 && err < 0.1, "f32: rel. error {err}, cosine {cos}");
}

/// `penalised_gradients` (one probe's graph at a time) gives the same
/// gradient and estimate as `penalised_loss(..).backward()` (all probes'
/// graphs at once), for every estimator kind.
#[test]
fn per_probe_accumulation_equals_the_single_third_order_pass() {
    use seht_estimator::{HutchPlusPlus, Reading, SehtD, TraceEstimator};
    let n = net(DType::F64);
    let (vars, weights, _) = n.params();
    let lambda = 0.3;
    let check = |name: &str, (one, all, m1, m2): (Vec<f64>, Vec<f64>, f64, f64)| {
        let (err, cos) = compare(&one, &all);
        println!("{name}: relative difference {err:.2e}, cosine {cos:.15}, estimates {m1} / {m2}");
        assert!(err < 1e-12, "{name}: relative difference {err:.2e}");
        assert!((m1 - m2).abs() <= 1e-12 * m2.abs().max(1.0), "{name}: estimates {m1} and {m2}");
    };
    fn both(
        vars: &[Var],
        weights: &[Param],
        lambda: f64,
        loss: &Tensor,
        e: &impl TraceEstimator,
        seed: u64,
    ) -> (Vec<f64>, Vec<f64>, f64, f64) {
        let acc = seht_candle::penalised_gradients(loss, weights, vars, e, lambda, &mut probe_rng(seed)).expect("acc");
        let (total, est) = penalised_loss(loss, weights, e, lambda, &mut probe_rng(seed)).expect("exact");
        let g = total.backward().expect("backward");
        let one: Vec<Tensor> = acc.grads.iter().map(|t| t.clone().expect("grad")).collect();
        let all: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).expect("grad").clone()).collect();
        (flat(&one), flat(&all), acc.estimate.mean, est.mean)
    }
    let loss = || n.loss().expect("loss");
    check("SEHT-H K=4", both(&vars, &weights, lambda, &loss(), &SehtH::seht_h(4).expect("cfg"), 7));
    let sd = SehtD::new(3, 0.5, Reading::Unbiased).expect("cfg");
    check("SEHT-D K=3 p=0.5", both(&vars, &weights, lambda, &loss(), &sd, 8));
    check("Hutch++ m=6", both(&vars, &weights, lambda, &loss(), &HutchPlusPlus::with_budget(6).expect("cfg"), 9));
}

/// The exact penalised gradient, and the first-order one at `rel`, both for
/// SEHT-H with `k` probes drawn from `seed`.
fn exact_and_first_order(n: &Net, k: usize, lambda: f64, rel: f64, seed: u64) -> (Vec<f64>, Vec<f64>, f64, f64) {
    let (vars, weights, buffers) = n.params();
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect();
    let (total, est) = penalised_loss(
        &n.loss().expect("loss"),
        &weights,
        &SehtH::seht_h(k).expect("cfg"),
        lambda,
        &mut probe_rng(seed),
    )
    .expect("exact");
    let g = total.backward().expect("backward");
    // Bodies without BatchNorm leave its variables without a gradient: zero.
    let exact = flat(
        &vars
            .iter()
            .map(|v| g.get(v.as_tensor()).cloned().unwrap_or_else(|| v.zeros_like().expect("zeros")))
            .collect::<Vec<_>>(),
    );
    for (b, v) in buffers.iter().zip(&saved) {
        b.set(v).expect("restore");
    }
    let fo = first_order(n, k, lambda, rel, seed);
    for (b, v) in buffers.iter().zip(&saved) {
        b.set(v).expect("restore");
    }
    (flat(&fo.grads), exact, fo.samples.iter().sum::<f64>() / k as f64, est.mean)
}

/// On ReLU and max-pool networks the perturbed passes replay the base pass's
/// activation pattern, so the first-order gradient converges to the exact
/// one like ε², as on a smooth network. Without the replay the relative
/// error was ≈ 1e3 at ε_rel = 1e-2 and grew like 1/ε (1e6 at 1e-4).
#[test]
fn first_order_gradient_is_right_on_relu_and_max_pool_networks_in_f64() {
    for body in [Body::Relu, Body::MaxPool, Body::BnReluMaxPool] {
        let n = net_with(DType::F64, body);
        let mut errors = Vec::new();
        for rel in [1e-2, 1e-3, 1e-4] {
            let (fo, exact, fo_trace, exact_trace) = exact_and_first_order(&n, 2, 0.5, rel, 21);
            let (err, cos) = compare(&fo, &exact);
            let trace_err = (fo_trace - exact_trace).abs() / exact_trace.abs().max(1e-12);
            eprintln!(
                "{body:?} ε_rel = {rel:.0e}: gradient rel. error {err:.2e}, cosine {cos:.9}, σᵀHσ {trace_err:.2e}"
            );
            assert!(exact_trace.abs() > 1e-6, "{body:?}: trivial σᵀHσ {exact_trace}");
            errors.push(err);
        }
        // Truncation error O(ε²) until f64 rounding (u/ε² ≈ 1e-8 at 1e-4).
        assert!(errors[2] < 1e-5, "{body:?}: errors {errors:?}");
        assert!(errors[1] < errors[0], "{body:?}: errors must shrink with ε: {errors:?}");
    }
}

/// The same in f32 at the default step: rounding error `u·‖g‖/ε²` with
/// u = 6e-8 and ε_rel = 2e-2 bounds the relative error near 1e-2 (measured
/// on the smooth network: a few 1e-3).
#[test]
fn first_order_gradient_is_right_on_relu_and_max_pool_networks_in_f32() {
    for body in [Body::Relu, Body::MaxPool, Body::BnReluMaxPool] {
        let n = net_with(DType::F32, body);
        let rel = default_relative_step(DType::F32);
        let (fo, exact, _, _) = exact_and_first_order(&n, 1, 0.5, rel, 5);
        let (err, cos) = compare(&fo, &exact);
        eprintln!("{body:?} f32, ε_rel = {rel}: gradient rel. error {err:.2e}, cosine {cos:.6}");
        assert!(cos > 0.99 && err < 0.1, "{body:?} f32: rel. error {err}, cosine {cos}");
    }
}
