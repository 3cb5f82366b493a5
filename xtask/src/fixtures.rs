//! Fixture data in the real formats for the smoke preset: small CIFAR-10 and
//! CIFAR-100 binary folders (images are a per-class pattern plus noise, so a
//! network can learn something) and a tiny corpus in the WikiText-2 layout.

use std::path::Path;

use anyhow::Result;
use seht_data::fixtures::{self, lcg_noise, pattern_image};

/// Writes `cifar-10-batches-bin/` with `per_file` records per file.
pub fn cifar10(root: &Path, per_file: usize) -> Result<()> {
    let mut noise = lcg_noise(1);
    fixtures::write_cifar10(root, per_file, |_, i| ((i % 10) as u8, pattern_image(i % 10, &mut noise)))?;
    Ok(())
}

/// Writes `cifar-100-binary/` with `train` and `test` records.
pub fn cifar100(root: &Path, train: usize, test: usize) -> Result<()> {
    let mut noise = lcg_noise(2);
    fixtures::write_cifar100(root, train, test, |_, i| {
        let fine = i % 100;
        ((fine / 5) as u8, fine as u8, pattern_image(fine, &mut noise))
    })?;
    Ok(())
}

/// Writes `wikitext-2/wiki.{train,valid,test}.tokens`.
pub fn wikitext(root: &Path) -> Result<()> {
    let dir = root.join("wikitext-2");
    std::fs::create_dir_all(&dir)?;
    let animals = ["cat", "dog", "bird", "fox"];
    let places = ["mat", "log", "hat", "box"];
    let line = |i: usize| format!(" the {} sat on the {} . \n", animals[i % 4], places[(i / 4) % 4]);
    let text = |n: usize, off: usize| -> String { (0..n).map(|i| line(i + off)).collect() };
    std::fs::write(dir.join("wiki.train.tokens"), format!(" = Fixture = \n\n{}", text(80, 0)))?;
    std::fs::write(dir.join("wiki.valid.tokens"), text(16, 1))?;
    std::fs::write(dir.join("wiki.test.tokens"), text(16, 2))?;
    Ok(())
}
