//! `cargo xtask fetch-data`: downloads and unpacks the datasets into a folder.

use std::path::PathBuf;

use anyhow::{Result, bail};
use seht_data::fetch::{ARCHIVES, FetchOptions, fetch_archive};

pub fn run(args: &[String]) -> Result<()> {
    let mut data_dir = PathBuf::from("data");
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => match it.next() {
                Some(d) => data_dir = PathBuf::from(d),
                None => bail!("--data-dir needs a folder"),
            },
            "-h" | "--help" => {
                println!("usage: cargo xtask fetch-data [--data-dir DIR] [cifar10|cifar100|wikitext2|all]...");
                return Ok(());
            }
            name => wanted.push(name.to_lowercase()),
        }
    }
    if wanted.is_empty() || wanted.iter().any(|w| w == "all") {
        wanted = vec!["cifar10".into(), "cifar100".into(), "wikitext2".into()];
    }
    let key = |name: &str| name.to_lowercase().replace(['-', ' '], "");
    let mut failed = Vec::new();
    for w in &wanted {
        let Some(archive) = ARCHIVES.iter().find(|a| key(a.name) == *w) else {
            bail!("unknown dataset `{w}`: choose cifar10, cifar100, wikitext2 or all");
        };
        eprintln!("{}: {} → {}", archive.name, archive.url, data_dir.join(archive.folder).display());
        match fetch_archive(archive, &data_dir, &FetchOptions::default()) {
            Ok(folder) => eprintln!("{}: ready in {}", archive.name, folder.display()),
            Err(e) => {
                eprintln!("{}: {e}", archive.name);
                failed.push(archive.name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("could not fetch {}", failed.join(", "));
    }
    Ok(())
}
