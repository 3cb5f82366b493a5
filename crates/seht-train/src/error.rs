//! The crate's error type.

use std::path::PathBuf;

/// Errors of configuring and running training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A config that cannot be read, or a value in it (or one the data
    /// refuses, e.g. a crop larger than the images) that is invalid: the
    /// config crate's error, naming the file and the dotted field.
    #[error(transparent)]
    Config(#[from] seht_config::Error),
    /// A command-line option of an analysis is invalid for this model or data.
    #[error("option {option} = {value}: {reason}")]
    InvalidOption {
        /// The option (e.g. `--batches`).
        option: &'static str,
        /// The value.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A tensor file does not fit the model its config builds.
    #[error("{path}: {message}")]
    TensorMismatch {
        /// The file.
        path: PathBuf,
        /// What does not fit (naming the variable).
        message: String,
    },
    /// A checkpoint, or the config of a run that diverged before its first
    /// checkpoint, belongs to another config.
    #[error("{path}: written by another config (run `{found}`); use another --out or remove the run folder")]
    CheckpointMismatch {
        /// The checkpoint's state file (or the run folder's `config.toml`).
        path: PathBuf,
        /// What the checkpoint recorded.
        found: String,
    },
    /// A checkpoint file (`state.json` or the tensor file it names) that
    /// cannot be read back: truncated, garbled, missing.
    #[error(
        "{path}: damaged checkpoint ({message}); delete the run folder {run_dir} to start over, or restore the file from a copy"
    )]
    CheckpointDamaged {
        /// The damaged file.
        path: PathBuf,
        /// The run folder it belongs to.
        run_dir: PathBuf,
        /// What is wrong with it (the reader's message).
        message: String,
    },
    /// A run record (`metrics.json`, `log.jsonl`) that cannot be read back
    /// (truncated, garbled, of another shape), or that contradicts the
    /// checkpoint beside it. Our writes never leave one so (`metrics.json`
    /// is written atomically, `log.jsonl` rewritten atomically on resume):
    /// something else changed it.
    #[error(
        "{path}: damaged run record ({message}); restore the file from a copy (e.g. `git checkout -- {path}`), or delete the run folder {run_dir} to train the run again"
    )]
    RunFileDamaged {
        /// The damaged file.
        path: PathBuf,
        /// The run folder it belongs to.
        run_dir: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Another process is writing the run folder (it holds `<dir>/.lock`).
    #[error(
        "{dir}: this run folder is being written by {holder}, which holds its lock {dir}/.lock; wait for that process to end (or stop it), or, if it is gone, run again: the lock of a process that ended is released by the OS and taken over"
    )]
    RunLocked {
        /// The run folder.
        dir: PathBuf,
        /// Who holds the lock, as the lock file says.
        holder: crate::run_lock::Holder,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (`state.json`, `log.jsonl`, `metrics.json`) could not be
    /// read or written as JSON.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's or writer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A fault of this crate (a broken internal invariant), not of the input.
    #[error("internal error: {0}")]
    Internal(&'static str),
    /// From candle.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// From the estimators.
    #[error(transparent)]
    Estimator(#[from] seht_estimator::Error),
    /// From seht-candle.
    #[error(transparent)]
    Seht(#[from] seht_candle::Error),
    /// From the models.
    #[error(transparent)]
    Model(#[from] seht_models::Error),
    /// From the data loaders.
    #[error(transparent)]
    Data(#[from] seht_data::Error),
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

pub(crate) fn config(field: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Config(seht_config::config(field, value, reason))
}

pub(crate) fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> Error {
    let path = path.into();
    move |source| Error::Json { path, source }
}
