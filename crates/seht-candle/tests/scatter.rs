//! The vendored candle's backward rules for `scatter` and `scatter_add`
//! (patch 4 in `vendor/candle-core/PATCH.md`): upstream had the rules for
//! the `init` argument swapped, so a gradient through `scatter_add` (which
//! `gather`'s own backward builds, hence every higher-order pass through a
//! cross-entropy with a non-constant cotangent) failed with a shape error,
//! and a `scatter` passed gradient to the entries it overwrites. Checked here
//! in f64 against central finite differences at first order, and at second
//! and third order by `gradcheck::fd_check`, on smooth heads.

mod common;

use candle_core::{Tensor, Var};
use common::*;
use seht_candle::gradcheck::{flatten_f64, relative_error};

/// Rows 0..3 of a (3, 5) tensor, one index per row, chosen so that the
/// overwritten entries carry gradient in a wrong rule.
fn indexes() -> Tensor {
    Tensor::new(&[[4u32], [0], [2]], &DEV).expect("indexes")
}

/// `∇L·u` against `(L(w + εu) − L(w − εu)) / 2ε` along a fixed direction.
fn first_order_error(vars: &[Var], loss: &dyn Fn() -> candle_core::Result<Tensor>) -> f64 {
    let eps = 1e-6;
    let w: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().copy().expect("copy")).collect();
    let grads = seht_candle::backward_no_graph(&loss().expect("loss")).expect("gradient");
    let us: Vec<Tensor> = vars.iter().enumerate().map(|(i, v)| randn(v.dims(), 1.0, 50 + i as u64)).collect();
    let g: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).expect("a gradient").clone()).collect();
    let ad: f64 = flatten_f64(&g).expect("g").iter().zip(flatten_f64(&us).expect("u")).map(|(a, b)| a * b).sum();
    let at = |t: f64| {
        for ((v, w), u) in vars.iter().zip(&w).zip(&us) {
            v.set(&(w + (u * t).expect("scale")).expect("shift")).expect("set");
        }
        loss().expect("loss").to_scalar::<f64>().expect("scalar")
    };
    let fd = (at(eps) - at(-eps)) / (2.0 * eps);
    for (v, w) in vars.iter().zip(&w) {
        v.set(w).expect("restore");
    }
    relative_error(&[ad], &[fd])
}

fn check(name: &str, vars: &[Var], loss: &dyn Fn() -> candle_core::Result<Tensor>) {
    let err = first_order_error(vars, loss);
    assert!(err <= 1e-8, "{name}: first order relative error {err:.2e}");
    assert_fd(name, vars, loss, 1e-6, 1e-7);
}

#[test]
fn scatter_add_and_scatter_match_finite_differences() {
    let init = var(&[3, 5], 1.0, 1);
    let src = var(&[3, 1], 1.0, 2);
    let loss = || {
        let y = init.as_tensor().tanh()?.scatter_add(&indexes(), &src.as_tensor().tanh()?, 1)?;
        tanh_head(&y, 3)
    };
    check("scatter_add", &[init.clone(), src.clone()], &loss);
    let loss = || {
        let y = init.as_tensor().tanh()?.scatter(&indexes(), &src.as_tensor().tanh()?, 1)?;
        tanh_head(&y, 3)
    };
    check("scatter", &[init.clone(), src.clone()], &loss);
}

#[test]
fn gather_under_a_non_constant_cotangent_to_third_order() {
    // gather's backward is a scatter_add into zeros; with the cotangent
    // depending on the variables (here through tanh of the gathered values),
    // the second and third passes differentiate that scatter_add.
    let x = var(&[3, 5], 1.0, 4);
    let loss = || tanh_head(&x.as_tensor().sqr()?.gather(&indexes(), 1)?, 5);
    check("gather", std::slice::from_ref(&x), &loss);
}
