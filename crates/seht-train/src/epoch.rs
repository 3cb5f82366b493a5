//! One training epoch per task: the batches, the task's forward pass, one
//! [`Stepper::step`] per batch, and the epoch's totals; an epoch stops at
//! the first step that diverged ([`DivergenceConfig::check`]).

use std::time::Instant;

use candle_core::{Tensor, Var};
use seht_data::{Augment, BatchConfig, EpochBatches};
use seht_estimator::Stream;
use seht_models::{ImageClassifier, Phase};

use crate::config::DivergenceConfig;
use crate::data::{ImageData, TextData};
use crate::error::{Error, Result};
use crate::losses::{self, MixupDraw};
use crate::net::TextModel;
use crate::records::{Divergence, EpochRecord, EvalMetrics};
use crate::roles::{InputRule, LossTerm};
use crate::step::{Forward, StepOutcome, Stepper};

/// Training batches prepared ahead by the loader's thread.
const PREFETCH: usize = 2;

/// Where an epoch runs: its number, learning rate, the run's step counter.
pub(crate) struct EpochContext<'a> {
    /// Epoch (0-based).
    pub epoch: usize,
    /// Learning rate of the epoch.
    pub lr: f64,
    /// Optimiser steps of the run so far (advanced by each step).
    pub steps: &'a mut u64,
    /// When a step counts as diverged.
    pub divergence: DivergenceConfig,
    /// The device.
    pub device: &'a candle_core::Device,
    /// How progress is shown.
    pub progress: crate::progress::Progress,
    /// The run's name (the bar's label).
    pub name: &'a str,
    /// Epochs of the run.
    pub epochs: usize,
}

/// Sums over an epoch's steps.
#[derive(Default)]
pub(crate) struct EpochTotals {
    loss_sum: f64,
    correct: usize,
    count: usize,
    steps: u64,
    trace_sum: f64,
    /// Steps that applied the penalty.
    pub penalty_steps: u64,
    /// Wall time of the training steps (s).
    pub seconds: f64,
    /// Where and why the epoch stopped early, when a step diverged (that
    /// step counts in `seconds` and `penalty_steps`, not in the means).
    pub diverged: Option<Divergence>,
}

impl EpochTotals {
    fn add(&mut self, o: &StepOutcome, seconds: f64) {
        self.loss_sum += o.forward.loss;
        self.correct += o.forward.correct;
        self.count += o.forward.count;
        self.steps += 1;
        self.seconds += seconds;
        if let Some(t) = o.trace {
            self.trace_sum += t;
            self.penalty_steps += 1;
        }
    }

    /// Steps that completed (without the one that diverged, if any).
    pub(crate) fn steps(&self) -> u64 {
        self.steps
    }

    /// The epoch's log record.
    pub(crate) fn record(&self, epoch: usize, lr: f64, test: EvalMetrics, valid: Option<EvalMetrics>) -> EpochRecord {
        let steps = self.steps.max(1) as f64;
        EpochRecord {
            epoch: epoch + 1,
            lr,
            train_loss: self.loss_sum / steps,
            train_top1: (self.count > 0).then(|| self.correct as f64 / self.count as f64),
            valid,
            test,
            trace_mean: (self.penalty_steps > 0).then(|| self.trace_sum / self.penalty_steps as f64),
            penalty_steps: self.penalty_steps,
            steps: self.steps,
            train_seconds: self.seconds,
            seconds_per_step: self.seconds / steps,
            layers: None,
        }
    }
}

/// Runs `body` once per batch, timing each step and feeding the totals and
/// the progress bar.
fn run_steps(
    ctx: &mut EpochContext,
    len: usize,
    mut body: impl FnMut(u64) -> Result<Option<StepOutcome>>,
) -> Result<EpochTotals> {
    let bar = ctx.progress.epoch_bar(len, ctx.name, ctx.epoch + 1, ctx.epochs);
    let mut totals = EpochTotals::default();
    loop {
        let t0 = Instant::now();
        let Some(o) = body(*ctx.steps)? else { break };
        *ctx.steps += 1;
        if let Some(cause) = ctx.divergence.check(o.forward.loss, o.objective) {
            totals.seconds += t0.elapsed().as_secs_f64();
            totals.penalty_steps += u64::from(o.trace.is_some());
            totals.diverged = Some(Divergence { epoch: ctx.epoch + 1, step: totals.steps + 1, cause });
            break;
        }
        totals.add(&o, t0.elapsed().as_secs_f64());
        bar.inc(1);
        bar.set_message(format!("loss {:.4}", totals.loss_sum / totals.steps as f64));
    }
    bar.finish_and_clear();
    Ok(totals)
}

