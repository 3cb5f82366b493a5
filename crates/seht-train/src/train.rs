//! The training loop: the same for every method, so comparisons are fair.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seht_candle::first_order::{default_relative_step, first_order_penalty};
use seht_candle::{Param, Selection, penalised_gradients, trace_estimate};
use seht_data::{Augment, BatchConfig, Batchified, EpochBatches, ImageSet};
use seht_estimator::{Distribution, Estimator, Reading, SehtD, SehtH, Sparse};
use seht_models::{
    DropBlockConfig, Phase, ResNet, ResNetConfig, RnnKind, RnnLm, RnnLmConfig, RnnState, Roles, WideResNet,
    WideResNetConfig, seeded_varbuilder,
};

use crate::checkpoint::{self, State};
use crate::config::{DataConfig, ExperimentConfig, ModelConfig, Regularizer, RnnCell, SehtReading};
use crate::data::{ImageData, load_images, load_text};
use crate::error::{Error, Result, config, io};
use crate::losses::{self, MixupDraw};
use crate::optim::{Sgd, clip_grad_list, clip_grad_norm};
use crate::progress::Progress;
use crate::schedule::LrSchedule;

/// How a run is executed (not part of the experiment's config).
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Folder the config's data paths are relative to.
    pub data_dir: PathBuf,
    /// Folder the run folder `<out_dir>/<name>` is created in.
    pub out_dir: PathBuf,
    /// Device.
    pub device: Device,
    /// How progress is shown.
    pub progress: Progress,
    /// Stop (as if killed) after this many epochs of this session, leaving
    /// the checkpoint; for tests of resumption.
    pub stop_after_epochs: Option<usize>,
}

pub use seht_records::{EpochRecord, EvalMetrics, Metrics, TraceReport};

enum Net {
    Res(ResNet),
    Wide(WideResNet),
    Lm(RnnLm),
}

impl Net {
    fn roles(&self) -> &Roles {
        match self {
            Net::Res(m) => m.roles(),
            Net::Wide(m) => m.roles(),
            Net::Lm(m) => m.roles(),
        }
    }

    fn image_logits(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        Ok(match self {
            Net::Res(m) => m.forward_t(xs, phase)?,
            Net::Wide(m) => m.forward_t(xs, phase)?,
            Net::Lm(_) => return Err(config("model.kind", "rnn", "is not an image model")),
        })
    }

    fn lm(&self) -> Result<&RnnLm> {
        match self {
            Net::Lm(m) => Ok(m),
            _ => Err(config("model.kind", "resnet/wrn", "is not a language model")),
        }
    }
}

fn build_net(cfg: &ExperimentConfig, shape: (usize, usize), varmap: &VarMap, device: &Device) -> Result<Net> {
    let (in_channels, classes) = shape;
    let vb = seeded_varbuilder(varmap, cfg.seed, DType::F32, device);
    Ok(match &cfg.model {
        ModelConfig::Resnet { widths, blocks } => {
            let (drop_block, head_dropout) = match cfg.regularizer {
                Regularizer::Dropblock { block_size, keep_prob } => {
                    (Some(DropBlockConfig { block_size, keep_prob }), 0.0)
                }
                Regularizer::Dropout { p } => (None, p),
                _ => (None, 0.0),
            };
            let rc = ResNetConfig {
                in_channels,
                num_classes: classes,
                widths: *widths,
                blocks: *blocks,
                drop_block,
                head_dropout,
            };
            Net::Res(ResNet::new(&rc, vb)?)
        }
        ModelConfig::Wrn { depth, widen_factor, dropout } => {
            if let Regularizer::Dropout { .. } = cfg.regularizer {
                return Err(config("regularizer.kind", "dropout", "a WRN's dropout is set in model.dropout"));
            }
            let wc = WideResNetConfig {
                depth: *depth,
                widen_factor: *widen_factor,
                dropout: *dropout,
                in_channels,
                num_classes: classes,
            };
            Net::Wide(WideResNet::new(&wc, vb)?)
        }
        ModelConfig::Rnn { cell, embedding, hidden, layers, dropout, tie_weights, init_range } => {
            if let Regularizer::Dropout { .. } = cfg.regularizer {
                return Err(config(
                    "regularizer.kind",
                    "dropout",
                    "a language model's dropout is set in model.dropout",
                ));
            }
            let kind = match cell {
                RnnCell::Lstm => RnnKind::Lstm,
                RnnCell::Gru => RnnKind::Gru,
            };
            let lc = RnnLmConfig {
                kind,
                vocab_size: classes,
                embedding: *embedding,
                hidden: *hidden,
                layers: *layers,
                dropout: *dropout,
                tie_weights: *tie_weights,
                init_range: *init_range,
            };
            Net::Lm(RnnLm::new(&lc, vb)?)
        }
    })
}

