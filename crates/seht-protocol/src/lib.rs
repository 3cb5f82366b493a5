//! The experiment protocol of `cargo xtask reproduce`, without candle: what
//! decides what a result means, unit-tested without running a model.
//!
//! | module | holds |
//! | --- | --- |
//! | [`preset`] | presets (`configs/presets.toml`), the run matrix, data substitution rules |
//! | [`selection`] | λ (ρ, ε) selection on validation: typed, it changes an [`seht_config::ExperimentConfig`] |
//! | [`report`] | the outputs of a reproduction: findings, the paper's tables beside ours, `check-results` |
//! | [`report::paired`] | differences to the baseline paired by seed, t intervals, Holm's correction |
//! | [`cost`] | the SEHT-D cost model and the statistics of paired timings |
//! | [`peer`] | what `cargo xtask bench-peer` measures and its table |
//! | [`paper`] | the paper's reported numbers |
//!
//! xtask orchestrates (spawns `seht`, jobs, threads, Slurm, the progress
//! board, figures); every decision about the runs is made here.

mod error;

pub mod cost;
pub mod paper;
pub mod peer;
pub mod preset;
pub mod report;
pub mod selection;

pub use error::{Context, Error, Result};

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same folder and
/// a rename, so that a reader (another `reproduce` of a job array, a user)
/// never sees a half-written file.
///
/// # Errors
/// [`Error::Context`] naming the file when it cannot be written or renamed.
pub fn write_atomic(path: impl AsRef<Path>, bytes: impl AsRef<[u8]>) -> Result<()> {
    let path = path.as_ref();
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes.as_ref()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
