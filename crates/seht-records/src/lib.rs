//! The records a `seht train` run writes, as plain serde types: one line of
//! `log.jsonl` per epoch ([`EpochRecord`]; a run that diverged ends it with
//! one [`LogLine::Diverged`] line), the run's `metrics.json` ([`Metrics`],
//! with its [`RunStatus`]), and the machine-readable progress lines of
//! `seht train --progress lines` ([`ProgressEvent`]).
//!
//! No tensors, no candle: the orchestration (`cargo xtask`) reads these
//! without compiling the training engine, and `seht-train` re-exports them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Evaluation metrics on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalMetrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy (images).
    pub top1: Option<f64>,
    /// Top-5 accuracy (images).
    pub top5: Option<f64>,
    /// Perplexity `exp(loss)` (text).
    pub perplexity: Option<f64>,
}

/// One line of `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss (without the penalty).
    pub train_loss: f64,
    /// Training top-1 accuracy on the (augmented) batches, images only.
    pub train_top1: Option<f64>,
    /// Validation metrics, when a validation split exists.
    pub valid: Option<EvalMetrics>,
    /// Test metrics.
    pub test: EvalMetrics,
    /// Mean trace estimate of the steps that applied the penalty.
    pub trace_mean: Option<f64>,
    /// Steps of this epoch that applied the penalty.
    pub penalty_steps: u64,
    /// Steps of this epoch.
    pub steps: u64,
    /// Wall time of the epoch's training steps (s).
    pub train_seconds: f64,
    /// Wall time per training step (s).
    pub seconds_per_step: f64,
    /// Per-layer weight norms and training-mode Hessian block traces after
    /// this epoch, when the config's `[monitor]` asks for them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<LayerRecord>>,
}

/// One weight tensor's state after an epoch (`[monitor]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The parameter's name (e.g. `layer1.0.conv1.weight`).
    pub name: String,
    /// `‖w_l‖`, the Frobenius norm of the weights.
    pub weight_norm: f64,
    /// `tr(H_ll)`, the diagonal block's trace of the training-mode Hessian
    /// (the one the penalty sees): joint Hutchinson probes, mean over probes
    /// and batches.
    pub trace: f64,
    /// Standard error of `trace` (`None` for one sample).
    pub trace_std_error: Option<f64>,
}

/// The curvature of a model, measured on training batches in evaluation
/// mode: the Hessian trace, the Gauss–Newton trace and a scale-invariant
/// trace, each a mean over probes (or label draws) and batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    /// `tr(H)` over the weights: mean of the Hutchinson (Rademacher) samples.
    pub mean: f64,
    /// Standard error over probes and batches.
    pub std_error: f64,
    /// Batches used.
    pub batches: usize,
    /// Probes per batch (and label draws per batch for `tr(G)`).
    pub probes: usize,
    /// `tr(G)` over the weights, `G` the generalised Gauss–Newton matrix of
    /// the cross-entropy, from labels sampled from the model
    /// (`seht_candle::gauss_newton`); absent in records written before it
    /// was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gauss_newton: Option<Measured>,
    /// `tr(D H D) = Σ_l ‖w_l‖² tr(H_ll)`, `D` block-diagonal with the
    /// weight norm of each layer `l` on its block: unchanged when a layer's
    /// weights are rescaled by `c` while the loss is not (a layer before
    /// BatchNorm, where `H_ll(c·w) = H_ll(w)/c²`); Kwon et al. 2021 (ASAM)
    /// and Tsuzuku et al. 2020 normalise sharpness by the same per-layer
    /// scale. Absent in records written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_invariant: Option<Measured>,
    /// `tr(H)` over the weights in training mode (BatchNorm on the batch's
    /// statistics, the Hessian the paper's penalty sees), on the same
    /// batches, with the same number of probes; the running statistics are
    /// restored after it. Absent in records written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_mode: Option<Measured>,
}

