//! The transformer blocks of `seht_candle::ops` (softmax, layer norm, GELU,
//! the causal mask, multi-head attention) at first, second and third order
//! against central finite differences in f64, and the candle versions they
//! replace, shown wrong or missing by the same checks.
//!
//! First order: `∇L·u` against `(L(w + εu) − L(w − εu)) / 2ε` along three
//! Gaussian directions. Second and third: `seht_candle::gradcheck::fd_check`
//! (the HVP `Hσ`, and `u·∇(σᵀHσ)`), three probe seeds each. ε = 1e-6 as in
//! `finite_differences.rs`. Every function here is smooth, and the measured
//! errors are 1e-11–5e-10, so the tolerance is 1e-8, tighter than
//! `finite_differences.rs`'s 1e-6: candle's own GELU kernels are off by
//! 5e-7–9e-7 and would pass at 1e-6.

mod common;

use candle_core::{D, IndexOp, Tensor, Var};
use common::*;
use rand::Rng;
use seht_candle::gradcheck::{flatten_f64, relative_error};
use seht_candle::ops;
use seht_estimator::probe_rng;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-8;

fn wrap<T>(r: seht_candle::Result<T>) -> candle_core::Result<T> {
    r.map_err(candle_core::Error::wrap)
}

/// Relative error of `∇L·u` against central differences of `L`, over three
/// seeded Gaussian directions `u` (the first-order check the HVP checker
/// does not do). `vars` are restored.
fn first_order_error(vars: &[Var], loss: &dyn Fn() -> candle_core::Result<Tensor>, seed: u64) -> f64 {
    let w: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().expect("copy")).collect();
    let scalar = |t: Tensor| t.to_scalar::<f64>().expect("scalar");
    let l = loss().expect("loss");
    let grads = seht_candle::backward_no_graph(&l).expect("backward");
    let g: Vec<Tensor> =
        vars.iter().map(|v| grads.get(v.as_tensor()).cloned().unwrap_or_else(|| v.zeros_like().expect("0"))).collect();
    let g = flatten_f64(&g).expect("flatten");
    let mut rng = probe_rng(seed);
    let (mut ad, mut fd) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let u: Vec<f64> = (0..g.len()).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
        ad.push(g.iter().zip(&u).map(|(a, b)| a * b).sum::<f64>());
        let at = |t: f64| {
            let mut off = 0;
            for (v, w) in vars.iter().zip(&w) {
                let n = v.elem_count();
                let d = Tensor::from_slice(&u[off..off + n], v.shape(), &DEV).expect("direction");
                v.set(&(w + (d * t).expect("scale")).expect("shift")).expect("set");
                off += n;
            }
            scalar(loss().expect("loss"))
        };
        let (p, m) = (at(EPS), at(-EPS));
        fd.push((p - m) / (2.0 * EPS));
    }
    for (v, w) in vars.iter().zip(&w) {
        v.set(w).expect("restore");
    }
    relative_error(&ad, &fd)
}

