//! The curvature of a trained model over its weights, detached, at the end
//! of a run or from a run folder: the Hessian trace `tr(H)` (Hutchinson),
//! the Gauss–Newton trace `tr(G)` (sampled labels,
//! `seht_candle::gauss_newton`) and the scale-invariant trace
//! `tr(DHD) = Σ_l ‖w_l‖² tr(H_ll)`, `D` block-diagonal with each layer's
//! weight norm (Hutchinson with the probes `Dz`).

use std::path::Path;

use candle_core::Device;
use candle_core::{DType, Tensor};
use candle_nn::VarMap;
use seht_candle::gauss_newton::gauss_newton_trace;
use seht_candle::{GaussNewtonOperator, GraphMode, HessianOperator, Param, Selection};
use seht_estimator::{
    BlockProbing, BlockTraces, BlockVec, HvpOperator, ProbeDistribution, ProbeRng, Rademacher, Stream,
    mean_and_std_error, step_key,
};
use seht_models::Phase;

use crate::analyze::MeanHessian;
use crate::checkpoint;
use crate::config::ExperimentConfig;
use crate::data::load_task;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::estimators::{
    Curvature, DiagonalMethod, DiagonalSection, TotalTrace, TraceMethod, check_diagonal_budget, check_trace_budget,
    estimate_diagonal, estimate_trace,
};
use crate::net::{Batches, Run};
use crate::optim::{Optimizer, Sgd};
use crate::records::{LayerRecord, Measured, TraceReport};

/// The measurement's key index: its probes draw from
/// [`Stream::FinalTrace`] of `step_key(seed, TRACE_INDEX)` and its batch order
/// from the loader's streams of that key — an index no training step reaches,
/// so nothing is shared with training (`seht_estimator::streams`).
pub const TRACE_INDEX: u64 = u64::MAX;

/// Images per batch of the measurement (the paper's training batch size).
pub const TRACE_BATCH_SIZE: usize = 32;

/// Samples of one batch: per probe, `tr(H)` and `tr(DHD)`; per label
/// draw, `tr(G)`.
#[derive(Default)]
struct Samples {
    hessian: Vec<f64>,
    scaled: Vec<f64>,
    gauss_newton: Vec<f64>,
}

impl Samples {
    /// Adds one batch: `loss` is the mean cross-entropy of `logits (N, C)`
    /// (on the graph); `norms` the weights' norms `‖w_l‖`.
    ///
    /// For each Rademacher probe `z`, `zᵀHz` samples `tr(H)` and
    /// `(Dz)ᵀH(Dz)` samples `tr(DHD)` (two products per probe). Every
    /// sample of the second is itself unchanged when a layer's weights are
    /// rescaled with the loss unchanged (`D_ll → c·D_ll`, `H_ll → H_ll/c²`,
    /// `H_lm → H_lm/c`): the per-layer reading `Σ_l ‖w_l‖²·z_lᵀ(Hz)_l`
    /// has the same mean but is invariant only in expectation.
    fn add(
        &mut self,
        (logits, loss): (&Tensor, &Tensor),
        weights: &[Param],
        norms: &[f64],
        probes: usize,
        (probe_rng, label_rng): (&mut ProbeRng, &mut ProbeRng),
    ) -> Result<()> {
        let op = HessianOperator::with_mode(loss, weights, GraphMode::Detached)?;
        for _ in 0..probes {
            let z: Vec<Vec<f64>> = op.blocks().iter().map(|b| Rademacher.sample(probe_rng, b.len)).collect();
            let vector = |scale: &dyn Fn(usize) -> f64| -> Result<BlockVec<Tensor>> {
                let parts = z.iter().enumerate().map(|(i, zi)| {
                    let s = scale(i);
                    op.part_from_host(i, &zi.iter().map(|x| s * x).collect::<Vec<_>>()).map(Some)
                });
                Ok(BlockVec::from_parts(parts.collect::<seht_candle::Result<_>>()?))
            };
            let plain = op.quadratic_form(&vector(&|_| 1.0)?)?;
            self.hessian.push(op.scalar_value(&plain)?);
            let scaled = op.quadratic_form(&vector(&|i| norms[i])?)?;
            self.scaled.push(op.scalar_value(&scaled)?);
        }
        drop(op);
        self.gauss_newton.extend(gauss_newton_trace(logits, weights, probes, label_rng)?.samples);
        Ok(())
    }
}

