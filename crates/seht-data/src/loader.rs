//! Minibatches of images: seeded shuffling, augmentation, subsets, and a
//! prefetching thread so that loading overlaps compute.
//!
//! Every random choice derives from `(seed, epoch, position)`: an epoch's
//! batches are the same however many worker threads prepare them, and a run
//! resumed at batch `k` of an epoch sees exactly the batches it would have.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use seht_estimator::{Stream, step_key};

use crate::augment::Augment;
use crate::error::{Error, Result, invalid};
use crate::image::ImageSet;

/// Which part of a set to use (small presets train on subsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subset {
    /// Every image.
    All,
    /// The first `n` images, in file order.
    First(usize),
    /// `per_class` images of every class, drawn with a seed (class-balanced).
    Balanced {
        /// Images per class.
        per_class: usize,
        /// Seed of the draw.
        seed: u64,
    },
}

/// The images of `set` that `subset` picks, as a new set.
pub fn subset(set: &ImageSet, subset: Subset) -> Result<ImageSet> {
    match subset {
        Subset::All => Ok(set.clone()),
        Subset::First(n) => {
            if n == 0 || n > set.len() {
                return Err(invalid("subset size", n, format!("must be between 1 and the set's {} images", set.len())));
            }
            set.select(&(0..n).collect::<Vec<_>>())
        }
        Subset::Balanced { per_class, seed } => {
            let counts = set.class_counts();
            if per_class == 0 {
                return Err(invalid("per_class", 0, "must be at least 1"));
            }
            if let Some((c, &have)) = counts.iter().enumerate().find(|(_, n)| **n < per_class) {
                return Err(invalid("per_class", per_class, format!("class {c} has only {have} images")));
            }
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); set.num_classes];
            for (i, &l) in set.labels.iter().enumerate() {
                by_class[l as usize].push(i);
            }
            let mut rng = Stream::Subset.rng(seed);
            let mut picked = Vec::with_capacity(per_class * set.num_classes);
            for idx in &mut by_class {
                idx.shuffle(&mut rng);
                picked.extend_from_slice(&idx[..per_class]);
            }
            picked.sort_unstable();
            set.select(&picked)
        }
    }
}

/// How an epoch is cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Images per batch.
    pub batch_size: usize,
    /// Shuffle every epoch (training) or keep file order (evaluation).
    pub shuffle: bool,
    /// Drop a last, smaller batch.
    pub drop_last: bool,
    /// Augmentations (use [`Augment::NONE`] for evaluation).
    pub augment: Augment,
    /// Seed of shuffling and augmentation.
    pub seed: u64,
    /// Threads preparing each batch (≥ 1), inside one prefetching thread.
    pub workers: usize,
    /// Batches prepared ahead of the consumer (≥ 1).
    pub prefetch: usize,
}

impl BatchConfig {
    /// Checks the sizes against `set`.
    pub fn validate(&self, set: &ImageSet) -> Result<()> {
        if self.batch_size == 0 {
            return Err(invalid("batch_size", 0, "must be at least 1"));
        }
        if self.workers == 0 || self.prefetch == 0 {
            return Err(invalid(
                "workers/prefetch",
                format!("{}/{}", self.workers, self.prefetch),
                "must be at least 1",
            ));
        }
        if set.is_empty() {
            return Err(invalid("dataset", "empty", "has no images"));
        }
        let (_, h, w) = set.shape;
        self.augment.validate(h, w)
    }

    /// Number of batches in an epoch of `n` images.
    pub fn num_batches(&self, n: usize) -> usize {
        if self.drop_last { n / self.batch_size } else { n.div_ceil(self.batch_size) }
    }
}

/// One batch on the host: normalised images `(n, c, h, w)` and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct HostBatch {
    /// Normalised pixels, image after image.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<u32>,
    /// Images in the batch.
    pub len: usize,
}

/// The order of an epoch: a seeded permutation, or file order.
pub fn epoch_order(n: usize, cfg: &BatchConfig, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if cfg.shuffle {
        let mut rng = Stream::DataOrder.rng(step_key(cfg.seed, epoch));
        order.shuffle(&mut rng);
    }
    order
}

