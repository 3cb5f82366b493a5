//! Exactness to third order: for every building block the models use, the
//! Hessian-vector product and the gradient of `σᵀHσ` match central finite
//! differences in f64 (relative error ≤ 1e-6; several probe seeds each).
//!
//! Step size: ε = 1e-6. Truncation error is O(ε²) ≈ 1e-12 on smooth parts,
//! rounding O(1e-16/ε) ≈ 1e-10; and a step this small rarely moves a ReLU or
//! max-pool input across its kink (a larger ε, e.g. 1e-3, does, and then the
//! difference quotient is wrong, not the derivative).

mod common;

use candle_core::{DType, IndexOp, Module, ModuleT, Tensor};
use candle_nn::rnn::{GRUConfig, LSTMConfig, RNN};
use candle_nn::{BatchNormConfig, VarMap};
use common::*;
use seht_candle::ops;

const EPS: f64 = 1e-6;
const TOL: f64 = 1e-6;

fn labels(n: usize, classes: u32, seed: u64) -> Tensor {
    let v: Vec<u32> = (0..n as u32).map(|i| (i * 7 + seed as u32) % classes).collect();
    Tensor::from_vec(v, n, &DEV).expect("labels")
}

fn bias4(b: &candle_core::Var) -> Tensor {
    b.as_tensor().reshape((1, (), 1, 1)).expect("reshape")
}

#[test]
fn linear() {
    let (w, b) = (var(&[3, 5], 0.5, 10), var(&[3], 0.5, 11));
    let x = randn(&[4, 5], 1.0, 12);
    let loss = || tanh_head(&x.matmul(&w.t()?)?.broadcast_add(&b)?, 13);
    assert_fd("linear", &[w.clone(), b.clone()], &loss, EPS, TOL);
}

#[test]
fn conv2d_stride_1_padding_1() {
    let (w, b) = (var(&[4, 3, 3, 3], 0.3, 20), var(&[4], 0.3, 21));
    let x = randn(&[2, 3, 6, 6], 1.0, 22);
    let loss = || tanh_head(&x.conv2d(&w, 1, 1, 1, 1)?.broadcast_add(&bias4(&b))?, 23);
    assert_fd("conv2d s1 p1", &[w.clone(), b.clone()], &loss, EPS, TOL);
}

#[test]
fn conv2d_stride_2_padding_1() {
    let w = var(&[4, 3, 3, 3], 0.3, 30);
    let x = randn(&[2, 3, 7, 7], 1.0, 31);
    let loss = || tanh_head(&x.conv2d(&w, 1, 2, 1, 1)?, 32);
    assert_fd("conv2d s2 p1", std::slice::from_ref(&w), &loss, EPS, TOL);
}

#[test]
fn batch_norm_training_mode() {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb.pp("bn")).expect("bn");
    let w = var(&[4, 3, 3, 3], 0.3, 40);
    let x = randn(&[3, 3, 5, 5], 1.0, 41);
    // Non-trivial γ, β so that the check does not sit at the initial point.
    for (name, seed) in [("bn.weight", 42u64), ("bn.bias", 43)] {
        let v = varmap.data().lock().expect("lock")[name].clone();
        v.set(&(randn(&[4], 0.3, seed) + 1.0).expect("shift")).expect("set");
    }
    let mut vars = vec![w.clone()];
    vars.extend(trainable(&varmap));
    assert_eq!(vars.len(), 3, "conv weight, γ and β; running statistics are not parameters");
    let loss = || tanh_head(&bn.forward_t(&x.conv2d(&w, 1, 1, 1, 1)?, true)?, 44);
    assert_fd("batch norm (train)", &vars, &loss, EPS, TOL);
}

#[test]
fn relu_between_linear_layers() {
    let (w1, w2) = (var(&[6, 5], 0.5, 50), var(&[3, 6], 0.5, 51));
    let x = randn(&[4, 5], 1.0, 52);
    let loss = || tanh_head(&x.matmul(&w1.t()?)?.relu()?.matmul(&w2.t()?)?, 53);
    assert_fd("relu", &[w1.clone(), w2.clone()], &loss, EPS, TOL);
}

