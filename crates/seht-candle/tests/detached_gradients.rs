//! A plain backward pass stores its gradients detached (the vendored candle's
//! patch 6): a weight used at several places — every step of a recurrence —
//! gets contributions `xᵀ·g` computed from tensors on the forward graph, and
//! before the patch their sum, stored as the weight's gradient, held that
//! graph and every earlier contribution until the pass ended (an LSTM step
//! needed twice its memory). The values are those of the pass that keeps the
//! graph, and that pass still returns gradients on the graph.

mod common;

use candle_core::{DType, Tensor};
use common::*;
use seht_candle::{backward_create_graph, backward_no_graph};

#[test]
fn shared_weight_gradients_are_detached_without_a_graph_and_kept_with_one() {
    for dtype in [DType::F32, DType::F64] {
        let w = var(&[4, 3], 0.5, 1);
        let u = var(&[5, 4], 0.5, 2);
        let w = candle_core::Var::from_tensor(&w.as_tensor().to_dtype(dtype).expect("cast")).expect("var");
        let u = candle_core::Var::from_tensor(&u.as_tensor().to_dtype(dtype).expect("cast")).expect("var");
        // A three-step recurrence: the same w (directly, and through its contiguous
        // transpose, a node of its own) at every step, with inputs that depend on u, so
        // every contribution to w's gradient is computed from tensors on the graph.
        let loss = || -> candle_core::Result<Tensor> {
            let wt = w.as_tensor().t()?.contiguous()?; // (3, 4)
            let mut h = u.as_tensor().tanh()?; // (5, 4)
            for _ in 0..3 {
                h = h.matmul(w.as_tensor())?.tanh()?.matmul(&wt)?; // (5, 3) → (5, 4)
            }
            h.sqr()?.sum_all()
        };
        let plain = backward_no_graph(&loss().expect("loss")).expect("plain");
        let kept = backward_create_graph(&loss().expect("loss")).expect("kept");
        for (name, a, b) in [
            ("w", plain.get(w.as_tensor()), kept.get(w.as_tensor())),
            ("u", plain.get(u.as_tensor()), kept.get(u.as_tensor())),
        ] {
            let (a, b) = (a.expect("plain gradient"), b.expect("kept gradient"));
            assert!(!a.track_op(), "{dtype:?} ∂L/∂{name}: a plain pass stored a gradient on the graph");
            assert!(b.track_op(), "{dtype:?} ∂L/∂{name}: the kept pass lost the graph");
            assert_eq!(flat64(a), flat64(b), "{dtype:?} ∂L/∂{name}: values differ between the passes");
        }
    }
}

fn flat64(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1()).expect("values")
}
