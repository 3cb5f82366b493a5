//! Run records made up for tests (of this crate and of xtask's figures):
//! one epoch, and a finished run with a given test and validation top-1.

use seht_records::{EpochRecord, EvalMetrics, Measured, Metrics, RunStatus, TraceReport};

/// An epoch record with test top-1 `top1` and, when given, validation top-1.
pub fn epoch(top1: f64, valid_top1: Option<f64>) -> EpochRecord {
    let eval = |a: f64| EvalMetrics { loss: 1.0, top1: Some(a), top5: Some(0.99), perplexity: None };
    EpochRecord {
        epoch: 2,
        lr: 0.1,
        train_loss: 0.9,
        train_top1: Some(0.7),
        valid: valid_top1.map(eval),
        test: eval(top1),
        trace_mean: None,
        penalty_steps: 0,
        steps: 10,
        train_seconds: 4.0,
        seconds_per_step: 0.4,
        layers: None,
    }
}

/// A finished run with test top-1 `top1` (and validation top-1, for the λ grid).
pub fn finished(name: &str, top1: f64, valid: Option<f64>) -> Metrics {
    Metrics {
        name: name.into(),
        method: "m".into(),
        data: "fixture".into(),
        status: RunStatus::Finished,
        divergence: None,
        final_epoch: Some(epoch(top1, valid)),
        best_epoch: Some(epoch(top1, valid)),
        best_by: "highest test top-1".into(),
        final_trace: Some(TraceReport {
            mean: 100.0 * top1,
            std_error: 1.0,
            batches: 1,
            probes: 1,
            gauss_newton: Some(Measured { mean: top1, std_error: None }),
            scale_invariant: None,
            train_mode: None,
        }),
        train_seconds: 8.0,
        seconds_per_epoch: 4.0,
        steps: 20,
        penalty_steps: 0,
        train_eval: None,
    }
}
