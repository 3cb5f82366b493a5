//! Where a command runs, beside its experiment config: the folder the
//! config's data paths are relative to, the device, and how progress is
//! shown. Loading data, `seht trace` and `seht analyze` take it as it is;
//! training adds where the run folder is written ([`crate::TrainOptions`]).

use std::path::PathBuf;

use candle_core::Device;

use crate::progress::Progress;

/// How a command runs (not part of any experiment's config).
#[derive(Debug, Clone)]
pub struct Env {
    /// Folder the config's data paths are relative to.
    pub data_dir: PathBuf,
    /// Device.
    pub device: Device,
    /// How progress is shown.
    pub progress: Progress,
}
