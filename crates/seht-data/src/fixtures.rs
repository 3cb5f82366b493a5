//! Fixture data: small files in the exact formats the loaders read (CIFAR-10
//! and CIFAR-100 binary, Fashion-MNIST's gzipped IDX, WikiText's layout),
//! for tests and for the `smoke` preset of `cargo xtask reproduce`. No
//! tensors: available without the `tensors` feature.
//!
//! Two kinds of images: [`Pixels::Formula`], whose every byte a test can
//! recompute ([`pixel`]), and [`Pixels::Learnable`], a per-class pattern plus
//! seeded noise that a small network learns within an epoch or two.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Result, io};

/// What the pixels (and labels) of fixture images are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// Byte `k` of image `i` of file `f` is [`pixel`]`(salt, i, k)` (salt `f`
    /// for CIFAR-10's six files, `10 + f` for CIFAR-100's train and test).
    /// Labels: CIFAR-10 record `i` of file `f` has `(f + i) % 10`; CIFAR-100
    /// record `i` has coarse `i % 20` and fine `(7·i) % 100`.
    Formula,
    /// Class `c` lights the pixels with `(x/4 + y/8 + channel) % 10 == c % 10`
    /// (180, else 40) plus noise in 0..64 from a linear congruential stream
    /// seeded with `seed`, continued across files. Labels: record `i` has
    /// class `i % 10` (CIFAR-10) or fine `i % 100`, coarse `fine / 5` (CIFAR-100).
    Learnable {
        /// Seed of the noise stream.
        seed: u64,
    },
}

/// Byte `k` (0..3072) of image `i` of fixture set `salt`, for
/// [`Pixels::Formula`].
pub fn pixel(salt: usize, i: usize, k: usize) -> u8 {
    ((salt * 131 + i * 17 + k * 7) % 251) as u8
}

/// The noise stream of [`Pixels::Learnable`] (Knuth's MMIX LCG, top 6 bits).
fn lcg(seed: u64) -> impl FnMut() -> u8 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 58) as u8
    }
}

fn pattern(class: usize, noise: &mut impl FnMut() -> u8) -> impl Iterator<Item = u8> {
    (0..3072).map(move |k| {
        let (c, y, x) = (k / 1024, (k % 1024) / 32, k % 32);
        (if (x / 4 + y / 8 + c) % 10 == class % 10 { 180 } else { 40 }) + noise()
    })
}

fn write(path: PathBuf, bytes: impl AsRef<[u8]>) -> Result<()> {
    std::fs::write(&path, bytes).map_err(io(path))
}

fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// CIFAR-10's file names, the five training batches then the test batch.
pub const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// Writes `root/cifar-10-batches-bin/` with `per_file` records in each of the
/// six files and `batches.meta.txt`; returns the folder.
///
/// # Errors
/// [`crate::Error::Io`] naming the file that could not be written.
pub fn cifar10(root: &Path, per_file: usize, pixels: Pixels) -> Result<PathBuf> {
    let dir = root.join("cifar-10-batches-bin");
    create(&dir)?;
    let mut noise = lcg(match pixels {
        Pixels::Learnable { seed } => seed,
        Pixels::Formula => 0,
    });
    for (f, name) in CIFAR10_FILES.iter().enumerate() {
        let mut bytes = Vec::with_capacity(per_file * 3073);
        for i in 0..per_file {
            match pixels {
                Pixels::Formula => {
                    bytes.push(((f + i) % 10) as u8);
                    bytes.extend((0..3072).map(|k| pixel(f, i, k)));
                }
                Pixels::Learnable { .. } => {
                    bytes.push((i % 10) as u8);
                    bytes.extend(pattern(i % 10, &mut noise));
                }
            }
        }
        write(dir.join(name), bytes)?;
    }
    write(dir.join("batches.meta.txt"), "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n")?;
    Ok(dir)
}