/// A mean and its standard error.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    /// Mean of the samples.
    pub mean: f64,
    /// Standard error of the mean (`None` for one sample).
    pub std_error: Option<f64>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every epoch ran (what a `metrics.json` without a status means: those
    /// were written before divergence was recorded).
    #[default]
    Finished,
    /// Training stopped at a non-finite loss or an objective beyond the
    /// config's bound ([`Divergence`]); the run has no final model.
    Diverged,
}

/// Where and why a run diverged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Divergence {
    /// Epoch (1-based).
    pub epoch: usize,
    /// Step within the epoch (1-based) whose loss or objective tripped.
    pub step: u64,
    /// What tripped, with the value: `non-finite loss NaN`, `objective
    /// -3.2e4 beyond the bound 1e2 (divergence.max_abs_objective)`, ….
    pub cause: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "epoch {}, step {}: {}", self.epoch, self.step, self.cause)
    }
}

/// `metrics.json`: how the run ended, the final and the best epoch, with
/// what they mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Run name.
    pub name: String,
    /// The method, as a label.
    pub method: String,
    /// What data were used.
    pub data: String,
    /// `finished` or `diverged` (absent in older files: finished).
    #[serde(default)]
    pub status: RunStatus,
    /// Where and why the run diverged; present exactly when `status` is
    /// `diverged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<Divergence>,
    /// The last epoch; `None` when the run diverged (the epochs it
    /// completed are in `log.jsonl`, and are no result).
    pub final_epoch: Option<EpochRecord>,
    /// The best epoch; `None` when the run diverged.
    pub best_epoch: Option<EpochRecord>,
    /// How "best" was chosen.
    pub best_by: String,
    /// Hessian trace of the final model, if measured (never for a diverged run).
    pub final_trace: Option<TraceReport>,
    /// Training seconds over all epochs (excluding evaluation); for a
    /// diverged run, up to the divergence.
    pub train_seconds: f64,
    /// Mean training seconds per epoch (for a diverged run, per epoch begun).
    pub seconds_per_epoch: f64,
    /// Optimiser steps (for a diverged run, including the one that tripped).
    pub steps: u64,
    /// Steps that applied the penalty.
    pub penalty_steps: u64,
    /// The final model in evaluation mode on the whole training set it was
    /// trained on (images: without augmentation or the validation split),
    /// measured after the last epoch: whether the training data were fitted.
    /// Absent for text and in records written before it was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_eval: Option<EvalMetrics>,
}

/// The exit code of `seht train` for a run that diverged (its
/// `metrics.json` records where and why); 0 is a finished run, 1 an error,
/// 2 a usage error.
pub const DIVERGED_EXIT_CODE: u8 = 3;

/// One line of `log.jsonl`: an epoch, or, as the last line of a run that
/// diverged, `{"diverged": {"epoch": …, "step": …, "cause": …}}`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLine {
    /// A completed epoch.
    Epoch(EpochRecord),
    /// The run diverged here and stopped.
    Diverged(Divergence),
}

/// The JSON form of [`LogLine::Diverged`].
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DivergedLine {
    diverged: Divergence,
}

impl LogLine {
    /// Parses one line; the error is that of an [`EpochRecord`] when the line
    /// is neither (every older log holds only epochs).
    ///
    /// # Errors
    /// The parser's, when the line is not a log line.
    pub fn parse(line: &str) -> Result<LogLine, serde_json::Error> {
        if let Ok(d) = serde_json::from_str::<DivergedLine>(line) {
            return Ok(LogLine::Diverged(d.diverged));
        }
        serde_json::from_str(line).map(LogLine::Epoch)
    }

    /// The line, without newline.
    ///
    /// # Errors
    /// The writer's (a record of plain numbers and strings serialises).
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            LogLine::Epoch(r) => serde_json::to_string(r),
            LogLine::Diverged(d) => serde_json::to_string(&DivergedLine { diverged: d.clone() }),
        }
    }
}

/// File name of a run's final metrics inside its run folder.
pub const METRICS_FILE: &str = "metrics.json";
/// File name of a run's per-epoch log inside its run folder.
pub const LOG_FILE: &str = "log.jsonl";

