//! `ops::cross_entropy` (fused ops, issue 33) against candle's composed
//! `candle_nn::loss::cross_entropy`: value, gradient, Hessian-vector product,
//! the gradient of `‖Hv‖²` and a fourth-order product, each with the last
//! pass keeping its graph and without (the fused kernels' two branches), in
//! f64 (relative 1e-11) and f32 (1e-4); the second and third orders also
//! against central finite differences in f64; bad labels and shapes refused
//! with errors naming the op.

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use seht_candle::gradcheck::relative_error;
use seht_candle::ops;

type Loss = fn(&Tensor, &Tensor) -> seht_candle::Result<Tensor>;

fn fused(z: &Tensor, y: &Tensor) -> seht_candle::Result<Tensor> {
    ops::cross_entropy(z, y)
}

fn composed(z: &Tensor, y: &Tensor) -> seht_candle::Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(z, y)?)
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1::<f64>()).expect("values")
}

/// Logits `x W + b` of an `(n, d)` input and a `(d, v)` weight, with rows of
/// `x` zeroed where `tied` says (those rows' logits are all equal to `b`,
/// zero here: every class tied at the maximum), scaled by `scale`.
struct Case {
    n: usize,
    d: usize,
    v: usize,
    scale: f64,
    tied: &'static [usize],
}

fn labels(n: usize, v: usize) -> Tensor {
    let ys: Vec<u32> = (0..n).map(|i| ((i * 7 + 3) % v) as u32).collect();
    Tensor::from_vec(ys, n, &DEV).expect("labels")
}

/// `(name, tensor)` for every quantity compared, for `loss` in `dtype`.
/// With `squared`, the loss is `L + L²/2` of the mean cross-entropy `L`:
/// the per-row cotangent `(1 + L)/N` then depends on the weights, so the
/// derivative with respect to it (which a constant `1/N` never needs) is
/// exercised too.
fn derivatives(case: &Case, dtype: DType, loss: Loss, squared: bool) -> Vec<(String, Tensor)> {
    let cast = |t: Tensor| t.to_dtype(dtype).expect("cast");
    let mut x = randn(&[case.n, case.d], case.scale, 1);
    if !case.tied.is_empty() {
        let mask: Vec<f64> = (0..case.n).map(|i| if case.tied.contains(&i) { 0.0 } else { 1.0 }).collect();
        let mask = Tensor::from_vec(mask, (case.n, 1), &DEV).expect("mask");
        x = x.broadcast_mul(&mask).expect("tie rows");
    }
    let x = Var::from_tensor(&cast(x)).expect("x");
    let w = Var::from_tensor(&cast(randn(&[case.d, case.v], 1.0, 2))).expect("w");
    let inputs = [x.as_tensor().clone(), w.as_tensor().clone()];
    let ys = labels(case.n, case.v);
    let mut l = loss(&x.as_tensor().matmul(w.as_tensor()).expect("logits"), &ys).expect("loss");
    if squared {
        l = (&l + (l.sqr().expect("L²") * 0.5).expect("half")).expect("L + L²/2");
    }
    let dot_with = |grads: &candle_core::backprop::GradStore, seed: u64| {
        let mut acc = Tensor::zeros((), dtype, &DEV).expect("zero");
        for (i, t) in inputs.iter().enumerate() {
            let g = grads.get(t).expect("a gradient of each input");
            let r = cast(randn(t.dims(), 1.0, seed + i as u64));
            acc = (acc + (g * r).expect("mul").sum_all().expect("sum")).expect("add");
        }
        acc
    };
    let g = seht_candle::backward_create_graph(&l).expect("gradient");
    let gv = dot_with(&g, 10);
    let hv = seht_candle::backward_create_graph(&gv).expect("Hessian-vector product");
    let mut norm = Tensor::zeros((), dtype, &DEV).expect("zero");
    for t in &inputs {
        norm = (norm + hv.get(t).expect("Hv").sqr().expect("sqr").sum_all().expect("sum")).expect("add");
    }
    let third = seht_candle::backward_create_graph(&norm).expect("third order");
    let last = dot_with(&third, 20);
    let fourth = seht_candle::backward_no_graph(&last).expect("fourth order");
    let plain = seht_candle::backward_no_graph(&l).expect("gradient without graph");
    let hv_plain = seht_candle::backward_no_graph(&gv).expect("Hv without graph");
    let third_plain = seht_candle::backward_no_graph(&norm).expect("third order without graph");
    let mut out = vec![("loss".to_string(), l.detach())];
    for (name, t) in ["x", "W"].iter().zip(&inputs) {
        for (what, store) in [
            ("gradient", &g),
            ("gradient without graph", &plain),
            ("Hv", &hv),
            ("Hv without graph", &hv_plain),
            ("∇‖Hv‖²", &third),
            ("∇‖Hv‖² without graph", &third_plain),
            ("fourth order", &fourth),
        ] {
            out.push((format!("{what} {name}"), store.get(t).expect("gradient").detach()));
        }
    }
    out
}

