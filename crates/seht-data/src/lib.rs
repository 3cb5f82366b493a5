//! Datasets of the paper's experiments and of offline demonstrations:
//! CIFAR-10 and CIFAR-100 (binary), Fashion-MNIST (IDX, gzipped), WikiText-2
//! and any folder of three text splits; seeded augmentation (crop, flip,
//! Cutout); class-balanced subsets; minibatches prepared by a prefetching
//! thread; and (feature `fetch`, on by default) verified downloads of the
//! canonical archives.
//!
//! Every error names the file, URL or value at fault ([`Error`]); a damaged
//! file is never read as a shorter dataset.

mod augment;
pub mod checksums;
mod cifar;
pub mod corpus;
mod error;
mod fashion_mnist;
#[cfg(feature = "fetch")]
pub mod fetch;
pub mod fixtures;
mod image;
#[cfg(feature = "tensors")]
mod loader;
mod text;

pub use augment::Augment;
pub use cifar::{CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, Cifar100Label, load_cifar10, load_cifar100};
pub use error::{Error, Result};
pub use fashion_mnist::{load_fashion_mnist, parse_idx};
pub use image::{ImageDataset, ImageSet};
#[cfg(feature = "tensors")]
pub use loader::{BatchConfig, EpochBatches, HostBatch, Subset, epoch_order, subset};
pub use text::{Batchified, EOS, Split, TextCorpus, UNK, Vocab, WIKITEXT2_FILES};

/// Fashion-MNIST constants (Debian's folder, normalisation, class names).
pub mod fashion {
    pub use crate::fashion_mnist::{CLASS_NAMES, DEBIAN_DIR, MEAN, STD};
}
