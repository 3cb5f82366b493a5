//! The run records written to `log.jsonl` and `metrics.json`.

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
