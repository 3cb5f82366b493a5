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

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::checkpoint::{self, State};
use crate::config::ExperimentConfig;
use crate::data::load_task;
use crate::env::Env;
use crate::epoch::{EpochContext, image_epoch, text_epoch};
use crate::error::{Error, Result, io};
use crate::eval::{eval_images, eval_text};
use crate::net::Run;
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
    let previous = match previous_run(&run_dir, cfg, &env.device)? {
        Previous::Ended(m) => return Ok(Some(m)),
        Previous::Checkpoint(previous) => previous,
    };
    let task = load_task(cfg, env)?;
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    checkpoint::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;

    let varmap = VarMap::new();
    let run = Run::new(cfg, task, &varmap, &env.device)?;
    let mut stepper = Stepper::new(cfg, run.param_set(&varmap)?);
    let mut so_far = SoFar::restore(cfg, &run_dir, previous, &varmap, &mut stepper)?;
    let session = Session { cfg, env, run: &run, varmap: &varmap, run_dir: &run_dir };
    for (session_epochs, epoch) in (so_far.epochs..cfg.epochs).enumerate() {
        if let Some(diverged) = session.epoch(epoch, &mut stepper, &mut so_far)? {
            return Ok(Some(diverged));
        }
        if opts.stop_after_epochs == Some(session_epochs + 1) && epoch + 1 < cfg.epochs {
            return Ok(None);
        }
    }
    session.finish(&stepper, &so_far).map(Some)
}

/// What the run folder says before a session trains: the run ended (its
/// recorded result), or the checkpoint to resume from, if any.
enum Previous {
    Ended(Metrics),
    Checkpoint(Option<(State, HashMap<String, Tensor>)>),
}

/// Reads the checkpoint of `run_dir` (refusing one of another config before
/// any data is loaded) and its `metrics.json`.
fn previous_run(run_dir: &Path, cfg: &ExperimentConfig, device: &Device) -> Result<Previous> {
    let previous = checkpoint::load(&run_dir.join("checkpoint"), cfg, device)?;
    let Some(m) = read_metrics(&run_dir.join("metrics.json"))? else { return Ok(Previous::Checkpoint(previous)) };
    if previous.as_ref().is_some_and(|(s, _)| s.epochs_done == cfg.epochs) {
        return Ok(Previous::Ended(m)); // finished: idempotent
    }
    // A run that diverged in its first epoch left no checkpoint, and a
    // finished run copied without its checkpoint (results committed
    // as metrics.json and config.toml, to resume a preset on another
    // machine) has none either: its config.toml says which config it was.
    let finished_elsewhere = previous.is_none() && m.status == RunStatus::Finished && m.final_epoch.is_some();
    if m.diverged().is_some() || finished_elsewhere {
        let copy = run_dir.join("config.toml");
        return match ExperimentConfig::from_file(&copy) {
            Ok(c) if c.same_run(cfg) => Ok(Previous::Ended(m)), // diverged, or finished elsewhere: idempotent too
            Ok(_) => Err(Error::CheckpointMismatch { path: copy, found: m.name }),
            // Without it nothing says which config the record is of.
            Err(e) => {
                let why = match copy.exists() {
                    true => e.to_string(),
                    false => "missing: it records which config metrics.json is of".into(),
                };
                Err(run_log::damaged(&copy, why))
            }
        };
    }
    Ok(Previous::Checkpoint(previous))
}

/// What a run has done: restored from its checkpoint, advanced by each epoch.
struct SoFar {
    epochs: usize,
    steps: u64,
    penalty_steps: u64,
    seconds: f64,
    schedule: LrSchedule,
    history: Vec<EpochRecord>,
}

impl SoFar {
    /// Nothing yet, or the state of `previous` with the variables and the
    /// optimiser restored; `log.jsonl` is rewritten to exactly the
    /// checkpointed epochs.
    fn restore(
        cfg: &ExperimentConfig,
        run_dir: &Path,
        previous: Option<(State, HashMap<String, Tensor>)>,
        varmap: &VarMap,
        stepper: &mut Stepper,
    ) -> Result<SoFar> {
        let (ckpt_dir, log_path) = (run_dir.join("checkpoint"), run_dir.join("log.jsonl"));
        let schedule = LrSchedule::new(cfg.schedule.clone(), cfg.optim.lr, cfg.epochs);
        let mut so_far = SoFar { epochs: 0, steps: 0, penalty_steps: 0, seconds: 0.0, schedule, history: Vec::new() };
        if let Some((state, tensors)) = previous {
            checkpoint::restore(varmap, &mut stepper.optimizer, &tensors, &ckpt_dir, &state)?;
            let epochs = state.epochs_done;
            let history: Vec<EpochRecord> = read_log(&log_path)?.into_iter().filter(|r| r.epoch <= epochs).collect();
            // The log must hold every checkpointed epoch, once and in order: the
            // final metrics (best epoch) are read from it.
            let logged: Vec<usize> = history.iter().map(|r| r.epoch).collect();
            if logged != (1..=epochs).collect::<Vec<_>>() {
                return Err(run_log::damaged(
                    &log_path,
                    format!("it holds epochs {logged:?}, but the checkpoint has {epochs} epochs done"),
                ));
            }
            let (steps, penalty_steps, seconds, schedule) =
                (state.steps, state.penalty_steps, state.seconds, state.schedule);
            so_far = SoFar { epochs, steps, penalty_steps, seconds, schedule, history };
        }
        rewrite_log(&log_path, &so_far.history)?; // exactly the checkpointed epochs
        Ok(so_far)
    }
}

