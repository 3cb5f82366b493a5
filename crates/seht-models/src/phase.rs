//! Training or evaluation, and dropout masks that are reproducible.

use candle_core::Tensor;
use rand::Rng;
use seht_estimator::Stream;

use crate::error::Result;

/// Whether a forward pass trains or evaluates.
///
/// In training, BatchNorm uses the batch statistics and updates its running
/// statistics, and dropout is active with masks drawn from `seed`: the same
/// seed gives the same masks, so a pass can be repeated exactly (checkpoint
/// resume, finite differences, first-order penalties that evaluate one
/// function three times). In evaluation, BatchNorm uses its running
/// statistics and dropout is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A training pass whose dropout masks derive from `seed`.
    Train {
        /// Key of this pass's dropout masks (in training, the step's
        /// [`seht_estimator::step_key`]); dropout site `i` draws from
        /// [`Stream::Dropout`]`{ site: i }` of it, DropBlock site `i` from
        /// [`Stream::DropBlock`], so no mask shares a stream with the
        /// step's trace probes ([`Stream::Probes`]) or any other consumer.
        seed: u64,
    },
    /// An evaluation pass.
    Eval,
}

impl Phase {
    /// True in training.
    pub fn is_train(self) -> bool {
        matches!(self, Phase::Train { .. })
    }
}

/// Inverted dropout with probability `p`: in training, each entry is zeroed
/// with probability `p` and the rest scaled by `1/(1−p)`; in evaluation (or
/// with `p = 0`) the identity. `site` distinguishes the dropout layers of one
/// model (each gets its own stream, [`Stream::Dropout`], of the pass's seed).
pub fn dropout(xs: &Tensor, p: f64, phase: Phase, site: u32) -> Result<Tensor> {
    let Phase::Train { seed } = phase else { return Ok(xs.clone()) };
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    let mut rng = Stream::Dropout { site }.rng(seed);
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * 4_294_967_296.0) as u64;
    let mask: Vec<f32> =
        (0..xs.elem_count()).map(|_| if (rng.random::<u32>() as u64) < threshold { scale } else { 0.0 }).collect();
    let mask =
        Tensor::from_vec(mask, xs.shape(), &candle_core::Device::Cpu)?.to_dtype(xs.dtype())?.to_device(xs.device())?;
    Ok(xs.mul(&mask)?)
}

/// DropBlock (Ghiasi, Lin & Le, NeurIPS 2018) on an NCHW feature map: in
/// training, contiguous `block × block` squares are zeroed and the rest
/// rescaled by `count / kept`. Block centres are drawn with probability
/// `γ = (1 − keep)/block² · (h·w)/((h − block + 1)(w − block + 1))` among the
/// positions where a whole block fits (eq. 1 of the paper), so that about a
/// fraction `1 − keep` of the units is dropped. In evaluation, the identity.
pub fn drop_block(xs: &Tensor, block: usize, keep: f64, phase: Phase, site: u32) -> Result<Tensor> {
    let Phase::Train { seed } = phase else { return Ok(xs.clone()) };
    if keep >= 1.0 {
        return Ok(xs.clone());
    }
    let (n, c, h, w) = xs.dims4()?;
    let block = block.min(h).min(w).max(1);
    let gamma = (1.0 - keep) / (block * block) as f64 * (h * w) as f64 / ((h - block + 1) * (w - block + 1)) as f64;
    let mut rng = Stream::DropBlock { site }.rng(seed);
    let mut mask = vec![1f32; n * c * h * w];
    let half = block / 2;
    for plane in 0..n * c {
        let m = &mut mask[plane * h * w..(plane + 1) * h * w];
        for y in half..h - (block - 1 - half) {
            for x in half..w - (block - 1 - half) {
                if rng.random::<f64>() < gamma {
                    for yy in y - half..y - half + block {
                        m[yy * w + x - half..yy * w + x - half + block].fill(0.0);
                    }
                }
            }
        }
    }
    let kept = mask.iter().filter(|&&v| v > 0.0).count().max(1);
    let scale = mask.len() as f32 / kept as f32;
    mask.iter_mut().for_each(|v| *v *= scale);
    let mask =
        Tensor::from_vec(mask, xs.shape(), &candle_core::Device::Cpu)?.to_dtype(xs.dtype())?.to_device(xs.device())?;
    Ok(xs.mul(&mask)?)
}
