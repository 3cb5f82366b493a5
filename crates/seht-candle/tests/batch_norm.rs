//! `ops::BatchNorm` against `candle_nn`'s: the same parameters, outputs,
//! running statistics and evaluation output (f64, relative 1e-12), and bad
//! shapes refused with an error naming the op.

use candle_core::{DType, Device, Tensor};
use candle_nn::{ModuleT, VarBuilder, VarMap};
use seht_candle::ops::BatchNorm;

const DEV: Device = Device::Cpu;

fn randn(shape: &[usize], seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    Tensor::from_vec(v, shape, &DEV).expect("tensor")
}

fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("values")
}

fn assert_close(name: &str, a: &Tensor, b: &Tensor) {
    let err = seht_candle::gradcheck::relative_error(&values(a), &values(b));
    assert!(err <= 1e-12, "{name}: relative difference {err:.2e}");
}

/// A varmap whose BatchNorm (prefix `bn`) has the given parameters.
fn varmap_with(c: usize, seed: u64) -> VarMap {
    let mut vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &DEV);
    candle_nn::batch_norm(c, candle_nn::BatchNormConfig::default(), vb.pp("bn")).expect("create");
    vm.set_one("bn.weight", randn(&[c], seed).affine(0.3, 1.0).expect("γ")).expect("set");
    vm.set_one("bn.bias", randn(&[c], seed + 1)).expect("set");
    vm
}

fn stat(vm: &VarMap, name: &str) -> Tensor {
    vm.data().lock().expect("lock").get(name).expect("stat").as_tensor().copy().expect("copy")
}

#[test]
fn matches_candle_nn_in_training_and_evaluation() {
    for shape in [vec![6usize, 3, 5, 4], vec![7, 3]] {
        let c = shape[1];
        let (vm_ref, vm_ours) = (varmap_with(c, 1), varmap_with(c, 1));
        let reference = candle_nn::batch_norm(
            c,
            candle_nn::BatchNormConfig::default(),
            VarBuilder::from_varmap(&vm_ref, DType::F64, &DEV).pp("bn"),
        )
        .expect("candle_nn");
        let ours = BatchNorm::new(c, VarBuilder::from_varmap(&vm_ours, DType::F64, &DEV).pp("bn")).expect("ours");
        for step in 0..3u64 {
            let x = randn(&shape, 10 + step).affine(2.0, 0.5).expect("x");
            let want = reference.forward_t(&x, true).expect("reference");
            let got = ours.forward_t(&x, true).expect("ours");
            assert_close(&format!("{shape:?} training output, step {step}"), &got, &want);
        }
        for name in ["bn.running_mean", "bn.running_var"] {
            assert_close(&format!("{shape:?} {name} after 3 steps"), &stat(&vm_ours, name), &stat(&vm_ref, name));
        }
        let x = randn(&shape, 20);
        assert_close(
            &format!("{shape:?} evaluation output"),
            &ours.forward_t(&x, false).expect("ours"),
            &reference.forward_t(&x, false).expect("reference"),
        );
    }
}

#[test]
fn bad_shapes_are_refused() {
    let vm = VarMap::new();
    let bn = BatchNorm::new(3, VarBuilder::from_varmap(&vm, DType::F64, &DEV)).expect("bn");
    for (x, train, needle) in [
        (randn(&[3], 1), true, "expected (N, 3"),
        (randn(&[2, 4, 2, 2], 2), true, "expected (N, 3"),
        (randn(&[1, 3], 3), true, "more than one value per channel"),
    ] {
        let err = bn.forward_t(&x, train).expect_err("refused").to_string();
        assert!(err.contains("batch_norm") && err.contains(needle), "{err}");
    }
    let empty = BatchNorm::new(0, VarBuilder::from_varmap(&VarMap::new(), DType::F64, &DEV)).expect("bn");
    assert!(empty.forward_t(&randn(&[2, 0], 4), true).is_err(), "no channels: an error, not a division by zero");
}
