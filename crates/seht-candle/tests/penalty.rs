//! The operator and the penalty against an explicit Hessian, and the
//! penalty's gradient against its parts.

mod common;

use candle_core::{DType, Tensor, Var};
use candle_nn::{BatchNormConfig, VarMap};
use common::*;
use seht_candle::{Error, HessianOperator, ParamSet, Role, Selection, penalised_loss, trace_estimate, trace_penalty};
use seht_estimator::{BlockVec, HutchPlusPlus, HvpOperator, Reading, SehtD, SehtH, Target, TraceEstimator, probe_rng};

/// A 2-layer tanh MLP with cross-entropy: 3 → 4 → 3, weights only (24 entries).
struct Mlp {
    w1: Var,
    b1: Var,
    w2: Var,
    x: Tensor,
    y: Tensor,
}

impl Mlp {
    fn new() -> Self {
        Self {
            w1: var(&[4, 3], 0.8, 1),
            b1: var(&[4], 0.5, 2),
            w2: var(&[3, 4], 0.8, 3),
            x: randn(&[6, 3], 1.0, 4),
            y: Tensor::new(&[0u32, 1, 2, 2, 1, 0], &DEV).expect("labels"),
        }
    }

    fn loss(&self) -> Tensor {
        let h = self
            .x
            .matmul(&self.w1.t().expect("t"))
            .expect("mm")
            .broadcast_add(&self.b1)
            .expect("b")
            .tanh()
            .expect("tanh");
        candle_nn::loss::cross_entropy(&h.matmul(&self.w2.t().expect("t")).expect("mm"), &self.y).expect("ce")
    }

    fn weights(&self) -> Vec<seht_candle::Param> {
        let mut set = ParamSet::new();
        set.push("fc1.weight", self.w1.clone(), Role::Weight);
        set.push("fc1.bias", self.b1.clone(), Role::Bias);
        set.push("fc2.weight", self.w2.clone(), Role::Weight);
        set.select(&Selection::Weights).expect("weights")
    }
}

/// The full Hessian, column by column: `H eᵢ`.
fn explicit_hessian(op: &HessianOperator) -> Vec<Vec<f64>> {
    let blocks = op.blocks().to_vec();
    let n: usize = blocks.iter().map(|b| b.len).sum();
    let mut cols = Vec::with_capacity(n);
    for i in 0..n {
        let mut e = vec![0.0; n];
        e[i] = 1.0;
        let mut v = BlockVec::zeros(blocks.len());
        let mut at = 0;
        for (b, blk) in blocks.iter().enumerate() {
            v.set(b, op.part_from_host(b, &e[at..at + blk.len]).expect("part"));
            at += blk.len;
        }
        let hv = op.hvp(&v).expect("hvp");
        cols.push(
            (0..blocks.len()).flat_map(|b| op.part_to_host(b, hv.get(b).expect("block")).expect("host")).collect(),
        );
    }
    cols
}

#[test]
fn estimators_match_the_trace_of_the_explicit_hessian() {
    let mlp = Mlp::new();
    let op = HessianOperator::new(&mlp.loss(), &mlp.weights()).expect("operator");
    assert_eq!(op.blocks().iter().map(|b| b.len).sum::<usize>(), 24, "biases are not in the Hessian");
    let h = explicit_hessian(&op);
    let n = h.len();
    let scale = h.iter().flatten().fold(0.0f64, |m, x| m.max(x.abs()));
    for i in 0..n {
        for j in 0..i {
            assert!(
                (h[i][j] - h[j][i]).abs() < 1e-12 * scale,
                "H not symmetric at ({i},{j}): {} vs {}",
                h[i][j],
                h[j][i]
            );
        }
    }
    let trace: f64 = (0..n).map(|i| h[i][i]).sum();
    assert!(trace.abs() > 1e-3, "a trivial Hessian would make this test vacuous");
    // Partial sums of the diagonal per block, for SEHT-D's partial-sum reading.
    let (n1, n2) = (op.blocks()[0].len, op.blocks()[1].len);
    assert_eq!(n1 + n2, n);

    let check = |label: &str, est: &dyn Fn(u64) -> f64, expected: f64, runs: u64| {
        let xs: Vec<f64> = (0..runs).map(est).collect();
        let m = xs.iter().sum::<f64>() / runs as f64;
        let se = (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (runs as f64 - 1.0) / runs as f64).sqrt();
        eprintln!("{label}: mean {m:.6} ± {se:.2e} vs exact {expected:.6}");
        assert!(
            (m - expected).abs() < 5.0 * se,
            "{label}: mean {m} vs exact {expected}, {:.1} standard errors",
            (m - expected) / se
        );
    };
    let seht_h = SehtH::seht_h(1).expect("config");
    check("SEHT-H", &|s| seht_h.estimate(&op, &mut probe_rng(s)).expect("estimate").mean, trace, 3000);
    let seht_d = SehtD::new(1, 0.25, Reading::Unbiased).expect("config");
    check("SEHT-D unbiased", &|s| seht_d.estimate(&op, &mut probe_rng(s)).expect("estimate").mean, trace, 6000);
    let partial = SehtD::new(1, 0.25, Reading::PartialSum).expect("config");
    check(
        "SEHT-D partial sum | both blocks",
        &|s| partial.estimate_on_blocks(&op, vec![0, 1], &mut probe_rng(s)).expect("estimate").mean,
        0.5 * trace,
        6000,
    );
    let hpp = HutchPlusPlus::with_budget(9).expect("config");
    check("Hutch++", &|s| hpp.estimate(&op, &mut probe_rng(s)).expect("estimate").mean, trace, 300);
}

