//! Matrix-product gradients in their factor's layout (the vendored candle's
//! patch 8): a factor that is a transposed contiguous matrix (`w.t()`, every
//! linear layer's weight; a batched `k.transpose(1, 2)`) gets `(gᵀ·x)ᵀ`
//! instead of `xᵀ·g`, so its weight receives a contiguous gradient and no
//! transposed copy is made. Checked to third order against central finite
//! differences with transposed factors on both sides, rank 2 and batched, and
//! against the same products on contiguous copies of the factors, with and
//! without the graph.

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use seht_candle::{backward_create_graph, backward_no_graph};

/// `tanh(x·w1ᵀ)` → `w2ᵀ·(·)ᵀ` → batched `q·kᵀ`: transposed factors on the
/// right, on the left and in a batch; `copies` makes every factor contiguous
/// first (the upstream rule's path).
fn net(x: &Var, w1: &Var, w2: &Var, k: &Var, copies: bool) -> candle_core::Result<Tensor> {
    let c = |t: Tensor| if copies { t.contiguous() } else { Ok(t) };
    let h = x.as_tensor().matmul(&c(w1.as_tensor().t()?)?)?.tanh()?; // (4, 5)
    let z = c(w2.as_tensor().t()?)?.matmul(&h.t()?)?; // (3, 5)ᵀ·… = (3, 4)
    let q = z.reshape((2, 2, 3))?; // (batch 2, 2, 3)
    let s = q.matmul(&c(k.as_tensor().transpose(1, 2)?)?)?.tanh()?; // (2, 2, 6)
    (s.tanh()? * randn(s.dims(), 1.0, 5).to_dtype(s.dtype())?)?.sum_all() // tanh_head in any dtype
}

fn vars(dtype: DType) -> [Var; 4] {
    let cast = |v: Var| Var::from_tensor(&v.as_tensor().to_dtype(dtype).expect("cast")).expect("var");
    [cast(var(&[4, 6], 0.7, 1)), cast(var(&[5, 6], 0.5, 2)), cast(var(&[5, 3], 0.5, 3)), cast(var(&[2, 6, 3], 0.6, 4))]
}

#[test]
fn transposed_factors_are_exact_to_third_order() {
    let [x, w1, w2, k] = vars(DType::F64);
    let all = [x.clone(), w1.clone(), w2.clone(), k.clone()];
    assert_fd("transposed factors", &all, &|| net(&x, &w1, &w2, &k, false), 1e-5, 1e-6);
}

#[test]
fn gradients_equal_those_of_contiguous_factors_and_arrive_contiguous() {
    for dtype in [DType::F32, DType::F64] {
        let vs = vars(dtype);
        let [x, w1, w2, k] = &vs;
        for keep_graph in [false, true] {
            let grads = |copies: bool| {
                let l = net(x, w1, w2, k, copies).expect("loss");
                let g = if keep_graph { backward_create_graph(&l) } else { backward_no_graph(&l) }.expect("backward");
                vs.iter().map(|v| g.get(v.as_tensor()).expect("gradient").clone()).collect::<Vec<_>>()
            };
            let (fast, reference) = (grads(false), grads(true));
            for (i, (a, b)) in fast.iter().zip(&reference).enumerate() {
                assert!(a.is_contiguous(), "{dtype:?} variable {i}: gradient stored strided");
                // The same products with the roles of the factors swapped: equal up to the
                // order of the sums inside the matrix kernel.
                let (a, b) = (flat64(a), flat64(b));
                let scale = b.iter().fold(1f64, |m, v| m.max(v.abs()));
                let tol = if dtype == DType::F32 { 1e-6 } else { 1e-14 } * scale;
                let err = a.iter().zip(&b).fold(0f64, |e, (p, q)| e.max((p - q).abs()));
                assert!(err <= tol, "{dtype:?}, graph kept {keep_graph}, variable {i}: differs by {err:.2e}");
            }
        }
    }
}

fn flat64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1()).expect("values")
}

/// A column-major left factor times a right factor broadcast over the batch
/// (stride 0): the CPU kernel's shortcut that stacks the left factor's
/// batches into the rows of one matrix holds for row-major left factors only
/// (an upstream bug the vendored copy fixes, PATCH.md). Patch 8's `(gᵀ·x)ᵀ`
/// builds exactly this product for `broadcast(x) · wᵀ`, so the weight's
/// gradient was wrong as well.
#[test]
fn a_column_major_left_factor_times_a_batch_broadcast_right_factor() {
    // Forward: aᵀ (column-major, batched) times b broadcast over the batch.
    let a = randn(&[2, 4, 3], 1.0, 11); // aᵀ: (2, 3, 4), column-major
    let b = randn(&[4, 5], 1.0, 12);
    let bb = b.broadcast_as((2, 4, 5)).expect("broadcast");
    let at = a.transpose(1, 2).expect("t");
    let got = at.matmul(&bb).expect("matmul");
    let want = at.contiguous().and_then(|t| t.matmul(&bb.contiguous()?)).expect("reference");
    let err = flat64(&got).iter().zip(flat64(&want)).fold(0f64, |e, (p, q)| e.max((p - q).abs()));
    assert!(err < 1e-12, "forward differs by {err:.2e}");
    // Gradient: broadcast(x) · wᵀ with w batched, to third order.
    let (x, w) = (var(&[3, 4], 0.7, 1), var(&[2, 5, 4], 0.5, 2));
    let loss = || {
        let xb = x.as_tensor().broadcast_as((2, 3, 4))?;
        tanh_head(&xb.matmul(&w.as_tensor().t()?)?, 7)
    };
    assert_fd("broadcast(x)·wᵀ", &[x.clone(), w.clone()], &loss, 1e-5, 1e-6);
}