#[test]
fn average_pooling_kernel_equals_stride() {
    let w = var(&[3, 2, 3, 3], 0.4, 60);
    let x = randn(&[2, 2, 6, 6], 1.0, 61);
    let native = || tanh_head(&x.conv2d(&w, 1, 1, 1, 1)?.avg_pool2d(2)?, 62);
    assert_fd("avg_pool2d (candle, k = s = 2)", std::slice::from_ref(&w), &native, EPS, TOL);
    let ours = || tanh_head(&ops::avg_pool2d(&x.conv2d(&w, 1, 1, 1, 1)?, 2).map_err(candle_core::Error::wrap)?, 62);
    assert_fd("ops::avg_pool2d (k = s = 2)", std::slice::from_ref(&w), &ours, EPS, TOL);
}

#[test]
fn global_mean_pooling() {
    let (w, fc) = (var(&[4, 3, 3, 3], 0.4, 70), var(&[2, 4], 0.5, 71));
    let x = randn(&[3, 3, 4, 4], 1.0, 72);
    let loss = || {
        let h = ops::global_avg_pool(&x.conv2d(&w, 1, 1, 1, 1)?).map_err(candle_core::Error::wrap)?;
        tanh_head(&h.matmul(&fc.t()?)?, 73)
    };
    assert_fd("global mean pooling", &[w.clone(), fc.clone()], &loss, EPS, TOL);
}

#[test]
fn max_pooling_kernel_equals_stride() {
    let w = var(&[3, 2, 3, 3], 0.4, 80);
    let x = randn(&[2, 2, 6, 6], 1.0, 81);
    let loss = || tanh_head(&ops::max_pool2d(&x.conv2d(&w, 1, 1, 1, 1)?, 2).map_err(candle_core::Error::wrap)?, 82);
    assert_fd("ops::max_pool2d (k = s = 2)", std::slice::from_ref(&w), &loss, EPS, TOL);
}

#[test]
fn general_pooling_kernel_3_stride_2_padding_1() {
    let w = var(&[3, 2, 3, 3], 0.4, 90);
    let x = randn(&[2, 2, 7, 7], 1.0, 91);
    for kind in [ops::PoolKind::Max, ops::PoolKind::Avg] {
        let loss = || {
            tanh_head(&ops::pool2d(&x.conv2d(&w, 1, 1, 1, 1)?, 3, 2, 1, kind).map_err(candle_core::Error::wrap)?, 92)
        };
        assert_fd(&format!("ops::pool2d {kind:?} k3 s2 p1"), std::slice::from_ref(&w), &loss, EPS, TOL);
    }
}

#[test]
fn dropout_with_a_fixed_mask() {
    let (w1, w2) = (var(&[8, 5], 0.5, 100), var(&[3, 8], 0.5, 101));
    let x = randn(&[4, 5], 1.0, 102);
    let p = 0.5;
    let mask = randn(&[4, 8], 1.0, 103).ge(0.0).expect("mask").to_dtype(DType::F64).expect("dtype");
    let loss = || {
        let h = x.matmul(&w1.t()?)?.tanh()?;
        let h = (h * &mask)?.affine(1.0 / (1.0 - p), 0.0)?;
        tanh_head(&h.matmul(&w2.t()?)?, 104)
    };
    assert_fd("dropout (fixed mask)", &[w1.clone(), w2.clone()], &loss, EPS, TOL);
}

#[test]
fn embedding() {
    let (emb, fc) = (var(&[10, 4], 0.5, 110), var(&[3, 4], 0.5, 111));
    let ids = Tensor::new(&[1u32, 4, 4, 7, 9, 0], &DEV).expect("ids");
    let loss = || {
        let e = candle_nn::Embedding::new(emb.as_tensor().clone(), 4).forward(&ids)?;
        tanh_head(&e.matmul(&fc.t()?)?, 112)
    };
    assert_fd("embedding", &[emb.clone(), fc.clone()], &loss, EPS, TOL);
}

