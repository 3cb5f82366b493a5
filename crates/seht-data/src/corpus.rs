//! Building a word-level corpus in WikiText's layout from plain English text,
//! for machines where WikiText-2 cannot be had (its only source is one S3
//! bucket). The result reads with [`TextCorpus::load_wikitext2`] like the
//! real thing.
//!
//! What "WikiText's layout" means here, following Merity et al. (2016), §3:
//! - three files `wiki.{train,valid,test}.tokens`, one paragraph-like unit per
//!   line (here: one sentence per line, since the sources we use have no
//!   paragraph breaks), tokens separated by single spaces;
//! - tokenisation as the Moses-style tokenizer WikiText used: punctuation split
//!   from words, clitics split (`it 's`, `do n't`), hyphens inside words and
//!   separators inside numbers written `@-@`, `@,@`, `@.@`; case kept;
//! - a closed vocabulary: words seen fewer than `min_count` times in training
//!   are `<unk>` (WikiText-2 used 3), and valid/test words unseen in training
//!   are `<unk>` too, so the splits have no out-of-vocabulary tokens;
//! - whole documents assigned to one split (no document straddles two).
//!
//! Documents go to splits by their position in name order: of every 10,
//! the 9th is validation and the 10th test (≈ 80/10/10 by documents, close to
//! WikiText-2's 83/8/9 by tokens), so every era of a chronological collection
//! (the State of the Union addresses) is in every split.
//!
//! [`TextCorpus::load_wikitext2`]: crate::TextCorpus::load_wikitext2

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, invalid, io};
use crate::text::{UNK, WIKITEXT2_FILES};

/// Options of [`build_wikitext_layout`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorpusOptions {
    /// Words seen fewer times than this in training become `<unk>`
    /// (WikiText-2: 3).
    pub min_count: usize,
    /// Of every `period` documents (in name order), the `period − 1`-th
    /// (1-based) goes to validation and the `period`-th to test.
    pub period: usize,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        Self { min_count: 3, period: 10 }
    }
}

/// What [`build_wikitext_layout`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusStats {
    /// Documents per split (train, valid, test).
    pub documents: [usize; 3],
    /// Tokens per split, without end-of-line tokens.
    pub tokens: [usize; 3],
    /// Vocabulary size, `<unk>` included.
    pub vocabulary: usize,
    /// Tokens written as `<unk>` per split.
    pub unknown: [usize; 3],
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '\'' || c == '-' || c == '.' || c == ','
}

const CLITICS: [&str; 6] = ["'s", "'re", "'ve", "'ll", "'d", "'m"];

/// Splits one whitespace-free chunk into tokens.
fn split_chunk(chunk: &str, out: &mut Vec<String>) {
    // Separate every character that cannot be inside a word.
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<String>| {
        if !word.is_empty() {
            split_word(word, out);
            word.clear();
        }
    };
    for c in chunk.chars() {
        if is_word_char(c) {
            word.push(c);
        } else {
            flush(&mut word, out);
            out.push(c.to_string());
        }
    }
    flush(&mut word, out);
}

/// A chunk of word characters: peel punctuation off its ends, split clitics,
/// mark inner hyphens and number separators.
fn split_word(word: &str, out: &mut Vec<String>) {
    let trimmed_start = word.trim_start_matches(['\'', '-', '.', ',']);
    for c in word[..word.len() - trimmed_start.len()].chars() {
        out.push(c.to_string());
    }
    let core = trimmed_start.trim_end_matches(['\'', '-', '.', ',']);
    let tail: Vec<String> = trimmed_start[core.len()..].chars().map(|c| c.to_string()).collect();
    // "..." stays one token.
    let tail = if tail.len() >= 3 && tail.iter().all(|t| t == ".") { vec!["...".to_string()] } else { tail };
    if !core.is_empty() {
        let (stem, clitic) = split_clitic(core);
        mark_inner(stem, out);
        if let Some(c) = clitic {
            out.push(c.to_string());
        }
    }
    out.extend(tail);
}

