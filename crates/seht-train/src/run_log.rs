//! The run folder's logs: `log.jsonl` (one [`EpochRecord`] a line, and a
//! last [`LogLine::Diverged`] line when the run diverged), `metrics.json`,
//! and the one-line summary of an epoch.

use std::io::Write;
use std::path::Path;

use crate::checkpoint;
use crate::error::{Result, io, json};
use crate::records::{Divergence, EpochRecord, LogLine, Metrics};

/// Appends one line to `log.jsonl`.
fn append_line(path: &Path, line: &LogLine) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(io(path))?;
    let line = line.to_json().map_err(json(path))?;
    writeln!(f, "{line}").map_err(io(path))
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
/// line is left out).
pub(crate) fn read_log(path: &Path) -> Result<Vec<EpochRecord>> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| match LogLine::parse(l) {
                Ok(LogLine::Epoch(r)) => Some(Ok(r)),
                Ok(LogLine::Diverged(_)) => None,
                Err(e) => Some(Err(json(path)(e))),
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(crate::Error::Io { path: path.to_path_buf(), source }),
    }
}

/// Rewrites `log.jsonl` so that it holds exactly `history`.
pub(crate) fn rewrite_log(path: &Path, history: &[EpochRecord]) -> Result<()> {
    std::fs::write(path, "").map_err(io(path))?;
    history.iter().try_for_each(|r| append_log(path, r))
}

/// `metrics.json`, if it exists and parses (a finished or diverged run).
pub(crate) fn read_metrics(path: &Path) -> Option<Metrics> {
    Metrics::from_json(&std::fs::read(path).ok()?).ok()
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