#[test]
fn cross_entropy() {
    let w = var(&[5, 6], 0.5, 120);
    let x = randn(&[8, 6], 1.0, 121);
    let y = labels(8, 5, 3);
    let loss = || candle_nn::loss::cross_entropy(&x.matmul(&w.t()?)?, &y);
    assert_fd("cross-entropy", std::slice::from_ref(&w), &loss, EPS, TOL);
}

#[test]
fn lstm() {
    let varmap = VarMap::new();
    let lstm = candle_nn::lstm(3, 4, LSTMConfig::default(), f64_varbuilder(&varmap).pp("lstm")).expect("lstm");
    let fc = var(&[2, 4], 0.5, 130);
    let xs = randn(&[2, 3, 3], 1.0, 131);
    let mut vars = trainable(&varmap);
    vars.push(fc.clone());
    let loss = || {
        let states = lstm.seq(&xs)?;
        let h = lstm.states_to_tensor(&states)?; // (batch, seq, hidden)
        tanh_head(&h.broadcast_matmul(&fc.t()?)?, 132)
    };
    assert_fd("LSTM (3 steps)", &vars, &loss, EPS, TOL);
}

#[test]
fn gru() {
    let varmap = VarMap::new();
    let gru = candle_nn::gru(3, 4, GRUConfig::default(), f64_varbuilder(&varmap).pp("gru")).expect("gru");
    let fc = var(&[2, 4], 0.5, 140);
    let xs = randn(&[2, 3, 3], 1.0, 141);
    let mut vars = trainable(&varmap);
    vars.push(fc.clone());
    let loss = || {
        let states = gru.seq(&xs)?;
        // candle's GRU concatenates the states: (batch, seq·hidden).
        let h = gru.states_to_tensor(&states)?.reshape((2, 3, 4))?;
        tanh_head(&h.broadcast_matmul(&fc.t()?)?, 142)
    };
    assert_fd("GRU (3 steps)", &vars, &loss, EPS, TOL);
}

#[test]
fn conv1d_via_conv2d() {
    let w = var(&[4, 3, 3], 0.4, 150);
    let x = randn(&[2, 3, 9], 1.0, 151);
    let loss = || tanh_head(&ops::conv1d(&x, &w, 1, 2).map_err(candle_core::Error::wrap)?, 152);
    assert_fd("ops::conv1d (p1 s2)", std::slice::from_ref(&w), &loss, EPS, TOL);
    // And it is the convolution: compare one output against the definition.
    let out = ops::conv1d(&x, w.as_tensor(), 1, 2).expect("conv1d");
    let (xv, wv) = (x.to_vec3::<f64>().expect("x"), w.as_tensor().to_vec3::<f64>().expect("w"));
    let (n, o, t) = (1, 2, 3); // output position t reads input positions 2t-1 .. 2t+1
    let expected: f64 =
        (0..3).flat_map(|c| (0..3).map(move |k| (c, k))).map(|(c, k)| wv[o][c][k] * xv[n][c][2 * t + k - 1]).sum();
    let got = out.i((n, o, t)).expect("index").to_scalar::<f64>().expect("scalar");
    assert!((got - expected).abs() < 1e-12, "conv1d output {got} vs definition {expected}");
}

/// A small composed CNN: conv → BN → ReLU → max pool → strided conv → ReLU →
/// global mean → linear → cross-entropy.
#[test]
fn small_cnn_end_to_end() {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb.pp("bn1")).expect("bn");
    let c1 = var(&[4, 2, 3, 3], 0.4, 160);
    let c2 = var(&[6, 4, 3, 3], 0.3, 161);
    let fc = var(&[3, 6], 0.5, 162);
    let x = randn(&[4, 2, 8, 8], 1.0, 163);
    let y = labels(4, 3, 1);
    let mut vars = vec![c1.clone(), c2.clone(), fc.clone()];
    vars.extend(trainable(&varmap));
    let loss = || {
        let h = bn.forward_t(&x.conv2d(&c1, 1, 1, 1, 1)?, true)?.relu()?;
        let h = ops::max_pool2d(&h, 2).map_err(candle_core::Error::wrap)?;
        let h = h.conv2d(&c2, 1, 2, 1, 1)?.relu()?;
        let h = ops::global_avg_pool(&h).map_err(candle_core::Error::wrap)?;
        candle_nn::loss::cross_entropy(&h.matmul(&fc.t()?)?, &y)
    };
    assert_fd("small CNN", &vars, &loss, EPS, TOL);
}

