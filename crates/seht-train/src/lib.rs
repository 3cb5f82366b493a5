//! The training engine of `seht`: a typed experiment config (TOML), the
//! training loop for image classification and word-level language modelling,
//! every regularizer of the paper's tables (one enum, each variant its own
//! validated parameters), SGD with momentum, schedules, metrics, run folders
//! with JSON-lines logs, atomic checkpoints and exact resumption.

pub mod analyze;
pub mod checkpoint;
mod data;
mod env;
mod epoch;
mod error;
pub mod estimators;
mod eval;
pub mod losses;
mod net;
pub mod optim;
mod progress;
pub mod records;
mod roles;
pub mod run_lock;
mod run_log;
pub mod sam;
pub mod schedule;
mod step;
mod trace;
mod train;

pub use env::Env;
pub use error::{Error, Result};
pub use eval::EVAL_BATCH_SIZE;
pub use progress::Progress;
pub use records::{Divergence, EpochRecord, EvalMetrics, Metrics, RunStatus, TraceReport};
/// The experiment config (the `seht-config` crate, candle-free).
pub use seht_config as config;
pub use seht_config::ExperimentConfig;
pub use trace::{RunCurvature, TRACE_BATCH_SIZE, TRACE_INDEX, TraceChoice, curvature_of_run, trace_of_run};
pub use train::{TrainOptions, step_seed, train};
