//! The records a `seht train` run writes, as plain serde types: one line of
//! `log.jsonl` per epoch ([`EpochRecord`]), the run's `metrics.json`
//! ([`Metrics`]), and the machine-readable progress lines of
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
}

/// The Hessian trace of a model, measured on training batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceReport {
    /// Mean of the SEHT-H samples.
    pub mean: f64,
    /// Standard error over probes and batches.
    pub std_error: f64,
    /// Batches used.
    pub batches: usize,
    /// Probes per batch.
    pub probes: usize,
}

/// `metrics.json`: the final and the best epoch, with what they mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Run name.
    pub name: String,
    /// The method, as a label.
    pub method: String,
    /// What data were used.
    pub data: String,
    /// The last epoch.
    pub final_epoch: EpochRecord,
    /// The best epoch.
    pub best_epoch: EpochRecord,
    /// How "best" was chosen.
    pub best_by: String,
    /// Hessian trace of the final model, if measured.
    pub final_trace: Option<TraceReport>,
    /// Training seconds over all epochs (excluding evaluation).
    pub train_seconds: f64,
    /// Mean training seconds per epoch.
    pub seconds_per_epoch: f64,
    /// Optimiser steps.
    pub steps: u64,
    /// Steps that applied the penalty.
    pub penalty_steps: u64,
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
    /// Reads `metrics.json` of the run folder `run_dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Parse`] when it
    /// is not a [`Metrics`] record.
    pub fn read(run_dir: &Path) -> Result<Metrics, Error> {
        let path = run_dir.join(METRICS_FILE);
        let bytes = std::fs::read(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Parse { path, line: None, source })
    }
}

/// Reads every line of `log.jsonl` in the run folder `run_dir` (one
/// [`EpochRecord`] per finished epoch; blank lines are skipped).
///
/// # Errors
/// [`Error::Io`] when the file cannot be read, [`Error::Parse`] naming the
/// first line that is not an [`EpochRecord`].
pub fn read_log(run_dir: &Path) -> Result<Vec<EpochRecord>, Error> {
    let path = run_dir.join(LOG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Io { path: path.clone(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|source| Error::Parse { path: path.clone(), line: Some(i + 1), source })
        })
        .collect()
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
}
