//! Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) in its IDX format, gzipped:
//! `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
//! `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz` (60,000 and
//! 10,000 28×28 grey images, 10 classes). Debian's `dataset-fashion-mnist`
//! package installs them under `/usr/share/datasets/fashion-mnist/`, which
//! makes it real image data that machines without internet can have.
//!
//! IDX: a big-endian header — two zero bytes, a type byte (0x08 = u8), the
//! number of dimensions, then each dimension as a u32 — followed by the data.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result, read_file};
use crate::image::{ImageDataset, ImageSet};

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";
/// Per-channel mean of pixel/255 over the training set.
pub const MEAN: f32 = 0.2860;
/// Per-channel standard deviation of pixel/255 over the training set.
pub const STD: f32 = 0.3530;
/// The class names, in label order.
pub const CLASS_NAMES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

const HINT: &str = "Fashion-MNIST IDX files; on Debian: apt-get install dataset-fashion-mnist (files under /usr/share/datasets/fashion-mnist)";

fn gunzip(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path, HINT)?;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| Error::Format { path: path.to_path_buf(), reason: format!("corrupt gzip stream: {e}") })?;
    Ok(out)
}

/// Parses an IDX file of unsigned bytes: returns its dimensions and data.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |reason: String| Error::Format { path: path.to_path_buf(), reason };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad("not an IDX file (the magic number must start with two zero bytes)".into()));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!("IDX data type 0x{:02x} is not unsigned bytes (0x08)", bytes[2])));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err(bad(format!("truncated IDX header ({} bytes, {nd} dimensions need {header})", bytes.len())));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes([bytes[4 + 4 * i], bytes[5 + 4 * i], bytes[6 + 4 * i], bytes[7 + 4 * i]]) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(bad(format!("IDX dimensions {dims:?} need {n} data bytes, the file has {}", bytes.len() - header)));
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn load_split(dir: &Path, prefix: &str) -> Result<ImageSet> {
    let ipath = dir.join(format!("{prefix}-images-idx3-ubyte.gz"));
    let lpath = dir.join(format!("{prefix}-labels-idx1-ubyte.gz"));
    let (idims, pixels) = parse_idx(&ipath, &gunzip(&ipath)?)?;
    let (ldims, labels) = parse_idx(&lpath, &gunzip(&lpath)?)?;
    if idims.len() != 3 || ldims.len() != 1 {
        return Err(Error::Format {
            path: ipath,
            reason: format!("expected 3-D images and 1-D labels, got {idims:?} and {ldims:?}"),
        });
    }
    if idims[0] != ldims[0] {
        return Err(Error::Format { path: lpath, reason: format!("{} labels for {} images", ldims[0], idims[0]) });
    }
    let labels: Vec<u32> = labels.into_iter().map(u32::from).collect();
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l >= 10) {
        return Err(Error::LabelOutOfRange { path: lpath, record: i, label: l, classes: 10 });
    }
    Ok(ImageSet {
        pixels,
        labels,
        shape: (1, idims[1], idims[2]),
        num_classes: 10,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        mean: vec![MEAN],
        std: vec![STD],
    })
}

/// Loads Fashion-MNIST from `dir` (e.g. [`DEBIAN_DIR`], or the subset
/// shipped in the repository under `data/shipped/fashion-mnist`). When the
/// folder holds a `SHA256SUMS` list, every listed file is checked first.
///
/// # Errors
/// A missing or malformed file, a label ≥ 10, or a file that differs from its
/// listed checksum ([`Error::Modified`]).
pub fn load_fashion_mnist(dir: impl AsRef<Path>) -> Result<ImageDataset> {
    let dir = dir.as_ref();
    crate::checksums::verify_sha256sums(dir)?;
    Ok(ImageDataset { train: load_split(dir, "train")?, test: load_split(dir, "t10k")? })
}
