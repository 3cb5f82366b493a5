//! A tiny ResNet and a tiny LSTM language model memorise a handful of
//! synthetic examples, with and without the Hessian-trace penalty: the loss
//! must fall by at least a factor of 5.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use seht_candle::{Selection, penalised_loss};
use seht_estimator::{SehtH, probe_rng};
use seht_models::{Phase, ResNet, ResNetConfig, RnnKind, RnnLm, RnnLmConfig, seeded_varbuilder};

const DEV: Device = Device::Cpu;
const FACTOR: f64 = 5.0;

fn train(
    varmap: &VarMap,
    roles: &seht_models::Roles,
    steps: usize,
    lambda: Option<f64>,
    loss_fn: &dyn Fn(u64) -> candle_core::Result<Tensor>,
) -> (f64, f64) {
    let set = roles.param_set(varmap).expect("params");
    let weights = set.select(&Selection::Weights).expect("weights");
    let mut opt = AdamW::new(set.trainable_vars(), ParamsAdamW { lr: 0.01, weight_decay: 0.0, ..Default::default() })
        .expect("opt");
    let est = SehtH::seht_h(1).expect("config");
    let mut rng = probe_rng(0);
    let (mut first, mut last) = (f64::NAN, f64::NAN);
    for step in 0..steps {
        let loss = loss_fn(step as u64).expect("loss");
        let value = loss.to_scalar::<f32>().expect("scalar") as f64;
        if step == 0 {
            first = value;
        }
        last = value;
        match lambda {
            None => opt.backward_step(&loss).expect("step"),
            Some(l) => {
                let (total, _) = penalised_loss(&loss, &weights, &est, l, &mut rng).expect("penalty");
                opt.backward_step(&total).expect("step");
            }
        }
    }
    (first, last)
}

#[test]
fn tiny_resnet_overfits_with_and_without_the_penalty() {
    for lambda in [None, Some(1e-3)] {
        let varmap = VarMap::new();
        let m =
            ResNet::new(&ResNetConfig::narrow(3, 4, 4, [1, 1, 1, 1]), seeded_varbuilder(&varmap, 1, DType::F32, &DEV))
                .expect("model");
        let xs = {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
            let v: Vec<f32> = (0..8 * 3 * 8 * 8).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
            Tensor::from_vec(v, (8, 3, 8, 8), &DEV).expect("xs")
        };
        let ys = Tensor::new(&[0u32, 1, 2, 3, 0, 1, 2, 3], &DEV).expect("ys");
        let loss = |s: u64| {
            candle_nn::loss::cross_entropy(
                &m.forward_t(&xs, Phase::Train { seed: s }).map_err(candle_core::Error::wrap)?,
                &ys,
            )
        };
        let (first, last) = train(&varmap, m.roles(), 60, lambda, &loss);
        eprintln!("tiny ResNet, λ = {lambda:?}: loss {first:.4} → {last:.4}");
        assert!(
            last.is_finite() && last * FACTOR < first,
            "λ = {lambda:?}: loss {first} → {last}, not a {FACTOR}× fall"
        );
    }
}

#[test]
fn tiny_lstm_overfits_with_and_without_the_penalty() {
    for lambda in [None, Some(1e-3)] {
        let cfg = RnnLmConfig {
            kind: RnnKind::Lstm,
            vocab_size: 12,
            embedding: 16,
            hidden: 16,
            layers: 2,
            dropout: 0.0,
            tie_weights: false,
            init_range: 0.1,
        };
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, seeded_varbuilder(&varmap, 3, DType::F32, &DEV)).expect("model");
        let seq: Vec<u32> = (0..18).map(|i| (i * 5 + 2) % 12).collect();
        let inputs = Tensor::from_vec(seq[..16].to_vec(), (2, 8), &DEV).expect("in");
        let targets = Tensor::from_vec(seq[2..].to_vec(), (2, 8), &DEV).expect("out");
        let loss = |s: u64| {
            let state = m.zero_state(2).map_err(candle_core::Error::wrap)?;
            let (logits, _) =
                m.forward_t(&inputs, &state, Phase::Train { seed: s }).map_err(candle_core::Error::wrap)?;
            RnnLm::loss(&logits, &targets).map_err(candle_core::Error::wrap)
        };
        let (first, last) = train(&varmap, m.roles(), 150, lambda, &loss);
        eprintln!("tiny LSTM, λ = {lambda:?}: loss {first:.4} → {last:.4}");
        assert!(
            last.is_finite() && last * FACTOR < first,
            "λ = {lambda:?}: loss {first} → {last}, not a {FACTOR}× fall"
        );
    }
}
