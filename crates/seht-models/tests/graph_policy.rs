//! Keeping a backward pass's graph only where the result is differentiated
//! again (`seht_candle::backward_create_graph`) changes no number: on this
//! crate's models in f64, the Hessian-vector product and the exact penalised
//! gradient through `HessianOperator` equal those of the old policy, where
//! every backward pass kept its graph (candle's thread switch on throughout,
//! as `CANDLE_GRAD_DO_NOT_DETACH=1` had it), to a relative 1e-12. (The old
//! policy's third pass keeps its graph too, so it also takes the fused
//! BatchNorm's differentiable third-order rule, the new one its detached one.)

use candle_core::backprop::set_do_not_detach;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use seht_candle::{GraphMode, HessianOperator, Param, Role, Selection, backward_no_graph};
use seht_estimator::{BlockVec, HvpOperator};
use seht_models::{Phase, ResNet, ResNetConfig, RnnLm, RnnLmConfig, WideResNet, WideResNetConfig, seeded_varbuilder};

const DEV: Device = Device::Cpu;

fn seeded(shape: &[usize], seed: u64, rademacher: bool) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| {
            if rademacher {
                if rng.random::<bool>() { 1.0 } else { -1.0 }
            } else {
                rng.sample(rand_distr::StandardNormal)
            }
        })
        .collect();
    Tensor::from_vec(v, shape, &DEV).expect("tensor")
}

fn flat(ts: &[Tensor]) -> Vec<f64> {
    seht_candle::gradcheck::flatten_f64(ts).expect("flat")
}

/// `Hσ` and `∇(L + λ·σᵀHσ)` over every trainable variable, with the graph kept
/// by every pass (`old`) or only by the passes differentiated again.
fn hvp_and_penalised_gradient(
    roles: &seht_models::Roles,
    varmap: &VarMap,
    old: bool,
    loss: &dyn Fn() -> candle_core::Result<Tensor>,
) -> (Vec<f64>, Vec<f64>) {
    let set = roles.param_set(varmap).expect("params");
    let vars = set.trainable_vars();
    let weights: Vec<Param> = set.select(&Selection::Weights).expect("weights");
    let buffers: Vec<_> = set.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect();
    let sigma = BlockVec::from_parts(
        weights.iter().enumerate().map(|(i, p)| Some(seeded(p.var.dims(), 100 + i as u64, true))).collect(),
    );
    let previous = set_do_not_detach(old);
    let l = loss().expect("loss");
    let (hv, total) = if old {
        // The old policy by hand: every pass on the graph.
        let g = l.backward().expect("gradient");
        let mut s: Option<Tensor> = None;
        for (p, v) in weights.iter().zip(sigma.parts()) {
            let t = (g.get(p.var.as_tensor()).expect("grad") * v.as_ref().expect("probe"))
                .and_then(|t| t.sum_all())
                .expect("gᵀσ");
            s = Some(match s {
                None => t,
                Some(a) => (a + t).expect("sum"),
            });
        }
        let h = s.expect("s").backward().expect("Hσ");
        let hv: Vec<Tensor> = weights.iter().map(|p| h.get(p.var.as_tensor()).expect("Hσ part").clone()).collect();
        let mut q: Option<Tensor> = None;
        for (hvi, v) in hv.iter().zip(sigma.parts()) {
            let t = (hvi * v.as_ref().expect("probe")).and_then(|t| t.sum_all()).expect("σᵀHσ");
            q = Some(match q {
                None => t,
                Some(a) => (a + t).expect("sum"),
            });
        }
        (hv, (&l + q.expect("q").affine(0.1, 0.0).expect("λq")).expect("total"))
    } else {
        let op = HessianOperator::with_mode(&l, &weights, GraphMode::Differentiable).expect("operator");
        let hv: Vec<Tensor> = op.hvp(&sigma).expect("hvp").parts().iter().map(|t| t.clone().expect("part")).collect();
        let q = op.quadratic_form(&sigma).expect("σᵀHσ");
        (hv, (&l + q.affine(0.1, 0.0).expect("λq")).expect("total"))
    };
    let all = if old { total.backward() } else { backward_no_graph(&total) }.expect("penalised gradient");
    let grads: Vec<Tensor> = vars.iter().map(|v| all.get(v.as_tensor()).expect("grad").clone()).collect();
    set_do_not_detach(previous);
    for (b, v) in buffers.iter().zip(&saved) {
        b.set(v).expect("restore");
    }
    (flat(&hv), flat(&grads))
}