#[test]
fn penalised_gradient_is_loss_gradient_plus_lambda_times_quadratic_form_gradient() {
    let mlp = Mlp::new();
    let params = mlp.weights();
    let vars = [mlp.w1.clone(), mlp.b1.clone(), mlp.w2.clone()];
    let lambda = 0.3;
    let est = SehtH::seht_h(2).expect("config");

    let loss = mlp.loss();
    let (total, e) = penalised_loss(&loss, &params, &est, lambda, &mut probe_rng(9)).expect("penalty");
    assert_eq!(e.target, Target::FullTrace);
    let g_total = total.backward().expect("backward");

    let g_loss = mlp.loss().backward().expect("backward");
    let e2 = trace_penalty(&mlp.loss(), &params, &est, &mut probe_rng(9)).expect("penalty");
    assert_eq!(e.samples, e2.samples, "same seed, same probes");
    let g_q = e2.value.backward().expect("backward");
    for v in &vars {
        let a = g_total.get(v.as_tensor()).expect("grad").flatten_all().expect("f").to_vec1::<f64>().expect("v");
        let b = g_loss.get(v.as_tensor()).expect("grad").flatten_all().expect("f").to_vec1::<f64>().expect("v");
        let c = g_q.get(v.as_tensor()).expect("the trace depends on every parameter, biases included");
        let c = c.flatten_all().expect("f").to_vec1::<f64>().expect("v");
        for ((a, b), c) in a.iter().zip(&b).zip(&c) {
            assert!((a - (b + lambda * c)).abs() < 1e-10 * (1.0 + a.abs()), "{a} vs {b} + {lambda}·{c}");
        }
        assert!(c.iter().any(|x| x.abs() > 1e-8), "the penalty must send a gradient");
    }
}

#[test]
fn estimate_only_path_is_detached_and_numerically_equal() {
    let mlp = Mlp::new();
    let est = SehtD::new(3, 0.3, Reading::PartialSum).expect("config");
    let on = trace_penalty(&mlp.loss(), &mlp.weights(), &est, &mut probe_rng(4)).expect("penalty");
    let off = trace_estimate(&mlp.loss(), &mlp.weights(), &est, &mut probe_rng(4)).expect("estimate");
    assert_eq!(on.samples, off.samples);
    let grads = off.value.backward().expect("backward of a constant");
    assert!(grads.get(mlp.w1.as_tensor()).is_none(), "a detached estimate carries no gradient");
    assert!(on.value.backward().expect("backward").get(mlp.w1.as_tensor()).is_some());
}

