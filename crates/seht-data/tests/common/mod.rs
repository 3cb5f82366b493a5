//! Test helpers: temporary folders, and the fixture writers of
//! `seht_data::fixtures` with the formula pixels these tests recompute.
#![allow(dead_code, unused_imports)]

use std::path::{Path, PathBuf};

use seht_data::fixtures::{self, Pixels};
pub use seht_data::fixtures::{gzip, idx, pixel};
pub use tempfile::TempDir;

/// A fresh temporary folder (removed on drop), named after the test's tag.
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("seht-data-{tag}-")).tempdir().expect("temp dir")
}

/// A CIFAR-10 record: label then the 3072 formula pixels of set `salt`.
pub fn cifar10_record(salt: usize, i: usize, label: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|k| pixel(salt, i, k)));
    r
}

/// CIFAR-10 with formula pixels: record i of file f has label (f + i) % 10.
pub fn write_cifar10(root: &Path, per_file: usize) -> PathBuf {
    fixtures::cifar10(root, per_file, Pixels::Formula).expect("cifar10 fixture")
}

/// CIFAR-100 with formula pixels: record i has coarse i % 20, fine (7i) % 100.
pub fn write_cifar100(root: &Path, train: usize, test: usize) -> PathBuf {
    fixtures::cifar100(root, train, test, Pixels::Formula).expect("cifar100 fixture")
}

/// Fashion-MNIST: pixel (i, k) = (3i + k) % 256, label i % 10.
pub fn write_fashion(root: &Path, train: u32, test: u32) -> PathBuf {
    fixtures::fashion_mnist(root, train, test).expect("fashion fixture")
}
