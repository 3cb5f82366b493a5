//! Fixture writers: small files in the exact binary and text formats.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// A fresh temporary folder (removed on drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "seht-data-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
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
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).expect("dir");
    let names = [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ];
    for (f, name) in names.iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            bytes.extend(cifar10_record(f, i, ((f + i) % 10) as u8));
        }
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    std::fs::write(
        dir.join("batches.meta.txt"),
        "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n",
    )
    .expect("meta");
    dir
}

/// Writes a CIFAR-100 folder: record i has coarse label i % 20, fine (i*7) % 100.
pub fn write_cifar100(root: &Path, train: usize, test: usize) -> PathBuf {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir).expect("dir");
    for (f, (name, n)) in [("train.bin", train), ("test.bin", test)].into_iter().enumerate() {
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.push((i % 20) as u8);
            bytes.push(((i * 7) % 100) as u8);
            bytes.extend((0..3072).map(|k| pixel(10 + f, i, k)));
        }
        std::fs::write(dir.join(name), bytes).expect("write");
    }
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), fine).expect("names");
    dir
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