/// Writes `root/cifar-100-binary/` with `train` and `test` records and
/// `fine_label_names.txt` (`fine0` … `fine99`); returns the folder.
///
/// # Errors
/// [`crate::Error::Io`] naming the file that could not be written.
pub fn cifar100(root: &Path, train: usize, test: usize, pixels: Pixels) -> Result<PathBuf> {
    let dir = root.join("cifar-100-binary");
    create(&dir)?;
    let mut noise = lcg(match pixels {
        Pixels::Learnable { seed } => seed,
        Pixels::Formula => 0,
    });
    for (f, (name, n)) in [("train.bin", train), ("test.bin", test)].into_iter().enumerate() {
        let mut bytes = Vec::with_capacity(n * 3074);
        for i in 0..n {
            match pixels {
                Pixels::Formula => {
                    bytes.extend([(i % 20) as u8, ((i * 7) % 100) as u8]);
                    bytes.extend((0..3072).map(|k| pixel(10 + f, i, k)));
                }
                Pixels::Learnable { .. } => {
                    let fine = i % 100;
                    bytes.extend([(fine / 5) as u8, fine as u8]);
                    bytes.extend(pattern(fine, &mut noise));
                }
            }
        }
        write(dir.join(name), bytes)?;
    }
    write(dir.join("fine_label_names.txt"), (0..100).map(|i| format!("fine{i}\n")).collect::<String>())?;
    Ok(dir)
}

/// `bytes` gzipped.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = e.write_all(bytes);
    e.finish().unwrap_or_default()
}

/// An IDX file of unsigned bytes: header (`0 0 0x08 ndim`, big-endian
/// dimensions) then `data`.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        b.extend(d.to_be_bytes());
    }
    b.extend_from_slice(data);
    b
}

/// Writes `root/fashion/` with `train` and `test` 28×28 images in
/// Fashion-MNIST's four gzipped IDX files: pixel `(i, k)` = `(3i + k) % 256`,
/// label `i % 10`. Returns the folder.
///
/// # Errors
/// [`crate::Error::Io`] naming the file that could not be written.
pub fn fashion_mnist(root: &Path, train: u32, test: u32) -> Result<PathBuf> {
    let dir = root.join("fashion");
    create(&dir)?;
    for (prefix, n) in [("train", train), ("t10k", test)] {
        let px: Vec<u8> = (0..n as usize).flat_map(|i| (0..784).map(move |k| ((i * 3 + k) % 256) as u8)).collect();
        let lb: Vec<u8> = (0..n as usize).map(|i| (i % 10) as u8).collect();
        write(dir.join(format!("{prefix}-images-idx3-ubyte.gz")), gzip(&idx(&[n, 28, 28], &px)))?;
        write(dir.join(format!("{prefix}-labels-idx1-ubyte.gz")), gzip(&idx(&[n], &lb)))?;
    }
    Ok(dir)
}

/// Writes `root/wikitext-2/wiki.{train,valid,test}.tokens`: a heading line,
/// then `lines[s]` sentences "the <animal> sat on the <place> ." per split
/// (4 animals × 4 places; 15 word types with the heading, 16 with `<eos>`).
/// Returns the folder.
///
/// # Errors
/// [`crate::Error::Io`] naming the file that could not be written.
pub fn wikitext(root: &Path, lines: [usize; 3]) -> Result<PathBuf> {
    let dir = root.join("wikitext-2");
    create(&dir)?;
    let animals = ["cat", "dog", "bird", "fox"];
    let places = ["mat", "log", "hat", "box"];
    let line = |i: usize| format!(" the {} sat on the {} . \n", animals[i % 4], places[(i / 4) % 4]);
    for (s, name) in crate::WIKITEXT2_FILES.iter().enumerate() {
        let head = if s == 0 { " = Fixture = \n\n" } else { "" };
        let text: String = (0..lines[s]).map(|i| line(i + s)).collect();
        write(dir.join(name), format!("{head}{text}"))?;
    }
    Ok(dir)
}