/// A seed for step `step` of a run seeded with `seed` (SplitMix64).
pub fn step_seed(seed: u64, step: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(step.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The penalty of a SEHT regularizer: estimator, λ, period, rescaling.
struct Penalty {
    estimator: Estimator,
    lambda: f64,
    every: u64,
    rescale: bool,
}

fn penalty_of(reg: &Regularizer) -> Result<Option<Penalty>> {
    Ok(match *reg {
        Regularizer::SehtH { probes, lambda, every, rescale } => {
            Some(Penalty { estimator: Estimator::seht_h(probes)?, lambda, every: every as u64, rescale })
        }
        Regularizer::SehtD { probes, p, lambda, reading, every, rescale } => {
            let reading = match reading {
                SehtReading::PartialSum => Reading::PartialSum,
                SehtReading::Unbiased => Reading::Unbiased,
            };
            Some(Penalty {
                estimator: Estimator::SehtD(SehtD::new(probes, p, reading)?),
                lambda,
                every: every as u64,
                rescale,
            })
        }
        _ => None,
    })
}

/// The first-order variant's settings.
struct FirstOrder {
    probes: usize,
    p: f64,
    lambda: f64,
    reading: SehtReading,
    every: u64,
    rescale: bool,
    relative_step: f64,
}

fn first_order_of(reg: &Regularizer) -> Option<FirstOrder> {
    match *reg {
        Regularizer::SehtFirstOrder { probes, p, lambda, reading, every, rescale, relative_step } => {
            Some(FirstOrder { probes, p, lambda, reading, every: every as u64, rescale, relative_step })
        }
        _ => None,
    }
}

/// One optimiser step with the first-order penalty (or a plain step when the
/// penalty is not due). Returns the loss and the trace estimate, if any.
#[allow(clippy::too_many_arguments)]
fn first_order_step(
    fo: &FirstOrder,
    step: u64,
    rng: &mut ChaCha8Rng,
    trainable: &[Var],
    weights: &[Param],
    buffers: &[Var],
    sgd: &mut Sgd,
    clip: f64,
    lr: f64,
    loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
) -> Result<(f64, Option<f64>)> {
    let plain = |sgd: &mut Sgd, loss: &mut dyn FnMut() -> candle_core::Result<Tensor>| -> Result<f64> {
        let l = loss()?;
        let v = l.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let mut grads = l.backward()?;
        clip_grad_norm(&mut grads, trainable, clip)?;
        sgd.step(&grads, lr)?;
        Ok(v)
    };
    if step % fo.every != 0 {
        return Ok((plain(sgd, loss)?, None));
    }
    let lambda = if fo.rescale { fo.lambda * fo.every as f64 } else { fo.lambda };
    let (penalised, dist, scale): (Vec<Param>, Distribution, f64) = if fo.p == 0.0 {
        (weights.to_vec(), Distribution::Rademacher, 1.0)
    } else {
        let reading = match fo.reading {
            SehtReading::PartialSum => Reading::PartialSum,
            SehtReading::Unbiased => Reading::Unbiased,
        };
        let sd = SehtD::new(fo.probes, fo.p, reading)?;
        let selected = sd.draw_blocks(weights.len(), rng);
        (
            selected.iter().map(|&i| weights[i].clone()).collect(),
            Distribution::Sparse(Sparse::new(fo.p)?),
            sd.sample_scale(),
        )
    };
    if penalised.is_empty() {
        return Ok((plain(sgd, loss)?, Some(0.0)));
    }
    let rel = if fo.relative_step > 0.0 { fo.relative_step } else { default_relative_step(penalised[0].var.dtype()) };
    let r = first_order_penalty(trainable, &penalised, buffers, &dist, fo.probes, scale, lambda, rel, rng, loss)?;
    let mut grads: Vec<Option<Tensor>> = r.grads.into_iter().map(Some).collect();
    clip_grad_list(&mut grads, clip)?;
    sgd.step_with(&grads, lr)?;
    Ok((r.loss, Some(r.samples.iter().sum::<f64>() / r.samples.len().max(1) as f64)))
}

struct StepOutcome {
    loss: f64,
    correct: usize,
    count: usize,
    trace: Option<f64>,
}

/// Applies the regularizer's penalty (if any, on this step) and takes an optimiser step.
#[allow(clippy::too_many_arguments)]
fn finish_step(
    loss: &Tensor,
    penalty: &Option<Penalty>,
    weights: &[Param],
    step: u64,
    rng: &mut ChaCha8Rng,
    extra: Option<Tensor>,
    sgd: &mut Sgd,
    trainable: &[Var],
    clip: f64,
    lr: f64,
) -> Result<Option<f64>> {
    let total = match extra {
        Some(e) => (loss + e)?,
        None => loss.clone(),
    };
    if let Some(p) = penalty
        && step % p.every == 0
    {
        let lambda = if p.rescale { p.lambda * p.every as f64 } else { p.lambda };
        // One probe's graph at a time (seht_candle::penalised_gradients): the
        // same gradient as (total + λ·tr̂).backward() with K-fold less memory.
        let r = penalised_gradients(&total, weights, trainable, &p.estimator, lambda, rng)?;
        let mut grads = r.grads;
        clip_grad_list(&mut grads, clip)?;
        sgd.step_with(&grads, lr)?;
        return Ok(Some(r.estimate.mean));
    }
    let mut grads = total.backward()?;
    clip_grad_norm(&mut grads, trainable, clip)?;
    sgd.step(&grads, lr)?;
    Ok(None)
}

fn eval_images(net: &Net, set: &Arc<ImageSet>, device: &Device) -> Result<EvalMetrics> {
    let cfg = BatchConfig {
        batch_size: 256,
        shuffle: false,
        drop_last: false,
        augment: Augment::NONE,
        seed: 0,
        workers: 1,
        prefetch: 2,
    };
    let mut it = EpochBatches::new(set.clone(), cfg, 0, 0)?;
    let (mut loss, mut top1, mut top5, mut n) = (0.0, 0, 0, 0);
    while let Some((xs, ys)) = it.next_batch(device)? {
        let logits = net.image_logits(&xs, Phase::Eval)?;
        let b = ys.dim(0)?;
        loss += losses::cross_entropy(&logits, &ys)?.to_scalar::<f32>()? as f64 * b as f64;
        top1 += losses::top_k_correct(&logits, &ys, 1)?;
        top5 += losses::top_k_correct(&logits, &ys, 5)?;
        n += b;
    }
    Ok(EvalMetrics {
        loss: loss / n as f64,
        top1: Some(top1 as f64 / n as f64),
        top5: Some(top5 as f64 / n as f64),
        perplexity: None,
    })
}

fn eval_text(lm: &RnnLm, data: &Batchified, bptt: usize, device: &Device) -> Result<EvalMetrics> {
    let mut state = lm.zero_state(data.batch())?;
    let (mut loss, mut tokens) = (0.0, 0usize);
    for k in 0..data.num_windows(bptt) {
        let (x, y) = data.window(k, bptt, device)?;
        let (logits, s) = lm.forward_t(&x, &state, Phase::Eval)?;
        state = s.detach();
        let n = y.elem_count();
        loss += RnnLm::loss(&logits, &y)?.to_scalar::<f32>()? as f64 * n as f64;
        tokens += n;
    }
    let mean = loss / tokens as f64;
    Ok(EvalMetrics { loss: mean, top1: None, top5: None, perplexity: Some(mean.exp()) })
}

enum Task {
    Images(ImageData),
    Text { train: Batchified, valid: Batchified, test: Batchified, bptt: usize, description: String },
}

fn load_task(cfg: &ExperimentConfig, opts: &TrainOptions) -> Result<(Task, (usize, usize))> {
    Ok(match &cfg.data {
        DataConfig::Image(d) => {
            let data = load_images(d, &opts.data_dir, cfg.seed)?;
            let (c, h, w) = data.train.shape;
            if let Some(p) = Some(d.crop_padding).filter(|&p| p > h.min(w)) {
                return Err(config("data.crop_padding", p, format!("larger than the {h}×{w} images")));
            }
            let shape = (c, data.train.num_classes);
            (Task::Images(data), shape)
        }
        DataConfig::Text(d) => {
            let (corpus, description) = load_text(d, &opts.data_dir)?;
            let vocab = corpus.vocab.len();
            (
                Task::Text {
                    train: Batchified::new(&corpus.train.tokens, d.batch_size)?,
                    valid: Batchified::new(&corpus.valid.tokens, d.eval_batch_size)?,
                    test: Batchified::new(&corpus.test.tokens, d.eval_batch_size)?,
                    bptt: d.bptt,
                    description,
                },
                (0, vocab),
            )
        }
    })
}

fn tensors_of(varmap: &VarMap, sgd: &Sgd) -> HashMap<String, Tensor> {
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

fn restore(
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

fn append_log(path: &Path, rec: &EpochRecord) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
    let line = serde_json::to_string(rec).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.into() })?;
    writeln!(f, "{line}").map_err(io(path))
}

fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| Error::Io { path: path.to_path_buf(), source: e.into() }))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