/// `‖w‖`, the Frobenius norm of a parameter, in f64.
fn weight_norm(p: &Param) -> Result<f64> {
    Ok(p.var.as_tensor().to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt())
}

/// Calls `f(logits (N, C), mean cross-entropy)` on the measurement batches
/// of key `key` in `phase`: `batches` training batches of
/// [`TRACE_BATCH_SIZE`] in the order of that key (images, no augmentation),
/// or the first `batches` windows from a zero state (text; logits flattened
/// to one row per token). Returns the batches measured.
fn for_each_batch(
    run: &Run,
    (batches, key, phase): (usize, u64, Phase),
    device: &Device,
    f: impl FnMut(&Tensor, &Tensor) -> Result<()>,
) -> Result<usize> {
    let plan = Batches { count: batches, size: TRACE_BATCH_SIZE, full_only: false, seed: key };
    run.for_each_batch(plan, |_| phase, device, f)
}

fn measured(samples: &[f64]) -> Measured {
    let (mean, std_error) = mean_and_std_error(samples);
    Measured { mean, std_error }
}

/// `tr(H)`, `tr(G)` and `tr(DHD)` over `weights` with `probes` Rademacher
/// probes (two Hessian-vector products each) and `probes` label draws on
/// each of `batches` training batches (text: the first `batches` windows,
/// from a zero state), in evaluation phase. Probes come from
/// [`Stream::FinalTrace`], sampled labels from [`Stream::LabelSampling`],
/// both of `step_key(seed, TRACE_INDEX)`.
///
/// Then `tr(H)` in training mode ([`TraceReport::train_mode`]) on the same
/// batches with `probes` Rademacher probes each, drawn from
/// [`Stream::FinalTrace`] of `step_key(seed, TRAIN_MODE_TRACE_INDEX)`
/// (dropout masks from that key too); BatchNorm's running statistics are
/// restored after it.
pub(crate) fn measure(
    run: &Run,
    params: &seht_candle::ParamSet,
    (batches, probes): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<TraceReport> {
    let weights = &params.select(&Selection::Weights)?;
    let mut samples = Samples::default();
    let key = step_key(seed, TRACE_INDEX);
    let mut rng = Stream::FinalTrace.rng(key);
    let mut labels = Stream::LabelSampling.rng(key);
    let norms: Vec<f64> = weights.iter().map(weight_norm).collect::<Result<_>>()?;
    // The training set may hold fewer batches than asked for: the report
    // records the batches actually measured, never the request.
    let used = for_each_batch(run, (batches, key, Phase::Eval), device, |logits, loss| {
        samples.add((logits, loss), weights, &norms, probes, (&mut rng, &mut labels))
    })?;
    if used == 0 {
        return Err(Error::InvalidOption {
            option: "--batches",
            value: batches.to_string(),
            reason: "no batch was measured: at least one training batch is needed".into(),
        });
    }
    let h = measured(&samples.hessian);
    let train_mode = train_mode_trace(run, params, (batches, probes), seed, device)?;
    Ok(TraceReport {
        mean: h.mean,
        std_error: h.std_error.unwrap_or(f64::NAN),
        batches: used,
        probes,
        gauss_newton: Some(measured(&samples.gauss_newton)),
        scale_invariant: Some(measured(&samples.scaled)),
        train_mode: Some(train_mode),
    })
}

/// Runs `f`, then puts BatchNorm's running statistics (the buffers of
/// `params`) back as they were, whether `f` succeeded or not: a
/// training-mode measurement must not move the model it measures.
fn with_buffers_restored<T>(params: &seht_candle::ParamSet, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let buffers: Vec<candle_core::Var> = params.with_role(seht_candle::Role::Buffer).map(|p| p.var.clone()).collect();
    let saved: Vec<Tensor> = buffers.iter().map(|b| b.as_tensor().copy()).collect::<candle_core::Result<_>>()?;
    let out = f();
    for (b, s) in buffers.iter().zip(&saved) {
        b.set(s)?;
    }
    out
}

/// The key index of the final measurement's training-mode probes and
/// dropout masks (its batches are those of [`TRACE_INDEX`]).
pub const TRAIN_MODE_TRACE_INDEX: u64 = u64::MAX - 2;

/// `tr(H)` over the weights in training mode on the measurement batches
/// (see [`measure`]), the running statistics restored afterwards.
fn train_mode_trace(
    run: &Run,
    params: &seht_candle::ParamSet,
    (batches, probes): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<Measured> {
    let weights = params.select(&Selection::Weights)?;
    let probe_key = step_key(seed, TRAIN_MODE_TRACE_INDEX);
    let mut rng = Stream::FinalTrace.rng(probe_key);
    let mut hessian = Vec::new();
    let phase = Phase::Train { seed: probe_key };
    with_buffers_restored(params, || {
        for_each_batch(run, (batches, step_key(seed, TRACE_INDEX), phase), device, |_, loss| {
            let op = HessianOperator::with_mode(loss, &weights, GraphMode::Detached)?;
            for _ in 0..probes {
                let parts = (0..op.blocks().len())
                    .map(|i| op.part_from_host(i, &Rademacher.sample(&mut rng, op.blocks()[i].len)).map(Some))
                    .collect::<seht_candle::Result<_>>()?;
                let q = op.quadratic_form(&BlockVec::from_parts(parts))?;
                hessian.push(op.scalar_value(&q)?);
            }
            Ok(())
        })
    })?;
    Ok(measured(&hessian))
}

/// The key index of the per-epoch layer monitor ([`monitor_layers`]): never
/// a step, and not the final measurement's.
pub const MONITOR_INDEX: u64 = u64::MAX - 1;

/// Each weight's norm and its training-mode Hessian block trace
/// (`[monitor]`, [`crate::config::MonitorConfig`]): `probes` joint
/// Rademacher probes on each of `batches` fixed training batches (text: the
/// first windows, from a zero state), in training phase with the dropout
/// masks of `step_key(seed, MONITOR_INDEX)` and probes from
/// [`Stream::Monitor`] of that key, the same at every call. The buffers
/// (BatchNorm's running statistics) are restored afterwards.
pub(crate) fn monitor_layers(
    run: &Run,
    params: &seht_candle::ParamSet,
    (batches, probes): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<Vec<LayerRecord>> {
    let weights = params.select(&Selection::Weights)?;
    let key = step_key(seed, MONITOR_INDEX);
    let phase = Phase::Train { seed: key };
    let mut rng = Stream::Monitor.rng(key);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); weights.len()];
    let mut add = |loss: &Tensor, rng: &mut ProbeRng| -> Result<()> {
        let op = HessianOperator::with_mode(loss, &weights, GraphMode::Detached)?;
        let est = BlockTraces::rademacher(probes, BlockProbing::Joint)?.estimate(&op, rng, || {})?;
        for (s, b) in samples.iter_mut().zip(&est.blocks) {
            s.extend(&b.samples);
        }
        Ok(())
    };
    with_buffers_restored(params, || {
        for_each_batch(run, (batches, key, phase), device, |_, loss| add(loss, &mut rng))
    })?;
    weights
        .iter()
        .zip(&samples)
        .map(|(p, s)| {
            let (trace, trace_std_error) = mean_and_std_error(s);
            Ok(LayerRecord { name: p.name.clone(), weight_norm: weight_norm(p)?, trace, trace_std_error })
        })
        .collect()
}

/// The Hessian trace of the model in a finished (or checkpointed) run folder,
/// on `batches` training batches with `probes` probes each.
pub fn trace_of_run(run_dir: &Path, env: &Env, batches: usize, probes: usize) -> Result<TraceReport> {
    let (cfg, run, params) = load_run(run_dir, env)?;
    measure(&run, &params, (batches, probes), cfg.seed, &env.device)
}

/// The model of a run folder, restored from its checkpoint, with its data.
fn load_run(run_dir: &Path, env: &Env) -> Result<(ExperimentConfig, Run, seht_candle::ParamSet)> {
    let cfg = ExperimentConfig::from_file(&run_dir.join("config.toml"))?;
    let ckpt_dir = run_dir.join("checkpoint");
    let Some((state, tensors)) = checkpoint::load(&ckpt_dir, &cfg, &env.device)? else {
        return Err(Error::Io {
            path: ckpt_dir.join("state.json"),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no checkpoint in this run folder: train the run first (`seht train --config <its config.toml>`), or copy its checkpoint/ folder with it",
            ),
        });
    };
    let task = load_task(&cfg, env)?;
    let varmap = VarMap::new();
    let run = Run::new(&cfg, task, &varmap, &env.device)?;
    let params = run.param_set(&varmap)?;
    // The weights only: an optimiser over no variable restores no state.
    let mut none = Optimizer::Sgd(Sgd::new(Vec::new(), 0.0, 0.0));
    checkpoint::restore(&varmap, &mut none, &tensors, &ckpt_dir, &state)?;
    Ok((cfg, run, params))
}

