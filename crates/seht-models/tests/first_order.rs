//! The first-order penalty gradient on this crate's ReLU networks against
//! the exact (third-order autodiff) one. Without activation-pattern replay
//! the first-order σᵀHσ samples of a narrow ResNet came out positive where
//! the exact ones were negative, with a gradient cosine of 0.15–0.3.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use seht_candle::first_order::{default_relative_step, first_order_penalty};
use seht_candle::{Role, Selection, penalised_loss};
use seht_estimator::{Rademacher, SehtH, probe_rng};
use seht_models::{Phase, ResNet, ResNetConfig, WideResNet, WideResNetConfig, seeded_varbuilder};

const DEV: Device = Device::Cpu;

fn seeded_randn(shape: &[usize], seed: u64, dtype: DType) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.sample::<f64, _>(rand_distr::StandardNormal)).collect();
    Tensor::from_vec(v, shape, &DEV).and_then(|t| t.to_dtype(dtype)).expect("tensor")
}

fn flat(ts: &[Tensor]) -> Vec<f64> {
    seht_candle::gradcheck::flatten_f64(ts).expect("flat")
}

/// (relative error, cosine) of `a` against `b`.
fn compare(a: &[f64], b: &[f64]) -> (f64, f64) {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let (na, nb) = (a.iter().map(|x| x * x).sum::<f64>().sqrt(), b.iter().map(|x| x * x).sum::<f64>().sqrt());
    (seht_candle::gradcheck::relative_error(a, b), dot / (na * nb))
}

/// Exact and first-order penalised gradients (SEHT-H, one probe) of `loss`
/// over the model's weights; returns (rel. error, cosine, first-order σᵀHσ,
/// exact σᵀHσ).
fn check(
    roles: &seht_models::Roles,
    varmap: &VarMap,
    rel: f64,
    loss: &dyn Fn() -> candle_core::Result<Tensor>,
) -> (f64, f64, f64, f64) {
    let set = roles.param_set(varmap).expect("params");
    let vars = set.trainable_vars();
    let weights = set.select(&Selection::Weights).expect("weights");
    let buffers: Vec<_> = set.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy().expect("copy")).collect();
    let lambda = 0.1;
    let (total, est) =
        penalised_loss(&loss().expect("loss"), &weights, &SehtH::seht_h(1).expect("cfg"), lambda, &mut probe_rng(3))
            .expect("exact");
    let g = total.backward().expect("backward");
    let exact = flat(&vars.iter().map(|v| g.get(v.as_tensor()).expect("grad").clone()).collect::<Vec<_>>());
    for (b, v) in buffers.iter().zip(&saved) {
        b.set(v).expect("restore");
    }
    let fo = first_order_penalty(
        &vars,
        &weights,
        &buffers,
        &Rademacher,
        1,
        1.0,
        lambda,
        rel,
        &mut probe_rng(3),
        &mut || loss(),
    )
    .expect("first order");
    let (err, cos) = compare(&flat(&fo.grads), &exact);
    (err, cos, fo.samples[0], est.mean)
}

#[test]
fn first_order_penalty_on_a_relu_resnet_matches_the_exact_one() {
    for (dtype, rel, tol) in [(DType::F64, 1e-4, 1e-5), (DType::F32, default_relative_step(DType::F32), 0.1)] {
        let varmap = VarMap::new();
        let m = ResNet::new(&ResNetConfig::narrow(2, 3, 2, [1, 1, 1, 1]), seeded_varbuilder(&varmap, 1, dtype, &DEV))
            .expect("model");
        let xs = seeded_randn(&[8, 2, 8, 8], 2, dtype);
        let ys = Tensor::new(&[0u32, 1, 2, 0, 1, 2, 0, 1], &DEV).expect("labels");
        let loss = || {
            candle_nn::loss::cross_entropy(
                &m.forward_t(&xs, Phase::Train { seed: 0 }).map_err(candle_core::Error::wrap)?,
                &ys,
            )
        };
        let (err, cos, q_fo, q_exact) = check(m.roles(), &varmap, rel, &loss);
        eprintln!("ResNet {dtype:?}: rel. error {err:.2e}, cosine {cos:.6}, σᵀHσ {q_fo:.6} vs exact {q_exact:.6}");
        assert!(err < tol && cos > 0.99, "ResNet {dtype:?}: rel. error {err:.2e}, cosine {cos}");
        assert!((q_fo - q_exact).abs() < 10.0 * tol * q_exact.abs(), "σᵀHσ {q_fo} vs {q_exact}");
    }
}

#[test]
fn first_order_penalty_on_a_wide_resnet_with_dropout_matches_the_exact_one() {
    let varmap = VarMap::new();
    let cfg = WideResNetConfig { depth: 10, widen_factor: 1, dropout: 0.3, in_channels: 2, num_classes: 3 };
    let m = WideResNet::new(&cfg, seeded_varbuilder(&varmap, 3, DType::F64, &DEV)).expect("model");
    let xs = seeded_randn(&[4, 2, 8, 8], 4, DType::F64);
    let ys = Tensor::new(&[0u32, 1, 2, 0], &DEV).expect("labels");
    let loss = || {
        candle_nn::loss::cross_entropy(
            &m.forward_t(&xs, Phase::Train { seed: 9 }).map_err(candle_core::Error::wrap)?,
            &ys,
        )
    };
    let (err, cos, q_fo, q_exact) = check(m.roles(), &varmap, 1e-4, &loss);
    eprintln!("WRN f64: rel. error {err:.2e}, cosine {cos:.9}, σᵀHσ {q_fo:.6} vs exact {q_exact:.6}");
    assert!(err < 1e-5, "WRN: rel. error {err:.2e}");
}