/// Trains (or resumes, or returns the finished result of) the run `cfg`.
/// Returns `None` when stopped early by `opts.stop_after_epochs`.
pub fn train(cfg: &ExperimentConfig, opts: &TrainOptions) -> Result<Option<Metrics>> {
    cfg.validate()?;
    let run_dir = opts.out_dir.join(&cfg.name);
    let ckpt_dir = run_dir.join("checkpoint");
    let metrics_path = run_dir.join("metrics.json");
    let log_path = run_dir.join("log.jsonl");
    // Refuse a run folder from another config before loading any data.
    let previous = checkpoint::load(&ckpt_dir, cfg, &opts.device)?;
    if previous.as_ref().is_some_and(|(s, _)| s.epochs_done == cfg.epochs)
        && let Ok(bytes) = std::fs::read(&metrics_path)
        && let Ok(m) = serde_json::from_slice::<Metrics>(&bytes)
    {
        return Ok(Some(m)); // finished: idempotent
    }
    let (task, shape) = load_task(cfg, opts)?;
    std::fs::create_dir_all(&run_dir).map_err(io(&run_dir))?;
    checkpoint::write_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;

    let varmap = VarMap::new();
    let net = build_net(cfg, shape, &varmap, &opts.device)?;
    let params = net.roles().param_set(&varmap)?;
    let trainable = params.trainable_vars();
    let weights = params.select(&Selection::Weights)?;
    let mut sgd = Sgd::new(trainable.clone(), cfg.optim.momentum, cfg.optim.weight_decay);
    let mut schedule = LrSchedule::new(cfg.schedule.clone(), cfg.optim.lr, cfg.epochs);
    let penalty = penalty_of(&cfg.regularizer)?;
    let first_order = first_order_of(&cfg.regularizer);
    let buffers: Vec<Var> = params.with_role(seht_candle::Role::Buffer).map(|p| p.var.clone()).collect();
    let (mut epochs_done, mut steps, mut penalty_steps, mut seconds) = (0, 0u64, 0u64, 0.0);
    let mut history = Vec::new();
    if let Some((state, tensors)) = previous {
        restore(&varmap, &mut sgd, trainable.len(), &tensors, &ckpt_dir)?;
        (epochs_done, steps, penalty_steps, seconds, schedule) =
            (state.epochs_done, state.steps, state.penalty_steps, state.seconds, state.schedule);
        history = read_log(&log_path)?.into_iter().filter(|r| r.epoch <= epochs_done).collect();
    }
    // Rewrite the log so that it holds exactly the checkpointed epochs.
    std::fs::write(&log_path, "").map_err(io(&log_path))?;
    for r in &history {
        append_log(&log_path, r)?;
    }
    let description = match &task {
        Task::Images(d) => d.description.clone(),
        Task::Text { description, .. } => description.clone(),
    };

    let mut session_epochs = 0;
    for epoch in epochs_done..cfg.epochs {
        let lr = schedule.lr(epoch);
        let (mut loss_sum, mut correct, mut count, mut n_steps) = (0.0, 0usize, 0usize, 0u64);
        let (mut trace_sum, mut epoch_penalty) = (0.0, 0u64);
        let mut train_seconds = 0.0;
        let mut record_step = |o: StepOutcome, t: f64, steps: &mut u64, bar: &indicatif::ProgressBar| -> Result<()> {
            if !o.loss.is_finite() {
                return Err(Error::Diverged { epoch: epoch + 1, step: n_steps as usize, value: o.loss });
            }
            loss_sum += o.loss;
            correct += o.correct;
            count += o.count;
            n_steps += 1;
            *steps += 1;
            train_seconds += t;
            if let Some(tr) = o.trace {
                trace_sum += tr;
                epoch_penalty += 1;
            }
            bar.inc(1);
            bar.set_message(format!("loss {:.4}", loss_sum / n_steps as f64));
            Ok(())
        };
        let (test, valid) = match &task {
            Task::Images(data) => {
                let DataConfig::Image(d) = &cfg.data else { unreachable!("task matches data") };
                let augment = Augment {
                    crop_padding: Some(d.crop_padding).filter(|&p| p > 0),
                    hflip: d.hflip,
                    cutout: match cfg.regularizer {
                        Regularizer::Cutout { size } => Some(size),
                        _ => None,
                    },
                };
                let bc = BatchConfig {
                    batch_size: d.batch_size,
                    shuffle: true,
                    drop_last: false,
                    augment,
                    seed: cfg.seed,
                    workers: d.workers,
                    prefetch: 2,
                };
                let mut it = EpochBatches::new(data.train.clone(), bc, epoch as u64, 0)?;
                let bar = opts.progress.epoch_bar(bc.num_batches(data.train.len()), &cfg.name, epoch + 1, cfg.epochs);
                while let Some((xs, ys)) = it.next_batch(&opts.device)? {
                    let t0 = Instant::now();
                    let s = step_seed(cfg.seed, steps);
                    let mut rng = ChaCha8Rng::seed_from_u64(s);
                    let phase = Phase::Train { seed: s };
                    if let Some(fo) = &first_order {
                        let last_logits = std::cell::RefCell::new(None);
                        let mut loss_fn = || -> candle_core::Result<Tensor> {
                            let logits = net.image_logits(&xs, phase).map_err(candle_core::Error::wrap)?;
                            let l = losses::cross_entropy(&logits, &ys).map_err(candle_core::Error::wrap)?;
                            *last_logits.borrow_mut() = Some(logits.detach());
                            Ok(l)
                        };
                        let (loss_value, trace) = first_order_step(
                            fo,
                            steps,
                            &mut rng,
                            &trainable,
                            &weights,
                            &buffers,
                            &mut sgd,
                            cfg.optim.clip_grad_norm,
                            lr,
                            &mut loss_fn,
                        )?;
                        let c = match last_logits.borrow().as_ref() {
                            Some(l) => losses::top_k_correct(l, &ys, 1)?,
                            None => 0,
                        };
                        record_step(
                            StepOutcome { loss: loss_value, correct: c, count: ys.dim(0)?, trace },
                            t0.elapsed().as_secs_f64(),
                            &mut steps,
                            &bar,
                        )?;
                        continue;
                    }
                    let (logits, loss, extra) = match cfg.regularizer {
                        Regularizer::Mixup { alpha } => {
                            let draw = MixupDraw::draw(ys.dim(0)?, alpha, &mut rng)?;
                            let logits = net.image_logits(&draw.mix(&xs)?, phase)?;
                            let loss = draw.loss(&logits, &ys)?;
                            (logits, loss, None)
                        }
                        Regularizer::Jacobian { n_proj, lambda } => {
                            let x = Var::from_tensor(&xs)?;
                            let logits = net.image_logits(x.as_tensor(), phase)?;
                            let loss = losses::cross_entropy(&logits, &ys)?;
                            let jf = losses::jacobian_frobenius_sq(&logits, &x, n_proj, &mut rng)?;
                            (logits, loss, Some(jf.affine(lambda / 2.0, 0.0)?))
                        }
                        Regularizer::LabelSmoothing { epsilon } => {
                            let logits = net.image_logits(&xs, phase)?;
                            let loss = losses::label_smoothing(&logits, &ys, epsilon)?;
                            (logits, loss, None)
                        }
                        Regularizer::ConfidencePenalty { beta } => {
                            let logits = net.image_logits(&xs, phase)?;
                            let loss = losses::confidence_penalty(&logits, &ys, beta)?;
                            (logits, loss, None)
                        }
                        _ => {
                            let logits = net.image_logits(&xs, phase)?;
                            let loss = losses::cross_entropy(&logits, &ys)?;
                            (logits, loss, None)
                        }
                    };
                    let loss_value = loss.to_scalar::<f32>()? as f64;
                    let c = losses::top_k_correct(&logits.detach(), &ys, 1)?;
                    let trace = finish_step(
                        &loss,
                        &penalty,
                        &weights,
                        steps,
                        &mut rng,
                        extra,
                        &mut sgd,
                        &trainable,
                        cfg.optim.clip_grad_norm,
                        lr,
                    )?;
                    record_step(
                        StepOutcome { loss: loss_value, correct: c, count: ys.dim(0)?, trace },
                        t0.elapsed().as_secs_f64(),
                        &mut steps,
                        &bar,
                    )?;
                }
                bar.finish_and_clear();
                let test = eval_images(&net, &data.test, &opts.device)?;
                let valid = data.valid.as_ref().map(|v| eval_images(&net, v, &opts.device)).transpose()?;
                (test, valid)
            }
            Task::Text { train, valid, test, bptt, .. } => {
                let lm = net.lm()?;
                let mut state: RnnState = lm.zero_state(train.batch())?;
                let windows = train.num_windows(*bptt);
                let bar = opts.progress.epoch_bar(windows, &cfg.name, epoch + 1, cfg.epochs);
                for k in 0..windows {
                    let t0 = Instant::now();
                    let (x, y) = train.window(k, *bptt, &opts.device)?;
                    let s = step_seed(cfg.seed, steps);
                    let mut rng = ChaCha8Rng::seed_from_u64(s);
                    if let Some(fo) = &first_order {
                        let last_state = std::cell::RefCell::new(None);
                        let state_in = state.clone();
                        let mut loss_fn = || -> candle_core::Result<Tensor> {
                            let (logits, new_state) = lm
                                .forward_t(&x, &state_in, Phase::Train { seed: s })
                                .map_err(candle_core::Error::wrap)?;
                            *last_state.borrow_mut() = Some(new_state.detach());
                            RnnLm::loss(&logits, &y).map_err(candle_core::Error::wrap)
                        };
                        let (loss_value, trace) = first_order_step(
                            fo,
                            steps,
                            &mut rng,
                            &trainable,
                            &weights,
                            &buffers,
                            &mut sgd,
                            cfg.optim.clip_grad_norm,
                            lr,
                            &mut loss_fn,
                        )?;
                        if let Some(next) = last_state.into_inner() {
                            state = next;
                        }
                        record_step(
                            StepOutcome { loss: loss_value, correct: 0, count: 0, trace },
                            t0.elapsed().as_secs_f64(),
                            &mut steps,
                            &bar,
                        )?;
                        continue;
                    }
                    let (logits, new_state) = lm.forward_t(&x, &state, Phase::Train { seed: s })?;
                    state = new_state.detach();
                    let flat = logits.flatten_to(1)?;
                    let yf = y.flatten_all()?;
                    let loss = match cfg.regularizer {
                        Regularizer::LabelSmoothing { epsilon } => losses::label_smoothing(&flat, &yf, epsilon)?,
                        Regularizer::ConfidencePenalty { beta } => losses::confidence_penalty(&flat, &yf, beta)?,
                        _ => losses::cross_entropy(&flat, &yf)?,
                    };
                    let loss_value = loss.to_scalar::<f32>()? as f64;
                    let trace = finish_step(
                        &loss,
                        &penalty,
                        &weights,
                        steps,
                        &mut rng,
                        None,
                        &mut sgd,
                        &trainable,
                        cfg.optim.clip_grad_norm,
                        lr,
                    )?;
                    record_step(
                        StepOutcome { loss: loss_value, correct: 0, count: 0, trace },
                        t0.elapsed().as_secs_f64(),
                        &mut steps,
                        &bar,
                    )?;
                }
                bar.finish_and_clear();
                let v = eval_text(lm, valid, *bptt, &opts.device)?;
                schedule.observe(v.loss);
                (eval_text(lm, test, *bptt, &opts.device)?, Some(v))
            }
        };
        penalty_steps += epoch_penalty;
        seconds += train_seconds;
        let rec = EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / n_steps.max(1) as f64,
            train_top1: (count > 0).then(|| correct as f64 / count as f64),
            valid,
            test,
            trace_mean: (epoch_penalty > 0).then(|| trace_sum / epoch_penalty as f64),
            penalty_steps: epoch_penalty,
            steps: n_steps,
            train_seconds,
            seconds_per_step: train_seconds / n_steps.max(1) as f64,
        };
        if opts.progress.shows_epochs() {
            eprintln!("{}", summary_line(&cfg.name, &rec));
        }
        append_log(&log_path, &rec)?;
        history.push(rec);
        let state = State {
            config: cfg.clone(),
            epochs_done: epoch + 1,
            steps,
            penalty_steps,
            schedule: schedule.clone(),
            seconds,
            tensors: format!("ckpt-{:04}.safetensors", epoch + 1),
        };
        checkpoint::save(&ckpt_dir, &tensors_of(&varmap, &sgd), &state)?;
        session_epochs += 1;
        if opts.stop_after_epochs == Some(session_epochs) && epoch + 1 < cfg.epochs {
            return Ok(None);
        }
    }

    let final_trace = if cfg.final_trace.batches > 0 && cfg.final_trace.probes > 0 {
        Some(measure(&net, &task, &weights, cfg.final_trace.batches, cfg.final_trace.probes, cfg.seed, &opts.device)?)
    } else {
        None
    };
    let final_epoch = history.last().cloned().ok_or_else(|| config("epochs", cfg.epochs, "no epoch was run"))?;
    let (best_epoch, best_by) = match &task {
        Task::Images(_) => (
            history.iter().max_by(|a, b| a.test.top1.partial_cmp(&b.test.top1).unwrap_or(std::cmp::Ordering::Equal)).cloned().unwrap_or_else(|| final_epoch.clone()),
            "highest test top-1 accuracy over epochs (as the paper's public code reported; the final epoch is the unbiased figure)".to_string(),
        ),
        Task::Text { .. } => (
            history
                .iter()
                .min_by(|a, b| {
                    let (x, y) = (a.valid.as_ref().map(|v| v.loss), b.valid.as_ref().map(|v| v.loss));
                    x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal)
                })
                .cloned()
                .unwrap_or_else(|| final_epoch.clone()),
            "lowest validation loss (its test perplexity is reported)".to_string(),
        ),
    };
    let metrics = Metrics {
        name: cfg.name.clone(),
        method: cfg.regularizer.label(),
        data: description,
        final_epoch,
        best_epoch,
        best_by,
        final_trace,
        train_seconds: seconds,
        seconds_per_epoch: seconds / cfg.epochs as f64,
        steps,
        penalty_steps,
    };
    let json =
        serde_json::to_vec_pretty(&metrics).map_err(|e| Error::Io { path: metrics_path.clone(), source: e.into() })?;
    checkpoint::write_atomic(&metrics_path, &json)?;
    Ok(Some(metrics))
}