fn assert_same(
    name: &str,
    roles: &seht_models::Roles,
    varmap: &VarMap,
    loss: &dyn Fn() -> candle_core::Result<Tensor>,
) {
    let (hv_old, g_old) = hvp_and_penalised_gradient(roles, varmap, true, loss);
    let (hv_new, g_new) = hvp_and_penalised_gradient(roles, varmap, false, loss);
    let e_hv = seht_candle::gradcheck::relative_error(&hv_new, &hv_old);
    let e_g = seht_candle::gradcheck::relative_error(&g_new, &g_old);
    eprintln!("{name}: Hσ rel. difference {e_hv:.1e}, penalised gradient {e_g:.1e}");
    assert!(e_hv <= 1e-12 && e_g <= 1e-12, "{name}: Hσ {e_hv:.2e}, gradient {e_g:.2e}");
}

#[test]
fn a_batchnorm_resnet_gives_the_same_numbers() {
    let varmap = VarMap::new();
    let m = ResNet::new(&ResNetConfig::narrow(2, 3, 2, [1, 1, 1, 1]), seeded_varbuilder(&varmap, 1, DType::F64, &DEV))
        .expect("model");
    let xs = seeded(&[6, 2, 8, 8], 2, false);
    let ys = Tensor::new(&[0u32, 1, 2, 0, 1, 2], &DEV).expect("labels");
    let loss = || {
        candle_nn::loss::cross_entropy(
            &m.forward_t(&xs, Phase::Train { seed: 0 }).map_err(candle_core::Error::wrap)?,
            &ys,
        )
    };
    assert_same("ResNet", m.roles(), &varmap, &loss);
}

#[test]
fn a_wide_resnet_with_dropout_gives_the_same_numbers() {
    let varmap = VarMap::new();
    let cfg = WideResNetConfig { depth: 10, widen_factor: 1, dropout: 0.3, in_channels: 2, num_classes: 3 };
    let m = WideResNet::new(&cfg, seeded_varbuilder(&varmap, 3, DType::F64, &DEV)).expect("model");
    let xs = seeded(&[4, 2, 8, 8], 4, false);
    let ys = Tensor::new(&[0u32, 1, 2, 0], &DEV).expect("labels");
    let loss = || {
        candle_nn::loss::cross_entropy(
            &m.forward_t(&xs, Phase::Train { seed: 9 }).map_err(candle_core::Error::wrap)?,
            &ys,
        )
    };
    assert_same("WRN", m.roles(), &varmap, &loss);
}

#[test]
fn an_lstm_language_model_gives_the_same_numbers() {
    let varmap = VarMap::new();
    let cfg = RnnLmConfig { embedding: 8, hidden: 8, dropout: 0.2, ..RnnLmConfig::paper_lstm(20) };
    let m = RnnLm::new(&cfg, seeded_varbuilder(&varmap, 5, DType::F64, &DEV)).expect("model");
    let tokens = Tensor::new(&[[1u32, 5, 7, 3, 2], [4, 4, 9, 0, 11]], &DEV).expect("tokens");
    let targets = Tensor::new(&[[5u32, 7, 3, 2, 8], [4, 9, 0, 11, 19]], &DEV).expect("targets");
    let loss = || {
        let state = m.zero_state(2).map_err(candle_core::Error::wrap)?;
        let (logits, _) = m.forward_t(&tokens, &state, Phase::Train { seed: 4 }).map_err(candle_core::Error::wrap)?;
        RnnLm::loss(&logits, &targets).map_err(candle_core::Error::wrap)
    };
    assert_same("LSTM LM", m.roles(), &varmap, &loss);
}
