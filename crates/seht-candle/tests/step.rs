//! The one penalty call: its three gradient paths agree, and its gradients
//! step a candle optimiser.

mod common;

use candle_core::{DType, ModuleT, Tensor, Var};
use candle_nn::{BatchNormConfig, Optimizer, VarMap};
use common::*;
use seht_candle::{Error, Gradient, ParamSet, Penalty, Role, penalised_loss};
use seht_estimator::{Estimator, HutchPlusPlus, Reading, SehtD, SehtH, probe_rng};

/// A network in f64: convolution, BatchNorm in training mode, then tanh
/// (smooth) or ReLU and 2×2 max pooling (piecewise linear), a second
/// convolution, mean pooling, linear, cross-entropy.
struct Net {
    relu_pool: bool,
    params: ParamSet,
    bn: candle_nn::BatchNorm,
    c1: Var,
    c2: Var,
    fc: Var,
    x: Tensor,
    y: Tensor,
}

fn net() -> Net {
    net_with(false)
}

fn net_with(relu_pool: bool) -> Net {
    let varmap = VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F64, &DEV);
    let bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb.pp("bn")).expect("bn");
    let mut params = ParamSet::from_varmap(&varmap);
    let (c1, c2, fc) = (var(&[4, 2, 3, 3], 0.4, 1), var(&[4, 4, 3, 3], 0.3, 4), var(&[3, 4], 0.5, 2));
    params.push("c1.weight", c1.clone(), Role::Weight);
    params.push("c2.weight", c2.clone(), Role::Weight);
    params.push("fc.weight", fc.clone(), Role::Weight);
    Net {
        relu_pool,
        params,
        bn,
        c1,
        c2,
        fc,
        x: randn(&[6, 2, 6, 6], 1.0, 3),
        y: Tensor::new(&[0u32, 1, 2, 0, 1, 2], &DEV).expect("y"),
    }
}

impl Net {
    fn loss(&self) -> candle_core::Result<Tensor> {
        use seht_candle::ops;
        let wrap = candle_core::Error::wrap;
        let h = self.bn.forward_t(&self.x.conv2d(&self.c1, 1, 1, 1, 1)?, true)?;
        let h = if self.relu_pool {
            let h = ops::max_pool2d(&ops::relu(&h).map_err(wrap)?, 2).map_err(wrap)?;
            ops::relu(&h.conv2d(&self.c2, 1, 1, 1, 1)?).map_err(wrap)?
        } else {
            h.tanh()?.conv2d(&self.c2, 1, 1, 1, 1)?.tanh()?
        };
        let h = seht_candle::ops::global_avg_pool(&h).map_err(candle_core::Error::wrap)?;
        candle_nn::loss::cross_entropy(&h.matmul(&self.fc.t()?)?, &self.y)
    }

    /// The gradients of every trainable variable, flattened, and the estimate's mean.
    fn run(&self, penalty: &Penalty, seed: u64) -> (Vec<f64>, f64, Vec<f64>) {
        let r = penalty.gradients(&self.params, || self.loss(), &mut probe_rng(seed)).expect("penalised gradients");
        let flat = self
            .params
            .trainable_vars()
            .iter()
            .flat_map(|v| {
                let g = r.grads.get(v.as_tensor()).expect("a gradient for every trainable variable");
                g.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("host")
            })
            .collect();
        (flat, r.estimate.mean, r.estimate.samples)
    }
}

