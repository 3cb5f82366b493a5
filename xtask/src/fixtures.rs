//! Fixture data in the real formats for the smoke preset: small CIFAR-10 and
//! CIFAR-100 binary folders (images are a per-class pattern plus noise, so a
//! network can learn something) and a tiny corpus in the WikiText-2 layout.

use std::path::Path;

use anyhow::Result;

fn image_bytes(label: usize, mut noise: impl FnMut() -> u8) -> Vec<u8> {
    (0..3072)
        .map(|k| {
            let (c, y, x) = (k / 1024, (k % 1024) / 32, k % 32);
            (if (x / 4 + y / 8 + c) % 10 == label % 10 { 180 } else { 40 }) + noise()
        })
        .collect()
}

fn lcg(seed: u64) -> impl FnMut() -> u8 {
    let mut s = seed;
    move || {
        s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (s >> 58) as u8
    }
}

/// Writes `cifar-10-batches-bin/` with `per_file` records per file.
pub fn cifar10(root: &Path, per_file: usize) -> Result<()> {
    let dir = root.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir)?;
    let mut noise = lcg(1);
    for name in [
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
        "test_batch.bin",
    ] {
        let mut bytes = Vec::with_capacity(per_file * 3073);
        for i in 0..per_file {
            bytes.push((i % 10) as u8);
            bytes.extend(image_bytes(i % 10, &mut noise));
        }
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// Writes `cifar-100-binary/` with `train` and `test` records.
pub fn cifar100(root: &Path, train: usize, test: usize) -> Result<()> {
    let dir = root.join("cifar-100-binary");
    std::fs::create_dir_all(&dir)?;
    let mut noise = lcg(2);
    for (name, n) in [("train.bin", train), ("test.bin", test)] {
        let mut bytes = Vec::with_capacity(n * 3074);
        for i in 0..n {
            let fine = i % 100;
            bytes.push((fine / 5) as u8);
            bytes.push(fine as u8);
            bytes.extend(image_bytes(fine, &mut noise));
        }
        std::fs::write(dir.join(name), bytes)?;
    }
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
