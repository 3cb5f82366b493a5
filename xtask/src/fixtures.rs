//! Fixture data for the smoke preset: small CIFAR-10 and CIFAR-100 binary
//! folders of learnable images and a tiny corpus in the WikiText-2 layout,
//! written by `seht_data::fixtures` (the same writers the tests use).

use std::path::Path;

use anyhow::Result;
use seht_data::fixtures::{self, Pixels};

/// Writes every dataset the paper's tables read into `root`: CIFAR-10 (16
/// records per file), CIFAR-100 (100 training, 20 test) and WikiText-2 (80,
/// 16 and 16 sentences).
pub fn write_all(root: &Path) -> Result<()> {
    fixtures::cifar10(root, 16, Pixels::Learnable { seed: 1 })?;
    fixtures::cifar100(root, 100, 20, Pixels::Learnable { seed: 2 })?;
    fixtures::wikitext(root, [80, 16, 16])?;
    Ok(())
}