/// What `seht trace` is asked for beyond its default (`--estimator`, `--diagonal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceChoice {
    /// The estimator of `tr(H)`; Hutchinson is the default measurement ([`trace_of_run`]).
    pub estimator: TraceMethod,
    /// A per-layer diagonal summary, if wanted.
    pub diagonal: Option<DiagonalMethod>,
}

/// What [`curvature_of_run`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunCurvature {
    /// The default measurement ([`trace_of_run`]: Hutchinson `tr(H)`, `tr(G)`,
    /// `tr(DHD)`), present when the estimator is Hutchinson.
    pub report: Option<TraceReport>,
    /// `tr(H̄)` by the chosen estimator, when it is not Hutchinson: `H̄` the
    /// mean of the measurement batches' Hessians over the weights (evaluation
    /// phase), within `probes` products of `H̄` (each `batches` batch products,
    /// the batch cost of Hutchinson's `probes` probes per batch). XNysTrace
    /// estimates `tr(Ḡ)` instead, `Ḡ` the mean Gauss–Newton matrix of the
    /// same batches ([`TotalTrace::matrix`]).
    pub trace: Option<TotalTrace>,
    /// The per-layer summary of `diag(H̄)`, within `probes` products of `H̄`.
    pub diagonal: Option<DiagonalSection>,
    /// Batches whose Hessians were averaged (fewer than asked if the training
    /// set has fewer).
    pub batches: usize,
}

