//! Augmentation, subsets and epoch iteration.
#![cfg(feature = "tensors")]

mod common;

use std::sync::Arc;

use common::*;
use rand::SeedableRng;
use seht_data::{Augment, BatchConfig, EpochBatches, ImageSet, Subset, load_cifar10, subset};

fn cifar(per_file: usize) -> (TempDir, ImageSet) {
    let tmp = temp_dir("batches");
    let dir = write_cifar10(tmp.path(), per_file);
    let ds = load_cifar10(&dir).expect("load");
    (tmp, ds.train)
}

fn cfg(batch: usize, augment: Augment, workers: usize) -> BatchConfig {
    BatchConfig { batch_size: batch, shuffle: true, drop_last: false, augment, seed: 11, workers, prefetch: 2 }
}

fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand_chacha::ChaCha8Rng::seed_from_u64(seed)
}

#[test]
fn crop_with_padding_is_a_shift_with_black_borders() {
    let (_t, set) = cifar(1);
    let src = set.image(0);
    let aug = Augment { crop_padding: Some(4), hflip: false, cutout: None };
    let mut seen_shift = false;
    for s in 0..20 {
        let mut out = Vec::new();
        aug.crop_flip(src, set.shape, &mut rng(s), &mut out);
        assert_eq!(out.len(), src.len());
        // Recover the shift from where the source's (16,16) pixel went, then check every pixel.
        let (dy, dx) = (-4isize..=4)
            .flat_map(|dy| (-4isize..=4).map(move |dx| (dy, dx)))
            .find(|&(dy, dx)| {
                (0..32).all(|y| {
                    (0..32).all(|x| {
                        let (sy, sx) = (y as isize + dy, x as isize + dx);
                        let want = if (0..32).contains(&sy) && (0..32).contains(&sx) {
                            src[(sy * 32 + sx) as usize]
                        } else {
                            0
                        };
                        out[y * 32 + x] == want
                    })
                })
            })
            .expect("output is the input shifted by at most 4 pixels, zero-filled");
        seen_shift |= (dy, dx) != (0, 0);
    }
    assert!(seen_shift);
}

#[test]
fn flip_mirrors_rows_and_cutout_zeroes_a_clipped_square() {
    let (_t, set) = cifar(1);
    let src = set.image(0);
    let flip = Augment { crop_padding: None, hflip: true, cutout: None };
    let (mut flipped, mut same) = (0, 0);
    for s in 0..40 {
        let mut out = Vec::new();
        flip.crop_flip(src, set.shape, &mut rng(s), &mut out);
        if out == src {
            same += 1;
        } else {
            assert!((0..3 * 32).all(|r| (0..32).all(|x| out[r * 32 + x] == src[r * 32 + 31 - x])));
            flipped += 1;
        }
    }
    assert!(flipped > 5 && same > 5, "flip with probability 1/2: {flipped} flipped, {same} not");

    let cut = Augment { crop_padding: None, hflip: false, cutout: Some(8) };
    let mut sizes = std::collections::BTreeSet::new();
    for s in 0..200 {
        let mut img = vec![1.0f32; 3 * 32 * 32];
        cut.cutout(&mut img, set.shape, &mut rng(s));
        let zeros = img.iter().filter(|&&v| v == 0.0).count();
        assert_eq!(zeros % 3, 0, "the same square in every channel");
        let per = zeros / 3;
        assert!(per > 0 && per <= 64, "square of side 8, clipped at the border: {per}");
        sizes.insert(per);
    }
    assert!(sizes.contains(&64) && sizes.len() > 3, "full and clipped squares both occur: {sizes:?}");
}

#[test]
fn an_epoch_covers_every_image_once_in_a_seeded_order() {
    let (_t, set) = cifar(7); // 35 images
    let set = Arc::new(set);
    let labels_of = |workers: usize, epoch: u64, start: usize| -> Vec<(Vec<u32>, Vec<f32>)> {
        let mut it = EpochBatches::new(set.clone(), cfg(8, Augment::CIFAR, workers), epoch, start).expect("epoch");
        let mut out = Vec::new();
        while let Some(b) = it.next_host() {
            out.push((b.labels, b.images));
        }
        out
    };
    let e0 = labels_of(1, 0, 0);
    assert_eq!(e0.len(), 5, "35 images in batches of 8, last one smaller");
    assert_eq!(e0[4].0.len(), 3);
    let mut counts = [0usize; 10];
    e0.iter().flat_map(|(l, _)| l).for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts.to_vec(), set.class_counts());
    assert_eq!(e0, labels_of(3, 0, 0), "worker count does not change the batches");
    assert_eq!(e0[2..], labels_of(2, 0, 2)[..], "resuming at batch 2 gives the rest of the epoch");
    assert_ne!(e0, labels_of(1, 1, 0), "another epoch, another order and other augmentations");
    // Evaluation: file order, no augmentation.
    let eval = BatchConfig { shuffle: false, augment: Augment::NONE, ..cfg(35, Augment::NONE, 1) };
    let mut it = EpochBatches::new(set.clone(), eval, 0, 0).expect("epoch");
    let (xs, ys) = it.next_batch(&candle_core::Device::Cpu).expect("batch").expect("one batch");
    assert_eq!(xs.dims(), [35, 3, 32, 32]);
    assert_eq!(ys.to_vec1::<u32>().expect("labels"), set.labels);
    assert!(it.next_batch(&candle_core::Device::Cpu).expect("end").is_none());
}

#[test]
fn dropping_an_unfinished_epoch_stops_its_thread() {
    let (_t, set) = cifar(20);
    let mut it = EpochBatches::new(Arc::new(set), cfg(2, Augment::CIFAR, 1), 0, 0).expect("epoch");
    assert!(it.next_host().is_some());
    drop(it); // must not hang
}

#[test]
fn subsets_first_n_and_class_balanced() {
    let (_t, set) = cifar(10); // 50 images, labels (f + i) % 10: 5 of each class
    let first = subset(&set, Subset::First(7)).expect("first");
    assert_eq!(first.labels, set.labels[..7]);
    assert_eq!(first.image(6), set.image(6));
    let bal = subset(&set, Subset::Balanced { per_class: 3, seed: 4 }).expect("balanced");
    assert_eq!(bal.class_counts(), vec![3; 10]);
    assert_eq!(bal, subset(&set, Subset::Balanced { per_class: 3, seed: 4 }).expect("again"));
    assert_ne!(bal, subset(&set, Subset::Balanced { per_class: 3, seed: 5 }).expect("other seed"));
    assert!(matches!(subset(&set, Subset::Balanced { per_class: 6, seed: 0 }), Err(seht_data::Error::Invalid { .. })));
    assert!(matches!(subset(&set, Subset::First(0)), Err(seht_data::Error::Invalid { .. })));
    assert!(matches!(subset(&set, Subset::First(51)), Err(seht_data::Error::Invalid { .. })));
}

#[test]
fn invalid_batch_configs_are_rejected() {
    let (_t, set) = cifar(2);
    let set = Arc::new(set);
    assert!(EpochBatches::new(set.clone(), cfg(0, Augment::NONE, 1), 0, 0).is_err());
    assert!(EpochBatches::new(set.clone(), cfg(4, Augment { cutout: Some(0), ..Augment::NONE }, 1), 0, 0).is_err());
    assert!(EpochBatches::new(set.clone(), cfg(4, Augment::NONE, 0), 0, 0).is_err());
    assert!(EpochBatches::new(set, cfg(4, Augment::NONE, 1), 0, 4).is_err(), "10 images make 3 batches");
}