/// First order (three directions), then HVP and `∇(σᵀHσ)` (three probes).
fn assert_orders(name: &str, vars: &[Var], loss: &dyn Fn() -> candle_core::Result<Tensor>) {
    let e1 = first_order_error(vars, loss, 7);
    eprintln!("{name}: gradient rel. error {e1:.2e}");
    assert!(e1 <= TOL, "{name}: gradient rel. error {e1:.2e}, tolerance {TOL:.0e}");
    assert_fd(name, vars, loss, EPS, TOL);
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("values")
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    values(a).iter().zip(values(b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

#[test]
fn softmax_last_dim() {
    let x = var(&[3, 4, 5], 1.5, 1);
    let loss = || tanh_head(&wrap(ops::softmax_last_dim(x.as_tensor()))?, 2);
    assert_orders("ops::softmax_last_dim", std::slice::from_ref(&x), &loss);
    // The same function as candle's composite softmax.
    let ours = ops::softmax_last_dim(x.as_tensor()).expect("ours");
    let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).expect("candle");
    assert!(max_abs_diff(&ours, &theirs) < 1e-15);
}

#[test]
fn layer_norm_with_scale_and_shift() {
    let x = var(&[3, 2, 6], 1.0, 10);
    // Away from γ = 1, β = 0, so that the check does not sit at the initial point.
    let (g, b) = (var(&[6], 0.3, 11), var(&[6], 0.3, 12));
    g.set(&(g.as_tensor() + 1.0).expect("shift")).expect("set");
    let loss = || tanh_head(&wrap(ops::layer_norm(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5))?, 13);
    assert_orders("ops::layer_norm", &[x.clone(), g.clone(), b.clone()], &loss);
    // The value is candle's fused kernel's (PyTorch's definition, biased
    // variance; the kernel has no f64 version, so compare in f32).
    let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).expect("f32");
    let (xf, gf, bf) = (f32(x.as_tensor()), f32(g.as_tensor()), f32(b.as_tensor()));
    let ours = ops::layer_norm(&xf, &gf, &bf, 1e-5).expect("ours");
    let fused = candle_nn::ops::layer_norm(&xf, &gf, &bf, 1e-5).expect("fused");
    let d = max_abs_diff(
        &ours.to_dtype(candle_core::DType::F64).expect("f64"),
        &fused.to_dtype(candle_core::DType::F64).expect("f64"),
    );
    assert!(d < 1e-5, "ops::layer_norm vs candle's kernel: {d:.1e}");
}

#[test]
fn layer_norm_rejects_bad_arguments() {
    let x = randn(&[2, 6], 1.0, 14);
    let (g, b) = (randn(&[6], 1.0, 15), randn(&[5], 1.0, 16));
    assert!(ops::layer_norm(&x, &g, &b, 1e-5).is_err(), "β of the wrong size");
    assert!(ops::layer_norm(&x, &g, &g, 0.0).is_err(), "ε = 0");
    assert!(ops::layer_norm(&x, &g, &g, f64::NAN).is_err(), "ε = NaN");
}

#[test]
fn gelu_exact_and_tanh_forms() {
    let x = var(&[4, 5], 1.5, 20);
    let exact = || tanh_head(&wrap(ops::gelu(x.as_tensor()))?, 21);
    assert_orders("ops::gelu (erf)", std::slice::from_ref(&x), &exact);
    let approx = || tanh_head(&wrap(ops::gelu_tanh(x.as_tensor()))?, 21);
    assert_orders("ops::gelu_tanh", std::slice::from_ref(&x), &approx);
    // Same values as candle's kernels (which differ only in their backward).
    let e = max_abs_diff(&ops::gelu(x.as_tensor()).expect("ours"), &x.as_tensor().gelu_erf().expect("candle"));
    let t = max_abs_diff(&ops::gelu_tanh(x.as_tensor()).expect("ours"), &x.as_tensor().gelu().expect("candle"));
    assert!(e < 1e-15 && t < 1e-15, "gelu {e:.1e}, gelu_tanh {t:.1e}");
}

#[test]
fn causal_mask_then_softmax() {
    let x = var(&[2, 3, 5, 5], 1.5, 30);
    let loss = || tanh_head(&wrap(ops::softmax_last_dim(&wrap(ops::causal_mask(x.as_tensor()))?))?, 31);
    assert_orders("causal mask → softmax", std::slice::from_ref(&x), &loss);
    // Masked weights are exactly 0, and no derivative reaches the masked
    // scores: the gradient and the gradient of gradient·σ there are exactly 0
    // (and finite everywhere).
    let p = ops::softmax_last_dim(&ops::causal_mask(x.as_tensor()).expect("mask")).expect("softmax");
    let sigma = randn(&[2, 3, 5, 5], 1.0, 32);
    let l = tanh_head(&p, 31).expect("loss");
    let g = seht_candle::backward_create_graph(&l).expect("bw").get(x.as_tensor()).expect("grad").clone();
    let hv = seht_candle::backward_create_graph(&(&g * &sigma).expect("gσ").sum_all().expect("sum"))
        .expect("bw2")
        .get(x.as_tensor())
        .expect("hvp")
        .clone();
    let third = seht_candle::backward_no_graph(&(&hv * &sigma).expect("hσ").sum_all().expect("sum"))
        .expect("bw3")
        .get(x.as_tensor())
        .expect("third")
        .clone();
    for (name, t) in [("weights", &p), ("gradient", &g), ("Hσ", &hv), ("∇(σᵀHσ)", &third)] {
        let v = values(t);
        assert!(v.iter().all(|v| v.is_finite()), "{name}: not finite");
        for (k, v) in v.iter().enumerate() {
            let (i, j) = ((k / 5) % 5, k % 5);
            if j > i {
                assert_eq!(*v, 0.0, "{name}: entry {k} (query {i}, key {j}) is masked");
            }
        }
    }
    assert!(ops::causal_mask(&randn(&[2, 3, 4], 1.0, 33)).is_err(), "non-square scores");
}

/// Causal multi-head self-attention as a GPT block uses it: `x W_q`, `x W_k`,
/// `x W_v` split into heads, 4-d batched products, mask, softmax, heads merged,
/// output projection; every tensor (input and weights) checked.
#[test]
fn causal_multi_head_attention() {
    let (b, t, c, h) = (2, 5, 8, 2);
    let x = var(&[b, t, c], 1.0, 40);
    let w: Vec<Var> = (0..4).map(|i| var(&[c, c], 0.4, 41 + i)).collect();
    let attention = |x: &Tensor| -> candle_core::Result<Tensor> {
        let proj = |x: &Tensor, w: &Var| x.reshape((b * t, c))?.matmul(w.as_tensor())?.reshape((b, t, c));
        let heads = |x: &Tensor, w: &Var| wrap(ops::split_heads(&proj(x, w)?, h));
        let y = wrap(ops::scaled_dot_product_attention(&heads(x, &w[0])?, &heads(x, &w[1])?, &heads(x, &w[2])?, true))?;
        proj(&wrap(ops::merge_heads(&y))?, &w[3])
    };
    let loss = || tanh_head(&attention(x.as_tensor())?, 47);
    let mut vars = vec![x.clone()];
    vars.extend(w.iter().cloned());
    assert_orders("causal multi-head attention", &vars, &loss);

    // The value against the definition, for one output entry before the
    // output projection: head 1, batch 1, query 3.
    let xv = x.as_tensor();
    let y = ops::merge_heads(
        &ops::scaled_dot_product_attention(
            &ops::split_heads(&xv.broadcast_matmul(w[0].as_tensor()).expect("q"), h).expect("q"),
            &ops::split_heads(&xv.broadcast_matmul(w[1].as_tensor()).expect("k"), h).expect("k"),
            &ops::split_heads(&xv.broadcast_matmul(w[2].as_tensor()).expect("v"), h).expect("v"),
            true,
        )
        .expect("attention"),
    )
    .expect("merge");
    let row = |w: &Var, s: usize| -> Vec<f64> {
        values(&xv.i((1, s)).expect("x").unsqueeze(0).expect("row").matmul(w.as_tensor()).expect("proj"))[4..8].to_vec()
    };
    let q = row(&w[0], 3);
    let scores: Vec<f64> =
        (0..=3).map(|s| q.iter().zip(row(&w[1], s)).map(|(a, b)| a * b).sum::<f64>() / 2.0).collect();
    let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
    let expected: Vec<f64> =
        (0..4).map(|j| (0..=3).map(|s| (scores[s] - m).exp() / z * row(&w[2], s)[j]).sum()).collect();
    let got = values(&y.i((1, 3)).expect("y"))[4..8].to_vec();
    assert!(relative_error(&got, &expected) < 1e-14, "{got:?} vs {expected:?}");
}

/// The checks can fail. candle's fused softmax and layer norm send no
/// gradient at all (the variables get none); its GELU kernels' derivatives use six-digit constants,
/// which the first-order check sees at ≈ 1e-7–1e-6 where ours are exact to
/// rounding. If a candle upgrade fixes them, this test fails and the
/// replacements can be reconsidered.
#[test]
fn candle_versions_fail_the_same_checks() {
    let x = var(&[3, 5], 1.5, 50);
    let (g, b) = (var(&[5], 0.3, 51), var(&[5], 0.3, 52));
    let f32 = |v: &Var| Var::from_tensor(&v.as_tensor().to_dtype(candle_core::DType::F32).expect("f32")).expect("var");
    let (xf, gf, bf) = (f32(&x), f32(&g), f32(&b));
    let softmax = candle_nn::ops::softmax_last_dim(xf.as_tensor()).expect("softmax");
    let norm = candle_nn::ops::layer_norm(xf.as_tensor(), gf.as_tensor(), bf.as_tensor(), 1e-5).expect("norm");
    for (name, out, vars) in [("softmax_last_dim", &softmax, vec![&xf]), ("layer_norm", &norm, vec![&xf, &gf, &bf])] {
        let l = (out.sqr().expect("sqr") * 0.5).expect("½").sum_all().expect("sum");
        let grads = seht_candle::backward_no_graph(&l).expect("backward");
        for v in vars {
            assert!(grads.get(v.as_tensor()).is_none(), "candle's fused {name} now has a backward");
        }
        // Ours, on the same f32 input, does send one.
        let ours = match name {
            "softmax_last_dim" => ops::softmax_last_dim(xf.as_tensor()),
            _ => ops::layer_norm(xf.as_tensor(), gf.as_tensor(), bf.as_tensor(), 1e-5),
        }
        .expect("ours");
        let l = (ours.sqr().expect("sqr") * 0.5).expect("½").sum_all().expect("sum");
        assert!(seht_candle::backward_no_graph(&l).expect("backward").get(xf.as_tensor()).is_some());
    }

    for (name, candle, ours) in [
        (
            "gelu (tanh)",
            Box::new(|x: &Tensor| x.gelu()) as Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>,
            Box::new(|x: &Tensor| wrap(ops::gelu_tanh(x))) as Box<dyn Fn(&Tensor) -> candle_core::Result<Tensor>>,
        ),
        ("gelu_erf", Box::new(|x: &Tensor| x.gelu_erf()), Box::new(|x: &Tensor| wrap(ops::gelu(x)))),
    ] {
        let theirs = first_order_error(std::slice::from_ref(&x), &|| tanh_head(&candle(x.as_tensor())?, 54), 7);
        let mine = first_order_error(std::slice::from_ref(&x), &|| tanh_head(&ours(x.as_tensor())?, 54), 7);
        let r = seht_candle::gradcheck::fd_check(
            std::slice::from_ref(&x),
            &|| tanh_head(&candle(x.as_tensor())?, 54),
            EPS,
            1,
        )
        .expect("check ran");
        eprintln!(
            "candle {name}: gradient rel. error {theirs:.2e} (ours {mine:.2e}); HVP {:.2e}, ∇(σᵀHσ) {:.2e}",
            r.hvp, r.grad_quadratic
        );
        assert!(theirs > TOL && mine < TOL / 10.0, "candle {name}: {theirs:.2e}, ours {mine:.2e}");
        assert!(r.hvp > TOL && r.grad_quadratic > TOL, "candle {name}: second and third order within {TOL:.0e}");
    }
}
