//! The model of a run folder or checkpoint, and the Hessian of its mean
//! training loss over fixed batches ([`model_hessian`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use seht_candle::{GraphMode, HessianOperator};
use seht_models::Phase;

use super::operator::MeanHessian;
use super::settings::{AnalysisSettings, ModelMode, ParamChoice};
use crate::checkpoint;
use crate::config::ExperimentConfig;
use crate::data::load_task;
use crate::env::Env;
use crate::error::{Error, Result};
use crate::net::{Batches, Run};

/// Where the model to analyse comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A run folder written by `seht train` (its `config.toml` and checkpoint).
    Run(PathBuf),
    /// A config and a safetensors file of its model's variables (named as the
    /// model names them, with or without the `model.` prefix of our checkpoints).
    Checkpoint {
        /// The experiment config (TOML) that built the model.
        config: PathBuf,
        /// The safetensors file.
        tensors: PathBuf,
    },
    /// A config's model at initialisation: the weights its seed draws
    /// (`seht_models::seeded_varbuilder`), no training.
    Initial {
        /// The experiment config (TOML).
        config: PathBuf,
    },
}

/// How to build the Hessian of a model.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Eval or train mode: always the caller's choice.
    pub mode: ModelMode,
    /// Parameters.
    pub params: ParamChoice,
    /// Training batches.
    pub batches: usize,
    /// Batch size (images; `None`: the config's).
    pub batch_size: Option<usize>,
    /// What to compute.
    pub settings: AnalysisSettings,
}

fn load_model(
    source: &ModelSource,
    device: &Device,
) -> Result<(ExperimentConfig, HashMap<String, Tensor>, PathBuf, String)> {
    match source {
        ModelSource::Run(dir) => {
            let cfg = ExperimentConfig::from_file(&dir.join("config.toml"))?;
            let ckpt_dir = dir.join("checkpoint");
            let Some((_, tensors)) = checkpoint::load(&ckpt_dir, &cfg, device)? else {
                return Err(Error::Io {
                    path: ckpt_dir.join("state.json"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no checkpoint in this run folder: train the run first (`seht train --config <its config.toml>`), or copy its checkpoint/ folder with it",
                    ),
                });
            };
            Ok((cfg, tensors, ckpt_dir, dir.display().to_string()))
        }
        ModelSource::Checkpoint { config: c, tensors: t } => {
            let cfg = ExperimentConfig::from_file(c)?;
            if !t.is_file() {
                return Err(Error::Io {
                    path: t.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such safetensors file"),
                });
            }
            let tensors = candle_core::safetensors::load(t, device).map_err(|e| Error::TensorMismatch {
                path: t.clone(),
                message: format!("not a readable safetensors file ({e}); give the tensor file of a checkpoint"),
            })?;
            Ok((cfg, tensors, t.clone(), t.display().to_string()))
        }
        ModelSource::Initial { config } => {
            let cfg = ExperimentConfig::from_file(config)?;
            Ok((cfg, HashMap::new(), config.clone(), format!("{} at initialisation", config.display())))
        }
    }
}

/// Sets every variable of `varmap` from `tensors` (`model.<name>` or `<name>`),
/// checking shapes; the error names the file and the variable.
fn set_variables(varmap: &VarMap, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    for (name, var) in varmap.data().lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let t = tensors.get(&format!("model.{name}")).or_else(|| tensors.get(name)).ok_or_else(|| {
            Error::TensorMismatch {
                path: path.to_path_buf(),
                message: format!("no tensor for variable {name} (as `model.{name}` or `{name}`) of the config's model"),
            }
        })?;
        if t.shape() != var.shape() {
            return Err(Error::TensorMismatch {
                path: path.to_path_buf(),
                message: format!("variable {name} has shape {:?}, the config's model {:?}", t.shape(), var.shape()),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// One `(logits, loss)` per batch, as the mode asks (text: logits flattened
/// to one row per token), and the batch size.
fn batch_losses(run: &Run, aopts: &AnalyzeOptions, device: &Device) -> Result<(Vec<(Tensor, Tensor)>, usize)> {
    let phase = |b: usize| match aopts.mode {
        ModelMode::Eval => Phase::Eval,
        ModelMode::Train => Phase::Train { seed: seht_estimator::step_key(aopts.settings.seed, b as u64) },
    };
    let batch_size = match run {
        Run::Images { data, .. } => aopts.batch_size.unwrap_or(data.config.batch_size),
        Run::Text { data, .. } => data.train.batch(),
    };
    let plan = Batches { count: aopts.batches, size: batch_size, full_only: true, seed: aopts.settings.seed };
    let mut out = Vec::with_capacity(aopts.batches);
    let used = run.for_each_batch(plan, phase, device, |logits, loss| {
        out.push((logits.clone(), loss.clone()));
        Ok(())
    })?;
    if used < aopts.batches {
        return Err(Error::InvalidOption {
            option: "--batches",
            value: aopts.batches.to_string(),
            reason: match run {
                Run::Images { .. } => format!("the training set has only {used} full batches of {batch_size}"),
                Run::Text { .. } => format!("the training text has only {used} windows"),
            },
        });
    }
    Ok((out, batch_size))
}

/// The Hessian [`analyze`](super::analyze) works on, for a caller that runs its own methods
/// on it (and the batches' logits, for a Gauss–Newton matrix of the same batches).
pub struct ModelHessian {
    /// `H = (1/B) Σ_b H_b` over the chosen parameters, products detached.
    pub operator: MeanHessian,
    /// Each batch's logits `(N, C)` on the autodiff graph (text: one row per token).
    pub logits: Vec<Tensor>,
    /// The parameters `H` is over, in block order.
    pub params: Vec<seht_candle::Param>,
    /// The experiment config that built the model.
    pub config: ExperimentConfig,
    /// The run folder or checkpoint it came from.
    pub label: String,
    /// Images (or sequences) per batch.
    pub batch_size: usize,
}

/// Loads the model of `source` and builds the Hessian of its mean training
/// loss over `aopts.batches` batches, in `aopts.mode`, over `aopts.params`
/// (the part of [`analyze`](super::analyze) before any product;
/// `aopts.settings` gives the seed of the batch order and dropout masks).
///
/// # Errors
/// As [`analyze`](super::analyze), before its products.
pub fn model_hessian(source: &ModelSource, env: &Env, aopts: &AnalyzeOptions) -> Result<ModelHessian> {
    let (cfg, tensors, path, label) = load_model(source, &env.device)?;
    let task = load_task(&cfg, env)?;
    let varmap = VarMap::new();
    let run = Run::new(&cfg, task, &varmap, &env.device)?;
    let params = run.param_set(&varmap)?;
    if !matches!(source, ModelSource::Initial { .. }) {
        set_variables(&varmap, &tensors, &path)?;
    }
    let selected = params.select(&aopts.params.selection())?;
    let (batches, batch_size) = batch_losses(&run, aopts, &env.device)?;
    let ops = batches
        .iter()
        .map(|(_, l)| HessianOperator::with_mode(l, &selected, GraphMode::Detached))
        .collect::<seht_candle::Result<Vec<_>>>()?;
    let operator = MeanHessian::new(ops)?;
    let logits = batches.into_iter().map(|(z, _)| z).collect();
    Ok(ModelHessian { operator, logits, params: selected, config: cfg, label, batch_size })
}
