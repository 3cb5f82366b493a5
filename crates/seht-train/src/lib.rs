//! The training engine of `seht`: a typed experiment config (TOML), the
//! training loop for image classification and word-level language modelling,
//! every regularizer of the paper's tables (one enum, each variant its own
//! validated parameters), SGD with momentum, schedules, metrics, run folders
//! with JSON-lines logs, atomic checkpoints and exact resumption.

pub mod checkpoint;
pub mod config;
mod data;
mod error;
pub mod losses;
pub mod optim;
mod progress;
pub mod schedule;
mod train;

pub use config::ExperimentConfig;
pub use error::{Error, Result};
pub use progress::Progress;
pub use train::{EpochRecord, EvalMetrics, Metrics, TraceReport, TrainOptions, step_seed, trace_of_run, train};