fn rel_diff(a: &[f64], b: &[f64]) -> f64 {
    let d = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    d / b.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// On the smooth network and on the ReLU/max-pool one (where the
/// first-order path replays the activation pattern).
#[test]
fn the_three_gradient_paths_agree() {
    for relu_pool in [false, true] {
        three_paths_agree(&net_with(relu_pool));
    }
}

fn three_paths_agree(n: &Net) {
    let estimators: [(&str, Estimator); 3] = [
        ("SEHT-H K=3", SehtH::seht_h(3).expect("cfg").into()),
        ("SEHT-D K=2 unbiased", SehtD::with_layer_probability(2, 0.7, 0.3, Reading::Unbiased).expect("cfg").into()),
        (
            "SEHT-D K=2 partial sum",
            SehtD::with_layer_probability(2, 0.7, 0.3, Reading::PartialSum).expect("cfg").into(),
        ),
    ];
    for (name, est) in estimators {
        for seed in [1u64, 2, 5] {
            let at = |g: Gradient| n.run(&Penalty::new(est.clone(), 0.7, g).expect("penalty"), seed);
            let (exact, t_exact, s_exact) = at(Gradient::Exact);
            let (per_probe, t_pp, s_pp) = at(Gradient::ExactPerProbe);
            let (first, t_fo, s_fo) = at(Gradient::FirstOrder { relative_step: None });
            let (e_pp, e_fo) = (rel_diff(&per_probe, &exact), rel_diff(&first, &exact));
            let trace_fo = (t_fo - t_exact).abs() / t_exact.abs().max(1.0);
            eprintln!(
                "relu/pool {} {name} seed {seed}: trace {t_exact:.6}, per-probe rel. diff {e_pp:.1e}, first-order {e_fo:.1e} (trace {trace_fo:.1e})",
                n.relu_pool
            );
            assert!(e_pp < 1e-10, "{name} seed {seed}: exact paths differ by {e_pp:e}");
            assert!((t_pp - t_exact).abs() <= 1e-10 * t_exact.abs().max(1.0), "{name}: {t_pp} vs {t_exact}");
            assert_eq!(s_pp.len(), s_exact.len());
            // The documented first-order tolerance in f64.
            assert!(e_fo < 1e-6, "{name} seed {seed}: first-order gradient off by {e_fo:e}");
            assert!(trace_fo < 1e-6, "{name} seed {seed}: first-order trace off by {trace_fo:e}");
            // Same draw: the same probes are zero or not on every path.
            let zeros = |s: &[f64]| s.iter().map(|x| *x == 0.0).collect::<Vec<_>>();
            assert_eq!(zeros(&s_fo), zeros(&s_exact), "{name} seed {seed}: different draws");
        }
    }
}

#[test]
fn the_penalty_term_is_lambda_times_the_quadratic_forms_gradient() {
    // λ = 0 gives the plain gradient; the difference to λ > 0 is λ·∇(σᵀHσ),
    // taken here independently through `penalised_loss` at λ = 1.
    let n = net();
    let est = SehtH::seht_h(1).expect("cfg");
    let (plain, _, _) = n.run(&Penalty::new(est.clone(), 0.0, Gradient::ExactPerProbe).expect("p"), 9);
    let (with, _, _) = n.run(&Penalty::new(est.clone(), 0.25, Gradient::ExactPerProbe).expect("p"), 9);
    let loss = n.loss().expect("loss");
    let weights = n.params.select(&seht_candle::Selection::Weights).expect("weights");
    let (total, _) = penalised_loss(&loss, &weights, &est, 1.0, &mut probe_rng(9)).expect("penalised");
    let g_total = total.backward().expect("backward");
    let g_loss = n.loss().expect("loss").backward().expect("backward");
    let vars = n.params.trainable_vars();
    let quad: Vec<f64> = vars
        .iter()
        .flat_map(|v| {
            let a = g_total.get(v.as_tensor()).expect("g").flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("h");
            let b = g_loss.get(v.as_tensor()).expect("g").flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("h");
            a.into_iter().zip(b).map(|(x, y)| x - y).collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<f64> = plain.iter().zip(&quad).map(|(p, q)| p + 0.25 * q).collect();
    let e = rel_diff(&with, &expected);
    assert!(e < 1e-10, "λ·∇(σᵀHσ) off by {e:e}");
}

#[test]
fn its_gradients_step_a_candle_optimiser() {
    let n = net();
    let before = n.fc.as_tensor().to_vec2::<f64>().expect("host");
    let penalty = Penalty::new(SehtH::seht_h(1).expect("cfg"), 0.1, Gradient::ExactPerProbe).expect("penalty");
    let r = penalty.gradients(&n.params, || n.loss(), &mut probe_rng(0)).expect("grads");
    let g = r.grads.get(n.fc.as_tensor()).expect("fc gradient").to_vec2::<f64>().expect("host");
    let mut opt = candle_nn::SGD::new(n.params.trainable_vars(), 0.5).expect("sgd");
    opt.step(&r.grads).expect("step");
    let after = n.fc.as_tensor().to_vec2::<f64>().expect("host");
    for ((b, a), g) in before.iter().flatten().zip(after.iter().flatten()).zip(g.iter().flatten()) {
        assert!((a - (b - 0.5 * g)).abs() < 1e-14, "SGD did not apply the penalised gradient");
    }
    assert!(r.loss.is_finite() && r.estimate.hvps == 1);
}

#[test]
fn bad_settings_are_refused() {
    let h = || SehtH::seht_h(1).expect("cfg");
    assert!(matches!(Penalty::new(h(), -1.0, Gradient::Exact), Err(Error::InvalidPenalty { field: "lambda", .. })));
    assert!(matches!(Penalty::new(h(), f64::NAN, Gradient::Exact), Err(Error::InvalidPenalty { .. })));
    assert!(matches!(
        Penalty::new(h(), 1.0, Gradient::FirstOrder { relative_step: Some(0.0) }),
        Err(Error::InvalidPenalty { field: "relative_step", .. })
    ));
    let hpp = HutchPlusPlus::with_budget(3).expect("cfg");
    assert!(matches!(
        Penalty::new(hpp, 1.0, Gradient::FirstOrder { relative_step: None }),
        Err(Error::Estimator(seht_estimator::Error::NoProbePlan { .. }))
    ));
}

/// `penalty_gradients` is `gradients` without `∇L`: on every path, with the
/// same probes, `penalty_gradients + ∇L = gradients` to rounding — and the
/// penalty part is not zero (a path that returned `gradients` itself, or
/// nothing, fails).
#[test]
fn the_penalty_alone_is_the_penalised_gradient_less_the_loss_gradient() {
    for relu_pool in [false, true] {
        let n = net_with(relu_pool);
        let g_loss = n.loss().expect("loss").backward().expect("backward");
        let vars = n.params.trainable_vars();
        let flat = |store: &candle_core::backprop::GradStore| -> Vec<f64> {
            vars.iter()
                .flat_map(|v| match store.get(v.as_tensor()) {
                    Some(g) => g.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("host"),
                    None => vec![0.0; v.elem_count()],
                })
                .collect()
        };
        let loss_grad = flat(&g_loss);
        let est: Estimator = SehtD::with_layer_probability(2, 0.7, 0.3, Reading::Unbiased).expect("cfg").into();
        for g in [Gradient::Exact, Gradient::ExactPerProbe, Gradient::FirstOrder { relative_step: None }] {
            for seed in [1u64, 4] {
                let p = Penalty::new(est.clone(), 0.7, g).expect("penalty");
                let full = p.gradients(&n.params, || n.loss(), &mut probe_rng(seed)).expect("full");
                let only = p.penalty_gradients(&n.params, || n.loss(), &mut probe_rng(seed)).expect("penalty only");
                assert_eq!(full.estimate.samples, only.estimate.samples, "{g:?}: another draw");
                let (full, only) = (flat(&full.grads), flat(&only.grads));
                let sum: Vec<f64> = only.iter().zip(&loss_grad).map(|(a, b)| a + b).collect();
                let e = rel_diff(&sum, &full);
                let size = only.iter().map(|x| x * x).sum::<f64>().sqrt();
                eprintln!("relu/pool {relu_pool} {g:?} seed {seed}: |penalty grad| {size:.3e}, rel. diff {e:.1e}");
                // The exact paths differ by reassociation only; the first-order
                // one sums terms of order λ·g/ε² that cancel, with rounding
                // far below its own O(ε²) error (about 1e-7 in f64).
                let tol = if g.needs_higher_order() { 1e-12 } else { 1e-7 };
                assert!(e < tol, "{g:?} seed {seed}: penalty + ∇L differs from the penalised gradient by {e:e}");
                let any_drawn = p.gradients(&n.params, || n.loss(), &mut probe_rng(seed)).expect("again");
                if any_drawn.estimate.samples.iter().any(|s| *s != 0.0) {
                    assert!(size > 1e-6, "{g:?} seed {seed}: the penalty's gradient is zero");
                }
            }
        }
    }
}
