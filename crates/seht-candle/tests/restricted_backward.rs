//! The backward pass restricted to some variables (`backward_to_with`, the
//! vendored candle's patch 5), which a SEHT-D product `vᵀHv` runs over the
//! blocks its draw selected: on a conv/BatchNorm/ReLU/max-pool network in
//! f64 and f32, its gradients are bit for bit those of the full pass (with
//! and without the graph), other variables get none, and the quadratic form
//! over a partial support and its gradient with respect to every parameter
//! (the penalty's third pass) are bit for bit those computed by full
//! passes.

mod common;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;
use common::*;
use seht_candle::ops;
use seht_candle::{HessianOperator, Param, Role};
use seht_estimator::{BlockVec, HvpOperator};

/// Parameters and loss of a small network: conv → BatchNorm → ReLU →
/// max-pool → conv → ReLU → mean → linear → cross-entropy.
struct Net {
    params: Vec<Param>,
    x: Tensor,
    y: Tensor,
    bn: ops::BatchNorm,
}

impl Net {
    fn new(dtype: DType) -> Net {
        let cast = |v: Var| Var::from_tensor(&v.as_tensor().to_dtype(dtype).expect("cast")).expect("var");
        let varmap = candle_nn::VarMap::new();
        let bn = ops::BatchNorm::new(4, VarBuilder::from_varmap(&varmap, dtype, &DEV).pp("bn")).expect("bn");
        let mut params: Vec<Param> =
            [("w1", var(&[4, 2, 3, 3], 0.4, 1)), ("w2", var(&[5, 4, 3, 3], 0.3, 2)), ("w3", var(&[3, 5], 0.5, 3))]
                .into_iter()
                .map(|(n, v)| Param { name: n.into(), var: cast(v), role: Role::Weight })
                .collect();
        for (name, v) in varmap.data().lock().expect("lock").iter() {
            params.push(Param { name: name.clone(), var: v.clone(), role: Role::NormWeight });
        }
        params.sort_by(|a, b| a.name.cmp(&b.name));
        let x = randn(&[3, 2, 8, 8], 1.0, 4).to_dtype(dtype).expect("x");
        let y = Tensor::new(&[0u32, 2, 1], &DEV).expect("y");
        Net { params, x, y, bn }
    }

    fn get(&self, name: &str) -> &Tensor {
        self.params.iter().find(|p| p.name == name).expect("param").var.as_tensor()
    }

    fn loss(&self) -> Tensor {
        let h = ops::conv2d(&self.x, self.get("w1"), 1, 1).expect("conv1");
        let h = ops::relu(&self.bn.forward_t(&h, true).expect("bn")).expect("relu");
        let h = ops::max_pool2d(&h, 2).expect("pool");
        let h = ops::relu(&ops::conv2d(&h, self.get("w2"), 1, 1).expect("conv2")).expect("relu");
        let h = h.mean((2, 3)).expect("mean");
        let z = h.matmul(&self.get("w3").t().expect("t")).expect("linear");
        ops::cross_entropy(&z, &self.y).expect("loss")
    }
}

fn bits(t: &Tensor) -> Vec<u64> {
    t.flatten_all()
        .and_then(|t| t.to_dtype(DType::F64))
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

const SUBSETS: [&[&str]; 4] = [&["w2"], &["w1", "w3"], &["w3"], &["bn.weight", "w2"]];

#[test]
fn restricted_gradients_are_the_full_passes_bit_for_bit() {
    for dtype in [DType::F64, DType::F32] {
        let net = Net::new(dtype);
        for graph in [false, true] {
            let full = seht_candle::backward_with(&net.loss(), graph).expect("full pass");
            for subset in SUBSETS {
                let targets: Vec<&Tensor> = subset.iter().map(|n| net.get(n)).collect();
                let part = seht_candle::backward_to_with(&net.loss(), &targets, graph).expect("restricted pass");
                for p in &net.params {
                    let t = p.var.as_tensor();
                    match (subset.contains(&p.name.as_str()), part.get(t)) {
                        (true, Some(g)) => assert_eq!(
                            bits(g),
                            bits(full.get(t).expect("full")),
                            "{dtype:?} graph {graph} {subset:?}: {}",
                            p.name
                        ),
                        (true, None) => panic!("{dtype:?} {subset:?}: no gradient of target {}", p.name),
                        (false, Some(_)) => panic!("{dtype:?} {subset:?}: a gradient of non-target {}", p.name),
                        (false, None) => {}
                    }
                }
            }
        }
    }
}

#[test]
fn a_partial_quadratic_form_and_its_gradient_match_full_passes() {
    for dtype in [DType::F64, DType::F32] {
        let net = Net::new(dtype);
        for subset in SUBSETS {
            let probe = |i: usize, p: &Param| randn(p.var.dims(), 1.0, 20 + i as u64).to_dtype(dtype).expect("v");
            let parts: Vec<Option<Tensor>> = net
                .params
                .iter()
                .enumerate()
                .map(|(i, p)| subset.contains(&p.name.as_str()).then(|| probe(i, p)))
                .collect();
            // Through the operator (restricted second pass).
            let op = HessianOperator::new(&net.loss(), &net.params).expect("operator");
            let q = op.quadratic_form(&BlockVec::from_parts(parts.clone())).expect("vᵀHv");
            let vars: Vec<&Tensor> = net.params.iter().map(|p| p.var.as_tensor()).collect();
            let third = seht_candle::backward_no_graph(&q).expect("third pass");
            // By full passes.
            let g = seht_candle::backward_create_graph(&net.loss()).expect("gradient");
            let mut s: Option<Tensor> = None;
            for (p, v) in net.params.iter().zip(&parts) {
                if let Some(v) = v {
                    let term = (g.get(p.var.as_tensor()).expect("g") * v).expect("gv").sum_all().expect("sum");
                    s = Some(match s {
                        None => term,
                        Some(a) => (a + term).expect("add"),
                    });
                }
            }
            let hv = seht_candle::backward_create_graph(&s.expect("support")).expect("Hv");
            let mut q_full: Option<Tensor> = None;
            for (p, v) in net.params.iter().zip(&parts) {
                if let Some(v) = v {
                    let term = (hv.get(p.var.as_tensor()).expect("Hv") * v).expect("hv v").sum_all().expect("sum");
                    q_full = Some(match q_full {
                        None => term,
                        Some(a) => (a + term).expect("add"),
                    });
                }
            }
            let q_full = q_full.expect("q");
            assert_eq!(bits(&q), bits(&q_full), "{dtype:?} {subset:?}: vᵀHv");
            let third_full = seht_candle::backward_no_graph(&q_full).expect("third pass");
            for (p, t) in net.params.iter().zip(vars) {
                match (third.get(t), third_full.get(t)) {
                    (Some(a), Some(b)) => assert_eq!(bits(a), bits(b), "{dtype:?} {subset:?}: ∇(vᵀHv) of {}", p.name),
                    (None, None) => {}
                    _ => panic!("{dtype:?} {subset:?}: ∇(vᵀHv) of {} present in one pass only", p.name),
                }
            }
        }
    }
}

#[test]
fn a_target_that_is_not_a_variable_is_refused() {
    let net = Net::new(DType::F64);
    let loss = net.loss();
    let w = net.get("w3");
    let intermediate = (w * 2.0).expect("2w");
    let err = seht_candle::backward_to_with(&loss, &[w, &intermediate], false).expect_err("refused").to_string();
    assert!(err.contains("target 1") && err.contains("not a variable"), "{err}");
}