#[test]
fn sparse_probe_with_absent_blocks_equals_dense_probe_with_zero_blocks() {
    let mlp = Mlp::new();
    let op = HessianOperator::new(&mlp.loss(), &mlp.weights()).expect("operator");
    let v1 =
        op.part_from_host(1, &(0..12).map(|i| if i % 3 == 0 { 1.0 } else { -1.0 }).collect::<Vec<_>>()).expect("part");
    let zero = op.part_from_host(0, &[0.0; 12]).expect("part");
    let sparse = BlockVec::from_parts(vec![None, Some(v1.clone())]);
    let dense = BlockVec::from_parts(vec![Some(zero), Some(v1)]);
    let a = op.scalar_value(&op.quadratic_form(&sparse).expect("q")).expect("value");
    let b = op.scalar_value(&op.quadratic_form(&dense).expect("q")).expect("value");
    assert!((a - b).abs() < 1e-12 * (1.0 + a.abs()), "{a} vs {b}");
    assert!(a.abs() > 1e-6);
}

#[test]
fn selection_by_role_never_includes_buffers() {
    let varmap = VarMap::new();
    let vb = f64_varbuilder(&varmap);
    let _conv = candle_nn::conv2d(3, 4, 3, Default::default(), vb.pp("conv1")).expect("conv");
    let _bn = candle_nn::batch_norm(4, BatchNormConfig::default(), vb.pp("bn1")).expect("bn");
    let _fc = candle_nn::linear(4, 2, vb.pp("fc")).expect("fc");
    let set = ParamSet::from_varmap(&varmap);
    let names =
        |sel: &Selection| -> Vec<String> { set.select(sel).expect("selection").into_iter().map(|p| p.name).collect() };
    assert_eq!(names(&Selection::Weights), ["conv1.weight", "fc.weight"]);
    assert_eq!(names(&Selection::WeightsAndNormScales), ["bn1.weight", "conv1.weight", "fc.weight"]);
    assert_eq!(
        names(&Selection::Trainable),
        ["bn1.bias", "bn1.weight", "conv1.bias", "conv1.weight", "fc.bias", "fc.weight"]
    );
    assert_eq!(set.trainable_vars().len(), 6, "running mean/var are not trainable");
    assert_eq!(set.num_trainable(), 4 * 3 * 9 + 4 + 4 + 4 + 2 * 4 + 2);
    assert_eq!(set.get("bn1.running_mean").expect("present").role, Role::Buffer);
    assert!(matches!(set.select(&Selection::Names(vec!["bn1.running_var".into()])), Err(Error::BufferSelected(_))));
    assert!(
        matches!(set.select(&Selection::Names(vec!["nope".into()])), Err(Error::UnknownParameter(n)) if n == "nope")
    );
    assert!(matches!(ParamSet::new().select(&Selection::Weights), Err(Error::NoParameters(_))));
}

#[test]
fn bad_inputs_give_typed_errors() {
    let mlp = Mlp::new();
    let not_scalar = mlp.x.matmul(&mlp.w1.t().expect("t")).expect("mm");
    assert!(matches!(HessianOperator::new(&not_scalar, &mlp.weights()), Err(Error::NonScalarLoss(_))));
    assert!(matches!(HessianOperator::new(&mlp.loss(), &[]), Err(Error::NoParameters(_))));
    let ints = Var::from_tensor(&Tensor::new(&[1u32, 2], &DEV).expect("t")).expect("var");
    let p = vec![seht_candle::Param { name: "ids".into(), var: ints, role: Role::Weight }];
    assert!(matches!(HessianOperator::new(&mlp.loss(), &p), Err(Error::NonFloatParameter { .. })));
    let e = seht_candle::ops::max_pool2d(&Tensor::zeros((1, 1, 5, 4), DType::F32, &DEV).expect("t"), 2)
        .expect_err("5 is odd");
    assert!(e.to_string().contains("max_pool2d") && e.to_string().contains("5×4"), "{e}");
}

#[test]
fn works_in_f32() {
    let w = Var::from_tensor(&randn(&[3, 5], 0.5, 1).to_dtype(DType::F32).expect("f32")).expect("var");
    let x = randn(&[4, 5], 1.0, 2).to_dtype(DType::F32).expect("f32");
    let loss =
        x.matmul(&w.t().expect("t")).expect("mm").tanh().expect("tanh").sqr().expect("sq").sum_all().expect("sum");
    let p = vec![seht_candle::Param { name: "w".into(), var: w.clone(), role: Role::Weight }];
    let e = trace_penalty(&loss, &p, &SehtH::seht_h(2).expect("config"), &mut probe_rng(1)).expect("penalty");
    assert_eq!(e.value.dtype(), DType::F32);
    assert!(e.mean.is_finite());
    assert!(e.value.backward().expect("backward").get(w.as_tensor()).is_some());
}