fn summary_line(name: &str, r: &EpochRecord) -> String {
    let test = match (r.test.top1, r.test.perplexity) {
        (Some(a), _) => format!("test acc {:.2}%", 100.0 * a),
        (_, Some(p)) => format!("test ppl {p:.2}"),
        _ => String::new(),
    };
    let trace = r.trace_mean.map(|t| format!(", trace {t:.3}")).unwrap_or_default();
    format!("{name} epoch {}: train loss {:.4}, {test}{trace}, {:.2} s/step", r.epoch, r.train_loss, r.seconds_per_step)
}

fn measure(
    net: &Net,
    task: &Task,
    weights: &[Param],
    batches: usize,
    probes: usize,
    seed: u64,
    device: &Device,
) -> Result<TraceReport> {
    let est = SehtH::seht_h(probes)?;
    let mut samples = Vec::new();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7ace);
    match task {
        Task::Images(data) => {
            let bc = BatchConfig {
                batch_size: 32,
                shuffle: true,
                drop_last: false,
                augment: Augment::NONE,
                seed: seed ^ 0x7ace,
                workers: 1,
                prefetch: 1,
            };
            let mut it = EpochBatches::new(data.train.clone(), bc, 0, 0)?;
            for _ in 0..batches {
                let Some((xs, ys)) = it.next_batch(device)? else { break };
                let loss = losses::cross_entropy(&net.image_logits(&xs, Phase::Eval)?, &ys)?;
                samples.extend(trace_estimate(&loss, weights, &est, &mut rng)?.samples);
            }
        }
        Task::Text { train, bptt, .. } => {
            let lm = net.lm()?;
            for k in 0..batches.min(train.num_windows(*bptt)) {
                let (x, y) = train.window(k, *bptt, device)?;
                let (logits, _) = lm.forward_t(&x, &lm.zero_state(train.batch())?, Phase::Eval)?;
                samples.extend(trace_estimate(&RnnLm::loss(&logits, &y)?, weights, &est, &mut rng)?.samples);
            }
        }
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
    let params = net.roles().param_set(&varmap)?;
    let mut sgd = Sgd::new(params.trainable_vars(), 0.0, 0.0);
    restore(&varmap, &mut sgd, 0, &tensors, &ckpt_dir)?;
    let weights = params.select(&Selection::Weights)?;
    measure(&net, &task, &weights, batches, probes, cfg.seed, &opts.device)
}
