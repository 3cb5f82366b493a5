//! The training loop: the same for every method, so comparisons are fair.
//! A run is: data and network from the config, then per epoch the task's
//! epoch body (`epoch.rs`, one optimiser step per batch: `step.rs`), the
//! evaluation (`eval.rs`), the log line and the checkpoint; at the end the
//! final Hessian trace (`trace.rs`) and `metrics.json`. A run that diverges
//! (a non-finite loss or objective, or one beyond the config's
//! `[divergence]` bound; a non-finite evaluation loss) stops there: its
//! `metrics.json` has status `diverged` with the epoch, step and cause, and
//! `log.jsonl` ends with the same record. The process that writes a run
//! folder holds its lock (`run_lock.rs`): a second writer is refused.

use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_nn::VarMap;

use crate::checkpoint::{self, State};
use crate::config::ExperimentConfig;
use crate::data::load_task;
use crate::epoch::{EpochContext, image_epoch, text_epoch};
use crate::error::{Error, Result, io};
use crate::eval::{eval_images, eval_text};
use crate::net::Run;
use crate::progress::env::Env;
use crate::records::{Divergence, EpochRecord, EvalMetrics, Metrics, RunStatus};
use crate::run_lock::RunLock;
use crate::run_log::{
    self, append_divergence, append_log, read_log, read_metrics, rewrite_log, summary_line, write_metrics,
};
use crate::schedule::LrSchedule;
use crate::step::Stepper;
use crate::trace::{measure, monitor_layers};

/// How a run is executed (not part of the experiment's config): where
/// it runs, and where it writes.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data folder, device and progress, as every command has them.
    pub env: Env,
    /// Folder the run folder `<out_dir>/<name>` is created in.
    pub out_dir: PathBuf,
    /// Stop (as if killed) after this many epochs of this session, leaving
    /// the checkpoint; for tests of resumption.
    pub stop_after_epochs: Option<usize>,
}

/// The key of step `step` of a run seeded with `seed`: every draw of the
/// step comes from a stream of it ([`seht_estimator::streams`]).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    seht_estimator::step_key(seed, step)
}

