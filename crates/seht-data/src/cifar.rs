//! CIFAR-10 and CIFAR-100 in their binary formats (Krizhevsky 2009,
//! <https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! * CIFAR-10, folder `cifar-10-batches-bin/`: `data_batch_1.bin` …
//!   `data_batch_5.bin` (training) and `test_batch.bin`, each 10,000 records of
//!   3,073 bytes: the label (0–9), then 1,024 red, 1,024 green and 1,024 blue
//!   bytes in row-major order. Class names in `batches.meta.txt`.
//! * CIFAR-100, folder `cifar-100-binary/`: `train.bin` (50,000 records) and
//!   `test.bin` (10,000), 3,074 bytes each: the coarse label (0–19), the fine
//!   label (0–99), then the 3,072 pixel bytes. Names in `fine_label_names.txt`
//!   and `coarse_label_names.txt`.
//!
//! `candle_datasets::vision::cifar::load_dir` reads CIFAR-10 only, insists on
//! exactly 10,000 records per file, returns no typed error naming the file,
//! and pulls in the hub downloader; this loader reads both datasets, checks
//! sizes and labels, and keeps raw bytes for augmentation.

use std::path::Path;

use crate::error::{Error, Result, read_file};
use crate::image::{ImageDataset, ImageSet};

/// CIFAR-10 per-channel mean of pixel/255 over the training set.
pub const CIFAR10_MEAN: [f32; 3] = [0.4914, 0.4822, 0.4465];
/// CIFAR-10 per-channel standard deviation of pixel/255 over the training set.
pub const CIFAR10_STD: [f32; 3] = [0.2470, 0.2435, 0.2616];
/// CIFAR-100 per-channel mean.
pub const CIFAR100_MEAN: [f32; 3] = [0.5071, 0.4865, 0.4409];
/// CIFAR-100 per-channel standard deviation.
pub const CIFAR100_STD: [f32; 3] = [0.2673, 0.2564, 0.2762];

const PIXELS: usize = 3 * 32 * 32;

/// Which CIFAR-100 label to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cifar100Label {
    /// The 100 fine classes (the default, and the paper's).
    #[default]
    Fine,
    /// The 20 superclasses.
    Coarse,
}

fn read_records(
    path: &Path,
    label_bytes: usize,
    label_at: usize,
    classes: usize,
    hint: &str,
) -> Result<(Vec<u8>, Vec<u32>)> {
    let data = read_file(path, hint)?;
    let record = label_bytes + PIXELS;
    if data.is_empty() || data.len() % record != 0 {
        return Err(Error::BadSize { path: path.to_path_buf(), size: data.len() as u64, record });
    }
    let n = data.len() / record;
    let mut pixels = Vec::with_capacity(n * PIXELS);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in data.chunks_exact(record).enumerate() {
        let label = rec[label_at] as u32;
        if label as usize >= classes {
            return Err(Error::LabelOutOfRange { path: path.to_path_buf(), record: i, label, classes });
        }
        labels.push(label);
        pixels.extend_from_slice(&rec[label_bytes..]);
    }
    Ok((pixels, labels))
}

fn read_names(path: &Path) -> Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

fn set(pixels: Vec<u8>, labels: Vec<u32>, classes: usize, names: &[String], mean: [f32; 3], std: [f32; 3]) -> ImageSet {
    ImageSet {
        pixels,
        labels,
        shape: (3, 32, 32),
        num_classes: classes,
        class_names: names.to_vec(),
        mean: mean.to_vec(),
        std: std.to_vec(),
    }
}

const CIFAR10_HINT: &str = "CIFAR-10 binary version, https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz; `cargo xtask fetch-data` downloads it";
const CIFAR100_HINT: &str = "CIFAR-100 binary version, https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz; `cargo xtask fetch-data` downloads it";

/// Loads CIFAR-10 from `dir` (the `cifar-10-batches-bin` folder itself).
pub fn load_cifar10(dir: impl AsRef<Path>) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let names = read_names(&dir.join("batches.meta.txt"))?;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for b in 1..=5 {
        let (p, l) = read_records(&dir.join(format!("data_batch_{b}.bin")), 1, 0, 10, CIFAR10_HINT)?;
        pixels.extend(p);
        labels.extend(l);
    }
    let train = set(pixels, labels, 10, &names, CIFAR10_MEAN, CIFAR10_STD);
    let (p, l) = read_records(&dir.join("test_batch.bin"), 1, 0, 10, CIFAR10_HINT)?;
    Ok(ImageDataset { train, test: set(p, l, 10, &names, CIFAR10_MEAN, CIFAR10_STD) })
}

/// Loads CIFAR-100 from `dir` (the `cifar-100-binary` folder itself).
pub fn load_cifar100(dir: impl AsRef<Path>, label: Cifar100Label) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    let (at, classes, names_file) = match label {
        Cifar100Label::Fine => (1, 100, "fine_label_names.txt"),
        Cifar100Label::Coarse => (0, 20, "coarse_label_names.txt"),
    };
    let names = read_names(&dir.join(names_file))?;
    let (p, l) = read_records(&dir.join("train.bin"), 2, at, classes, CIFAR100_HINT)?;
    let train = set(p, l, classes, &names, CIFAR100_MEAN, CIFAR100_STD);
    let (p, l) = read_records(&dir.join("test.bin"), 2, at, classes, CIFAR100_HINT)?;
    Ok(ImageDataset { train, test: set(p, l, classes, &names, CIFAR100_MEAN, CIFAR100_STD) })
}
