//! `seht analyze` on a tiny trained run: outputs, consistency between the
//! three methods, the checkpoint route, the mode honoured, and bad input.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder, VarMap};
use common::*;
use seht_candle::{GraphMode, HessianOperator, ParamSet, Selection};
use seht_estimator::{BlockProbing, BlockVec, HvpOperator};
use seht_train::analyze::{
    AnalysisReport, AnalysisSettings, AnalyzeOptions, MeanHessian, ModelMode, ModelSource, ParamChoice, Spectrum,
    analyze, write_report,
};
use seht_train::config::Regularizer;

fn settings() -> AnalysisSettings {
    AnalysisSettings {
        trace_probes: 12,
        probing: BlockProbing::Joint,
        top_k: 2,
        lanczos_steps: 40,
        tolerance: 1e-3,
        slq_probes: 2,
        slq_steps: 12,
        broadening: 0.01,
        f32_basis: false,
        seed: 5,
    }
}

fn options(mode: ModelMode) -> AnalyzeOptions {
    AnalyzeOptions { mode, params: ParamChoice::Weights, batches: 2, batch_size: Some(4), settings: settings() }
}

#[test]
fn analyze_writes_consistent_results_for_a_run_and_for_its_checkpoint() {
    let data = temp_dir("analyze-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("analyze-out");
    let o = opts(data.path(), out.path());
    seht_train::train(&image_config("a", Regularizer::Baseline, 1), &o).expect("train");
    let run = out.path().join("a");
    let r = analyze(&ModelSource::Run(run.clone()), &o, &options(ModelMode::Eval)).expect("analyze");
    assert_eq!(r.mode, ModelMode::Eval);

    // Costs add up.
    let (t, e, d) = (
        r.spectrum.traces.as_ref().expect("traces"),
        r.spectrum.eigen.as_ref().expect("eigen"),
        r.spectrum.density.as_ref().expect("density"),
    );
    assert_eq!(t.hvps, 12);
    assert_eq!(e.hvps, e.steps + 2);
    assert_eq!(d.hvps, 2 * 12);
    assert_eq!(r.hvps, t.hvps + e.hvps + d.hvps);
    assert_eq!(r.batch_hvps, 2 * r.hvps);

    // The three methods agree: the per-layer traces sum to the density's
    // first moment within their errors, and no quadrature node lies above
    // the top eigenvalue by more than its residual (Ritz values lie inside
    // the spectrum).
    let se = (t.total_std_error.expect("se").powi(2) + d.trace.1.expect("se").powi(2)).sqrt();
    assert!((t.total - d.trace.0).abs() < 5.0 * se, "traces {} vs density {} (se {se})", t.total, d.trace.0);
    let top = &e.values[0];
    let max_node = d.nodes.iter().flatten().fold(f64::NEG_INFINITY, |m, &x| m.max(x));
    assert!(max_node <= top.value + top.residual + 1e-6 * top.value.abs(), "node {max_node} above λ_max {top:?}");
    assert!(e.values[0].value >= e.values[1].value);
    assert!(t.layers.iter().all(|l| l.name.ends_with("weight") && l.std_error.is_some()));

    // Outputs.
    let dir = out.path().join("analysis");
    let written = write_report(&r, &dir).expect("write");
    for name in ["analysis.json", "analysis.md", "density.svg", "density.png", "layer_traces.svg", "layer_traces.png"] {
        let p = dir.join(name);
        assert!(written.files.contains(&p), "{name} not reported");
        assert!(std::fs::metadata(&p).map(|m| m.len() > 100).unwrap_or(false), "{name} missing or empty");
    }
    let back: AnalysisReport =
        serde_json::from_slice(&std::fs::read(dir.join("analysis.json")).expect("read")).expect("parse");
    assert_eq!(back, r);

    // The same model from a bare safetensors file and its config: same numbers.
    let ckpt = std::fs::read_dir(run.join("checkpoint"))
        .expect("ckpt dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .expect("tensor file");
    let from_file = analyze(
        &ModelSource::Checkpoint { config: run.join("config.toml"), tensors: ckpt },
        &o,
        &options(ModelMode::Eval),
    )
    .expect("analyze checkpoint");
    assert_eq!(without_seconds(from_file.spectrum), without_seconds(r.spectrum.clone()));

    // Train mode is a different function (batch statistics): different numbers.
    let mut train_mode = options(ModelMode::Train);
    (train_mode.settings.trace_probes, train_mode.settings.slq_probes) = (0, 0);
    let tr = analyze(&ModelSource::Run(run), &o, &train_mode).expect("analyze train");
    assert_eq!(tr.mode, ModelMode::Train);
    assert_ne!(tr.spectrum.eigen.as_ref().map(|e| e.values[0].value), Some(e.values[0].value));
}

/// The spectrum with its wall times zeroed (they differ between runs).
fn without_seconds(mut s: Spectrum) -> Spectrum {
    if let Some(t) = &mut s.traces {
        t.seconds = 0.0;
    }
    if let Some(e) = &mut s.eigen {
        e.seconds = 0.0;
    }
    if let Some(d) = &mut s.density {
        d.seconds = 0.0;
    }
    s
}

#[test]
fn bad_input_is_named() {
    let data = temp_dir("analyze-bad-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("analyze-bad-out");
    let o = opts(data.path(), out.path());
    seht_train::train(&image_config("b", Regularizer::Baseline, 1), &o).expect("train");
    let run = out.path().join("b");

    let mut too_many = options(ModelMode::Eval);
    too_many.batches = 1000;
    let err = analyze(&ModelSource::Run(run.clone()), &o, &too_many).expect_err("too many batches").to_string();
    assert!(err.contains("--batches") && err.contains("1000"), "{err}");

    let missing = ModelSource::Checkpoint { config: run.join("config.toml"), tensors: run.join("nope.safetensors") };
    let err = analyze(&missing, &o, &options(ModelMode::Eval)).expect_err("missing file").to_string();
    assert!(err.contains("nope.safetensors"), "{err}");

    let partial = out.path().join("partial.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).expect("t");
    candle_core::safetensors::save(&[("model.unrelated".to_string(), t)].into_iter().collect(), &partial)
        .expect("save");
    let src = ModelSource::Checkpoint { config: run.join("config.toml"), tensors: partial };
    let err = analyze(&src, &o, &options(ModelMode::Eval)).expect_err("partial file").to_string();
    assert!(err.contains("partial.safetensors") && err.contains("no tensor for variable"), "{err}");

    let mut bad = options(ModelMode::Eval);
    bad.settings.tolerance = -1.0;
    let err = analyze(&ModelSource::Run(run), &o, &bad).expect_err("bad tolerance").to_string();
    assert!(err.contains("tolerance"), "{err}");
}

/// `MeanHessian` is the mean of its batches' Hessians, and its quadratic
/// form agrees with its product.
#[test]
fn mean_hessian_averages_its_batches() {
    seht_candle::check_higher_order().expect("higher-order autodiff self-check");
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F64, &dev);
    let l1 = candle_nn::linear(3, 4, vb.pp("l1")).expect("l1");
    let l2 = candle_nn::linear(4, 2, vb.pp("l2")).expect("l2");
    let weights = ParamSet::from_varmap(&varmap).select(&Selection::Weights).expect("weights");
    let loss = |seed: u64| {
        let xs = Tensor::from_vec(
            (0..15).map(|i| ((i as u64 * 7 + seed * 13) % 11) as f64 / 5.0 - 1.0).collect::<Vec<_>>(),
            (5, 3),
            &dev,
        )
        .expect("xs");
        let ys = Tensor::from_vec(vec![0u32, 1, 1, 0, 1], 5, &dev).expect("ys");
        let h = l1.forward(&xs).expect("f").tanh().expect("tanh");
        candle_nn::loss::cross_entropy(&l2.forward(&h).expect("f"), &ys).expect("loss")
    };
    let ops: Vec<HessianOperator> =
        (0..2).map(|s| HessianOperator::with_mode(&loss(s), &weights, GraphMode::Detached).expect("op")).collect();
    let v: BlockVec<Tensor> = BlockVec::from_parts(
        weights
            .iter()
            .map(|p| Some(Tensor::ones(p.var.shape(), DType::F64, &dev).expect("ones").affine(0.3, -0.1).expect("v")))
            .collect(),
    );
    let host = |op: &HessianOperator, hv: &BlockVec<Tensor>| -> Vec<f64> {
        hv.present().flat_map(|(i, p)| op.part_to_host(i, p).expect("host")).collect()
    };
    let h0 = host(&ops[0], &ops[0].hvp(&v).expect("hvp"));
    let h1 = host(&ops[1], &ops[1].hvp(&v).expect("hvp"));
    let v_host: Vec<f64> = v.present().flat_map(|(i, p)| ops[0].part_to_host(i, p).expect("host")).collect();
    let first = ops[0].part_to_host(0, v.get(0).expect("v0")).expect("host");
    assert!(!first.is_empty());
    let mean = MeanHessian::new(ops, indicatif::ProgressBar::hidden()).expect("mean");
    let hm: Vec<f64> =
        mean.hvp(&v).expect("hvp").present().flat_map(|(i, p)| mean.part_to_host(i, p).expect("h")).collect();
    for ((m, a), b) in hm.iter().zip(&h0).zip(&h1) {
        assert!((m - 0.5 * (a + b)).abs() < 1e-12, "{m} vs mean of {a}, {b}");
    }
    assert!(h0.iter().zip(&h1).any(|(a, b)| (a - b).abs() > 1e-6), "the two batches must differ");
    let q = mean.quadratic_form(&v).expect("q");
    let q_from_hvp: f64 = hm.iter().zip(&v_host).map(|(h, x)| h * x).sum();
    assert!((q - q_from_hvp).abs() < 1e-12 * q.abs().max(1.0), "{q} vs {q_from_hvp}");
}
