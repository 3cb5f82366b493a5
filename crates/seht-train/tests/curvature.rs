//! Curvature in `seht train` (issue 18): the Gauss–Newton trace penalty as
//! a regularizer (item 3: the config, the step's wiring — λ = 0 is the
//! baseline bit for bit —, training an image model and a language model,
//! exact resumption), the curvature every run reports (item 4: the scale
//! invariance of `tr(DHD)`), and the per-epoch layer monitor (item 1).

mod common;

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use common::*;
use seht_train::config::{GaussNewtonPenalty, Gradient, Regularizer};

fn gn(lambda: f64, gradient: Gradient) -> Regularizer {
    Regularizer::GaussNewton(GaussNewtonPenalty { lambda, draws: 1, gradient })
}

const DOUBLE: Gradient = Gradient::ExactPerProbe;
const FIRST: Gradient = Gradient::FirstOrder { relative_step: None };

fn log_of(dir: &std::path::Path, name: &str) -> Vec<seht_train::EpochRecord> {
    let log = std::fs::read_to_string(dir.join(name).join("log.jsonl")).expect("log");
    log.lines().map(|l| serde_json::from_str(l).expect("json")).collect()
}

#[test]
fn the_config_reads_the_gauss_newton_penalty_and_names_bad_values() {
    let base = image_config("c", Regularizer::Baseline, 1).to_toml();
    let with = |reg: &str| base.replace("[regularizer]\nkind = \"baseline\"", reg);
    let p = std::path::Path::new("x.toml");
    let parse = |reg: &str| seht_train::ExperimentConfig::from_toml_str(&with(reg), p);
    let cfg = parse(
        "[regularizer]\nkind = \"gauss-newton\"\nlambda = 0.01\n\n[regularizer.gradient]\nkind = \"double-backprop\"",
    )
    .expect("parses");
    assert_eq!(cfg.regularizer, gn(0.01, DOUBLE), "draws defaults to 1");
    let cfg = parse(
        "[regularizer]\nkind = \"gauss-newton\"\nlambda = 0.1\ndraws = 2\n\n[regularizer.gradient]\nkind = \"first-order\"\nrelative_step = 0.01",
    )
    .expect("parses");
    assert_eq!(
        cfg.regularizer,
        Regularizer::GaussNewton(GaussNewtonPenalty {
            lambda: 0.1,
            draws: 2,
            gradient: Gradient::FirstOrder { relative_step: Some(0.01) }
        })
    );
    assert!(cfg.regularizer.label().contains("Gauss–Newton first-order"), "{}", cfg.regularizer.label());
    let round = seht_train::ExperimentConfig::from_toml_str(&cfg.to_toml(), p).expect("round trip");
    assert_eq!(round, cfg);
    for (reg, field) in [
        ("lambda = -1.0\n\n[regularizer.gradient]\nkind = \"double-backprop\"", "regularizer.lambda"),
        ("lambda = 0.1\ndraws = 0\n\n[regularizer.gradient]\nkind = \"double-backprop\"", "regularizer.draws"),
        (
            "lambda = 0.1\n\n[regularizer.gradient]\nkind = \"first-order\"\nrelative_step = 1.5",
            "regularizer.gradient.relative_step",
        ),
        ("lambda = 0.1", "gradient"),
        ("lambda = 0.1\n\n[regularizer.gradient]\nkind = \"exact\"", "exact"),
        // Non-finite values would become null on the way through the
        // regularizer's reader (an optional step would take its default).
        (
            "lambda = 0.1\n\n[regularizer.gradient]\nkind = \"first-order\"\nrelative_step = nan",
            "`regularizer.gradient.relative_step` = NaN: must be finite",
        ),
        (
            "lambda = inf\n\n[regularizer.gradient]\nkind = \"double-backprop\"",
            "`regularizer.lambda` = inf: must be finite",
        ),
    ] {
        let e = parse(&format!("[regularizer]\nkind = \"gauss-newton\"\n{reg}")).expect_err(reg).to_string();
        assert!(e.contains(field), "{reg}: {e}");
    }
}

