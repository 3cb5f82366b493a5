//! Shared by the estimator-comparison examples (`real_hessian_estimators`,
//! `large_model_estimators`): train an embedded config into `work`, then form
//! the evaluation-mode Hessian of the weights on `batches` training batches of
//! `batch_size` images, exactly as `seht analyze` would.

use std::path::{Path, PathBuf};
use std::time::Instant;

use seht_train::analyze::{
    AnalysisSettings, AnalyzeOptions, Env, ModelHessian, ModelMode, ModelSource, ParamChoice, model_hessian,
};
use seht_train::{ExperimentConfig, Progress, TrainOptions};

/// Trains `config` (TOML text; `origin` names it in errors) into `work` on the
/// data under `data`, reports the final epoch on stderr, and returns the
/// trained model's Hessian.
pub fn train_then_hessian(
    config: &str,
    origin: &str,
    (work, data): (&Path, PathBuf),
    (batches, batch_size): (usize, usize),
    start: Instant,
) -> Result<ModelHessian, Box<dyn std::error::Error>> {
    let cfg = ExperimentConfig::from_toml_str(config, Path::new(origin))?;
    let env = Env { data_dir: data, device: candle_core::Device::Cpu, progress: Progress::Hidden };
    let opts = TrainOptions { env, out_dir: work.to_path_buf(), stop_after_epochs: None };
    let metrics = seht_train::train(&cfg, &opts)?.ok_or("training stopped early")?;
    let last = metrics.final_epoch.as_ref().ok_or("no final epoch")?;
    eprintln!("trained {} ({:.0} s so far): final epoch {last:?}", cfg.name, start.elapsed().as_secs_f64());
    let aopts = AnalyzeOptions {
        mode: ModelMode::Eval,
        params: ParamChoice::Weights,
        batches,
        batch_size: Some(batch_size),
        settings: AnalysisSettings {
            trace_probes: 0,
            probing: seht_estimator::BlockProbing::Joint,
            estimator: Default::default(),
            diagonal: None,
            top_k: 0,
            lanczos_steps: 0,
            tolerance: 1e-3,
            slq_probes: 0,
            slq_steps: 0,
            broadening: 0.01,
            f32_basis: false,
            seed: 0,
            block_spectra: None,
        },
    };
    Ok(model_hessian(&ModelSource::Run(work.join(&cfg.name)), &opts.env, &aopts)?)
}
