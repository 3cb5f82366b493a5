//! `GaussNewtonOperator` against an explicitly formed Gauss–Newton matrix,
//! in f64, on three tiny networks: a smooth tanh network, and a
//! conv → BatchNorm → ReLU → max-pool → conv → BatchNorm → ReLU →
//! average-pool → linear network with BatchNorm in evaluation mode (running
//! statistics) and in training mode (batch statistics).
//!
//! The reference is independent of the operator's route: `J_n` row by row
//! (one backward pass per logit `z_nk`), then
//! `G = (1/N) Σ_n J_nᵀ (diag p_n − p_n p_nᵀ) J_n` by explicit loops. The
//! operator's `G` is read column by column from unit-vector products. Each
//! check also asserts that the reference without the `p_n p_nᵀ` term is far
//! outside the tolerance, so the tolerance does discriminate a broken product.

mod common;

use candle_core::{D, Tensor, Var};
use candle_nn::VarMap;
use common::*;
use seht_candle::ops::{self, BatchNorm};
use seht_candle::{Error, GaussNewtonOperator, Param, Role};
use seht_estimator::{
    BlockVec, DenseOperator, HvpOperator, Lanczos, ProbeDistribution, Rademacher, Which, XNysTrace, probe_rng,
};

/// Relative tolerance of every matrix comparison (f64; the two routes sum
/// the same terms in different orders).
const TOL: f64 = 1e-10;

fn params(named: &[(&str, &Var)]) -> Vec<Param> {
    named.iter().map(|(n, v)| Param { name: format!("{n}.weight"), var: (*v).clone(), role: Role::Weight }).collect()
}

/// A two-layer tanh network `x → tanh(x W1ᵀ) W2ᵀ`: 6 rows, 3 inputs, 5
/// hidden, 4 classes.
fn tanh_net() -> (Tensor, Vec<Param>) {
    let (w1, w2) = (var(&[5, 3], 0.8, 1), var(&[4, 5], 0.8, 2));
    let x = randn(&[6, 3], 1.0, 3);
    let logits = x
        .matmul(&w1.as_tensor().t().expect("t"))
        .and_then(|h| h.tanh())
        .and_then(|h| h.matmul(&w2.as_tensor().t()?))
        .expect("logits");
    (logits, params(&[("w1", &w1), ("w2", &w2)]))
}

/// The conv/BatchNorm/ReLU/max-pool network of `eval_phase.rs`, running
/// statistics moved away from 0 and 1 by four training passes: 5 images of
/// 2 × 6 × 6, 4 classes, 147 weights.
fn conv_net(train: bool) -> (Tensor, Vec<Param>) {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let bn1 = BatchNorm::new(3, vb.pp("bn1")).expect("bn1");
    let bn2 = BatchNorm::new(3, vb.pp("bn2")).expect("bn2");
    let (c1, c2, fc) = (var(&[3, 2, 3, 3], 0.5, 1), var(&[3, 3, 3, 3], 0.4, 2), var(&[4, 3], 0.7, 3));
    let logits_of = |x: &Tensor, train: bool| -> candle_core::Result<Tensor> {
        let wrap = candle_core::Error::wrap;
        let h = ops::conv2d(x, c1.as_tensor(), 1, 1).map_err(wrap)?;
        let h = ops::relu(&bn1.forward_t(&h, train).map_err(wrap)?).map_err(wrap)?;
        let h = ops::max_pool2d(&h, 2).map_err(wrap)?;
        let h = ops::conv2d(&h, c2.as_tensor(), 1, 1).map_err(wrap)?;
        let h = ops::relu(&bn2.forward_t(&h, train).map_err(wrap)?).map_err(wrap)?;
        ops::global_avg_pool(&h).map_err(wrap)?.matmul(&fc.as_tensor().t()?)
    };
    for k in 0..4 {
        logits_of(&randn(&[5, 2, 6, 6], 1.0 + 0.3 * k as f64, 10 + k), true).expect("warm-up pass");
    }
    let logits = logits_of(&randn(&[5, 2, 6, 6], 1.0, 4), train).expect("logits");
    (logits, params(&[("c1", &c1), ("c2", &c2), ("fc", &fc)]))
}