/// Errors of reading run records: each names the file (and line) at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file (or one line of it) is not the expected record.
    #[error("{}{}: {source}", path.display(), line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line, for `log.jsonl`.
        line: Option<usize>,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl Metrics {
    /// Parses the contents of a `metrics.json`, checking that `status` and
    /// `divergence` agree.
    ///
    /// # Errors
    /// The parser's, or a custom one when they disagree.
    pub fn from_json(bytes: &[u8]) -> Result<Metrics, serde_json::Error> {
        let m: Metrics = serde_json::from_slice(bytes)?;
        let complete = match m.status {
            RunStatus::Finished => m.divergence.is_none() && m.final_epoch.is_some() && m.best_epoch.is_some(),
            RunStatus::Diverged => m.divergence.is_some(),
        };
        if !complete {
            return Err(<serde_json::Error as serde::de::Error>::custom(format!(
                "status `{:?}` does not fit the record (a diverged run has `divergence`; a finished one has none, and has `final_epoch` and `best_epoch`)",
                m.status
            )));
        }
        Ok(m)
    }

    /// Reads `metrics.json` of the run folder `run_dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Parse`] when it
    /// is not a [`Metrics`] record.
    pub fn read(run_dir: &Path) -> Result<Metrics, Error> {
        let path = run_dir.join(METRICS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        Metrics::from_json(&bytes).map_err(|source| Error::Parse { path, line: None, source })
    }

    /// Where and why the run diverged, when it did.
    pub fn diverged(&self) -> Option<&Divergence> {
        self.divergence.as_ref().filter(|_| self.status == RunStatus::Diverged)
    }
}

/// Reads every line of `log.jsonl` in the run folder `run_dir` (blank lines
/// are skipped): one [`LogLine::Epoch`] per completed epoch, then one
/// [`LogLine::Diverged`] when the run diverged.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Parse`] naming the
/// first line that is not a [`LogLine`].
pub fn read_log_lines(run_dir: &Path) -> Result<Vec<LogLine>, Error> {
    let path = run_dir.join(LOG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            LogLine::parse(l).map_err(|source| Error::Parse { path: path.clone(), line: Some(i + 1), source })
        })
        .collect()
}

/// The completed epochs of `log.jsonl` in the run folder `run_dir` (one
/// [`EpochRecord`] each; a divergence line is left out: see
/// [`read_log_lines`]).
///
/// # Errors
/// As [`read_log_lines`].
pub fn read_log(run_dir: &Path) -> Result<Vec<EpochRecord>, Error> {
    Ok(read_log_lines(run_dir)?
        .into_iter()
        .filter_map(|l| match l {
            LogLine::Epoch(r) => Some(r),
            LogLine::Diverged(_) => None,
        })
        .collect())
}

/// Where a run is, as `seht train --progress lines` reports it on standard
/// error: one line [`PROGRESS_PREFIX`]` {json}` at most a few times a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressEvent {
    /// Current epoch (1-based).
    pub epoch: usize,
    /// Epochs of the run.
    pub epochs: usize,
    /// Training steps of this epoch done so far.
    pub step: u64,
    /// Training steps of this epoch.
    pub steps: u64,
}

/// The marker that starts a progress line.
pub const PROGRESS_PREFIX: &str = "@seht-progress";

impl ProgressEvent {
    /// The line (without newline) that reports this event.
    pub fn to_line(&self) -> String {
        // Serialising four integers cannot fail.
        format!("{PROGRESS_PREFIX} {}", serde_json::to_string(self).unwrap_or_default())
    }

