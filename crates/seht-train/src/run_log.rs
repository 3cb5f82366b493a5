//! The run folder's logs: `log.jsonl` (one [`EpochRecord`] a line, and a
//! last [`LogLine::Diverged`] line when the run diverged), `metrics.json`,
//! and the one-line summary of an epoch.

use std::io::Write;
use std::path::Path;

use crate::checkpoint;
use crate::error::{Error, Result, io, json};
use crate::records::{Divergence, EpochRecord, LogLine, Metrics};

/// Appends one line to `log.jsonl`, in one write: a kill leaves at most
/// that line unfinished, which [`read_log`] leaves out.
fn append_line(path: &Path, line: &LogLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
    let line = line.to_json().map_err(json(path))? + "\n";
    f.write_all(line.as_bytes()).map_err(io(path))
}

/// Appends one epoch to `log.jsonl`.
pub(crate) fn append_log(path: &Path, rec: &EpochRecord) -> Result<()> {
    append_line(path, &LogLine::Epoch(rec.clone()))
}

/// Appends the divergence that stopped the run to `log.jsonl`.
pub(crate) fn append_divergence(path: &Path, d: &Divergence) -> Result<()> {
    append_line(path, &LogLine::Diverged(d.clone()))
}

/// The epochs in `log.jsonl` (none when it does not exist; a divergence
/// line is left out). A line that is not a record is
/// [`Error::RunFileDamaged`] naming the file and the line.
pub(crate) fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
    };
    let text = String::from_utf8_lossy(&bytes);
    // A last line without its newline is an append that a kill cut short
    // (the epoch after the checkpoint, rerun on resume): left out.
    let whole = match text.rfind('\n') {
        Some(i) if i + 1 < text.len() && LogLine::parse(&text[i + 1..]).is_err() => &text[..i + 1],
        None if LogLine::parse(&text).is_err() => "",
        _ => &text[..],
    };
    whole
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .filter_map(|(i, l)| match LogLine::parse(l) {
            Ok(LogLine::Epoch(r)) => Some(Ok(r)),
            Ok(LogLine::Diverged(_)) => None,
            Err(e) => Some(Err(damaged(path, format!("line {}: {e}", i + 1)))),
        })
        .collect()
}

/// Rewrites `log.jsonl` so that it holds exactly `history`, atomically: a
/// kill while it is rewritten leaves the old log whole.
pub(crate) fn rewrite_log(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut text = String::new();
    for r in history {
        text.push_str(&LogLine::Epoch(r.clone()).to_json().map_err(json(path))?);
        text.push('\n');
    }
    checkpoint::write_atomic(path, text.as_bytes())
}

/// `metrics.json`: `None` when it does not exist (the run has not ended),
/// [`Error::RunFileDamaged`] when it does not read back as a record.
pub(crate) fn read_metrics(path: &Path) -> Result<Option<Metrics>> {
    match std::fs::read(path) {
        Ok(bytes) => Metrics::from_json(&bytes).map(Some).map_err(|e| damaged(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io { path: path.to_path_buf(), source }),
    }
}

/// A run record (`path`, in its run folder) that does not read back.
pub(crate) fn damaged(path: &Path, message: impl Into<String>) -> Error {
    Error::RunFileDamaged {
        path: path.to_path_buf(),
        run_dir: path.parent().unwrap_or(path).to_path_buf(),
        message: message.into(),
    }
}

/// Writes `metrics.json` atomically.
pub(crate) fn write_metrics(path: &Path, metrics: &Metrics) -> Result<()> {
    checkpoint::write_atomic(path, &serde_json::to_vec_pretty(metrics).map_err(json(path))?)
}

/// `name epoch N: train loss …, test acc/ppl …, trace …, s/step`.
pub(crate) fn summary_line(name: &str, r: &EpochRecord) -> String {
    let test = match (r.test.top1, r.test.perplexity) {
        (Some(a), _) => format!("test acc {:.2}%", 100.0 * a),
        (_, Some(p)) => format!("test ppl {p:.2}"),
        _ => String::new(),
    };
    let trace = r.trace_mean.map(|t| format!(", trace {t:.3}")).unwrap_or_default();
    format!("{name} epoch {}: train loss {:.4}, {test}{trace}, {:.2} s/step", r.epoch, r.train_loss, r.seconds_per_step)
}
