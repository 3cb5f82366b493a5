//! Checkpoints written atomically: tensors to `ckpt-<epoch>.safetensors`
//! (through a temporary file and a rename), then `state.json` (likewise),
//! which is the commit point. A kill at any moment leaves `state.json`
//! naming a complete file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use candle_nn::VarMap;

use crate::config::ExperimentConfig;
use crate::error::{Error, Result, io, json};
use crate::optim::Sgd;
use crate::schedule::LrSchedule;

/// What a run has done so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// The config the run was started with.
    pub config: ExperimentConfig,
    /// Epochs finished.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub steps: u64,
    /// Steps that applied the Hessian penalty.
    pub penalty_steps: u64,
    /// Schedule state.
    pub schedule: LrSchedule,
    /// Training seconds spent so far (over all sessions).
    pub seconds: f64,
    /// The tensor file of this checkpoint.
    pub tensors: String,
}

/// Writes `bytes` to `path` through `path.tmp` and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Saves `tensors` and `state` into `dir`, then removes older tensor files.
pub fn save(dir: &Path, tensors: &HashMap<String, Tensor>, state: &State) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let file = dir.join(&state.tensors);
    let tmp = file.with_extension("tmp");
    candle_core::safetensors::save(tensors, &tmp)?;
    std::fs::rename(&tmp, &file).map_err(io(&file))?;
    let json = serde_json::to_vec_pretty(state).map_err(json(dir.join("state.json")))?;
    write_atomic(&dir.join("state.json"), &json)?;
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("ckpt-") && name != state.tensors {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Loads the checkpoint in `dir`, if any, checking it belongs to `cfg`. A
/// `state.json` or tensor file that does not read back (truncated, garbled,
/// missing) is [`Error::CheckpointDamaged`], naming the file.
pub fn load(dir: &Path, cfg: &ExperimentConfig, device: &Device) -> Result<Option<(State, HashMap<String, Tensor>)>> {
    let state_path: PathBuf = dir.join("state.json");
    let bytes = match std::fs::read(&state_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: state_path, source }),
    };
    let state: State = serde_json::from_slice(&bytes).map_err(|e| damaged(dir, &state_path, e))?;
    if !state.config.same_run(cfg) {
        return Err(Error::CheckpointMismatch { path: state_path, found: state.config.name.clone() });
    }
    let file = dir.join(&state.tensors);
    let tensors = candle_core::safetensors::load(&file, device).map_err(|e| damaged(dir, &file, e))?;
    Ok(Some((state, tensors)))
}

/// A checkpoint file of `dir` that cannot be read back, and the way out.
fn damaged(dir: &Path, path: &Path, cause: impl std::fmt::Display) -> Error {
    Error::CheckpointDamaged {
        path: path.to_path_buf(),
        run_dir: dir.parent().unwrap_or(dir).to_path_buf(),
        message: cause.to_string(),
    }
}

/// The tensors a checkpoint stores: every variable (`model.<name>`) and
/// the momentum buffers (`momentum.<i>`).
pub(crate) fn tensors_of(varmap: &VarMap, sgd: &Sgd) -> HashMap<String, Tensor> {
    let mut out: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (format!("model.{k}"), v.as_tensor().detach()))
        .collect();
    for (i, b) in sgd.buffers().iter().enumerate() {
        if let Some(b) = b {
            out.insert(format!("momentum.{i}"), b.detach());
        }
    }
    out
}

/// Sets the variables and the momentum buffers from a checkpoint's tensors.
pub(crate) fn restore(
    varmap: &VarMap,
    sgd: &mut Sgd,
    n_trainable: usize,
    tensors: &HashMap<String, Tensor>,
    path: &Path,
) -> Result<()> {
    for (name, var) in varmap.data().lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let t = tensors.get(&format!("model.{name}")).ok_or_else(|| Error::CheckpointMismatch {
            path: path.to_path_buf(),
            found: format!("a checkpoint without variable {name}"),
        })?;
        var.set(t)?;
    }
    sgd.set_buffers((0..n_trainable).map(|i| tensors.get(&format!("momentum.{i}")).cloned()).collect());
    Ok(())
}
