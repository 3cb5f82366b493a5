//! The paper code's "Hessian trace" (`seht_candle::paper_code`) against an
//! independent reference: `vᵀHv` over `[logits] + weights` with `v = −1`, as
//! PyTorch computes it, is the second derivative of
//! `φ(t) = L(z(W + t·v_W) + t·v_z)` at 0 (the logits' direction enters
//! after the network, the weights' through it), here by central
//! differences in f64.

mod common;

use candle_core::{DType, Tensor, Var};
use common::*;
use seht_candle::paper_code::paper_code_value;
use seht_candle::{Param, Role};

/// Linear layer then tanh then linear: `z = V·tanh(W·x)`, cross-entropy.
struct Net {
    w: Var,
    v: Var,
    x: Tensor,
    y: Tensor,
}

fn net() -> Net {
    Net {
        w: var(&[5, 3], 0.7, 1),
        v: var(&[4, 5], 0.6, 2),
        x: randn(&[6, 3], 1.0, 3),
        y: Tensor::new(&[0u32, 1, 2, 3, 1, 2], &DEV).expect("y"),
    }
}

impl Net {
    fn logits_at(&self, w: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        self.x.matmul(&w.t()?)?.tanh()?.matmul(&v.t()?)
    }

    fn params(&self) -> Vec<Param> {
        vec![
            Param { name: "w.weight".into(), var: self.w.clone(), role: Role::Weight },
            Param { name: "v.weight".into(), var: self.v.clone(), role: Role::Weight },
        ]
    }

    /// φ(t): every weight and every logit moved by `t·(−1)`, through `loss`.
    fn phi(&self, t: f64, with_logits: bool, loss: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) -> f64 {
        let w = self.w.as_tensor().affine(1.0, -t).expect("w");
        let v = self.v.as_tensor().affine(1.0, -t).expect("v");
        let z = self.logits_at(&w, &v).expect("z");
        let z = if with_logits { z.affine(1.0, -t).expect("z") } else { z };
        loss(&z).and_then(|l| l.to_dtype(DType::F64)).and_then(|l| l.to_scalar::<f64>()).expect("scalar")
    }

    fn second_difference(&self, with_logits: bool, loss: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>) -> f64 {
        let h = 1e-4;
        let phi = |t| self.phi(t, with_logits, loss);
        (phi(h) - 2.0 * phi(0.0) + phi(-h)) / (h * h)
    }
}

/// The paper's value over logits and weights, against the reference, for a
/// loss of the logits in which an all-equal shift of the logits matters
/// (cross-entropy plus a quadratic term), so the logits' part is tested.
#[test]
fn the_paper_codes_value_is_the_all_minus_one_quadratic_form_over_logits_and_weights() {
    let n = net();
    let logits = n.logits_at(n.w.as_tensor(), n.v.as_tensor()).expect("logits");
    let loss_of = |z: &Tensor| candle_nn::loss::cross_entropy(z, &n.y)? + (z.sqr()?.mean_all()? * 0.05)?;
    let got = paper_code_value(&logits, &loss_of, &n.params(), 5).expect("value");
    let reference = n.second_difference(true, &loss_of);
    let without_logits = n.second_difference(false, &loss_of);
    let e = (got.value - reference).abs() / reference.abs();
    eprintln!(
        "paper code 1ᵀH1 {:.9}, finite differences {reference:.9} (rel. {e:.1e}); without the logits {without_logits:.9}",
        got.value
    );
    assert!(e < 1e-6, "paper-code value {} against finite differences {reference}", got.value);
    // The logits matter for this loss: a version that left them out would be off.
    assert!((without_logits - reference).abs() > 1e-2 * reference.abs(), "the test cannot tell the logits' part");
    assert_eq!(got.hvps, 5);
}

/// With the cross-entropy the code uses, the logits' part of its value is
/// zero: the probe moves every logit by the same −1, and the softmax is
/// invariant to a common shift (`H_zz·1 = 0`, and the mixed terms vanish
/// with it). Including the logits changes nothing; the value is `1ᵀH1` over
/// the weights alone.
#[test]
fn with_cross_entropy_the_logits_part_is_zero() {
    let n = net();
    let logits = n.logits_at(n.w.as_tensor(), n.v.as_tensor()).expect("logits");
    let loss_of = |z: &Tensor| candle_nn::loss::cross_entropy(z, &n.y);
    let got = paper_code_value(&logits, &loss_of, &n.params(), 1).expect("value");
    let (with, without) = (n.second_difference(true, &loss_of), n.second_difference(false, &loss_of));
    eprintln!("cross-entropy: paper code {:.9}, with logits {with:.9}, weights only {without:.9}", got.value);
    assert!((got.value - without).abs() < 1e-6 * without.abs(), "{} vs the weights-only form {without}", got.value);
    assert!((with - without).abs() < 1e-6 * without.abs());
}

#[test]
fn zero_probes_are_refused() {
    let n = net();
    let logits = n.logits_at(n.w.as_tensor(), n.v.as_tensor()).expect("logits");
    let loss_of = |z: &Tensor| candle_nn::loss::cross_entropy(z, &n.y);
    assert!(paper_code_value(&logits, &loss_of, &n.params(), 0).is_err());
}
