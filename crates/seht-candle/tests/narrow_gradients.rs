//! `narrow`'s gradients combined per argument (the vendored candle's patch 7):
//! the slices a tensor is split into (time steps, gates, heads) send their
//! gradients back as one tensor, zero between the slices, instead of one
//! zero-padded full-size tensor per slice. Checked to third order against
//! central finite differences for disjoint slices with gaps and a dense
//! consumer of the same tensor, for overlapping slices and for slices along
//! two dimensions (the padded-sum path), and against the gradient of the same
//! function written with masks instead of slices.

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use seht_candle::{backward_create_graph, backward_no_graph};

/// Disjoint slices along dim 1 with gaps before, between and after them,
/// each through its own nonlinearity, plus a dense use of the whole tensor.
fn split_loss(x: &Var, w: &Var) -> candle_core::Result<Tensor> {
    let x = x.as_tensor().matmul(w.as_tensor())?; // (3, 9): not a variable, so its slices meet in one node
    let a = x.narrow(1, 1, 2)?.tanh()?;
    let b = x.narrow(1, 4, 3)?.sqr()?;
    let c = x.narrow(1, 3, 1)?.exp()?;
    let dense = (x.sin()? * 0.3)?;
    tanh_head(&Tensor::cat(&[&a, &b, &c], 1)?, 7)? + tanh_head(&dense, 8)?
}

/// Overlapping slices along dim 1.
fn overlap_loss(x: &Var, w: &Var) -> candle_core::Result<Tensor> {
    let x = x.as_tensor().matmul(w.as_tensor())?;
    let a = x.narrow(1, 0, 5)?.tanh()?;
    let b = x.narrow(1, 3, 4)?.sqr()?;
    tanh_head(&a, 9)? + tanh_head(&b, 10)?
}

/// Slices along two dimensions whose ranges would be disjoint along one.
fn two_dims_loss(x: &Var, w: &Var) -> candle_core::Result<Tensor> {
    let x = x.as_tensor().matmul(w.as_tensor())?;
    let a = x.narrow(1, 0, 2)?.tanh()?;
    let c = x.narrow(0, 2, 1)?.cos()?;
    tanh_head(&a, 12)? + tanh_head(&c, 11)?
}

#[test]
fn narrow_gradients_are_exact_to_third_order() {
    let (x, w) = (var(&[3, 4], 0.7, 1), var(&[4, 9], 0.5, 2));
    assert_fd("disjoint slices with gaps + dense use", &[x.clone(), w.clone()], &|| split_loss(&x, &w), 1e-5, 1e-6);
    assert_fd("overlapping slices", &[x.clone(), w.clone()], &|| overlap_loss(&x, &w), 1e-5, 1e-6);
    assert_fd("slices along two dimensions", &[x.clone(), w.clone()], &|| two_dims_loss(&x, &w), 1e-5, 1e-6);
    // A variable narrowed directly: its slices are combined at the end of the pass.
    let v = var(&[2, 8], 0.6, 3);
    let direct =
        || tanh_head(&v.as_tensor().narrow(1, 0, 3)?.sqr()?, 4)? + tanh_head(&v.as_tensor().narrow(1, 5, 2)?, 5)?;
    assert_fd("a variable's own slices", std::slice::from_ref(&v), &direct, 1e-5, 1e-6);
}

#[test]
fn sliced_and_masked_gradients_agree_with_and_without_the_graph() {
    for dtype in [DType::F32, DType::F64] {
        let cast = |v: Var| Var::from_tensor(&v.as_tensor().to_dtype(dtype).expect("cast")).expect("var");
        let (x, w) = (cast(var(&[3, 4], 0.7, 1)), cast(var(&[4, 9], 0.5, 2)));
        // The same function with 0/1 masks in place of slices: no `narrow` anywhere.
        let masked = || -> candle_core::Result<Tensor> {
            let y = x.as_tensor().matmul(w.as_tensor())?;
            let mask = |lo: usize, hi: usize| {
                let m: Vec<f64> = (0..9).map(|j| if (lo..hi).contains(&j) { 1.0 } else { 0.0 }).collect();
                Tensor::new(m, &DEV)?.to_dtype(dtype)
            };
            let pick = |lo: usize, hi: usize| y.broadcast_mul(&mask(lo, hi)?)?.sum(1);
            let (a, b, c) = (pick(1, 3)?.tanh()?, pick(4, 7)?.sqr()?, pick(3, 4)?.exp()?);
            (a + b)? + c
        };
        let sliced = || -> candle_core::Result<Tensor> {
            let y = x.as_tensor().matmul(w.as_tensor())?;
            let (a, b, c) = (
                y.narrow(1, 1, 2)?.sum(1)?.tanh()?,
                y.narrow(1, 4, 3)?.sum(1)?.sqr()?,
                y.narrow(1, 3, 1)?.sum(1)?.exp()?,
            );
            (a + b)? + c
        };
        for keep_graph in [false, true] {
            let grad = |f: &dyn Fn() -> candle_core::Result<Tensor>| {
                let l = f().and_then(|t| t.sum_all()).expect("loss");
                let g = if keep_graph { backward_create_graph(&l) } else { backward_no_graph(&l) }.expect("backward");
                [g.get(x.as_tensor()).expect("∂x").clone(), g.get(w.as_tensor()).expect("∂w").clone()]
            };
            let (s, m) = (grad(&sliced), grad(&masked));
            for (a, b) in s.iter().zip(&m) {
                let (a, b) = (flat64(a), flat64(b));
                let tol = if dtype == DType::F32 { 1e-5 } else { 1e-13 };
                let err = a.iter().zip(&b).fold(0f64, |e, (p, q)| e.max((p - q).abs()));
                assert!(
                    err <= tol,
                    "{dtype:?}, graph kept {keep_graph}: sliced vs masked gradient differ by {err:.2e}"
                );
            }
        }
    }
}

fn flat64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1()).expect("values")
}
