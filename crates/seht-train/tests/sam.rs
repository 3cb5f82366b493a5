//! SAM and ASAM (`seht_train::sam`): the gradient on a quadratic against its
//! closed form, BatchNorm's running statistics after the second pass, the
//! config, training on both image models, and exact resumption.

mod common;

use candle_core::{D, DType, Device, Module, ModuleT, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::*;
use seht_candle::{ParamSet, Role};
use seht_train::config::{ModelConfig, Regularizer};
use seht_train::sam::{Sharpness, sam_gradients};

/// A symmetric positive definite 5×5 matrix (row-major), fixed.
fn spd() -> Vec<Vec<f64>> {
    let b = [
        [0.9, -0.3, 0.2, 0.0, 0.5],
        [0.1, 1.1, -0.4, 0.3, 0.0],
        [-0.2, 0.0, 0.7, 0.6, -0.1],
        [0.4, 0.2, 0.0, 1.3, 0.2],
        [0.0, -0.5, 0.3, 0.1, 0.8],
    ];
    // A = BᵀB + 0.1·I
    (0..5)
        .map(|i| {
            (0..5).map(|j| (0..5).map(|k| b[k][i] * b[k][j]).sum::<f64>() + if i == j { 0.1 } else { 0.0 }).collect()
        })
        .collect()
}

fn matvec(a: &[Vec<f64>], w: &[f64]) -> Vec<f64> {
    a.iter().map(|r| r.iter().zip(w).map(|(x, y)| x * y).sum()).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// `L(w) = ½ wᵀAw` with `w` split over two variables (3 + 2 entries), so
/// that the perturbation's norm must be global.
fn quadratic_sam(w: &[f64], rho: f64, method: Sharpness) -> (Vec<f64>, f64) {
    let a = spd();
    let dev = Device::Cpu;
    let v1 = Var::from_slice(&w[..3], 3, &dev).expect("var");
    let v2 = Var::from_slice(&w[3..], 2, &dev).expect("var");
    let at = Tensor::from_vec(a.concat(), (5, 5), &dev).expect("A");
    let mut loss = || -> seht_train::Result<(Tensor, ())> {
        let w = Tensor::cat(&[v1.as_tensor(), v2.as_tensor()], 0)?.unsqueeze(1)?;
        let l = (w.t()?.matmul(&at.matmul(&w)?)?.squeeze(0)?.squeeze(0)? * 0.5)?;
        Ok((l, ()))
    };
    let r = sam_gradients(&[v1.clone(), v2.clone()], &[], rho, method, &mut loss).expect("sam");
    let mut g = r.grads.get(v1.as_tensor()).expect("g1").to_vec1::<f64>().expect("v");
    g.extend(r.grads.get(v2.as_tensor()).expect("g2").to_vec1::<f64>().expect("v"));
    let mut back = v1.as_tensor().to_vec1::<f64>().expect("v");
    back.extend(v2.as_tensor().to_vec1::<f64>().expect("v"));
    assert_eq!(back, w, "the weights are restored bit for bit");
    (g, r.perturbation_norm)
}

const W: [f64; 5] = [0.7, -1.2, 0.05, 2.0, -0.4];

#[test]
fn sam_gradient_on_a_quadratic_is_a_at_w_plus_rho_aw_over_its_norm() {
    let a = spd();
    for rho in [0.05, 0.5] {
        let (g, pn) = quadratic_sam(&W, rho, Sharpness::Sam);
        let aw = matvec(&a, &W);
        let n = norm(&aw);
        let wp: Vec<f64> = W.iter().zip(&aw).map(|(w, g)| w + rho * g / n).collect();
        let want = matvec(&a, &wp);
        for (x, y) in g.iter().zip(&want) {
            assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "ρ={rho}: {g:?} vs {want:?}");
        }
        assert!((pn - rho).abs() < 1e-12, "‖ε‖ = ρ: {pn}");
        // And it is not the plain gradient.
        assert!(g.iter().zip(&aw).any(|(x, y)| (x - y).abs() > 1e-3));
    }
}

#[test]
fn asam_gradient_on_a_quadratic_is_a_at_w_plus_rho_t2g_over_tg() {
    let a = spd();
    let (rho, eta) = (2.0, 0.01);
    let (g, pn) = quadratic_sam(&W, rho, Sharpness::Asam { eta });
    let aw = matvec(&a, &W);
    let t: Vec<f64> = W.iter().map(|w| w.abs() + eta).collect();
    let tg: Vec<f64> = t.iter().zip(&aw).map(|(t, g)| t * g).collect();
    let n = norm(&tg);
    let eps: Vec<f64> = t.iter().zip(&tg).map(|(t, tg)| rho * t * tg / n).collect();
    let wp: Vec<f64> = W.iter().zip(&eps).map(|(w, e)| w + e).collect();
    let want = matvec(&a, &wp);
    for (x, y) in g.iter().zip(&want) {
        assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{g:?} vs {want:?}");
    }
    assert!((pn - norm(&eps)).abs() < 1e-12);
    // ‖T⁻¹ε‖ = ρ: the ball is an ellipsoid scaled by T.
    let scaled: Vec<f64> = eps.iter().zip(&t).map(|(e, t)| e / t).collect();
    assert!((norm(&scaled) - rho).abs() < 1e-12);
}

#[test]
fn a_zero_gradient_gives_the_plain_step_and_no_nan() {
    let zero = [0.0; 5];
    for m in [Sharpness::Sam, Sharpness::Asam { eta: 0.01 }] {
        let (g, pn) = quadratic_sam(&zero, 0.1, m);
        assert_eq!(g, vec![0.0; 5], "{m:?}");
        assert_eq!(pn, 0.0);
    }
}

/// `x ↦ BN(x·Wᵀ)` in training mode with its running statistics; the loss a
/// squared distance to a fixed target.
struct BnNet {
    varmap: VarMap,
    lin: candle_nn::Linear,
    bn: candle_nn::BatchNorm,
    x: Tensor,
    target: Tensor,
}

impl BnNet {
    fn new() -> Self {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
        let lin = candle_nn::linear(3, 4, vb.pp("lin")).expect("linear");
        let bn = candle_nn::batch_norm(4, candle_nn::BatchNormConfig::default(), vb.pp("bn")).expect("bn");
        let x =
            Tensor::from_vec((0..24).map(|i| ((i * 7) % 11) as f64 / 5.0 - 1.0).collect(), (8, 3), &dev).expect("x");
        let target = Tensor::from_vec((0..32).map(|i| ((i * 5) % 7) as f64 / 3.0 - 1.0).collect(), (8, 4), &dev)
            .expect("target");
        // Fixed values for the randomly initialised variables, so that two
        // nets start alike.
        for p in ParamSet::from_varmap(&varmap).all().iter().filter(|p| p.name.starts_with("lin.")) {
            let n = p.var.elem_count();
            let v: Vec<f64> = (0..n).map(|i| ((i * 3) % 5) as f64 / 4.0 - 0.4).collect();
            p.var.set(&Tensor::from_vec(v, p.var.shape(), &dev).expect("t")).expect("set");
        }
        Self { varmap, lin, bn, x, target }
    }

    fn loss(&self) -> candle_core::Result<Tensor> {
        let y = self.bn.forward_t(&self.lin.forward(&self.x)?, true)?;
        (y - &self.target)?.sqr()?.sum(D::Minus1)?.mean_all()
    }

    fn params(&self) -> ParamSet {
        ParamSet::from_varmap(&self.varmap)
    }

    fn buffers(&self) -> Vec<Tensor> {
        self.params().with_role(Role::Buffer).map(|p| p.var.as_tensor().copy().expect("copy")).collect()
    }
}

#[test]
fn the_second_pass_leaves_batchnorm_running_statistics_as_the_first_left_them() {
    for m in [Sharpness::Sam, Sharpness::Asam { eta: 0.01 }] {
        // Reference: one plain forward pass from the same initial values.
        let reference = BnNet::new();
        let before = reference.buffers();
        reference.loss().expect("loss");
        let after_one = reference.buffers();
        reference.loss().expect("loss");
        let after_two = reference.buffers();
        let differ = |a: &[Tensor], b: &[Tensor]| {
            a.iter().zip(b).any(|(x, y)| {
                x.flatten_all().and_then(|x| x.to_vec1::<f64>()).expect("values")
                    != y.flatten_all().and_then(|y| y.to_vec1::<f64>()).expect("values")
            })
        };
        assert_eq!(before.len(), 2, "running mean and variance");
        assert!(differ(&before, &after_one) && differ(&after_one, &after_two), "a pass moves the statistics");

        let net = BnNet::new();
        let params = net.params();
        let buffers: Vec<Var> = params.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
        let w0: Vec<Tensor> = params.trainable_vars().iter().map(|v| v.as_tensor().copy().expect("copy")).collect();
        let mut loss = || -> seht_train::Result<(Tensor, ())> { Ok((net.loss()?, ())) };
        let r = sam_gradients(&params.trainable_vars(), &buffers, 0.5, m, &mut loss).expect("sam");
        assert!(r.perturbation_norm > 0.0);
        assert!(!differ(&net.buffers(), &after_one), "{m:?}: statistics as after the first pass only");
        assert!(!differ(&params.trainable_vars().iter().map(|v| v.as_tensor().clone()).collect::<Vec<_>>(), &w0));
    }
}

#[test]
fn sam_and_asam_configs_parse_and_bad_values_name_the_field() {
    let base = image_config("c", Regularizer::Baseline, 1).to_toml();
    let with = |reg: &str| base.replace("[regularizer]\nkind = \"baseline\"", reg);
    assert!(base.contains("[regularizer]\nkind = \"baseline\""), "{base}");
    let p = std::path::Path::new("x.toml");
    let sam = seht_train::ExperimentConfig::from_toml_str(&with("[regularizer]\nkind = \"sam\"\nrho = 0.05"), p)
        .expect("sam parses");
    assert_eq!(sam.regularizer, Regularizer::Sam { rho: 0.05 });
    let asam =
        seht_train::ExperimentConfig::from_toml_str(&with("[regularizer]\nkind = \"asam\"\nrho = 2.0\neta = 0.01"), p)
            .expect("asam parses");
    assert_eq!(asam.regularizer, Regularizer::Asam { rho: 2.0, eta: 0.01 });
    for (reg, field) in [
        ("[regularizer]\nkind = \"sam\"\nrho = 0.0", "regularizer.rho"),
        ("[regularizer]\nkind = \"sam\"\nrho = -1.0", "regularizer.rho"),
        ("[regularizer]\nkind = \"asam\"\nrho = 2.0\neta = -0.1", "regularizer.eta"),
        ("[regularizer]\nkind = \"asam\"\nrho = 2.0", "eta"),
        ("[regularizer]\nkind = \"sam\"\nrho = 0.1\neta = 0.01", "eta"),
    ] {
        let e = seht_train::ExperimentConfig::from_toml_str(&with(reg), p).expect_err(reg).to_string();
        assert!(e.contains(field), "{reg}: {e}");
    }
    let mut text = text_config("t", Regularizer::Sam { rho: 0.05 }, 1);
    assert!(text.validate().expect_err("text").to_string().contains("image classification only"));
    text.regularizer = Regularizer::Asam { rho: 2.0, eta: 0.01 };
    assert!(text.validate().is_err());
}

#[test]
fn sam_and_asam_train_a_resnet_and_a_wide_resnet() {
    let data = temp_dir("sam-data");
    write_cifar10(data.path(), 16);
    let out = temp_dir("sam-out");
    for (name, reg, wrn) in [
        ("resnet-sam", Regularizer::Sam { rho: 0.05 }, false),
        ("resnet-asam", Regularizer::Asam { rho: 0.5, eta: 0.01 }, false),
        ("wrn-sam", Regularizer::Sam { rho: 0.05 }, true),
    ] {
        let mut cfg = image_config(name, reg, 3);
        if wrn {
            cfg.model = ModelConfig::Wrn { depth: 10, widen_factor: 1, dropout: 0.1 };
        }
        let m = seht_train::train(&cfg, &opts(data.path(), out.path())).expect(name).expect("finished");
        let log = std::fs::read_to_string(out.path().join(name).join("log.jsonl")).expect("log");
        let losses: Vec<f64> =
            log.lines().map(|l| serde_json::from_str::<seht_train::EpochRecord>(l).expect("json").train_loss).collect();
        eprintln!(
            "{name}: train loss {losses:?}, test top-1 {:?}, final trace {:?}",
            m.final_epoch.as_ref().map(|e| e.test.top1),
            m.final_trace.as_ref().map(|t| t.mean)
        );
        assert!(losses.iter().all(|l| l.is_finite()) && losses[2] < losses[0], "{name}: {losses:?}");
        assert!(m.final_trace.as_ref().is_some_and(|t| t.mean.is_finite()));
        assert_eq!(m.penalty_steps, 0);
        assert!(m.method.contains("SAM"), "{}", m.method);
    }
}

#[test]
fn a_killed_sam_run_resumes_to_the_same_result() {
    let data = temp_dir("sam-resume-data");
    write_cifar10(data.path(), 8);
    for (name, reg) in [("sam", Regularizer::Sam { rho: 0.05 }), ("asam", Regularizer::Asam { rho: 1.0, eta: 0.01 })] {
        let (a, b) = (temp_dir("sam-resume-a"), temp_dir("sam-resume-b"));
        let cfg = image_config(name, reg, 3);
        let whole = seht_train::train(&cfg, &opts(data.path(), a.path())).expect("train").expect("finished");
        let mut o = opts(data.path(), b.path());
        o.stop_after_epochs = Some(1);
        assert!(seht_train::train(&cfg, &o).expect("first part").is_none());
        let resumed = seht_train::train(&cfg, &opts(data.path(), b.path())).expect("resume").expect("finished");
        let (w, r) = (whole.final_epoch.as_ref().expect("finished"), resumed.final_epoch.as_ref().expect("finished"));
        assert_eq!(w.test, r.test, "{name}: same final metrics");
        assert_eq!(w.train_loss, r.train_loss, "{name}");
        assert_eq!(whole.final_trace.as_ref().map(|t| t.mean), resumed.final_trace.as_ref().map(|t| t.mean));
    }
}

#[test]
fn the_table_configs_are_the_baselines_with_sam_or_asam() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    for table in ["table1", "table2"] {
        let base = seht_train::ExperimentConfig::from_file(&root.join(table).join("baseline.toml")).expect("baseline");
        for (m, reg) in [("sam", Regularizer::Sam { rho: 0.05 }), ("asam", Regularizer::Asam { rho: 2.0, eta: 0.01 })] {
            let cfg = seht_train::ExperimentConfig::from_file(&root.join(table).join(format!("{m}.toml"))).expect(m);
            assert_eq!(cfg.regularizer, reg, "{table}/{m}");
            let mut want = base.clone();
            want.name = format!("{table}-{m}");
            want.regularizer = reg;
            assert_eq!(cfg, want, "{table}/{m}: every other setting is the baseline's");
        }
    }
}
