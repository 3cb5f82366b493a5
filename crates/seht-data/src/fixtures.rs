//! Small datasets in the exact on-disk layouts of CIFAR-10's and CIFAR-100's
//! binary versions, for tests and for the smoke preset of `cargo xtask
//! reproduce`: this module owns the layout (file names, record format, name
//! files); the caller gives each record's label and pixels.

use std::path::{Path, PathBuf};

/// CIFAR-10's six files: five training batches, then the test batch.
pub const CIFAR10_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];

/// CIFAR-10's class names, as in its `batches.meta.txt`.
pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];

/// Bytes of one image: 3 channels of 32×32, channel-major.
pub const IMAGE_BYTES: usize = 3 * 32 * 32;

/// Writes `root/cifar-10-batches-bin/` with `per_file` records in each of
/// [`CIFAR10_FILES`] and the class names; record `i` of file `f` (0–5, 5 the
/// test batch) is `record(f, i)` = (label 0–9, [`IMAGE_BYTES`] pixels).
/// Returns the folder.
///
/// # Errors
///
/// Creating the folder or writing a file.
pub fn write_cifar10(
    root: &Path,
    per_file: usize,
    mut record: impl FnMut(usize, usize) -> (u8, Vec<u8>),
) -> std::io::Result<PathBuf> {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir)?;
    for (f, name) in CIFAR10_FILES.iter().enumerate() {
        let mut bytes = Vec::with_capacity(per_file * (1 + IMAGE_BYTES));
        for i in 0..per_file {
            let (label, pixels) = record(f, i);
            bytes.push(label);
            bytes.extend(pixels);
        }
        std::fs::write(dir.join(name), bytes)?;
    }
    std::fs::write(dir.join("batches.meta.txt"), CIFAR10_CLASSES.join("\n") + "\n\n")?;
    Ok(dir)
}

/// Writes `root/cifar-100-binary/` with `train` and `test` records and the
/// fine label names (`fine0` …); record `i` of file `f` (0 train, 1 test) is
/// `record(f, i)` = (coarse label 0–19, fine label 0–99, pixels). Returns the
/// folder.
///
/// # Errors
///
/// Creating the folder or writing a file.
pub fn write_cifar100(
    root: &Path,
    train: usize,
    test: usize,
    mut record: impl FnMut(usize, usize) -> (u8, u8, Vec<u8>),
) -> std::io::Result<PathBuf> {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir)?;
    for (f, (name, n)) in [("train.bin", train), ("test.bin", test)].into_iter().enumerate() {
        let mut bytes = Vec::with_capacity(n * (2 + IMAGE_BYTES));
        for i in 0..n {
            let (coarse, fine, pixels) = record(f, i);
            bytes.extend([coarse, fine]);
            bytes.extend(pixels);
        }
        std::fs::write(dir.join(name), bytes)?;
    }
    let fine: String = (0..100).map(|i| format!("fine{i}\n")).collect();
    std::fs::write(dir.join("fine_label_names.txt"), fine)?;
    Ok(dir)
}

/// A learnable image for class `label`: bright where `(x/4 + y/8 + c) mod 10`
/// equals `label mod 10`, dark elsewhere, plus `noise()` (channel-major).
pub fn pattern_image(label: usize, noise: &mut impl FnMut() -> u8) -> Vec<u8> {
    (0..IMAGE_BYTES)
        .map(|k| {
            let (c, y, x) = (k / 1024, (k % 1024) / 32, k % 32);
            (if (x / 4 + y / 8 + c) % 10 == label % 10 { 180 } else { 40 }) + noise()
        })
        .collect()
}

/// Noise bytes in `0..64` from a 64-bit linear congruential generator
/// (Knuth's MMIX constants) started at `seed`: the same bytes everywhere.
pub fn lcg_noise(seed: u64) -> impl FnMut() -> u8 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 58) as u8
    }
}
