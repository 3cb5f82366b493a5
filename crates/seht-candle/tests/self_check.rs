//! Which backward passes keep their graph is decided per pass, not per
//! process: `backward_create_graph` gives second derivatives and
//! `backward_no_graph` detached gradients whatever the thread's setting, both
//! restore that setting, and the exact penalty is right on a thread whose
//! first backward pass kept no graph (what candle's environment variable,
//! read once per thread, used to make silently wrong).

use candle_core::backprop::{do_not_detach, set_do_not_detach};
use candle_core::{Device, Tensor, Var};
use seht_candle::{Gradient, ParamSet, Penalty, Role, backward_create_graph, backward_no_graph};
use seht_estimator::{SehtH, probe_rng};

/// `f(x) = (x²)²` at `x = 2`: `f' = 32`, `f'' = 48` (a chain, so that the
/// second derivative needs the first's graph).
fn chain(x: &Var) -> Tensor {
    x.as_tensor().sqr().expect("sqr").sqr().expect("sqr")
}

/// `d/dx` of the gradient of `(x²)²`, or `None` when the gradient carries no graph.
fn second_derivative(grads: &candle_core::backprop::GradStore, x: &Var) -> Option<f64> {
    let g = grads.get(x.as_tensor()).expect("first derivative");
    assert_eq!(g.to_scalar::<f64>().expect("host"), 32.0);
    backward_no_graph(g).expect("backward").get(x.as_tensor()).map(|t| t.to_scalar::<f64>().expect("host"))
}

#[test]
fn the_self_check_passes_without_any_setting() {
    seht_candle::check_higher_order().expect("the per-pass switch needs nothing set");
}

#[test]
fn each_pass_keeps_its_graph_or_not_whatever_the_thread_setting() {
    std::thread::spawn(|| {
        let x = Var::new(2.0f64, &Device::Cpu).expect("var");
        for thread_setting in [false, true] {
            set_do_not_detach(thread_setting);
            assert_eq!(second_derivative(&backward_create_graph(&chain(&x)).expect("bwd"), &x), Some(48.0));
            assert_eq!(do_not_detach(), thread_setting, "restored after a pass with the graph");
            // Without the graph, d/dx of the detached gradient is absent or, at most,
            // the single last operation's local term (candle keeps that one): never 48.
            let lean = second_derivative(&backward_no_graph(&chain(&x)).expect("bwd"), &x);
            assert_ne!(lean, Some(48.0), "thread setting {thread_setting}: no graph wanted, {lean:?}");
            assert_eq!(do_not_detach(), thread_setting, "restored after a pass without the graph");
        }
    })
    .join()
    .expect("thread");
}

#[test]
fn the_exact_penalty_is_right_after_a_lean_backward_on_the_same_thread() {
    std::thread::spawn(|| {
        let w = Var::new(&[1.0f64, 2.0], &Device::Cpu).expect("var");
        // A plain pass first: under candle's environment variable this fixed the
        // thread to "detach" and every later Hessian-vector product was wrong.
        set_do_not_detach(false);
        let _ = w.as_tensor().sqr().expect("sq").sum_all().expect("sum").backward().expect("plain backward");
        let mut params = ParamSet::new();
        params.push("w", w.clone(), Role::Weight);
        for gradient in [Gradient::Exact, Gradient::ExactPerProbe] {
            let penalty = Penalty::new(SehtH::seht_h(1).expect("cfg"), 1.0, gradient).expect("penalty");
            // L = Σ w³: ∇L = 3w², H = diag(6w), σᵀHσ = Σ 6wᵢ for Rademacher σ, ∇(σᵀHσ) = 6.
            let r = penalty
                .gradients(&params, || w.as_tensor().powf(3.0)?.sum_all(), &mut probe_rng(0))
                .expect("penalised gradients");
            let g = r.grads.get(w.as_tensor()).expect("grad").to_vec1::<f64>().expect("host");
            assert_eq!(g, vec![3.0 + 6.0, 12.0 + 6.0], "{gradient:?}: exact gradient of L + σᵀHσ");
            assert_eq!(r.estimate.mean, 18.0);
            assert!(!do_not_detach(), "the thread's lean setting is left as it was");
        }
    })
    .join()
    .expect("thread");
}