const CASES: [Case; 4] = [
    Case { n: 6, d: 4, v: 9, scale: 1.0, tied: &[] },
    Case { n: 5, d: 3, v: 7, scale: 1.0, tied: &[1, 3] },
    Case { n: 3, d: 5, v: 300, scale: 8.0, tied: &[] },
    Case { n: 1, d: 2, v: 1, scale: 1.0, tied: &[] },
];

#[test]
fn every_order_matches_candles_composed_loss() {
    for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 1e-4)] {
        for (case, squared) in CASES.iter().flat_map(|c| [(c, false), (c, true)]) {
            let a = derivatives(case, dtype, fused, squared);
            let b = derivatives(case, dtype, composed, squared);
            for ((name, a), (_, b)) in a.iter().zip(&b) {
                let (va, vb) = (values(a), values(b));
                let err = if vb.iter().all(|x| *x == 0.0) {
                    va.iter().map(|x| x.abs()).fold(0.0, f64::max)
                } else {
                    relative_error(&va, &vb)
                };
                assert!(
                    err <= tol,
                    "{dtype:?} ({}, {}) → {} classes{}: {name}: relative difference {err:.2e} > {tol:.0e}",
                    case.n,
                    case.d,
                    case.v,
                    if squared { ", L + L²/2" } else { "" }
                );
            }
        }
    }
}

#[test]
fn second_and_third_order_match_finite_differences() {
    for case in &CASES[..3] {
        let x = var(&[case.n, case.d], case.scale, 1);
        let w = var(&[case.d, case.v], 1.0, 2);
        let ys = labels(case.n, case.v);
        let loss = || {
            let z = x.as_tensor().matmul(w.as_tensor())?;
            let l = ops::cross_entropy(&z, &ys).map_err(candle_core::Error::wrap)?;
            &l + (l.sqr()? * 0.5)?
        };
        assert_fd(
            &format!("cross-entropy ({}, {}) → {}", case.n, case.d, case.v),
            &[x.clone(), w.clone()],
            &loss,
            1e-6,
            1e-7,
        );
    }
}

#[test]
fn large_logits_stay_finite() {
    // Logits of ±1e4: exp overflows without the max shift.
    let z = Tensor::new(&[[1e4f32, -1e4, 0.0], [-1e4, -1e4, -1e4]], &DEV).expect("z");
    let y = Tensor::new(&[1u32, 2], &DEV).expect("y");
    let l = ops::cross_entropy(&z, &y).expect("loss").to_scalar::<f32>().expect("scalar");
    // Row 0: log(e^0 + …) − (−1e4) ≈ 2e4; row 1: log 3.
    let want = ((2e4f64 + (1.0f64 + (-1e4f64).exp() * 2.0).ln()) + 3f64.ln()) / 2.0;
    assert!((f64::from(l) - want).abs() <= 1e-3 * want, "loss {l}, want {want}");
}

#[test]
fn bad_labels_and_shapes_name_the_op() {
    let z = Tensor::zeros((3, 4), DType::F32, &DEV).expect("z");
    let err = |r: seht_candle::Result<Tensor>| r.expect_err("refused").to_string();
    let msg = err(ops::cross_entropy(&z, &Tensor::new(&[0u32, 4, 1], &DEV).expect("y")));
    assert!(msg.contains("cross_entropy") && msg.contains("label 4 of row 1") && msg.contains("4 classes"), "{msg}");
    let msg = err(ops::cross_entropy(&z, &Tensor::new(&[0i64, 1, -2], &DEV).expect("y")));
    assert!(msg.contains("label -2 of row 2"), "{msg}");
    let msg = err(ops::cross_entropy(&z, &Tensor::new(&[0u32, 1], &DEV).expect("y")));
    assert!(msg.contains("expected 3 labels"), "{msg}");
    let msg = err(ops::cross_entropy(&z.unsqueeze(0).expect("3-d"), &Tensor::new(&[0u32], &DEV).expect("y")));
    assert!(msg.contains("(N, V)"), "{msg}");
    let empty = Tensor::zeros((0, 4), DType::F32, &DEV).expect("empty");
    let msg = err(ops::cross_entropy(&empty, &Tensor::zeros(0, DType::U32, &DEV).expect("y")));
    assert!(msg.contains("no rows"), "{msg}");
    let msg = err(ops::cross_entropy(
        &Tensor::zeros((3, 0), DType::F32, &DEV).expect("z"),
        &Tensor::new(&[0u32, 0, 0], &DEV).expect("y"),
    ));
    assert!(msg.contains("no classes"), "{msg}");
    // The fallback (bf16 logits) checks labels too: candle's gather would
    // read u32::MAX as "ignore this row".
    let z16 = z.to_dtype(DType::BF16).expect("bf16");
    let msg = err(ops::cross_entropy(&z16, &Tensor::new(&[0u32, u32::MAX, 2], &DEV).expect("y")));
    assert!(msg.contains("label 4294967295 of row 1"), "{msg}");
    let msg = err(ops::cross_entropy(&z, &Tensor::zeros(3, DType::F32, &DEV).expect("y")));
    assert!(msg.contains("labels must be"), "{msg}");
}
