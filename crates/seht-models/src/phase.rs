//! Training or evaluation, and dropout masks that are reproducible.

use candle_core::Tensor;
use rand::{Rng, SeedableRng};

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
        /// Seed of this pass's dropout masks.
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
/// model (each gets its own ChaCha8 stream of the pass's seed).
pub fn dropout(xs: &Tensor, p: f64, phase: Phase, site: u64) -> Result<Tensor> {
    let Phase::Train { seed } = phase else { return Ok(xs.clone()) };
    if p <= 0.0 {
        return Ok(xs.clone());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(site);
    let keep = 1.0 - p;
    let scale = (1.0 / keep) as f32;
    let threshold = (keep * 4_294_967_296.0) as u64;
    let mask: Vec<f32> =
        (0..xs.elem_count()).map(|_| if (rng.random::<u32>() as u64) < threshold { scale } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, xs.shape(), &candle_core::Device::Cpu)?.to_dtype(xs.dtype())?.to_device(xs.device())?;
    Ok(xs.mul(&mask)?)
}
