//! The Hessian trace of a trained model (SEHT-H over the weights, detached),
//! at the end of a run or from a run folder.

use std::path::Path;

use candle_core::Device;
use candle_nn::VarMap;
use seht_candle::{Param, Selection, trace_estimate};
use seht_data::{Augment, BatchConfig, EpochBatches};
use seht_estimator::SehtH;
use seht_estimator::{Stream, step_key};
use seht_models::{Phase, RnnLm};

use crate::checkpoint;
use crate::config::ExperimentConfig;
use crate::data::{Task, load_task};
use crate::error::{Error, Result};
use crate::losses;
use crate::net::{Net, build_net};
use crate::optim::Sgd;
use crate::records::TraceReport;
use crate::train::TrainOptions;

/// The measurement's key index: its probes draw from
/// [`Stream::FinalTrace`] of `step_key(seed, TRACE_INDEX)` and its batch order
/// from the loader's streams of that key — an index no training step reaches,
/// so nothing is shared with training (`seht_estimator::streams`).
pub const TRACE_INDEX: u64 = u64::MAX;

/// Images per batch of the measurement (the paper's training batch size).
pub const TRACE_BATCH_SIZE: usize = 32;

/// SEHT-H with `probes` probes on each of `batches` training batches (text:
/// the first `batches` windows, from a zero state), in evaluation phase.
pub(crate) fn measure(
    net: &Net,
    task: &Task,
    weights: &[Param],
    (batches, probes): (usize, usize),
    seed: u64,
    device: &Device,
) -> Result<TraceReport> {
    let est = SehtH::seht_h(probes)?;
    let mut samples = Vec::new();
    let key = step_key(seed, TRACE_INDEX);
    let mut rng = Stream::FinalTrace.rng(key);
    match (task, net) {
        (Task::Images(data), Net::Image(net)) => {
            let bc = BatchConfig {
                batch_size: TRACE_BATCH_SIZE,
                shuffle: true,
                drop_last: false,
                augment: Augment::NONE,
                seed: key,
                workers: 1,
                prefetch: 1,
            };
            let mut it = EpochBatches::new(data.train.clone(), bc, 0, 0)?;
            for _ in 0..batches {
                let Some((xs, ys)) = it.next_batch(device)? else { break };
                let loss = losses::cross_entropy(&net.logits(&xs, Phase::Eval)?, &ys)?;
                samples.extend(trace_estimate(&loss, weights, &est, &mut rng)?.samples);
            }
        }
        (Task::Text(text), Net::Text(lm)) => {
            for k in 0..batches.min(text.train.num_windows(text.bptt)) {
                let (x, y) = text.train.window(k, text.bptt, device)?;
                let (logits, _) = lm.forward_t(&x, &lm.zero_state(text.train.batch())?, Phase::Eval)?;
                samples.extend(trace_estimate(&RnnLm::loss(&logits, &y)?, weights, &est, &mut rng)?.samples);
            }
        }
        _ => return Err(Error::Internal("the network does not fit the task")),
    }
    let (mean, se) = seht_estimator::mean_and_std_error(&samples);
    Ok(TraceReport { mean, std_error: se.unwrap_or(f64::NAN), batches, probes })
}

/// The Hessian trace of the model in a finished (or checkpointed) run folder,
/// on `batches` training batches with `probes` probes each.
pub fn trace_of_run(run_dir: &Path, opts: &TrainOptions, batches: usize, probes: usize) -> Result<TraceReport> {
    let cfg = ExperimentConfig::from_file(&run_dir.join("config.toml"))?;
    let ckpt_dir = run_dir.join("checkpoint");
    let Some((_, tensors)) = checkpoint::load(&ckpt_dir, &cfg, &opts.device)? else {
        return Err(Error::Io {
            path: ckpt_dir.join("state.json"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no checkpoint in this run folder"),
        });
    };
    let (task, shape) = load_task(&cfg, opts)?;
    let varmap = VarMap::new();
    let net = build_net(&cfg, shape, &varmap, &opts.device)?;
    let params = net.param_set(&varmap)?;
    let mut sgd = Sgd::new(params.trainable_vars(), 0.0, 0.0);
    checkpoint::restore(&varmap, &mut sgd, 0, &tensors, &ckpt_dir)?;
    let weights = params.select(&Selection::Weights)?;
    measure(&net, &task, &weights, (batches, probes), cfg.seed, &opts.device)
}
