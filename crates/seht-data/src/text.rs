//! Word-level text corpora: WikiText-2 (Merity et al. 2016) and any folder of
//! three plain-text splits, read as the usual word-language-model reference
//! (PyTorch's `word_language_model`) does: each line split on whitespace,
//! an end-of-sentence token `<eos>` appended per line, the vocabulary built in
//! first-seen order. Here the vocabulary comes from the training split only;
//! a validation or test word unseen in training maps to `<unk>` (WikiText
//! already uses `<unk>`, so it has none), and the count is reported.

use std::path::{Path, PathBuf};

#[cfg(feature = "tensors")]
use candle_core::{Device, Tensor};

use crate::error::{Error, Result, invalid, read_file};

/// The end-of-sentence token appended to every line.
pub const EOS: &str = "<eos>";
/// The unknown-word token.
pub const UNK: &str = "<unk>";

/// The file names of WikiText-2's splits, in its `wikitext-2/` folder.
pub const WIKITEXT2_FILES: [&str; 3] = ["wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"];

/// A word ↔ id mapping.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vocab {
    words: Vec<String>,
    ids: std::collections::HashMap<String, u32>,
}

impl Vocab {
    /// The id of `word`, adding it if new.
    pub fn add(&mut self, word: &str) -> u32 {
        if let Some(&id) = self.ids.get(word) {
            return id;
        }
        let id = self.words.len() as u32;
        self.words.push(word.to_string());
        self.ids.insert(word.to_string(), id);
        id
    }

    /// The id of `word`, if known.
    pub fn id(&self, word: &str) -> Option<u32> {
        self.ids.get(word).copied()
    }

    /// The word of `id`.
    pub fn word(&self, id: u32) -> Option<&str> {
        self.words.get(id as usize).map(String::as_str)
    }

    /// Number of words.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }
}

/// One split as token ids, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The file.
    pub path: PathBuf,
    /// Token ids, `<eos>` included.
    pub tokens: Vec<u32>,
    /// Tokens mapped to `<unk>` because training never saw them.
    pub out_of_vocabulary: usize,
}

/// A corpus: vocabulary and three splits.
#[derive(Debug, Clone, PartialEq)]
pub struct TextCorpus {
    /// Vocabulary (from the training split).
    pub vocab: Vocab,
    /// Training split.
    pub train: Split,
    /// Validation split.
    pub valid: Split,
    /// Test split.
    pub test: Split,
}

fn read_text(path: &Path, hint: &str) -> Result<String> {
    let bytes = read_file(path, hint)?;
    String::from_utf8(bytes)
        .map_err(|e| Error::Format { path: path.to_path_buf(), reason: format!("not UTF-8 text: {e}") })
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.lines().flat_map(|line| line.split_whitespace().chain(std::iter::once(EOS)))
}

fn check_nonempty(path: &Path, text: &str) -> Result<()> {
    if text.split_whitespace().next().is_none() {
        return Err(Error::EmptySplit { path: path.to_path_buf() });
    }
    Ok(())
}

impl TextCorpus {
    /// Loads WikiText-2 from its folder (`wikitext-2/`, holding
    /// `wiki.{train,valid,test}.tokens`).
    pub fn load_wikitext2(dir: impl AsRef<Path>) -> Result<Self> {
        Self::load_splits(
            dir,
            WIKITEXT2_FILES,
            "WikiText-2 (v1, tokens), https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip; `cargo xtask fetch-data` downloads it",
        )
    }

    /// Loads any folder holding three plain-text splits with the given file
    /// names (train, valid, test); `hint` says where the files come from.
    pub fn load_splits(dir: impl AsRef<Path>, files: [&str; 3], hint: &str) -> Result<Self> {
        let dir = dir.as_ref();
        let paths = files.map(|f| dir.join(f));
        let train_text = read_text(&paths[0], hint)?;
        check_nonempty(&paths[0], &train_text)?;
        let mut vocab = Vocab::default();
        let train_tokens: Vec<u32> = words(&train_text).map(|w| vocab.add(w)).collect();
        let train = Split { path: paths[0].clone(), tokens: train_tokens, out_of_vocabulary: 0 };
        let mut split = |path: &PathBuf| -> Result<Split> {
            let text = read_text(path, hint)?;
            check_nonempty(path, &text)?;
            let mut oov = 0;
            let mut tokens = Vec::new();
            for w in words(&text) {
                match vocab.id(w) {
                    Some(id) => tokens.push(id),
                    None => {
                        oov += 1;
                        tokens.push(vocab.add(UNK));
                    }
                }
            }
            Ok(Split { path: path.clone(), tokens, out_of_vocabulary: oov })
        };
        let valid = split(&paths[1])?;
        let test = split(&paths[2])?;
        Ok(Self { vocab, train, valid, test })
    }
}

/// A token stream cut into `batch` contiguous rows (the reference's
/// `batchify`): row `j` holds tokens `j·L .. (j+1)·L` with `L = ⌊N/batch⌋`;
/// the remainder is dropped.
#[derive(Debug, Clone, PartialEq)]
pub struct Batchified {
    data: Vec<u32>,
    batch: usize,
    len: usize,
}

impl Batchified {
    /// Batchifies `tokens` into `batch` rows.
    pub fn new(tokens: &[u32], batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(invalid("batch", 0, "must be at least 1"));
        }
        let len = tokens.len() / batch;
        if len < 2 {
            return Err(invalid("batch", batch, format!("{} tokens leave fewer than 2 per row", tokens.len())));
        }
        Ok(Self { data: tokens[..len * batch].to_vec(), batch, len })
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens per row.
    pub fn row_len(&self) -> usize {
        self.len
    }

    /// Number of BPTT windows of length `bptt`.
    pub fn num_windows(&self, bptt: usize) -> usize {
        (self.len - 1).div_ceil(bptt.max(1))
    }

    #[cfg(feature = "tensors")]
    /// Window `k`: inputs are columns `k·bptt ..`, targets the same shifted by
    /// one; the last window may be shorter. Both `(batch, seq)` u32 tensors.
    pub fn window(&self, k: usize, bptt: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if bptt == 0 {
            return Err(invalid("bptt", 0, "must be at least 1"));
        }
        let start = k * bptt;
        if start >= self.len - 1 {
            return Err(invalid("window", k, format!("there are {} windows of {bptt}", self.num_windows(bptt))));
        }
        let seq = bptt.min(self.len - 1 - start);
        let mut inputs = Vec::with_capacity(self.batch * seq);
        let mut targets = Vec::with_capacity(self.batch * seq);
        for r in 0..self.batch {
            let row = &self.data[r * self.len..(r + 1) * self.len];
            inputs.extend_from_slice(&row[start..start + seq]);
            targets.extend_from_slice(&row[start + 1..start + 1 + seq]);
        }
        Ok((
            Tensor::from_vec(inputs, (self.batch, seq), device)?,
            Tensor::from_vec(targets, (self.batch, seq), device)?,
        ))
    }
}