/// A small LSTM language model: embedding → LSTM → linear → cross-entropy
/// over next tokens.
#[test]
fn small_lstm_language_model() {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let lstm = candle_nn::lstm(5, 6, LSTMConfig::default(), vb.pp("rnn")).expect("lstm");
    let emb = var(&[12, 5], 0.5, 170);
    let dec = var(&[12, 6], 0.5, 171);
    let tokens: Vec<u32> = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8];
    let inputs = Tensor::from_vec(tokens[..10].to_vec(), (2, 5), &DEV).expect("inputs");
    let targets = Tensor::from_vec(tokens[2..].to_vec(), 10, &DEV).expect("targets");
    let mut vars = vec![emb.clone(), dec.clone()];
    vars.extend(trainable(&varmap));
    let loss = || {
        let e = candle_nn::Embedding::new(emb.as_tensor().clone(), 5).forward(&inputs)?;
        let h = lstm.states_to_tensor(&lstm.seq(&e)?)?; // (2, 5, 6)
        let logits = h.reshape((10, 6))?.matmul(&dec.t()?)?;
        candle_nn::loss::cross_entropy(&logits, &targets)
    };
    assert_fd("small LSTM LM", &vars, &loss, EPS, TOL);
}

/// Why `ops::max_pool2d` exists: candle's own `max_pool2d` gets even the
/// first derivative wrong (scaled by 1/k²). If a candle upgrade fixes it, this
/// test fails and the workaround can be retired.
#[test]
fn candle_native_max_pool_backward_is_wrong() {
    let x = var(&[1, 1, 4, 4], 1.0, 180);
    let c = randn(&[1, 1, 2, 2], 1.0, 181);
    let native = (x.as_tensor().max_pool2d(2).expect("pool") * &c).expect("mul").sum_all().expect("sum");
    let ours = (ops::max_pool2d(x.as_tensor(), 2).expect("pool") * &c).expect("mul").sum_all().expect("sum");
    let gn = native
        .backward()
        .expect("bw")
        .get(x.as_tensor())
        .expect("grad")
        .flatten_all()
        .expect("f")
        .to_vec1::<f64>()
        .expect("v");
    let go = ours
        .backward()
        .expect("bw")
        .get(x.as_tensor())
        .expect("grad")
        .flatten_all()
        .expect("f")
        .to_vec1::<f64>()
        .expect("v");
    let (sn, so): (f64, f64) = (gn.iter().map(|v| v.abs()).sum(), go.iter().map(|v| v.abs()).sum());
    let cs: f64 = c.flatten_all().expect("f").to_vec1::<f64>().expect("v").iter().map(|v| v.abs()).sum();
    assert!((so - cs).abs() < 1e-12, "ours routes each window's gradient to its maximum: {so} vs {cs}");
    assert!((sn - cs / 4.0).abs() < 1e-12, "candle 0.11's max_pool2d backward scales by 1/k²: {sn} vs {}", cs / 4.0);
}

/// The checker can fail: through candle's own `max_pool2d` (wrong backward)
/// it reports large errors.
#[test]
fn gradcheck_detects_a_wrong_derivative() {
    let w = var(&[3, 2, 3, 3], 0.4, 190);
    let x = randn(&[2, 2, 6, 6], 1.0, 191);
    let loss = || tanh_head(&x.conv2d(&w, 1, 1, 1, 1)?.max_pool2d(2)?, 192);
    let r = seht_candle::gradcheck::fd_check(std::slice::from_ref(&w), &loss, EPS, 1).expect("check ran");
    eprintln!("candle max_pool2d: HVP rel. error {:.2e}, ∇(σᵀHσ) rel. error {:.2e}", r.hvp, r.grad_quadratic);
    assert!(r.hvp > 0.1, "the checker must flag candle's wrong max-pool backward, got {:.2e}", r.hvp);
}
