//! Fixture writers: small files in the exact binary and text formats.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

pub use tempfile::TempDir;

/// A fresh temporary folder named after `tag` (removed on drop).
pub fn temp_dir(tag: &str) -> TempDir {
    tempfile::Builder::new().prefix(&format!("seht-data-{tag}-")).tempdir().expect("temp dir")
}

/// Pixel `k` (0..3072) of image `i` in fixture set `salt`: a formula the
/// tests can recompute.
pub fn pixel(salt: usize, i: usize, k: usize) -> u8 {
    ((salt * 131 + i * 17 + k * 7) % 251) as u8
}

/// A CIFAR-10 record: label then 3072 pixels.
pub fn cifar10_record(salt: usize, i: usize, label: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|k| pixel(salt, i, k)));
    r
}

/// Writes a CIFAR-10 folder with `per_file` records in each of the six files;
/// label of record i in file f is (f + i) % 10. Returns the folder.
pub fn write_cifar10(root: &Path, per_file: usize) -> PathBuf {
    seht_data::fixtures::write_cifar10(root, per_file, |f, i| {
        let label = ((f + i) % 10) as u8;
        (label, cifar10_record(f, i, label)[1..].to_vec())
    })
    .expect("CIFAR-10 fixture")
}

/// Writes a CIFAR-100 folder: record i has coarse label i % 20, fine (i*7) % 100.
pub fn write_cifar100(root: &Path, train: usize, test: usize) -> PathBuf {
    seht_data::fixtures::write_cifar100(root, train, test, |f, i| {
        ((i % 20) as u8, ((i * 7) % 100) as u8, (0..3072).map(|k| pixel(10 + f, i, k)).collect())
    })
    .expect("CIFAR-100 fixture")
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip");
    e.finish().expect("gzip")
}

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Writes a Fashion-MNIST folder with `train`/`test` images of 28×28; pixel
/// (i, k) = (i*3 + k) % 256, label i % 10.
pub fn write_fashion(root: &Path, train: u32, test: u32) -> PathBuf {
    let dir = root.join("fashion");
    std::fs::create_dir_all(&dir).expect("dir");
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let px: Vec<u8> = (0..n as usize).flat_map(|i| (0..784).map(move |k| ((i * 3 + k) % 256) as u8)).collect();
        let lb: Vec<u8> = (0..n as usize).map(|i| (i % 10) as u8).collect();
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&idx(&[n, 28, 28], &px))).expect("w");
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&idx(&[n], &lb))).expect("w");
    }
    dir
}