/// The image classifier's objective on one batch under the regularizer's
/// input rule and loss.
fn image_forward(
    net: &dyn ImageClassifier,
    (input, loss_term): (InputRule, LossTerm),
    (xs, ys): (&Tensor, &Tensor),
    phase: Phase,
) -> Result<Forward> {
    // Draws of the forward pass come from their own streams of the step's
    // key, so that repeated calls (first-order penalties) repeat them.
    let key = match phase {
        Phase::Train { seed } => seed,
        Phase::Eval => 0,
    };
    let (logits, loss, extra) = match input {
        InputRule::Mixup { alpha } => {
            let draw = MixupDraw::draw(ys.dim(0)?, alpha, &mut Stream::Mixup.rng(key))?;
            let logits = net.logits(&draw.mix(xs)?, phase)?;
            let loss = draw.loss(&logits, ys)?;
            (logits, loss, None)
        }
        InputRule::Jacobian { n_proj, lambda } => {
            let x = Var::from_tensor(xs)?;
            let logits = net.logits(x.as_tensor(), phase)?;
            let loss = losses::cross_entropy(&logits, ys)?;
            let jf = losses::jacobian_frobenius_sq(&logits, &x, n_proj, &mut Stream::JacobianProjection.rng(key))?;
            (logits, loss, Some(jf.affine(lambda / 2.0, 0.0)?))
        }
        InputRule::Plain => {
            let logits = net.logits(xs, phase)?;
            let loss = loss_term.of(&logits, ys)?;
            (logits, loss, None)
        }
    };
    Ok(Forward {
        objective: match extra {
            Some(e) => (&loss + e)?,
            None => loss.clone(),
        },
        loss: Forward::value(&loss)?,
        correct: losses::top_k_correct(&logits.detach(), ys, 1)?,
        count: ys.dim(0)?,
        logits,
        labels: ys.clone(),
    })
}

/// One epoch of image classification: seeded order and augmentation, one
/// step per batch.
pub(crate) fn image_epoch(
    ctx: &mut EpochContext,
    stepper: &mut Stepper,
    net: &dyn ImageClassifier,
    data: &ImageData,
    seed: u64,
) -> Result<EpochTotals> {
    let d = &data.config;
    let augment = Augment {
        crop_padding: Some(d.crop_padding).filter(|&p| p > 0),
        hflip: d.hflip,
        cutout: stepper.roles().cutout,
    };
    let bc = BatchConfig {
        batch_size: d.batch_size,
        shuffle: true,
        drop_last: false,
        augment,
        seed,
        workers: d.workers,
        prefetch: PREFETCH,
    };
    let mut it = EpochBatches::new(data.train.clone(), bc, ctx.epoch as u64, 0)?;
    let (lr, device) = (ctx.lr, ctx.device);
    let rules = (stepper.roles().input, stepper.roles().loss);
    run_steps(ctx, bc.num_batches(data.train.len()), |step| {
        let Some((xs, ys)) = it.next_batch(device)? else { return Ok(None) };
        let mut forward = |phase| image_forward(net, rules, (&xs, &ys), phase);
        stepper.step(step, lr, &mut forward).map(Some)
    })
}

/// One epoch of language modelling: the training columns in BPTT windows,
/// the recurrent state carried (detached) from window to window.
pub(crate) fn text_epoch(
    ctx: &mut EpochContext,
    stepper: &mut Stepper,
    lm: &TextModel,
    text: &TextData,
) -> Result<EpochTotals> {
    let mut state = lm.zero_state(text.train.batch())?;
    let windows = text.train.num_windows(text.bptt);
    let (lr, device) = (ctx.lr, ctx.device);
    let loss_term = stepper.roles().loss;
    let mut k = 0;
    run_steps(ctx, windows, |step| {
        if k == windows {
            return Ok(None);
        }
        let (x, y) = text.train.window(k, text.bptt, device)?;
        k += 1;
        let mut next = None;
        let mut forward = |phase| -> Result<Forward> {
            let (logits, new_state) = lm.forward_t(&x, &state, phase)?;
            // The unperturbed pass (the first call) carries the state on.
            next.get_or_insert(new_state.detach());
            let (flat, yf) = (logits.flatten_to(1)?, y.flatten_all()?);
            let loss = loss_term.of(&flat, &yf)?;
            Ok(Forward {
                loss: Forward::value(&loss)?,
                objective: loss,
                correct: 0,
                count: 0,
                logits: flat,
                labels: yf,
            })
        };
        let outcome = stepper.step(step, lr, &mut forward)?;
        state = next.ok_or(Error::Internal("a step without a forward pass"))?;
        Ok(Some(outcome))
    })
}