/// The augmentation stream of the image at `position` of epoch `epoch`
/// (`seht_estimator::streams`).
fn image_rng(seed: u64, epoch: u64, position: usize) -> ChaCha8Rng {
    Stream::Augmentation { position: position as u32 }.rng(step_key(seed, epoch))
}

/// Prepares the images at `positions` of the epoch order.
fn prepare(
    set: &ImageSet,
    cfg: &BatchConfig,
    epoch: u64,
    order: &[usize],
    positions: std::ops::Range<usize>,
) -> HostBatch {
    let len = positions.len();
    let per = set.image_len();
    let mut images = vec![0f32; len * per];
    let labels: Vec<u32> = positions.clone().map(|p| set.labels[order[p]]).collect();
    let chunk = len.div_ceil(cfg.workers.max(1));
    std::thread::scope(|s| {
        for (w, out) in images.chunks_mut(chunk.max(1) * per).enumerate() {
            let start = positions.start + w * chunk;
            s.spawn(move || {
                let mut raw = Vec::with_capacity(per);
                let mut norm = Vec::with_capacity(per);
                for (k, img) in out.chunks_mut(per).enumerate() {
                    let p = start + k;
                    let mut rng = image_rng(cfg.seed, epoch, p);
                    raw.clear();
                    norm.clear();
                    cfg.augment.crop_flip(set.image(order[p]), set.shape, &mut rng, &mut raw);
                    set.normalise_into(&raw, &mut norm);
                    cfg.augment.cutout(&mut norm, set.shape, &mut rng);
                    img.copy_from_slice(&norm);
                }
            });
        }
    });
    HostBatch { images, labels, len }
}

/// The batches of one epoch, prepared by a background thread.
pub struct EpochBatches {
    rx: Receiver<HostBatch>,
    handle: Option<JoinHandle<()>>,
    shape: (usize, usize, usize),
    remaining: usize,
}

impl EpochBatches {
    /// Starts preparing epoch `epoch` of `set` from batch `start_batch` on
    /// (to resume mid-epoch), `cfg.prefetch` batches ahead.
    pub fn new(set: Arc<ImageSet>, cfg: BatchConfig, epoch: u64, start_batch: usize) -> Result<Self> {
        cfg.validate(&set)?;
        let n = set.len();
        let total = cfg.num_batches(n);
        if start_batch > total {
            return Err(invalid("start_batch", start_batch, format!("the epoch has {total} batches")));
        }
        let (tx, rx) = sync_channel(cfg.prefetch);
        let shape = set.shape;
        let handle = std::thread::Builder::new()
            .name(format!("seht-data epoch {epoch}"))
            .spawn(move || {
                let order = epoch_order(n, &cfg, epoch);
                for b in start_batch..total {
                    let range = b * cfg.batch_size..((b + 1) * cfg.batch_size).min(n);
                    if tx.send(prepare(&set, &cfg, epoch, &order, range)).is_err() {
                        return; // consumer dropped
                    }
                }
            })
            .map_err(|e| Error::Io { path: "<prefetch thread>".into(), source: e })?;
        Ok(Self { rx, handle: Some(handle), shape, remaining: total - start_batch })
    }

    /// The next batch on the host, or `None` at the end of the epoch.
    pub fn next_host(&mut self) -> Option<HostBatch> {
        if self.remaining == 0 {
            return None;
        }
        let b = self.rx.recv().ok()?;
        self.remaining -= 1;
        Some(b)
    }

    /// The next batch as tensors on `device`: images `(n, c, h, w)` f32 and
    /// labels `(n,)` u32.
    pub fn next_batch(&mut self, device: &Device) -> Result<Option<(Tensor, Tensor)>> {
        let Some(b) = self.next_host() else { return Ok(None) };
        let (c, h, w) = self.shape;
        Ok(Some((Tensor::from_vec(b.images, (b.len, c, h, w), device)?, Tensor::from_vec(b.labels, b.len, device)?)))
    }

    /// Batches still to come.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Unblock the producer, then wait for it.
        while self.rx.try_recv().is_ok() {}
        let rx = std::mem::replace(&mut self.rx, sync_channel(1).1);
        drop(rx);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