fn split_clitic(w: &str) -> (&str, Option<&str>) {
    for c in std::iter::once("n't").chain(CLITICS) {
        let cut = w.len().wrapping_sub(c.len());
        if w.len() > c.len() && w.is_char_boundary(cut) && w[cut..].eq_ignore_ascii_case(c) {
            return (&w[..cut], Some(&w[cut..]));
        }
    }
    (w, None)
}

/// Inner `-` → `@-@`; inner `,` and `.` between digits → `@,@`, `@.@`; other
/// inner `,`/`.` split off as punctuation (e.g. "U.S." keeps its dots: a dot
/// between letters is part of an abbreviation).
fn mark_inner(w: &str, out: &mut Vec<String>) {
    let chars: Vec<char> = w.chars().collect();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let digits = prev.is_some_and(|p| p.is_ascii_digit()) && next.is_some_and(|n| n.is_ascii_digit());
        match c {
            '-' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push("@-@".into());
            }
            ',' | '.' if digits => {
                out.push(std::mem::take(&mut cur));
                out.push(format!("@{c}@"));
            }
            ',' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(",".into());
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
}

/// Tokenises `text` in WikiText's style and cuts it into sentences (a
/// sentence ends at a `.`, `!` or `?` token, or at a line break).
pub fn tokenize_sentences(text: &str) -> Vec<Vec<String>> {
    let normalised: String = text
        .chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201C}' | '\u{201D}' => '"',
            '\u{2013}' => '-',
            c => c,
        })
        .collect();
    let mut sentences = Vec::new();
    for line in normalised.lines() {
        let mut tokens = Vec::new();
        for chunk in line.split_whitespace() {
            // An em dash joins words without spaces ("President—(applause)—no").
            for (i, piece) in chunk.split('\u{2014}').enumerate() {
                if i > 0 {
                    tokens.push("\u{2014}".to_string());
                }
                split_chunk(piece, &mut tokens);
            }
        }
        let mut sentence = Vec::new();
        for t in tokens {
            let end = matches!(t.as_str(), "." | "!" | "?");
            sentence.push(t);
            if end {
                sentences.push(std::mem::take(&mut sentence));
            }
        }
        if !sentence.is_empty() {
            sentences.push(sentence);
        }
    }
    sentences
}