/// `J` (`N·C` rows of length `d`), one backward pass per logit.
fn jacobian(logits: &Tensor, params: &[Param]) -> Vec<Vec<f64>> {
    let (n, c) = logits.dims2().expect("2-D");
    let mut rows = Vec::with_capacity(n * c);
    for i in 0..n {
        for k in 0..c {
            let g =
                seht_candle::backward_no_graph(&logits.get(i).and_then(|r| r.get(k)).expect("z_ik")).expect("backward");
            let mut row = Vec::new();
            for p in params {
                match g.get(p.var.as_tensor()) {
                    Some(t) => row.extend(t.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("grad")),
                    None => row.extend(std::iter::repeat_n(0.0, p.var.elem_count())),
                }
            }
            rows.push(row);
        }
    }
    rows
}

/// `(1/N) Σ_n J_nᵀ (diag p_n − [keep_outer] p_n p_nᵀ) J_n`, row-major `d × d`.
fn explicit_g(logits: &Tensor, jac: &[Vec<f64>], keep_outer: bool) -> Vec<f64> {
    let (n, c) = logits.dims2().expect("2-D");
    let d = jac[0].len();
    let p = candle_nn::ops::softmax(&logits.detach(), D::Minus1).and_then(|p| p.to_vec2::<f64>()).expect("p");
    let mut g = vec![0.0; d * d];
    for (i, pi) in p.iter().enumerate() {
        for k in 0..c {
            for l in 0..c {
                let h = if k == l { pi[k] } else { 0.0 } - if keep_outer { pi[k] * pi[l] } else { 0.0 };
                let (jk, jl) = (&jac[i * c + k], &jac[i * c + l]);
                for a in 0..d {
                    for b in 0..d {
                        g[a * d + b] += h * jk[a] * jl[b] / n as f64;
                    }
                }
            }
        }
    }
    g
}

/// The operator's matrix, column by column from unit-vector products.
fn operator_g(op: &GaussNewtonOperator) -> Vec<f64> {
    let blocks = op.blocks().to_vec();
    let d: usize = blocks.iter().map(|b| b.len).sum();
    let mut g = vec![0.0; d * d];
    let mut col = 0;
    for (b, block) in blocks.iter().enumerate() {
        for i in 0..block.len {
            let mut e = vec![0.0; block.len];
            e[i] = 1.0;
            let mut v = BlockVec::zeros(blocks.len());
            v.set(b, op.part_from_host(b, &e).expect("part"));
            let gv = op.hvp(&v).expect("hvp");
            let mut row = 0;
            for (k, part) in gv.present() {
                for x in op.part_to_host(k, part).expect("host") {
                    g[row * d + col] = x;
                    row += 1;
                }
            }
            col += 1;
        }
    }
    g
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).fold(0.0, |m, (x, y)| m.max((x - y).abs()))
}

