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
use seht_train::estimators::{Curvature, DiagonalMethod, DiagonalRequest, TraceMethod};
use seht_train::{TraceChoice, curvature_of_run, trace_of_run};

fn settings() -> AnalysisSettings {
    AnalysisSettings {
        trace_probes: 12,
        probing: BlockProbing::Joint,
        estimator: TraceMethod::Hutchinson,
        diagonal: None,
        top_k: 2,
        lanczos_steps: 40,
        tolerance: 1e-3,
        slq_probes: 2,
        slq_steps: 12,
        broadening: 0.01,
        f32_basis: false,
        seed: 5,
        block_spectra: None,
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
    let r = analyze(&ModelSource::Run(run.clone()), &o.env, &options(ModelMode::Eval)).expect("analyze");
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
        &o.env,
        &options(ModelMode::Eval),
    )
    .expect("analyze checkpoint");
    assert_eq!(without_seconds(from_file.spectrum), without_seconds(r.spectrum.clone()));

    // Train mode is a different function (batch statistics): different numbers.
    let mut train_mode = options(ModelMode::Train);
    (train_mode.settings.trace_probes, train_mode.settings.slq_probes) = (0, 0);
    let tr = analyze(&ModelSource::Run(run), &o.env, &train_mode).expect("analyze train");
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
    if let Some(t) = &mut s.trace {
        t.seconds = 0.0;
    }
    if let Some(d) = &mut s.diagonal {
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
    let err = analyze(&ModelSource::Run(run.clone()), &o.env, &too_many).expect_err("too many batches").to_string();
    assert!(err.contains("--batches") && err.contains("1000"), "{err}");

    let missing = ModelSource::Checkpoint { config: run.join("config.toml"), tensors: run.join("nope.safetensors") };
    let err = analyze(&missing, &o.env, &options(ModelMode::Eval)).expect_err("missing file").to_string();
    assert!(err.contains("nope.safetensors"), "{err}");

    let partial = out.path().join("partial.safetensors");
    let t = Tensor::zeros(3, DType::F32, &Device::Cpu).expect("t");
    candle_core::safetensors::save(&[("model.unrelated".to_string(), t)].into_iter().collect(), &partial)
        .expect("save");
    let src = ModelSource::Checkpoint { config: run.join("config.toml"), tensors: partial };
    let err = analyze(&src, &o.env, &options(ModelMode::Eval)).expect_err("partial file").to_string();
    assert!(err.contains("partial.safetensors") && err.contains("no tensor for variable"), "{err}");

    let mut bad = options(ModelMode::Eval);
    bad.settings.tolerance = -1.0;
    let err = analyze(&ModelSource::Run(run), &o.env, &bad).expect_err("bad tolerance").to_string();
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
    let mean = MeanHessian::new(ops).expect("mean");
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

/// `--estimator` and `--diagonal` in `seht analyze`: each estimator gives a
/// whole-model trace with the products it spent, consistent with the
/// default per-layer Hutchinson traces within their errors; each diagonal
/// estimator a per-layer summary whose sum is the trace; the default
/// settings write no new key (existing outputs unchanged).
#[test]
fn analyze_runs_the_chosen_trace_and_diagonal_estimators() {
    let data = temp_dir("analyze-est-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("analyze-est-out");
    let o = opts(data.path(), out.path());
    seht_train::train(&image_config("e", Regularizer::Baseline, 1), &o).expect("train");
    let run = ModelSource::Run(out.path().join("e"));
    let base = |trace_probes: usize| {
        let mut a = options(ModelMode::Eval);
        (a.settings.top_k, a.settings.slq_probes, a.settings.trace_probes) = (0, 0, trace_probes);
        a
    };

    // The default writes exactly the keys it wrote before the choice existed.
    let json = serde_json::to_value(&base(40).settings).expect("json");
    assert!(json.get("estimator").is_none() && json.get("diagonal").is_none(), "{json}");
    let reference = analyze(&run, &o.env, &base(40)).expect("hutchinson");
    let spectrum = serde_json::to_value(&reference.spectrum).expect("json");
    assert!(spectrum.get("trace").is_none() && spectrum.get("diagonal").is_none(), "{spectrum}");
    let h = reference.spectrum.traces.as_ref().expect("per-layer traces");

    for (estimator, name) in [(TraceMethod::HutchPlusPlus, "hutch++"), (TraceMethod::XTrace, "xtrace")] {
        for diagonal in [DiagonalMethod::Hutchinson, DiagonalMethod::Xdiag] {
            let mut a = base(24);
            a.settings.estimator = estimator;
            a.settings.diagonal = Some(DiagonalRequest { estimator: diagonal, hvps: 16 });
            let r = analyze(&run, &o.env, &a).expect("analyze");
            assert!(r.spectrum.traces.is_none(), "{name}: per-layer traces are Hutchinson's");
            let t = r.spectrum.trace.as_ref().expect("trace section");
            let d = r.spectrum.diagonal.as_ref().expect("diagonal section");
            assert_eq!((t.estimator, t.budget, d.estimator, d.budget), (estimator, 24, diagonal, 16));
            match estimator {
                TraceMethod::HutchPlusPlus => assert_eq!((t.hvps, t.std_error), (24, None)),
                _ => assert!(t.hvps > 12 && t.hvps <= 24 && t.std_error.is_some_and(|e| e > 0.0), "{t:?}"),
            }
            match diagonal {
                DiagonalMethod::Hutchinson => assert_eq!(d.hvps, 16),
                DiagonalMethod::Xdiag => assert!(d.hvps > 8 && d.hvps <= 16, "{d:?}"),
            }
            assert_eq!(r.hvps, t.hvps + d.hvps, "{name}: the products add up");
            assert_eq!(r.batch_hvps, 2 * r.hvps);
            // Each estimates the same tr(H) as the per-layer traces.
            let se = (h.total_std_error.expect("se").powi(2) + t.std_error.unwrap_or(0.0).powi(2)).sqrt();
            assert!((t.trace - h.total).abs() < 6.0 * se, "{name}: {} vs Hutchinson {} ± {se}", t.trace, h.total);
            // The diagonal's layers are the weights; its summary is consistent.
            let names: Vec<&str> = h.layers.iter().map(|l| l.name.as_str()).collect();
            assert_eq!(d.layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), names);
            let sum: f64 = d.layers.iter().map(|l| l.mean * l.len as f64).sum();
            assert!((sum - d.trace).abs() < 1e-9 * d.trace.abs().max(1.0), "{sum} vs {}", d.trace);
            for l in &d.layers {
                assert!(l.min <= l.mean && l.mean <= l.max, "{l:?}");
                let (e, b) = (l.entry_std_error.expect("entry se"), l.mean_std_error_bound.expect("bound"));
                assert!(b > 0.0 && b <= e * (1.0 + 1e-12), "{l:?}: the mean of the errors is at most their RMS");
            }
            let md = seht_train::analyze::markdown(&r);
            assert!(md.contains(&format!("## Trace ({name})")), "{md}");
            assert!(md.contains(&format!("## Per-layer Hessian diagonal ({})", diagonal.name())), "{md}");
            assert!(seht_train::analyze::cost_line(&r).contains(&format!("trace ({name}) {} HVPs", t.hvps)));
            let back: AnalysisReport = serde_json::from_value(serde_json::to_value(&r).expect("json")).expect("parse");
            assert_eq!(back, r);
            assert!(t.matrix.is_hessian() && serde_json::to_value(t).expect("json").get("matrix").is_none());
        }
    }

    // XNysTrace runs on the Gauss–Newton matrix G of the same batches; the
    // other analyses stay on H. The model is a ReLU/max-pool ResNet in eval
    // mode, where tr(G) = tr(H): the per-layer Hutchinson traces of H are
    // its reference.
    let mut a = base(24);
    a.settings.estimator = TraceMethod::XNysTrace;
    a.settings.diagonal = Some(DiagonalRequest { estimator: DiagonalMethod::Hutchinson, hvps: 4 });
    let r = analyze(&run, &o.env, &a).expect("xnystrace on G");
    let t = r.spectrum.trace.as_ref().expect("trace section");
    assert_eq!((t.estimator, t.matrix, t.hvps), (TraceMethod::XNysTrace, Curvature::GaussNewton, 24));
    assert_eq!(r.spectrum.diagonal.as_ref().map(|d| d.hvps), Some(4), "the diagonal is still of H");
    let se = (h.total_std_error.expect("se").powi(2) + t.std_error.expect("own error").powi(2)).sqrt();
    assert!(t.trace > 0.0 && (t.trace - h.total).abs() < 6.0 * se, "tr(G) {} vs tr(H) {} ± {se}", t.trace, h.total);
    let json = serde_json::to_value(t).expect("json");
    assert_eq!(json.get("matrix").and_then(|m| m.as_str()), Some("gauss-newton"), "{json}");
    let md = seht_train::analyze::markdown(&r);
    assert!(md.contains("## Trace (xnystrace)") && md.contains("tr(G) = "), "{md}");
    assert!(md.contains("Gauss–Newton matrix G"), "{md}");
    assert!(seht_train::analyze::cost_line(&r).contains("trace (xnystrace of G) 24 HVPs"));
}

/// A bad `--estimator` and too small a budget for it or for `--diagonal`
/// are refused before anything is loaded, each naming its flag; from the
/// binary too, for values clap refuses.
#[test]
fn bad_estimator_choices_are_refused_naming_the_flag() {
    let data = temp_dir("analyze-est-bad-data");
    let out = temp_dir("analyze-est-bad-out");
    let o = opts(data.path(), out.path());
    // Nothing is trained: each refusal comes before the run folder is read.
    let run = ModelSource::Run(out.path().join("absent"));
    let refuse = |edit: &dyn Fn(&mut AnalysisSettings)| {
        let mut a = options(ModelMode::Eval);
        edit(&mut a.settings);
        analyze(&run, &o.env, &a).expect_err("refused").to_string()
    };
    let err = refuse(&|s| (s.estimator, s.trace_probes) = (TraceMethod::XNysTrace, 1));
    assert!(err.contains("--trace-probes") && err.contains("xnystrace") && err.contains("at least 2"), "{err}");
    let err = refuse(&|s| (s.estimator, s.trace_probes) = (TraceMethod::XTrace, 3));
    assert!(err.contains("--trace-probes") && err.contains("xtrace") && err.contains("at least 4"), "{err}");
    let err = refuse(&|s| (s.estimator, s.trace_probes) = (TraceMethod::HutchPlusPlus, 2));
    assert!(err.contains("--trace-probes") && err.contains("at least 3"), "{err}");
    let err = refuse(&|s| s.diagonal = Some(DiagonalRequest { estimator: DiagonalMethod::Xdiag, hvps: 3 }));
    assert!(err.contains("--diagonal-hvps") && err.contains("xdiag"), "{err}");
    let err = refuse(&|s| s.diagonal = Some(DiagonalRequest { estimator: DiagonalMethod::Hutchinson, hvps: 0 }));
    assert!(err.contains("--diagonal-hvps"), "{err}");

    let choice = TraceChoice { estimator: TraceMethod::XNysTrace, diagonal: None };
    let err = curvature_of_run(&out.path().join("absent"), &o.env, (1, 1), choice).expect_err("xnystrace").to_string();
    assert!(err.contains("--probes") && err.contains("xnystrace") && err.contains("at least 2"), "{err}");
    let choice = TraceChoice { estimator: TraceMethod::XTrace, diagonal: None };
    let err = curvature_of_run(&out.path().join("absent"), &o.env, (1, 3), choice).expect_err("budget").to_string();
    assert!(err.contains("--probes") && err.contains("at least 4"), "{err}");
    let choice = TraceChoice { estimator: TraceMethod::Hutchinson, diagonal: Some(DiagonalMethod::Xdiag) };
    let err = curvature_of_run(&out.path().join("absent"), &o.env, (1, 2), choice).expect_err("budget").to_string();
    assert!(err.contains("--probes") && err.contains("xdiag"), "{err}");

    let seht = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_seht")).args(args).output().expect("run seht");
        assert!(!o.status.success(), "{args:?} accepted");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let absent = out.path().join("absent");
    let absent = absent.to_str().expect("utf-8");
    for (args, flag) in [
        (vec!["analyze", "--run", absent, "--mode", "eval", "--estimator", "hutch+"], "--estimator"),
        (vec!["analyze", "--run", absent, "--mode", "eval", "--diagonal", "exact"], "--diagonal"),
        (vec!["trace", "--run", absent, "--estimator", "lanczos"], "--estimator"),
        (vec!["trace", "--run", absent, "--diagonal=xtrace"], "--diagonal"),
        (vec!["trace", "--run", absent, "--estimator", "xnystrace", "--probes", "1"], "--probes"),
        (
            vec!["analyze", "--run", absent, "--mode", "eval", "--estimator", "xnystrace", "--trace-probes", "1"],
            "--trace-probes",
        ),
    ] {
        let err = seht(&args);
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

/// `seht trace --estimator … --diagonal …`: the default measurement is that
/// of `trace_of_run`, unchanged; another estimator measures `tr(H̄)` of the
/// same batches within `--probes` products, with its error and the products
/// spent; the diagonal is summarised per weight tensor; the binary prints both.
#[test]
fn seht_trace_runs_the_chosen_estimators() {
    let data = temp_dir("trace-est-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("trace-est-out");
    let o = opts(data.path(), out.path());
    seht_train::train(&image_config("t", Regularizer::Baseline, 1), &o).expect("train");
    let run = out.path().join("t");

    let default = curvature_of_run(&run, &o.env, (2, 6), TraceChoice::default()).expect("default");
    assert_eq!(default.report, Some(trace_of_run(&run, &o.env, 2, 6).expect("trace")));
    assert!(default.trace.is_none() && default.diagonal.is_none() && default.lines().is_empty());

    let h = default.report.as_ref().expect("report");
    for estimator in [TraceMethod::HutchPlusPlus, TraceMethod::XTrace] {
        let choice = TraceChoice { estimator, diagonal: Some(DiagonalMethod::Xdiag) };
        let c = curvature_of_run(&run, &o.env, (2, 12), choice).expect("curvature");
        assert!(c.report.is_none(), "only tr(H) by the chosen estimator is measured");
        assert_eq!(c.batches, 2);
        let t = c.trace.as_ref().expect("trace");
        assert!(t.hvps <= 12 && t.hvps > 6, "{t:?}");
        let se = (h.std_error.powi(2) + t.std_error.unwrap_or(0.0).powi(2)).sqrt();
        assert!((t.trace - h.mean).abs() < 6.0 * se, "{:?}: {} vs Hutchinson {} ± {se}", estimator, t.trace, h.mean);
        let d = c.diagonal.as_ref().expect("diagonal");
        assert!(d.layers.iter().all(|l| l.name.ends_with("weight") && l.min <= l.max), "{d:?}");
        let lines = c.lines().join("\n");
        assert!(lines.contains(estimator.name()) && lines.contains("Hessian-vector products"), "{lines}");
    }

    let o = std::process::Command::new(env!("CARGO_BIN_EXE_seht"))
        .args(["trace", "--estimator", "xtrace", "--diagonal", "--batches", "1", "--probes", "8", "--run"])
        .arg(&run)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .expect("run seht");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("Hessian trace tr(H) (xtrace, weights, mean Hessian of 1 batches)"), "{stdout}");
    assert!(
        stdout.contains("Hessian diagonal (hutchinson") && stdout.contains("8 Hessian-vector products"),
        "{stdout}"
    );
    assert!(!stdout.contains("Gauss–Newton"), "{stdout}");

    // XNysTrace measures tr(G) of the same batches' Gauss–Newton matrices:
    // the default measurement's tr(G) from sampled labels is its reference.
    let choice = TraceChoice { estimator: TraceMethod::XNysTrace, diagonal: None };
    let c = curvature_of_run(&run, &env(data.path()), (2, 12), choice).expect("xnystrace");
    let t = c.trace.as_ref().expect("trace");
    assert_eq!((t.matrix, t.hvps, c.batches), (Curvature::GaussNewton, 12, 2));
    let g = h.gauss_newton.as_ref().expect("tr(G) by sampled labels");
    let se = (g.std_error.expect("se").powi(2) + t.std_error.expect("own error").powi(2)).sqrt();
    assert!((t.trace - g.mean).abs() < 6.0 * se, "XNysTrace tr(G) {} vs sampled labels {} ± {se}", t.trace, g.mean);
    let lines = c.lines().join("\n");
    assert!(lines.contains("Gauss–Newton trace tr(G) (xnystrace") && !lines.contains("Hessian"), "{lines}");
}

/// `--block-spectra` on a model at initialisation (`ModelSource::Initial`,
/// no checkpoint): one density per weight tensor on one grid, each a
/// probability vector, JS₀ the mean of the pairwise divergences and within
/// [0, ln 2], a noise floor with two probes, the products counted (one
/// whole product per Lanczos step and block), and the figure written. The
/// initial weights are the config's seeded ones: two analyses agree exactly.
#[test]
fn block_spectra_of_a_model_at_initialisation() {
    let data = temp_dir("block-data");
    write_cifar10(data.path(), 8);
    let out = temp_dir("block-out");
    let o = opts(data.path(), out.path());
    let cfg = image_config("init", Regularizer::Baseline, 1);
    let config = out.path().join("init.toml");
    std::fs::write(&config, cfg.to_toml()).expect("config");
    let mut s = settings();
    (s.trace_probes, s.top_k, s.slq_probes) = (0, 0, 0);
    s.block_spectra = Some(seht_train::analyze::BlockSpectraRequest { probes: 2, steps: 6 });
    let aopts = AnalyzeOptions { settings: s, ..options(ModelMode::Eval) };
    let source = ModelSource::Initial { config: config.clone() };
    let r = analyze(&source, &o.env, &aopts).expect("analyze");
    assert!(r.source.contains("at initialisation"), "{}", r.source);
    let b = r.spectrum.block_spectra.as_ref().expect("block spectra");
    assert!(b.blocks.len() >= 2 && b.blocks.iter().all(|k| k.name.ends_with("weight")));
    assert_eq!(b.blocks.iter().map(|k| k.len).sum::<usize>(), r.spectrum.parameters);
    for k in &b.blocks {
        assert_eq!(k.density.len(), b.grid.len());
        assert!((k.density.iter().sum::<f64>() - 1.0).abs() < 1e-9, "{}", k.name);
    }
    let pairs: Vec<f64> = (0..b.blocks.len())
        .flat_map(|i| (i + 1..b.blocks.len()).map(move |j| (i, j)))
        .map(|(i, j)| seht_estimator::jensen_shannon(&b.blocks[i].density, &b.blocks[j].density))
        .collect();
    let mean = pairs.iter().sum::<f64>() / pairs.len() as f64;
    let js0 = b.shape.js0;
    assert!((js0 - mean).abs() < 1e-12 && js0 >= 0.0 && js0 <= std::f64::consts::LN_2, "{js0}");
    assert!(b.shape.floor.is_some() && b.as_measured.floor.is_some());
    assert!(b.as_measured.js0 >= 0.0 && b.as_measured.js0 <= std::f64::consts::LN_2);
    assert!(b.blocks.iter().all(|k| k.scale > 0.0));
    assert!(b.hvps <= 2 * 6 * b.blocks.len() && b.hvps >= 2 * b.blocks.len());
    assert_eq!(r.hvps, b.hvps);
    let again = analyze(&source, &o.env, &aopts).expect("again");
    assert_eq!(again.spectrum.block_spectra.as_ref().map(|x| x.shape.js0), Some(js0));
    let dir = out.path().join("analysis-init");
    write_report(&r, &dir).expect("write");
    for name in ["block_spectra.svg", "block_spectra.png"] {
        assert!(dir.join(name).is_file(), "{name}");
    }
    let md = std::fs::read_to_string(dir.join("analysis.md")).expect("md");
    assert!(md.contains("## Blockwise spectra") && md.contains("JS₀ = **"), "{md}");
}
