//! Evaluation on a held-out split: no gradients, evaluation phase.

use std::sync::Arc;

use candle_core::Device;
use seht_data::{Augment, BatchConfig, Batchified, EpochBatches, ImageSet};
use seht_models::{ImageClassifier, Phase, RnnLm};

use crate::error::Result;
use crate::losses;
use crate::net::TextModel;
use crate::records::EvalMetrics;

/// Images per evaluation batch (memory only: the metrics do not depend on it).
pub const EVAL_BATCH_SIZE: usize = 256;

/// Batches prepared ahead by the loader's thread.
const PREFETCH: usize = 2;

/// Mean cross-entropy, top-1 and top-5 accuracy of `net` on `set`.
pub(crate) fn eval_images(net: &dyn ImageClassifier, set: &Arc<ImageSet>, device: &Device) -> Result<EvalMetrics> {
    let cfg = BatchConfig {
        batch_size: EVAL_BATCH_SIZE,
        shuffle: false,
        drop_last: false,
        augment: Augment::NONE,
        seed: 0,
        workers: 1,
        prefetch: PREFETCH,
    };
    let mut it = EpochBatches::new(set.clone(), cfg, 0, 0)?;
    let (mut loss, mut top1, mut top5, mut n) = (0.0, 0, 0, 0);
    while let Some((xs, ys)) = it.next_batch(device)? {
        let logits = net.logits(&xs, Phase::Eval)?;
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

/// Mean cross-entropy per token and perplexity of `lm` on `data`, the state
/// carried across windows.
pub(crate) fn eval_text(lm: &TextModel, data: &Batchified, bptt: usize, device: &Device) -> Result<EvalMetrics> {
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
