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
use crate::optim::Optimizer;
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
    /// The SHA-256 of the tensor file, checked when it is loaded: a
    /// safetensors file has no checksum of its own, and a changed byte in
    /// its data would resume from other weights without a word. Absent in
    /// checkpoints written before it was recorded (not checked then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tensors_sha256: Option<String>,
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
    let written = std::fs::read(&tmp).map_err(io(&tmp))?;
    let state = State { tensors_sha256: Some(seht_data::checksums::sha256_bytes(&written)), ..state.clone() };
    std::fs::rename(&tmp, &file).map_err(io(&file))?;
    let json = serde_json::to_vec_pretty(&state).map_err(json(dir.join("state.json")))?;
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
    if state.epochs_done == 0 || state.epochs_done > cfg.epochs {
        let why = format!("epochs_done = {} is outside 1..={} (the config's epochs)", state.epochs_done, cfg.epochs);
        return Err(damaged(dir, &state_path, why));
    }
    if state.tensors.contains(['/', '\\']) || !state.tensors.ends_with(".safetensors") {
        let why = format!("tensors = {:?} is not a tensor file of this folder", state.tensors);
        return Err(damaged(dir, &state_path, why));
    }
    let file = dir.join(&state.tensors);
    let bytes = std::fs::read(&file).map_err(|e| damaged(dir, &file, e))?;
    if let Some(expected) = &state.tensors_sha256 {
        let actual = seht_data::checksums::sha256_bytes(&bytes);
        if &actual != expected {
            let why = format!("SHA-256 {actual} differs from {expected}, recorded in state.json when it was written");
            return Err(damaged(dir, &file, why));
        }
    }
    let tensors = candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| damaged(dir, &file, e))?;
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
/// the optimiser's state ([`Optimizer::state_tensors`]: SGD's momentum
/// buffers `momentum.<i>`, AdamW's moments and step counts).
pub(crate) fn tensors_of(varmap: &VarMap, optimizer: &Optimizer) -> Result<HashMap<String, Tensor>> {
    let mut out: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (format!("model.{k}"), v.as_tensor().detach()))
        .collect();
    out.extend(optimizer.state_tensors()?);
    Ok(out)
}

/// Sets the variables and the optimiser's state from the tensors of the
/// checkpoint `state` in `dir`; a tensor missing, or of another shape or
/// dtype than its variable, is [`Error::CheckpointDamaged`] naming it.
pub(crate) fn restore(
    varmap: &VarMap,
    optimizer: &mut Optimizer,
    tensors: &HashMap<String, Tensor>,
    dir: &Path,
    state: &State,
) -> Result<()> {
    let file = dir.join(&state.tensors);
    let fits = |key: &str, t: &Tensor, like: &Tensor| -> Result<()> {
        if t.shape() != like.shape() || t.dtype() != like.dtype() {
            let why = format!(
                "tensor {key} is {:?} {:?}, the config's model needs {:?} {:?}",
                t.dtype(),
                t.dims(),
                like.dtype(),
                like.dims()
            );
            return Err(damaged(dir, &file, why));
        }
        Ok(())
    };
    for (name, var) in varmap.data().lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let key = format!("model.{name}");
        let t = tensors.get(&key).ok_or_else(|| damaged(dir, &file, format!("no tensor {key}")))?;
        fits(&key, t, var.as_tensor())?;
        var.set(t)?;
    }
    optimizer.restore_state(|key, like| {
        let t = tensors.get(key).cloned();
        if let (Some(t), Some(like)) = (&t, like) {
            fits(key, t, like)?;
        }
        Ok(t)
    })
}