impl RunCurvature {
    /// The lines `seht trace` prints for [`trace`](Self::trace) and
    /// [`diagonal`](Self::diagonal) (none for the default measurement).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let b = self.batches;
        if let Some(t) = &self.trace {
            let (what, mean, products) = match t.matrix {
                Curvature::Hessian => ("Hessian trace tr(H)", "mean Hessian", "Hessian-vector products"),
                Curvature::GaussNewton => {
                    ("Gauss–Newton trace tr(G)", "mean Gauss–Newton matrix", "Gauss–Newton matrix-vector products")
                }
            };
            out.push(format!(
                "{what} ({}, weights, {mean} of {b} batches): {:.6}{} ({} {products} of the mean = {} batch products)",
                t.estimator.name(),
                t.trace,
                match t.std_error {
                    Some(se) => format!(" ± {se:.6} (the estimator's own error estimate)"),
                    None => " (Hutch++ reports no error of its own)".into(),
                },
                t.hvps,
                t.hvps * b
            ));
        }
        if let Some(d) = &self.diagonal {
            out.push(format!(
                "Hessian diagonal ({}, weights, mean Hessian of {b} batches; {} Hessian-vector products of the mean = {} batch products), sum {:.6}:",
                d.estimator.name(),
                d.hvps,
                d.hvps * b,
                d.trace
            ));
            let opt = |x: Option<f64>| x.map(|e| format!("{e:.2e}")).unwrap_or_else(|| "–".into());
            for l in &d.layers {
                out.push(format!(
                    "  {}: {} entries, mean {:.4e} (s.e. ≤ {}), min {:.3e}, max {:.3e}, s.e. of an entry {}",
                    l.name,
                    l.len,
                    l.mean,
                    opt(l.mean_std_error_bound),
                    l.min,
                    l.max,
                    opt(l.entry_std_error)
                ));
            }
        }
        out
    }
}