/// Trains (or resumes, or returns the finished or diverged result of) the
/// run `cfg`. Returns `None` when stopped early by `opts.stop_after_epochs`.
/// A run that diverged is `Ok` with status [`RunStatus::Diverged`]; run
/// again, a finished or diverged run returns the same metrics without
/// training and without loading its checkpoint. The run folder is locked
/// while it is written ([`Error::RunLocked`] for a second writer).
pub fn train(cfg: &ExperimentConfig, opts: &TrainOptions) -> Result<Option<Metrics>> {
    cfg.validate()?;
    let env = &opts.env;
    let run_dir = opts.out_dir.join(&cfg.name);
    let (ckpt_dir, metrics_path, log_path) =
        (run_dir.join("checkpoint"), run_dir.join("metrics.json"), run_dir.join("log.jsonl"));
    // A run that ended is reported as it is recorded, reading only
    // `metrics.json` and `config.toml` (both written atomically): no lock,
    // so that reporting adds no file to a committed results folder, and no
    // checkpoint, so that a damaged one does not make a finished run fail.
    if let Some(m) = recorded_result(&run_dir, cfg)? {
        return Ok(Some(m));
    }
    // One writer at a time: held until this function returns (or the
    // process ends), taken before anything in the folder is written.
    let _lock = RunLock::acquire(&run_dir)?;
    // The run may have ended in another process since.
    if let Some(m) = recorded_result(&run_dir, cfg)? {
        return Ok(Some(m));
    }
    // Refuse a run folder from another config before loading any data.
    let previous = checkpoint::load(&ckpt_dir, cfg, &env.device)?;
    if let Some(m) = read_metrics(&metrics_path)? {
        if previous.as_ref().is_some_and(|(s, _)| s.epochs_done == cfg.epochs) {
            return Ok(Some(m)); // finished: idempotent
        }
        // A run that diverged in its first epoch left no checkpoint, and a
        // finished run copied without its checkpoint (results committed
        // as metrics.json and config.toml, to resume a preset on another
        // machine) has none either: its config.toml says which config it was.
        let finished_elsewhere = previous.is_none() && m.status == RunStatus::Finished && m.final_epoch.is_some();
        if m.diverged().is_some() || finished_elsewhere {
            let copy = run_dir.join("config.toml");
            match ExperimentConfig::from_file(&copy) {
                Ok(c) if c.same_run(cfg) => return Ok(Some(m)), // diverged, or finished elsewhere: idempotent too
                Ok(_) => return Err(Error::CheckpointMismatch { path: copy, found: m.name }),
                // Without it nothing says which config the record is of.
                Err(e) => {
                    let why = match copy.exists() {
                        true => e.to_string(),
                        false => "missing: it records which config metrics.json is of".into(),
                    };
                    return Err(run_log::damaged(&copy, why));
                }
            }
        }
    }
    let task = load_task(cfg, env)?;
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    checkpoint::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;

    let varmap = VarMap::new();
    let run = Run::new(cfg, task, &varmap, &env.device)?;
    let mut stepper = Stepper::new(cfg, run.param_set(&varmap)?);
    let mut schedule = LrSchedule::new(cfg.schedule.clone(), cfg.optim.lr, cfg.epochs);
    let (mut epochs_done, mut steps, mut penalty_steps, mut seconds) = (0, 0u64, 0u64, 0.0);
    let mut history = Vec::new();
    if let Some((state, tensors)) = previous {
        let vars = stepper.params().trainable_vars();
        checkpoint::restore(&varmap, &mut stepper.sgd, &vars, &tensors, &ckpt_dir, &state)?;
        (epochs_done, steps, penalty_steps, seconds, schedule) =
            (state.epochs_done, state.steps, state.penalty_steps, state.seconds, state.schedule);
        history = read_log(&log_path)?.into_iter().filter(|r| r.epoch <= epochs_done).collect();
        // The log must hold every checkpointed epoch, once and in order: the
        // final metrics (best epoch) are read from it.
        let epochs: Vec<usize> = history.iter().map(|r| r.epoch).collect();
        if epochs != (1..=epochs_done).collect::<Vec<_>>() {
            return Err(run_log::damaged(
                &log_path,
                format!("it holds epochs {epochs:?}, but the checkpoint has {epochs_done} epochs done"),
            ));
        }
    }
    rewrite_log(&log_path, &history)?; // exactly the checkpointed epochs

    let done = |steps, penalty_steps, seconds: f64, epochs_begun: usize| Metrics {
        name: cfg.name.clone(),
        method: cfg.regularizer.label(),
        data: run.description().to_string(),
        status: RunStatus::Finished,
        divergence: None,
        final_epoch: None,
        best_epoch: None,
        best_by: best_by(&run).to_string(),
        final_trace: None,
        train_seconds: seconds,
        seconds_per_epoch: seconds / epochs_begun.max(1) as f64,
        steps,
        penalty_steps,
        train_eval: None,
    };
    for (session_epochs, epoch) in (epochs_done..cfg.epochs).enumerate() {
        let lr = schedule.lr(epoch);
        let mut ctx = EpochContext {
            epoch,
            lr,
            steps: &mut steps,
            regularizer: &cfg.regularizer,
            divergence: cfg.divergence,
            device: &env.device,
            progress: env.progress,
            name: &cfg.name,
            epochs: cfg.epochs,
        };
        let totals = match &run {
            Run::Images { data, net } => image_epoch(&mut ctx, &mut stepper, net.as_ref(), data, cfg.seed)?,
            Run::Text { data, lm } => text_epoch(&mut ctx, &mut stepper, lm, data)?,
        };
        penalty_steps += totals.penalty_steps;
        seconds += totals.seconds;
        let evaluated = match totals.diverged {
            None => Some(evaluate(&run, &env.device)?),
            Some(_) => None,
        };
        let diverged = totals.diverged.clone().or_else(|| {
            let (test, valid) = evaluated.as_ref()?;
            evaluation_divergence(epoch, totals.steps(), test, valid.as_ref())
        });
        if let Some(d) = diverged {
            append_divergence(&log_path, &d)?;
            let metrics = Metrics {
                status: RunStatus::Diverged,
                divergence: Some(d),
                ..done(steps, penalty_steps, seconds, epoch + 1)
            };
            write_metrics(&metrics_path, &metrics)?;
            return Ok(Some(metrics));
        }
        let (test, valid) = evaluated.ok_or(Error::Internal("an epoch that neither diverged nor was evaluated"))?;
        if let (Run::Text { .. }, Some(v)) = (&run, &valid) {
            schedule.observe(v.loss);
        }
        let mut rec = totals.record(epoch, lr, test, valid);
        if !cfg.monitor.is_off() {
            let m = cfg.monitor;
            let layers = monitor_layers(&run, stepper.params(), (m.batches, m.probes), cfg.seed, &env.device)?;
            rec.layers = Some(layers);
        }
        if env.progress.shows_epochs() {
            eprintln!("{}", summary_line(&cfg.name, &rec));
        }
        append_log(&log_path, &rec)?;
        history.push(rec);
        let state = State {
            config: cfg.clone(),
            epochs_done: epoch + 1,
            steps,
            penalty_steps,
            schedule: schedule.clone(),
            seconds,
            tensors: format!("ckpt-{:04}.safetensors", epoch + 1),
            tensors_sha256: None, // set by save
        };
        checkpoint::save(&ckpt_dir, &checkpoint::tensors_of(&varmap, &stepper.sgd), &state)?;
        if opts.stop_after_epochs == Some(session_epochs + 1) && epoch + 1 < cfg.epochs {
            return Ok(None);
        }
    }

    let final_trace = match cfg.final_trace {
        t if t.batches > 0 && t.probes > 0 => {
            Some(measure(&run, stepper.params(), (t.batches, t.probes), cfg.seed, &env.device)?)
        }
        _ => None,
    };
    let train_eval = match &run {
        Run::Images { data, net } => Some(eval_images(net.as_ref(), &data.train, &env.device)?),
        Run::Text { .. } => None,
    };
    let final_epoch = history.last().cloned().ok_or(Error::Internal("a finished run without an epoch"))?;
    let best_epoch = best_epoch(&run, &history, &final_epoch);
    let metrics = Metrics {
        final_epoch: Some(final_epoch),
        best_epoch: Some(best_epoch),
        final_trace,
        train_eval,
        ..done(steps, penalty_steps, seconds, cfg.epochs)
    };
    write_metrics(&metrics_path, &metrics)?;
    Ok(Some(metrics))
}