    /// The event a line reports, or `None` when the line is not a progress
    /// line (any other output of the run).
    pub fn parse_line(line: &str) -> Option<ProgressEvent> {
        serde_json::from_str(line.strip_prefix(PROGRESS_PREFIX)?.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_round_trip_and_other_lines_are_not_events() {
        let e = ProgressEvent { epoch: 2, epochs: 5, step: 17, steps: 63 };
        assert_eq!(ProgressEvent::parse_line(&e.to_line()), Some(e));
        assert_eq!(ProgressEvent::parse_line("table1-baseline epoch 2: train loss 0.5"), None);
        assert_eq!(ProgressEvent::parse_line("@seht-progress {\"epoch\": 1}"), None);
    }

    #[test]
    fn a_bad_log_line_is_named() {
        let dir = std::env::temp_dir().join(format!("seht-records-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join(LOG_FILE), "\n{\"epoch\": 1}\n").expect("write");
        let e = read_log(&dir).expect_err("not an EpochRecord");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(e, Error::Parse { line: Some(2), .. }), "{e}");
        assert!(e.to_string().contains("log.jsonl line 2"), "{e}");
    }

    fn epoch(n: usize) -> EpochRecord {
        let test = EvalMetrics { loss: 1.5, top1: Some(0.4), top5: Some(0.9), perplexity: None };
        EpochRecord {
            epoch: n,
            lr: 0.1,
            train_loss: 1.2,
            train_top1: Some(0.5),
            valid: None,
            test,
            trace_mean: Some(3.0),
            penalty_steps: 2,
            steps: 2,
            train_seconds: 1.0,
            seconds_per_step: 0.5,
            layers: None,
        }
    }

    fn finished() -> Metrics {
        Metrics {
            name: "r".into(),
            method: "baseline".into(),
            data: "fixture".into(),
            status: RunStatus::Finished,
            divergence: None,
            final_epoch: Some(epoch(2)),
            best_epoch: Some(epoch(1)),
            best_by: "highest test top-1".into(),
            final_trace: None,
            train_seconds: 2.0,
            seconds_per_epoch: 1.0,
            steps: 4,
            penalty_steps: 4,
            train_eval: None,
        }
    }

    #[test]
    fn a_metrics_file_without_a_status_is_a_finished_run() {
        let mut old: serde_json::Value = serde_json::to_value(finished()).expect("json");
        let fields = old.as_object_mut().expect("object");
        fields.remove("status");
        assert!(!fields.contains_key("divergence"), "a finished run writes no divergence");
        let m = Metrics::from_json(&serde_json::to_vec(&old).expect("bytes")).expect("an older metrics.json loads");
        assert_eq!((m.status, m.diverged()), (RunStatus::Finished, None));
        assert_eq!(m, finished());
    }

    #[test]
    fn a_diverged_run_round_trips_and_a_contradictory_status_is_refused() {
        let d = Divergence { epoch: 2, step: 3, cause: "non-finite loss NaN".into() };
        let m = Metrics {
            status: RunStatus::Diverged,
            divergence: Some(d.clone()),
            final_epoch: None,
            best_epoch: None,
            ..finished()
        };
        let json = serde_json::to_vec(&m).expect("json");
        let v: serde_json::Value = serde_json::from_slice(&json).expect("value");
        assert_eq!(v["status"], "diverged");
        assert_eq!(v["divergence"]["cause"], "non-finite loss NaN");
        let back = Metrics::from_json(&json).expect("reads back");
        assert_eq!(back.diverged(), Some(&d));
        assert_eq!(d.to_string(), "epoch 2, step 3: non-finite loss NaN");
        for bad in [Metrics { status: RunStatus::Finished, ..m.clone() }, Metrics { divergence: None, ..m }] {
            let e = Metrics::from_json(&serde_json::to_vec(&bad).expect("json")).expect_err("contradictory");
            assert!(e.to_string().contains("does not fit"), "{e}");
        }
    }

    #[test]
    fn a_log_ending_in_a_divergence_reads_with_its_epochs() {
        let dir = std::env::temp_dir().join(format!("seht-records-div-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let d = Divergence { epoch: 2, step: 1, cause: "objective -3e4 beyond the bound 1e2".into() };
        let lines = [LogLine::Epoch(epoch(1)), LogLine::Diverged(d)];
        let text: Vec<String> = lines.iter().map(|l| l.to_json().expect("json")).collect();
        std::fs::write(dir.join(LOG_FILE), text.join("\n") + "\n").expect("write");
        let read = read_log_lines(&dir).expect("log");
        let epochs = read_log(&dir).expect("epochs");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(read, lines);
        assert_eq!(epochs, vec![epoch(1)]);
        assert!(text[1].starts_with("{\"diverged\":{"), "{}", text[1]);
    }
}