/// Writes `wiki.{train,valid,test}.tokens` into `out` from `documents`
/// (name, text), as the module documentation describes.
pub fn build_wikitext_layout(documents: &[(String, String)], out: &Path, opts: CorpusOptions) -> Result<CorpusStats> {
    if opts.min_count == 0 {
        return Err(invalid("min_count", 0, "must be at least 1"));
    }
    if opts.period < 3 {
        return Err(invalid("period", opts.period, "must be at least 3 (one train, one valid, one test document)"));
    }
    if documents.len() < opts.period {
        return Err(invalid(
            "documents",
            documents.len(),
            format!("need at least {} documents for one of each split", opts.period),
        ));
    }
    let mut docs: Vec<&(String, String)> = documents.iter().collect();
    docs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut splits: [Vec<Vec<Vec<String>>>; 3] = Default::default();
    let mut stats = CorpusStats { documents: [0; 3], tokens: [0; 3], vocabulary: 0, unknown: [0; 3] };
    for (i, (_, text)) in docs.iter().enumerate() {
        let s = match i % opts.period {
            r if r == opts.period - 2 => 1,
            r if r == opts.period - 1 => 2,
            _ => 0,
        };
        stats.documents[s] += 1;
        splits[s].push(tokenize_sentences(text));
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for sentence in splits[0].iter().flatten() {
        for t in sentence {
            *counts.entry(t.as_str()).or_default() += 1;
        }
    }
    let keep = |w: &str| counts.get(w).is_some_and(|&c| c >= opts.min_count);
    let mut vocab: std::collections::HashSet<&str> = counts.keys().copied().filter(|w| keep(w)).collect();
    vocab.insert(UNK);
    stats.vocabulary = vocab.len();
    std::fs::create_dir_all(out).map_err(io(out))?;
    for (s, docs) in splits.iter().enumerate() {
        let mut text = String::new();
        for sentence in docs.iter().flatten() {
            let line: Vec<&str> = sentence
                .iter()
                .map(|t| {
                    stats.tokens[s] += 1;
                    if vocab.contains(t.as_str()) {
                        t.as_str()
                    } else {
                        stats.unknown[s] += 1;
                        UNK
                    }
                })
                .collect();
            text.push(' ');
            text.push_str(&line.join(" "));
            text.push_str(" \n");
        }
        if text.is_empty() {
            return Err(Error::EmptySplit { path: out.join(WIKITEXT2_FILES[s]) });
        }
        let path: PathBuf = out.join(WIKITEXT2_FILES[s]);
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(stats)
}

/// Reads every `*.txt` file of `dir` as one document (name = file name).
pub fn read_text_documents(dir: &Path) -> Result<Vec<(String, String)>> {
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
    let mut docs = Vec::new();
    for e in entries {
        let path = e.map_err(io(dir))?.path();
        if path.extension().is_some_and(|x| x == "txt") {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let text = String::from_utf8(bytes)
                .map_err(|e| Error::Format { path: path.clone(), reason: format!("not UTF-8 text: {e}") })?;
            let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            docs.push((name, text));
        }
    }
    if docs.is_empty() {
        return Err(Error::MissingFile { path: dir.join("*.txt"), hint: "a folder of plain-text documents".into() });
    }
    docs.sort();
    Ok(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<String> {
        tokenize_sentences(s).concat()
    }

    #[test]
    fn tokenises_like_wikitext() {
        assert_eq!(
            toks("It's 1,000 well-known U.S. states, isn't it?"),
            ["It", "'s", "1", "@,@", "000", "well", "@-@", "known", "U.S", ".", "states", ",", "is", "n't", "it", "?"]
        );
        assert_eq!(toks("3.5 per cent (Applause.)"), ["3", "@.@", "5", "per", "cent", "(", "Applause", ".", ")"]);
        assert_eq!(toks("it\u{2019}s here\u{2014}now..."), ["it", "'s", "here", "\u{2014}", "now", "..."]);
        assert_eq!(toks("\"Quoted,\" he said;"), ["\"", "Quoted", ",", "\"", "he", "said", ";"]);
    }

    #[test]
    fn sentences_end_at_full_stops() {
        let s = tokenize_sentences("One two. Three! Four\nFive");
        assert_eq!(s.len(), 4);
        assert_eq!(s[0], ["One", "two", "."]);
        assert_eq!(s[3], ["Five"]);
    }

    #[test]
    fn builds_a_closed_vocabulary_corpus_that_loads_as_wikitext() -> anyhow::Result<()> {
        let dir = std::env::temp_dir().join(format!("seht-corpus-{}", std::process::id()));
        let docs: Vec<(String, String)> = (0..20)
            .map(|i| (format!("doc{i:02}.txt"), format!("The cat sat. The dog ran far! Rare{i} word here. The cat.")))
            .collect();
        let stats = build_wikitext_layout(&docs, &dir, CorpusOptions::default())?;
        assert_eq!(stats.documents, [16, 2, 2]);
        // "Rare{i}" occurs once per document: <unk> everywhere (train: count 1 < 3; valid/test: unseen).
        assert_eq!(stats.unknown, [16, 2, 2]);
        assert_eq!(stats.tokens[1], 2 * 16, "4 + 5 + 4 + 3 tokens per document");
        let corpus = crate::TextCorpus::load_wikitext2(&dir)?;
        assert_eq!(corpus.valid.out_of_vocabulary, 0);
        assert_eq!(corpus.test.out_of_vocabulary, 0);
        assert_eq!(corpus.vocab.len(), stats.vocabulary + 1, "+1 for <eos>");
        let valid = std::fs::read_to_string(dir.join("wiki.valid.tokens"))?;
        assert_eq!(valid.lines().next(), Some(" The cat sat . "));
        assert!(valid.contains(" <unk> word here . "));
        std::fs::remove_dir_all(&dir)?;
        assert!(build_wikitext_layout(&docs[..5], &dir, CorpusOptions::default()).is_err());
        assert!(build_wikitext_layout(&docs, &dir, CorpusOptions { min_count: 0, period: 10 }).is_err());
        Ok(())
    }
}
