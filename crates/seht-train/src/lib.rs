//! The training engine of `seht`: a typed experiment config (TOML), the
//! training loop for image classification and word-level language modelling,
//! every regularizer of the paper's tables (one enum, each variant its own
//! validated parameters), SGD with momentum, schedules, metrics, run folders
//! with JSON-lines logs, atomic checkpoints and exact resumption.

pub mod analyze;
mod analyze_plot;
pub mod checkpoint;
pub mod config;
mod data;
mod error;
pub mod losses;
pub mod optim;
pub mod schedule;
mod train;

pub use config::ExperimentConfig;
pub use error::{Error, Result};
pub use train::{EpochRecord, EvalMetrics, Metrics, TraceReport, TrainOptions, step_seed, trace_of_run, train};