/// One session of training a run: its config, environment, data and network.
struct Session<'a> {
    cfg: &'a ExperimentConfig,
    env: &'a Env,
    run: &'a Run,
    varmap: &'a VarMap,
    run_dir: &'a Path,
}

impl Session<'_> {
    /// The run's metrics so far, as finished after `epochs_begun` epochs.
    fn metrics(&self, so_far: &SoFar, epochs_begun: usize) -> Metrics {
        Metrics {
            name: self.cfg.name.clone(),
            method: self.cfg.regularizer.label(),
            data: self.run.description().to_string(),
            status: RunStatus::Finished,
            divergence: None,
            final_epoch: None,
            best_epoch: None,
            best_by: best_by(self.run).to_string(),
            final_trace: None,
            train_seconds: so_far.seconds,
            seconds_per_epoch: so_far.seconds / epochs_begun.max(1) as f64,
            steps: so_far.steps,
            penalty_steps: so_far.penalty_steps,
            train_eval: None,
        }
    }

    /// Trains epoch `epoch`, evaluates, logs and checkpoints it; returns the
    /// metrics of a run that diverged in it (written to `metrics.json`).
    fn epoch(&self, epoch: usize, stepper: &mut Stepper, so_far: &mut SoFar) -> Result<Option<Metrics>> {
        let (cfg, env, run) = (self.cfg, self.env, self.run);
        let lr = so_far.schedule.lr(epoch);
        let mut ctx = EpochContext {
            epoch,
            lr,
            steps: &mut so_far.steps,
            divergence: cfg.divergence,
            device: &env.device,
            progress: env.progress,
            name: &cfg.name,
            epochs: cfg.epochs,
        };
        let totals = match run {
            Run::Images { data, net } => image_epoch(&mut ctx, stepper, net.as_ref(), data, cfg.seed)?,
            Run::Text { data, lm } => text_epoch(&mut ctx, stepper, lm, data)?,
        };
        so_far.penalty_steps += totals.penalty_steps;
        so_far.seconds += totals.seconds;
        let evaluated = match totals.diverged {
            None => Some(evaluate(run, &env.device)?),
            Some(_) => None,
        };
        let diverged = totals.diverged.clone().or_else(|| {
            let (test, valid) = evaluated.as_ref()?;
            evaluation_divergence(epoch, totals.steps(), test, valid.as_ref())
        });
        if let Some(d) = diverged {
            append_divergence(&self.run_dir.join("log.jsonl"), &d)?;
            let metrics =
                Metrics { status: RunStatus::Diverged, divergence: Some(d), ..self.metrics(so_far, epoch + 1) };
            write_metrics(&self.run_dir.join("metrics.json"), &metrics)?;
            return Ok(Some(metrics));
        }
        let (test, valid) = evaluated.ok_or(Error::Internal("an epoch that neither diverged nor was evaluated"))?;
        if let (Run::Text { .. }, Some(v)) = (run, &valid) {
            so_far.schedule.observe(v.loss);
        }
        let mut rec = totals.record(epoch, lr, test, valid);
        if !cfg.monitor.is_off() {
            let m = cfg.monitor;
            let layers = monitor_layers(run, stepper.params(), (m.batches, m.probes), cfg.seed, &env.device)?;
            rec.layers = Some(layers);
        }
        self.log_and_save(rec, stepper, so_far, epoch)?;
        Ok(None)
    }

    /// Prints, logs and keeps the record of epoch `epoch`, then checkpoints it.
    fn log_and_save(&self, rec: EpochRecord, stepper: &Stepper, so_far: &mut SoFar, epoch: usize) -> Result<()> {
        if self.env.progress.shows_epochs() {
            eprintln!("{}", summary_line(&self.cfg.name, &rec));
        }
        append_log(&self.run_dir.join("log.jsonl"), &rec)?;
        so_far.history.push(rec);
        let state = State {
            config: self.cfg.clone(),
            epochs_done: epoch + 1,
            steps: so_far.steps,
            penalty_steps: so_far.penalty_steps,
            schedule: so_far.schedule.clone(),
            seconds: so_far.seconds,
            tensors: format!("ckpt-{:04}.safetensors", epoch + 1),
            tensors_sha256: None, // set by save
        };
        let tensors = checkpoint::tensors_of(self.varmap, &stepper.optimizer)?;
        checkpoint::save(&self.run_dir.join("checkpoint"), &tensors, &state)
    }

    /// The final measurements and `metrics.json` of a finished run.
    fn finish(&self, stepper: &Stepper, so_far: &SoFar) -> Result<Metrics> {
        let (cfg, env, run) = (self.cfg, self.env, self.run);
        let final_trace = match cfg.final_trace {
            t if t.batches > 0 && t.probes > 0 => {
                Some(measure(run, stepper.params(), (t.batches, t.probes), cfg.seed, &env.device)?)
            }
            _ => None,
        };
        let train_eval = match run {
            Run::Images { data, net } => Some(eval_images(net.as_ref(), &data.train, &env.device)?),
            Run::Text { .. } => None,
        };
        let history = &so_far.history;
        let final_epoch = history.last().cloned().ok_or(Error::Internal("a finished run without an epoch"))?;
        let best_epoch = best_epoch(run, history, &final_epoch);
        let metrics = Metrics {
            final_epoch: Some(final_epoch),
            best_epoch: Some(best_epoch),
            final_trace,
            train_eval,
            ..self.metrics(so_far, cfg.epochs)
        };
        write_metrics(&self.run_dir.join("metrics.json"), &metrics)?;
        Ok(metrics)
    }
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
