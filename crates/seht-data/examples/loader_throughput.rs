//! Images per second for loading + augmentation (crop with 4-pixel padding,
//! flip, Cutout 16, normalisation) through the prefetching batch iterator,
//! with 1 and 2 worker threads, batch 128, on 50,000 CIFAR-sized images
//! (random bytes in memory, so that disk speed does not enter).
//!
//! ```sh
//! cargo run --release -p seht-data --example loader_throughput
//! ```

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use rand::{Rng, SeedableRng};
use seht_data::{Augment, BatchConfig, EpochBatches, ImageSet};

fn main() -> Result<()> {
    let n = 50_000;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let set = Arc::new(ImageSet {
        pixels: (0..n * 3072).map(|_| rng.random::<u8>()).collect(),
        labels: (0..n as u32).map(|i| i % 10).collect(),
        shape: (3, 32, 32),
        num_classes: 10,
        class_names: Vec::new(),
        mean: seht_data::CIFAR10_MEAN.to_vec(),
        std: seht_data::CIFAR10_STD.to_vec(),
    });
    let augment = Augment { crop_padding: Some(4), hflip: true, cutout: Some(16) };
    println!("| workers | images/s (load + crop + flip + Cutout + normalise, batch 128) |");
    println!("| ---: | ---: |");
    for workers in [1, 2] {
        let cfg =
            BatchConfig { batch_size: 128, shuffle: true, drop_last: false, augment, seed: 1, workers, prefetch: 4 };
        let t0 = Instant::now();
        let mut it = EpochBatches::new(set.clone(), cfg, 0, 0)?;
        let mut seen = 0;
        while let Some((xs, _)) = it.next_batch(&candle_core::Device::Cpu)? {
            seen += xs.dim(0)?;
        }
        println!("| {workers} | {:.0} |", seen as f64 / t0.elapsed().as_secs_f64());
    }
    Ok(())
}