/// With λ = 0 the penalised step must be the plain step exactly: the same
/// loss, the same labels, the same forward phase (dropout masks), the same
/// gradient. Fails if the Gauss–Newton path trains on anything else.
#[test]
fn lambda_zero_is_the_baseline_bit_for_bit() {
    let data = temp_dir("gn-zero-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("gn-zero-out");
    let base = seht_train::train(&image_config("base", Regularizer::Baseline, 2), &opts(data.path(), out.path()))
        .expect("baseline")
        .expect("finished");
    let zero = seht_train::train(&image_config("gn0", gn(0.0, DOUBLE), 2), &opts(data.path(), out.path()))
        .expect("gn")
        .expect("finished");
    let (b, z) = (log_of(out.path(), "base"), log_of(out.path(), "gn0"));
    for (b, z) in b.iter().zip(&z) {
        assert_eq!(b.train_loss, z.train_loss);
        assert_eq!(b.test, z.test);
        assert_eq!(b.trace_mean, None);
        // tr̂(G) = N‖∇L̂‖² of a sampled-label loss: positive.
        assert!(z.trace_mean.is_some_and(|t| t > 0.0), "{:?}", z.trace_mean);
        assert_eq!(z.penalty_steps, z.steps);
    }
    assert_eq!(base.final_trace.as_ref().map(|t| t.mean), zero.final_trace.as_ref().map(|t| t.mean));
}

#[test]
fn the_gauss_newton_penalty_trains_a_resnet_and_a_language_model() {
    let data = temp_dir("gn-train-data");
    write_cifar10(data.path(), 16);
    write_text(data.path());
    let out = temp_dir("gn-train-out");
    let mut runs = vec![
        image_config("resnet-gn", gn(0.1, DOUBLE), 3),
        image_config("resnet-gn-first-order", gn(0.1, FIRST), 3),
        text_config("lstm-gn", gn(0.01, DOUBLE), 3),
    ];
    runs[2].final_trace = seht_train::config::FinalTrace { batches: 1, probes: 2 };
    for cfg in &runs {
        let m = seht_train::train(cfg, &opts(data.path(), out.path())).expect(&cfg.name).expect("finished");
        let log = log_of(out.path(), &cfg.name);
        let losses: Vec<f64> = log.iter().map(|r| r.train_loss).collect();
        let traces: Vec<f64> = log.iter().filter_map(|r| r.trace_mean).collect();
        let t = m.final_trace.as_ref().expect("measured");
        eprintln!(
            "{}: train loss {losses:?}, tr(G) per epoch {traces:?}, final tr(H) {:.3}, tr(G) {:?}, tr(DHD) {:?}",
            cfg.name, t.mean, t.gauss_newton, t.scale_invariant
        );
        assert!(losses.iter().all(|l| l.is_finite()) && losses[2] < losses[0], "{}: {losses:?}", cfg.name);
        assert!(traces.len() == 3 && traces.iter().all(|&t| t > 0.0 && t.is_finite()), "{traces:?}");
        assert_eq!(m.penalty_steps, m.steps);
        assert!(m.method.contains("Gauss–Newton"), "{}", m.method);
        let g = t.gauss_newton.expect("tr(G) measured");
        assert!(g.mean >= 0.0 && g.std_error.is_some_and(f64::is_finite), "{g:?}");
        assert!(t.scale_invariant.is_some_and(|s| s.mean.is_finite()));
    }
}

#[test]
fn a_killed_gauss_newton_run_resumes_to_the_same_result() {
    let data = temp_dir("gn-resume-data");
    write_cifar10(data.path(), 8);
    for (name, reg) in [("gn", gn(0.1, DOUBLE)), ("gn-fo", gn(0.1, FIRST))] {
        let (a, b) = (temp_dir("gn-resume-a"), temp_dir("gn-resume-b"));
        let cfg = image_config(name, reg, 3);
        let whole = seht_train::train(&cfg, &opts(data.path(), a.path())).expect("train").expect("finished");
        let mut o = opts(data.path(), b.path());
        o.stop_after_epochs = Some(1);
        assert!(seht_train::train(&cfg, &o).expect("first part").is_none());
        let resumed = seht_train::train(&cfg, &opts(data.path(), b.path())).expect("resume").expect("finished");
        let (w, r) = (whole.final_epoch.as_ref().expect("finished"), resumed.final_epoch.as_ref().expect("finished"));
        assert_eq!(w.test, r.test, "{name}: same final metrics");
        assert_eq!(w.train_loss, r.train_loss, "{name}");
        assert_eq!(w.trace_mean, r.trace_mean, "{name}");
        assert_eq!(whole.final_trace, resumed.final_trace, "{name}");
    }
}

/// Rescaling a convolution that feeds BatchNorm by `c` (and that
/// BatchNorm's running mean by `c`, its running variance by `c²`) leaves the
/// evaluation-mode network unchanged up to BatchNorm's ε; `tr(H)` changes
/// (that block's Hessian scales by `1/c²`) and `tr(DHD)` must not. Fails if
/// the probes are not scaled by the layer norms, or scaled by their squares.
#[test]
fn the_scale_invariant_trace_does_not_see_a_rescaled_batchnorm_layer() {
    let data = temp_dir("gn-scale-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("gn-scale-out");
    let mut cfg = image_config("scale", Regularizer::Baseline, 1);
    cfg.final_trace = seht_train::config::FinalTrace { batches: 1, probes: 3 };
    let o = opts(data.path(), out.path());
    seht_train::train(&cfg, &o).expect("train").expect("finished");
    let run = out.path().join("scale");
    let before = seht_train::trace_of_run(&run, &o.env, 1, 3).expect("measure");
    // Rescale layer1.0.conv1 (followed by layer1.0.bn1) in the checkpoint.
    let ckpt = std::fs::read_dir(run.join("checkpoint"))
        .expect("checkpoint folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("tensor file");
    let mut tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&ckpt, &Device::Cpu).expect("load");
    let c = 3.0;
    for (suffix, factor) in
        [("layer1.0.conv1.weight", c), ("layer1.0.bn1.running_mean", c), ("layer1.0.bn1.running_var", c * c)]
    {
        let key = tensors.keys().find(|k| k.ends_with(suffix)).cloned().unwrap_or_else(|| panic!("no {suffix}"));
        let t = tensors[&key].affine(factor, 0.0).expect("scale");
        tensors.insert(key, t);
    }
    save_checkpoint_tensors(&ckpt, &tensors);
    let after = seht_train::trace_of_run(&run, &o.env, 1, 3).expect("measure");
    let (s0, s1) = (before.scale_invariant.expect("measured"), after.scale_invariant.expect("measured"));
    eprintln!(
        "tr(H) {:.5} -> {:.5}; tr(DHD) {:.5} -> {:.5}; tr(G) {:?} -> {:?}",
        before.mean, after.mean, s0.mean, s1.mean, before.gauss_newton, after.gauss_newton
    );
    assert!((s1.mean - s0.mean).abs() <= 1e-3 * s0.mean.abs(), "tr(DHD) {} -> {}", s0.mean, s1.mean);
    assert!(
        (after.mean - before.mean).abs() > 1e-2 * before.mean.abs(),
        "tr(H) should see the rescaling: {} -> {}",
        before.mean,
        after.mean
    );
}

/// `[monitor]` logs every epoch's per-layer norms and training-mode block
/// traces without changing the run: the same losses and metrics bit for
/// bit (BatchNorm's running statistics restored, no shared random stream),
/// and norms that match the checkpointed weights.
#[test]
fn the_layer_monitor_logs_norms_and_block_traces_without_changing_the_run() {
    let data = temp_dir("monitor-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("monitor-out");
    let plain = image_config("plain", Regularizer::Baseline, 2);
    let mut watched = image_config("watched", Regularizer::Baseline, 2);
    watched.monitor = seht_train::config::MonitorConfig { batches: 1, probes: 2 };
    assert!(watched.same_run(&plain) || watched.name != plain.name, "monitoring is not part of a run's identity");
    let o = opts(data.path(), out.path());
    let a = seht_train::train(&plain, &o).expect("plain").expect("finished");
    let b = seht_train::train(&watched, &o).expect("watched").expect("finished");
    let (la, lb) = (log_of(out.path(), "plain"), log_of(out.path(), "watched"));
    for (x, y) in la.iter().zip(&lb) {
        assert_eq!((x.train_loss, &x.test), (y.train_loss, &y.test));
        assert!(x.layers.is_none());
    }
    assert_eq!(a.final_trace, b.final_trace);
    let layers = lb.last().and_then(|r| r.layers.clone()).expect("layers logged");
    assert!(lb.iter().all(|r| r.layers.as_ref().is_some_and(|l| l.len() == layers.len())));
    // Norms against the checkpoint's weights.
    let ckpt = std::fs::read_dir(out.path().join("watched").join("checkpoint"))
        .expect("checkpoint folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .expect("tensor file");
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(&ckpt, &Device::Cpu).expect("load");
    for l in &layers {
        let key = tensors.keys().find(|k| k.strip_prefix("model.") == Some(l.name.as_str()));
        let w = tensors[key.unwrap_or_else(|| panic!("{} not in {:?}", l.name, tensors.keys()))]
            .to_dtype(candle_core::DType::F64)
            .expect("f64")
            .sqr()
            .expect("sqr")
            .sum_all()
            .expect("sum")
            .to_scalar::<f64>()
            .expect("scalar")
            .sqrt();
        assert!((l.weight_norm - w).abs() <= 1e-9 * w, "{}: {} against {w}", l.name, l.weight_norm);
        assert!(l.trace.is_finite() && l.trace_std_error.is_some_and(f64::is_finite), "{l:?}");
    }
    assert!(layers.iter().any(|l| l.name.contains("conv")) && layers.iter().all(|l| !l.name.contains("bias")));
}

/// A measurement asked for more batches than the training set holds records
/// the batches it measured (found by a user: `seht trace --batches 20` on 8
/// batches printed "20 batches"), and one of zero batches is refused.
#[test]
fn the_trace_records_the_batches_it_measured_not_the_request() {
    let data = temp_dir("trace-count-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("trace-count-out");
    let mut cfg = image_config("count", Regularizer::Baseline, 1);
    cfg.final_trace = seht_train::config::FinalTrace { batches: 1, probes: 1 };
    let o = opts(data.path(), out.path());
    seht_train::train(&cfg, &o).expect("train").expect("finished");
    let run = out.path().join("count");
    let all = seht_train::trace_of_run(&run, &o.env, 1000, 1).expect("measure");
    assert!(all.batches >= 1 && all.batches < 1000, "recorded {} batches", all.batches);
    let exact = seht_train::trace_of_run(&run, &o.env, all.batches, 1).expect("measure");
    assert_eq!((exact.batches, exact.mean), (all.batches, all.mean), "the same batches, the same value");
    let e = seht_train::trace_of_run(&run, &o.env, 0, 1).expect_err("zero batches");
    assert!(e.to_string().contains("--batches") && e.to_string().contains("at least one"), "{e}");
}

/// The config crate (no candle) states the first-order default step as a
/// number; it must be the one the penalty uses for f32 weights.
#[test]
fn the_configs_default_relative_step_is_the_penaltys() {
    assert_eq!(
        seht_train::config::DEFAULT_F32_RELATIVE_STEP,
        seht_candle::first_order::default_relative_step(candle_core::DType::F32)
    );
}
