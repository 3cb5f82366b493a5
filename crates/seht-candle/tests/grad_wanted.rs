//! The vendored candle's `grad_wanted` (patch 9): inside a backward pass a
//! rule computes only the gradients the pass keeps. A restricted pass
//! (`backward_to_with`, SEHT-D's second pass) asks for no product towards a
//! weight it was not given, and the convolution op computes no kernel
//! gradient for such a weight — with every gradient it returns equal, bit
//! for bit, to the full pass's.

mod common;

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use common::*;
use seht_candle::{backward_no_graph, backward_to_with, ops};

/// `a ⊙ b`, recording what `grad_wanted` said of each argument in `bwd`.
#[derive(Clone)]
struct Probe(Arc<Mutex<Vec<(bool, bool)>>>);

impl CustomOp2 for Probe {
    fn name(&self) -> &'static str {
        "grad-wanted-probe"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (CpuStorage::F64(a), CpuStorage::F64(b)) = (s1, s2) else { candle_core::bail!("f64 only") };
        assert!(l1.is_contiguous() && l2.is_contiguous());
        Ok((CpuStorage::F64(a.iter().zip(b).map(|(x, y)| x * y).collect()), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let wanted = candle_core::backprop::grad_wanted;
        self.0.lock().expect("lock").push((wanted(a), wanted(b)));
        Ok((Some(g.mul(b)?), Some(g.mul(a)?)))
    }
}

#[test]
fn a_restricted_pass_wants_only_its_targets() {
    let (w1, w2, x) = (var(&[3, 4], 0.5, 1), var(&[3, 4], 0.5, 2), randn(&[3, 4], 1.0, 3));
    let probe = Probe(Arc::new(Mutex::new(Vec::new())));
    let loss = || -> candle_core::Result<Tensor> {
        let y = w1.as_tensor().tanh()?.apply_op2(w2.as_tensor(), probe.clone())?;
        (y * &x)?.sum_all()
    };
    let full = backward_no_graph(&loss().expect("loss")).expect("full");
    assert_eq!(probe.0.lock().expect("lock").pop(), Some((true, true)), "a full pass wants both");
    let only_w1 = backward_to_with(&loss().expect("loss"), &[w1.as_tensor()], false).expect("restricted");
    assert_eq!(probe.0.lock().expect("lock").pop(), Some((true, false)), "a pass to w1 does not want w2");
    assert!(only_w1.get(w2.as_tensor()).is_none());
    let (a, b) = (full.get(w1.as_tensor()).expect("∂w1"), only_w1.get(w1.as_tensor()).expect("∂w1"));
    assert_eq!(flat(a), flat(b), "the same ∂w1 bit for bit");
    // Outside a pass: whether the tensor is on a graph.
    assert!(candle_core::backprop::grad_wanted(w1.as_tensor()));
    assert!(!candle_core::backprop::grad_wanted(&x));
}

/// The convolution asks `grad_wanted` before computing each gradient; what it
/// skips cannot be seen from outside, so this checks that skipping changes
/// nothing a restricted pass returns.
#[test]
fn a_restricted_pass_through_convolutions_returns_the_full_pass_gradient() {
    // conv(w1) → tanh → conv(w2) → sum: a pass to w1 needs conv 2's input gradient only.
    let (w1, w2) = (var(&[4, 2, 3, 3], 0.4, 4), var(&[3, 4, 3, 3], 0.3, 5));
    let x = randn(&[2, 2, 6, 6], 1.0, 6);
    let loss = || -> candle_core::Result<Tensor> {
        let conv = |x: &Tensor, w: &Tensor| ops::conv2d(x, w, 1, 1).map_err(candle_core::Error::wrap);
        let h = conv(&x, w1.as_tensor())?.tanh()?;
        tanh_head(&conv(&h, w2.as_tensor())?, 7)
    };
    let full = backward_no_graph(&loss().expect("loss")).expect("full");
    let only_w1 = backward_to_with(&loss().expect("loss"), &[w1.as_tensor()], false).expect("restricted");
    assert!(only_w1.get(w2.as_tensor()).is_none(), "no kernel gradient for w2");
    assert_eq!(flat(full.get(w1.as_tensor()).expect("∂w1")), flat(only_w1.get(w1.as_tensor()).expect("∂w1")));
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_vec1()).expect("values")
}
