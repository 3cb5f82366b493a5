//! Tie conventions of the ops whose derivatives route through a comparison,
//! checked directly at the tie points (finite differences are meaningless
//! there), at first, second and third order; and the activation-pattern
//! record/replay that the first-order penalty relies on.

mod common;

use candle_core::{DType, Tensor, Var};
use common::DEV;
use seht_candle::ops::{self, PoolKind};
use seht_candle::{Error, pattern};

fn var(values: &[f64], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &DEV).expect("tensor")).expect("var")
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1::<f64>()).expect("values")
}

fn grad_of(loss: &Tensor, x: &Var) -> Tensor {
    seht_candle::backward_create_graph(loss).expect("backward").get(x.as_tensor()).expect("gradient").clone()
}

/// The smallest input: `[[1, 2], [2, 2]]`. PyTorch's `max_pool2d`
/// sends the gradient to the first maximal element in row-major order.
#[test]
fn max_pool_gives_a_tie_to_the_first_maximal_element() {
    let x = var(&[1.0, 2.0, 2.0, 2.0], &[1, 1, 2, 2]);
    let out = ops::max_pool2d(x.as_tensor(), 2).expect("pool");
    assert_eq!(values(&out), vec![2.0]);
    assert_eq!(values(&grad_of(&out.sum_all().expect("sum"), &x)), vec![0.0, 1.0, 0.0, 0.0]);
    // Two windows side by side, each with its own tie pattern.
    let x = var(&[3.0, 0.0, 5.0, 5.0, 3.0, 3.0, 5.0, 5.0], &[1, 1, 2, 4]);
    let out = ops::max_pool2d(x.as_tensor(), 2).expect("pool");
    assert_eq!(values(&out), vec![3.0, 5.0]);
    let g = grad_of(&out.sum_all().expect("sum"), &x);
    assert_eq!(values(&g), vec![1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

/// `L(a) = max_pool(a·[1, 2, 2, 2])²` = `(2a)²`: `L' = 8a`, `L'' = 8`,
/// `L''' = 0`. Sending the gradient to all three tied elements gave `L'`
/// three times too large, and `L''` nine times.
#[test]
fn max_pool_tie_convention_holds_to_third_order() {
    let a = Var::from_tensor(&Tensor::new(1.5f64, &DEV).expect("a")).expect("var");
    let base = Tensor::from_slice(&[1.0f64, 2.0, 2.0, 2.0], (1, 1, 2, 2), &DEV).expect("base");
    for (name, pool) in [
        ("max_pool2d", Box::new(|x: &Tensor| ops::max_pool2d(x, 2)) as Box<dyn Fn(&Tensor) -> _>),
        ("pool2d", Box::new(|x: &Tensor| ops::pool2d(x, 2, 2, 0, PoolKind::Max))),
    ] {
        let x = base.broadcast_mul(a.as_tensor()).expect("scale");
        let l = pool(&x).expect("pool").sqr().expect("sqr").sum_all().expect("sum");
        let d1 = grad_of(&l, &a);
        let d2 = grad_of(&d1, &a);
        let d3 = d2.backward().expect("third").get(a.as_tensor()).map(values);
        assert_eq!(values(&d1), vec![8.0 * 1.5], "{name}: L'");
        assert_eq!(values(&d2), vec![8.0], "{name}: L''");
        assert!(d3.as_ref().is_none_or(|v| *v == vec![0.0]), "{name}: L''' = {d3:?}");
    }
}

/// A 3×3 window with stride 2 and padding 1 over a constant 3×3 input: every
/// window's first real element wins, and padding never does. The four
/// windows' winners are (0,0), (0,1), (1,0), (1,1) — what PyTorch's
/// `max_pool2d(kernel_size=3, stride=2, padding=1)` gives.
#[test]
fn general_max_pool_ties_with_padding_and_overlap() {
    let x = var(&[7.0; 9], &[1, 1, 3, 3]);
    let out = ops::pool2d(x.as_tensor(), 3, 2, 1, PoolKind::Max).expect("pool");
    assert_eq!(values(&out), vec![7.0; 4]);
    let g = grad_of(&out.sum_all().expect("sum"), &x);
    assert_eq!(values(&g), vec![1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
    // Negative inputs: the padding (below every input) still never wins.
    let x = var(&[-7.0; 9], &[1, 1, 3, 3]);
    let out = ops::pool2d(x.as_tensor(), 3, 2, 1, PoolKind::Max).expect("pool");
    assert_eq!(values(&out), vec![-7.0; 4]);
    let g = grad_of(&out.sum_all().expect("sum"), &x);
    assert_eq!(values(&g).iter().sum::<f64>(), 4.0);
}

/// `relu'(0) = 0` (PyTorch), where candle's own `relu` gives 1; the second
/// derivative of `relu(x)²` is `2·[x > 0]`, 0 at the kink too.
#[test]
fn relu_has_zero_derivative_at_zero_at_every_order() {
    let x = var(&[-1.0, 0.0, 2.0], &[3]);
    let y = ops::relu(x.as_tensor()).expect("relu");
    assert_eq!(values(&y), vec![0.0, 0.0, 2.0]);
    assert_eq!(values(&grad_of(&y.sum_all().expect("sum"), &x)), vec![0.0, 0.0, 1.0]);
    let candle = grad_of(&x.as_tensor().relu().expect("relu").sum_all().expect("sum"), &x);
    assert_eq!(values(&candle), vec![0.0, 1.0, 1.0], "candle's convention changed: update the ops docs");
    // Second order: d/dx Σ (d/dx relu(x)²) = 2·[x > 0].
    let l = ops::relu(x.as_tensor()).expect("relu").sqr().expect("sqr").sum_all().expect("sum");
    let g = grad_of(&l, &x);
    let h = grad_of(&g.sum_all().expect("sum"), &x);
    assert_eq!(values(&h), vec![0.0, 0.0, 2.0]);
}

/// `clamp` passes the gradient on the closed interval (PyTorch), where
/// candle's `clamp` gives ½ at the bounds.
#[test]
fn clamp_passes_the_gradient_at_its_bounds() {
    let x = var(&[-1.0, 0.0, 0.5, 1.0, 2.0], &[5]);
    let y = ops::clamp(x.as_tensor(), 0.0, 1.0).expect("clamp");
    assert_eq!(values(&y), vec![0.0, 0.0, 0.5, 1.0, 1.0]);
    assert_eq!(values(&grad_of(&y.sum_all().expect("sum"), &x)), vec![0.0, 1.0, 1.0, 1.0, 0.0]);
    let l = ops::clamp(x.as_tensor(), 0.0, 1.0).expect("clamp").sqr().expect("sqr").sum_all().expect("sum");
    let h = grad_of(&grad_of(&l, &x).sum_all().expect("sum"), &x);
    assert_eq!(values(&h), vec![0.0, 2.0, 2.0, 2.0, 0.0]);
    assert!(matches!(ops::clamp(x.as_tensor(), 1.0, 0.0), Err(Error::InvalidOp { .. })));
}

/// candle's `maximum`/`minimum` split a tie evenly, as `torch.maximum` does:
/// the documented convention, locked here.
#[test]
fn candle_maximum_splits_a_tie_evenly() {
    let a = var(&[1.0, 2.0], &[2]);
    let b = var(&[1.0, 3.0], &[2]);
    let m = a.as_tensor().maximum(b.as_tensor()).expect("max").sum_all().expect("sum");
    let g = m.backward().expect("backward");
    assert_eq!(values(g.get(a.as_tensor()).expect("ga")), vec![0.5, 0.0]);
    assert_eq!(values(g.get(b.as_tensor()).expect("gb")), vec![0.5, 1.0]);
}

/// A replayed pattern fixes the masks: the replayed ReLU keeps the units the
/// recorded pass had active, whatever the new input's signs.
#[test]
fn a_replayed_pattern_fixes_relu_masks_and_pool_winners() {
    let x = Tensor::from_slice(&[-1.0f64, 2.0, 3.0, -4.0], (1, 1, 2, 2), &DEV).expect("x");
    let ((), pat) = pattern::record(|| {
        ops::relu(&x).expect("relu");
        ops::max_pool2d(&x, 2).expect("pool");
    });
    assert_eq!(pat.len(), 2);
    let flipped = x.neg().expect("neg");
    let (r, p) =
        pattern::replay(&pat, || (ops::relu(&flipped).expect("relu"), ops::max_pool2d(&flipped, 2).expect("pool")))
            .expect("replay");
    assert_eq!(values(&r), vec![0.0, -2.0, -3.0, 0.0]);
    assert_eq!(values(&p), vec![-3.0], "the recorded winner (3 at position 2) is used, not the new maximum");
    // Outside record/replay, nothing is kept and masks are computed.
    assert_eq!(values(&ops::relu(&flipped).expect("relu")), vec![1.0, 0.0, 0.0, 4.0]);
}

/// Whether a replay failed with a pattern mismatch, at the op or at the end.
fn mismatch<T: std::fmt::Debug>(r: seht_candle::Result<seht_candle::Result<T>>) -> bool {
    matches!(r, Err(Error::PatternMismatch { .. }) | Ok(Err(Error::PatternMismatch { .. })))
}

#[test]
fn a_pattern_that_does_not_fit_is_an_error() {
    let x = Tensor::from_slice(&[-1.0f64, 2.0, 3.0, -4.0], (1, 1, 2, 2), &DEV).expect("x");
    let ((), pat) = pattern::record(|| {
        ops::relu(&x).expect("relu");
    });
    let other = Tensor::zeros((1, 1, 4, 4), DType::F64, &DEV).expect("zeros");
    assert!(mismatch(pattern::replay(&pat, || ops::relu(&other))), "shape mismatch");
    assert!(mismatch(pattern::replay(&pat, || ops::max_pool2d(&x, 2))), "op mismatch");
    assert!(mismatch(pattern::replay(&pat, || Ok(()))), "unused masks");
    assert!(
        mismatch(pattern::replay(&pat, || {
            ops::relu(&x)?;
            ops::relu(&x)
        })),
        "pattern exhausted"
    );
    // The same pass replays cleanly.
    assert!(!mismatch(pattern::replay(&pat, || ops::relu(&x))));
}