/// The curvature of a run's model with the estimators of `choice`: the
/// default measurement ([`trace_of_run`]) when the estimator is Hutchinson,
/// otherwise `tr(H̄)` by that estimator (XNysTrace: `tr(Ḡ)` of the
/// Gauss–Newton matrices of the same batches); and, if asked, the per-layer
/// diagonal of `H̄` (see [`RunCurvature`]). Probes come from
/// [`Stream::FinalTrace`] and [`Stream::Diagonal`] of `step_key(seed,
/// TRACE_INDEX)`, the batches are those of [`trace_of_run`].
///
/// # Errors
/// Before any product: a `probes` budget too small for an estimator,
/// naming `--probes`; then as [`trace_of_run`].
pub fn curvature_of_run(
    run_dir: &Path,
    env: &Env,
    (batches, probes): (usize, usize),
    choice: TraceChoice,
) -> Result<RunCurvature> {
    check_trace_budget(choice.estimator, probes, "--probes")?;
    if let Some(d) = choice.diagonal {
        check_diagonal_budget(d, probes, "--probes")?;
    }
    let (cfg, run, params) = load_run(run_dir, env)?;
    let report = match choice.estimator {
        TraceMethod::Hutchinson => Some(measure(&run, &params, (batches, probes), cfg.seed, &env.device)?),
        _ => None,
    };
    if report.is_some() && choice.diagonal.is_none() {
        return Ok(RunCurvature { report, trace: None, diagonal: None, batches });
    }
    let weights = params.select(&Selection::Weights)?;
    let key = step_key(cfg.seed, TRACE_INDEX);
    let on_g = choice.estimator.curvature() == Curvature::GaussNewton;
    let (mut ops, mut gn_ops) = (Vec::new(), Vec::new());
    for_each_batch(&run, (batches, key, Phase::Eval), &env.device, |logits, loss| {
        if on_g {
            gn_ops.push(GaussNewtonOperator::new(logits, &weights)?);
        }
        if !on_g || choice.diagonal.is_some() {
            ops.push(HessianOperator::with_mode(loss, &weights, GraphMode::Detached)?);
        }
        Ok(())
    })?;
    let used = ops.len().max(gn_ops.len());
    // An empty list is refused by MeanHessian::new, naming --batches.
    let h = if on_g && choice.diagonal.is_none() { None } else { Some(MeanHessian::new(ops)?) };
    let g = if on_g { Some(MeanHessian::new(gn_ops)?) } else { None };
    let trace = match (choice.estimator, &h, &g) {
        (TraceMethod::Hutchinson, ..) => None,
        (method, _, Some(g)) => {
            Some(estimate_trace(g, method, Curvature::GaussNewton, probes, &mut Stream::FinalTrace.rng(key))?)
        }
        (method, Some(h), None) => {
            Some(estimate_trace(h, method, Curvature::Hessian, probes, &mut Stream::FinalTrace.rng(key))?)
        }
        (_, None, None) => None,
    };
    let diagonal = match (choice.diagonal, &h) {
        (Some(d), Some(h)) => Some(estimate_diagonal(h, d, probes, &mut Stream::Diagonal.rng(key))?),
        _ => None,
    };
    Ok(RunCurvature { report, trace, diagonal, batches: used })
}