/// The result `run_dir` records, when its `metrics.json` says the run ended
/// (finished with a final epoch, or diverged) and its `config.toml` is this
/// run's. A `config.toml` of another run is refused; a missing or unreadable
/// one leaves the decision to the checkpoint.
fn recorded_result(run_dir: &Path, cfg: &ExperimentConfig) -> Result<Option<Metrics>> {
    let Some(m) = read_metrics(&run_dir.join("metrics.json"))? else { return Ok(None) };
    let ended = m.diverged().is_some() || (m.status == RunStatus::Finished && m.final_epoch.is_some());
    if !ended {
        return Ok(None);
    }
    let copy = run_dir.join("config.toml");
    match ExperimentConfig::from_file(&copy) {
        Ok(c) if c.same_run(cfg) => Ok(Some(m)),
        Ok(c) => Err(Error::CheckpointMismatch { path: copy, found: c.name }),
        Err(_) => Ok(None),
    }
}

/// A divergence that shows only in the evaluation after the epoch: weights
/// that went non-finite on its last step give a non-finite loss there.
fn evaluation_divergence(
    epoch: usize,
    steps: u64,
    test: &EvalMetrics,
    valid: Option<&EvalMetrics>,
) -> Option<Divergence> {
    let (split, loss) = [("test", Some(test)), ("validation", valid)]
        .into_iter()
        .find_map(|(split, m)| m.map(|m| m.loss).filter(|l| !l.is_finite()).map(|l| (split, l)))?;
    Some(Divergence { epoch: epoch + 1, step: steps, cause: format!("non-finite {split} loss {loss} after the epoch") })
}

/// Test metrics, and validation metrics where the task has a validation split.
fn evaluate(run: &Run, device: &Device) -> Result<(EvalMetrics, Option<EvalMetrics>)> {
    match run {
        Run::Images { data, net } => {
            let valid = data.valid.as_ref().map(|v| eval_images(net.as_ref(), v, device)).transpose()?;
            Ok((eval_images(net.as_ref(), &data.test, device)?, valid))
        }
        Run::Text { data: text, lm } => {
            let valid = eval_text(lm, &text.valid, text.bptt, device)?;
            Ok((eval_text(lm, &text.test, text.bptt, device)?, Some(valid)))
        }
    }
}

/// What "best" means: images, the highest test top-1 (as the paper's public
/// code reported; the final epoch is the unbiased figure); text, the lowest
/// validation loss.
fn best_by(run: &Run) -> &'static str {
    match run {
        Run::Images { .. } => {
            "highest test top-1 accuracy over epochs (as the paper's public code reported; the final epoch is the unbiased figure)"
        }
        Run::Text { .. } => "lowest validation loss (its test perplexity is reported)",
    }
}

/// The best epoch, as [`best_by`] says.
fn best_epoch(run: &Run, history: &[EpochRecord], last: &EpochRecord) -> EpochRecord {
    let order = |a: Option<f64>, b: Option<f64>| a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal);
    match run {
        Run::Images { .. } => history.iter().max_by(|a, b| order(a.test.top1, b.test.top1)).unwrap_or(last).clone(),
        Run::Text { .. } => history
            .iter()
            .min_by(|a, b| order(a.valid.as_ref().map(|v| v.loss), b.valid.as_ref().map(|v| v.loss)))
            .unwrap_or(last)
            .clone(),
    }
}
