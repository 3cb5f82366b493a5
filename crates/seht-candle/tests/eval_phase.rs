//! Why a penalty on the evaluation-mode Hessian cannot run away on a
//! BatchNorm network, checked with exact matrices in f64: with BatchNorm's
//! running statistics, a network of convolutions, BatchNorm, ReLU, max-
//! and average-pooling and a linear layer is, within one activation
//! pattern, linear in each single weight (every path through it uses a
//! weight at most once), so `∂²z/∂w_i² = 0`, every diagonal entry of the
//! Hessian equals the Gauss–Newton matrix's, and `tr(H) = tr(G) ≥ 0`. With
//! the batch's statistics (training mode) the examples are coupled through
//! the mean and variance, and the two traces differ.
//!
//! `tr(H)` here is `Σ_i e_iᵀHe_i` over every weight (one exact product per
//! coordinate); `tr(G)` is exact as well: for the mean cross-entropy,
//! `G = (1/N)Σ_n J_nᵀ(diag p_n − p_n p_nᵀ)J_n` and
//! `diag p − ppᵀ = Σ_c p_c (e_c − p)(e_c − p)ᵀ`, so
//! `tr(G) = (1/N)Σ_n Σ_c p_nc ‖∇_w log p_nc‖²` (N·C backward passes).

mod common;

use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use common::*;
use seht_candle::ops::{self, BatchNorm};
use seht_candle::{HessianOperator, Param, Role};
use seht_estimator::{BlockVec, HvpOperator};

struct Net {
    bn1: BatchNorm,
    bn2: BatchNorm,
    c1: Var,
    c2: Var,
    fc: Var,
    x: Tensor,
    y: Tensor,
}

fn net() -> Net {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let n = Net {
        bn1: BatchNorm::new(3, vb.pp("bn1")).expect("bn1"),
        bn2: BatchNorm::new(3, vb.pp("bn2")).expect("bn2"),
        c1: var(&[3, 2, 3, 3], 0.5, 1),
        c2: var(&[3, 3, 3, 3], 0.4, 2),
        fc: var(&[4, 3], 0.7, 3),
        x: randn(&[5, 2, 6, 6], 1.0, 4),
        y: Tensor::new(&[0u32, 1, 2, 3, 1], &DEV).expect("y"),
    };
    // Running statistics away from their initial 0 and 1: a few training passes.
    for k in 0..4 {
        let x = randn(&[5, 2, 6, 6], 1.0 + 0.3 * k as f64, 10 + k);
        n.logits_of(&x, true).expect("warm-up pass");
    }
    n
}

impl Net {
    fn logits_of(&self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let wrap = candle_core::Error::wrap;
        let h = ops::conv2d(x, self.c1.as_tensor(), 1, 1).map_err(wrap)?;
        let h = ops::relu(&self.bn1.forward_t(&h, train).map_err(wrap)?).map_err(wrap)?;
        let h = ops::max_pool2d(&h, 2).map_err(wrap)?;
        let h = ops::conv2d(&h, self.c2.as_tensor(), 1, 1).map_err(wrap)?;
        let h = ops::relu(&self.bn2.forward_t(&h, train).map_err(wrap)?).map_err(wrap)?;
        ops::global_avg_pool(&h).map_err(wrap)?.matmul(&self.fc.as_tensor().t()?)
    }

    fn weights(&self) -> Vec<Param> {
        [("c1", &self.c1), ("c2", &self.c2), ("fc", &self.fc)]
            .into_iter()
            .map(|(n, v)| Param { name: format!("{n}.weight"), var: v.clone(), role: Role::Weight })
            .collect()
    }

    /// `Σ_i e_iᵀHe_i` over the weights. The training-mode passes would move
    /// the running statistics; they are restored by recomputing nothing
    /// after them (each trace is taken on a fresh net).
    fn exact_trace(&self, train: bool) -> f64 {
        let loss =
            candle_nn::loss::cross_entropy(&self.logits_of(&self.x, train).expect("logits"), &self.y).expect("loss");
        let weights = self.weights();
        let op = HessianOperator::new(&loss, &weights).expect("operator");
        let mut trace = 0.0;
        for (b, p) in weights.iter().enumerate() {
            for i in 0..p.var.elem_count() {
                let parts = (0..weights.len())
                    .map(|k| {
                        let mut e = vec![0.0; weights[k].var.elem_count()];
                        if k == b {
                            e[i] = 1.0;
                        }
                        op.part_from_host(k, &e).map(Some)
                    })
                    .collect::<seht_candle::Result<_>>()
                    .expect("unit vector");
                let q = op.quadratic_form(&BlockVec::from_parts(parts)).expect("eᵀHe");
                trace += op.scalar_value(&q).expect("value");
            }
        }
        trace
    }

    /// `(1/N)Σ_n Σ_c p_nc ‖∇_w log p_nc‖²`, exact.
    fn exact_gauss_newton_trace(&self, train: bool) -> f64 {
        let logits = self.logits_of(&self.x, train).expect("logits");
        let n = logits.dim(0).expect("n");
        let classes = logits.dim(1).expect("c");
        let p = candle_nn::ops::softmax_last_dim(&logits.detach()).expect("p").to_vec2::<f64>().expect("host");
        let log_p = candle_nn::ops::log_softmax(&logits, 1).expect("log p");
        let mut total = 0.0;
        for (row, p_row) in p.iter().enumerate() {
            for (c, &p_c) in p_row.iter().enumerate().take(classes) {
                let lp = log_p.get(row).and_then(|r| r.get(c)).expect("log p_nc");
                let g = seht_candle::backward_no_graph(&lp).expect("backward");
                let sq: f64 = self
                    .weights()
                    .iter()
                    .map(|w| {
                        g.get(w.var.as_tensor()).map_or(0.0, |t| {
                            t.sqr().and_then(|s| s.sum_all()).and_then(|s| s.to_scalar::<f64>()).expect("norm")
                        })
                    })
                    .sum();
                total += p_c * sq;
            }
        }
        total / n as f64
    }
}

#[test]
fn in_evaluation_mode_the_hessian_trace_is_the_gauss_newton_trace() {
    let (h, g) = (net().exact_trace(false), net().exact_gauss_newton_trace(false));
    let e = (h - g).abs() / g.abs();
    eprintln!("evaluation mode: tr(H) {h:.12}, tr(G) {g:.12}, relative difference {e:.1e}");
    assert!(g > 0.0, "tr(G) = {g} is not positive");
    assert!(e < 1e-9, "evaluation mode: tr(H) {h} and tr(G) {g} differ by {e:e}");
}

#[test]
fn in_training_mode_they_differ() {
    // The same check on the batch's statistics: a reading that used them in
    // evaluation mode too would fail the test above.
    let (h, g) = (net().exact_trace(true), net().exact_gauss_newton_trace(true));
    let e = (h - g).abs() / g.abs();
    eprintln!("training mode: tr(H) {h:.9}, tr(G) {g:.9}, relative difference {e:.2e}");
    assert!(e > 1e-3, "training mode: tr(H) {h} and tr(G) {g} agree to {e:e}: the test cannot tell the modes apart");
}