/// The operator's `G` equals the explicit one, is symmetric and positive
/// semi-definite; its quadratic form is `vᵀ(Gv)` (with a block of `v`
/// absent); XNysTrace through it recovers `tr(G)` once its sketch exceeds
/// `rank(G) ≤ N(C − 1)`.
fn check(name: &str, logits: &Tensor, params: &[Param]) {
    let op = GaussNewtonOperator::new(logits, params).expect("operator");
    let jac = jacobian(logits, params);
    let reference = explicit_g(logits, &jac, true);
    let broken = explicit_g(logits, &jac, false);
    let g = operator_g(&op);
    let d = jac[0].len();
    let scale = max_abs(&reference);
    let err = max_diff(&g, &reference) / scale;
    let broken_err = max_diff(&broken, &reference) / scale;
    let asym = (0..d)
        .flat_map(|i| (0..d).map(move |j| (i, j)))
        .fold(0.0f64, |m, (i, j)| m.max((g[i * d + j] - g[j * d + i]).abs()))
        / scale;
    let dense = DenseOperator::single_block(d, g.clone()).expect("dense");
    let eig = |which| {
        let e = Lanczos::new(1, d, 1e-10).expect("lanczos").which(which).eigenpairs(&dense, &mut probe_rng(7));
        e.expect("eigenpairs").pairs[0].value
    };
    let (lo, hi) = (eig(Which::Smallest), eig(Which::Largest));
    eprintln!(
        "{name}: d = {d}, max|G_op − G|/max|G| = {err:.2e} (without p pᵀ: {broken_err:.2e}), asymmetry {asym:.2e}, \
         λ_min {lo:.3e}, λ_max {hi:.3e}"
    );
    assert!(err <= TOL, "{name}: operator's G differs from the explicit G by {err:.2e} > {TOL:.0e}");
    assert!(broken_err > 1e4 * TOL, "{name}: dropping p pᵀ moves G by only {broken_err:.2e}");
    assert!(asym <= TOL, "{name}: G is not symmetric ({asym:.2e})");
    assert!(lo >= -TOL * hi, "{name}: G has a negative eigenvalue {lo:.3e} (λ_max {hi:.3e})");

    // vᵀGv from the quadratic form equals vᵀ(Gv), the last block of v absent.
    let mut rng = probe_rng(11);
    let mut v = BlockVec::zeros(params.len());
    let mut dense_v = Vec::new();
    for (b, block) in op.blocks().iter().enumerate() {
        let values = Rademacher.sample(&mut rng, block.len);
        if b + 1 < params.len() {
            v.set(b, op.part_from_host(b, &values).expect("part"));
            dense_v.extend(values);
        } else {
            dense_v.extend(std::iter::repeat_n(0.0, block.len));
        }
    }
    let q = op.scalar_value(&op.quadratic_form(&v).expect("quadratic form")).expect("value");
    let gv: f64 = (0..d).map(|i| dense_v[i] * (0..d).map(|j| reference[i * d + j] * dense_v[j]).sum::<f64>()).sum();
    assert!((q - gv).abs() <= TOL * gv.abs().max(scale), "{name}: vᵀGv {q} against {gv}");

    let (n, c) = logits.dims2().expect("2-D");
    let trace: f64 = (0..d).map(|i| reference[i * d + i]).sum();
    let est = XNysTrace::with_budget(n * (c - 1) + 2).expect("xnystrace").estimate(&op, &mut probe_rng(3));
    let est = est.expect("estimate");
    assert!((est.mean - trace).abs() <= 1e-8 * trace, "{name}: XNysTrace {} against tr(G) {trace}", est.mean);
}

#[test]
fn tanh_network_matches_the_explicit_matrix() {
    let (logits, params) = tanh_net();
    check("tanh", &logits, &params);
}

#[test]
fn conv_batch_norm_eval_matches_the_explicit_matrix() {
    let (logits, params) = conv_net(false);
    check("conv/BN eval/ReLU/max-pool", &logits, &params);
}

#[test]
fn conv_batch_norm_train_matches_the_explicit_matrix() {
    let (logits, params) = conv_net(true);
    check("conv/BN train/ReLU/max-pool", &logits, &params);
}

/// Bad input is an error naming what is wrong, never a panic.
#[test]
fn bad_input_is_refused() {
    let (logits, params) = tanh_net();
    let err = GaussNewtonOperator::new(&logits.flatten_all().expect("flat"), &params).expect_err("1-D logits");
    assert!(matches!(err, Error::InvalidOp { .. }) && err.to_string().contains("(rows, classes)"), "{err}");
    let err = GaussNewtonOperator::new(&logits, &[]).expect_err("no parameters");
    assert!(matches!(err, Error::NoParameters(_)), "{err}");
}
