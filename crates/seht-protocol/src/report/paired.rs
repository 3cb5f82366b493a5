//! Every method against the baseline, paired by seed: what a run can claim
//! and what it rules out (issue 32 item 6).
//!
//! Seeds are paired by construction: the same seed gives both runs the same
//! initial weights, data order, augmentation and held-out images, so the
//! per-seed difference `d_k = x_k(method) − x_k(baseline)` removes what the
//! seeds share. For each method and metric: the mean difference, its 95 %
//! confidence interval `d̄ ± t_{0.975, n−1}·s_d/√n` (Student's t with the
//! pairs' own spread), the two-sided p-value of `d̄ = 0`, and the p-value
//! Holm-corrected over every method × metric of the table (Holm 1979,
//! step-down: the k-th smallest of m p-values is multiplied by `m − k + 1`,
//! then made monotone). The minimum detectable difference of the design is
//! `(t_{0.975, n−1} + t_{0.8, n−1})·s_d/√n` (two-sided 5 % test, 80 % power,
//! the observed spread; uncorrected for the number of tests), reported per
//! row so that a null result says what size of effect it rules out.
//!
//! Metrics: final-epoch test top-1 (the protocol's number), the best test
//! top-1 over epochs (the paper's code's number; choosing the epoch on the
//! test set inflates it), and the final model's curvature: evaluation-mode
//! `tr(H)`, `tr(G)` and `tr(DHD)`, and training-mode `tr(H)`. A diverged
//! seed has no value and leaves its pair out.

use std::fmt::Write as _;

use distrs::StudentsT;
use seht_records::Metrics;

use super::MethodRuns;

/// A paired comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Paired {
    /// Pairs (seeds with a value in both arms).
    pub n: usize,
    /// Mean difference (method − baseline).
    pub mean: f64,
    /// Standard deviation of the differences.
    pub sd: f64,
    /// 95 % confidence interval of the mean difference.
    pub ci: (f64, f64),
    /// Two-sided p-value of a zero mean difference (paired t-test).
    pub p: f64,
    /// Minimum detectable difference: 5 % two-sided, 80 % power.
    pub mdd: f64,
}

/// The paired t statistics of `diffs`; `None` for fewer than two pairs.
pub fn paired(diffs: &[f64]) -> Option<Paired> {
    let n = diffs.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let mean = diffs.iter().sum::<f64>() / nf;
    let sd = (diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (nf - 1.0)).sqrt();
    let df = nf - 1.0;
    let se = sd / nf.sqrt();
    let t975 = StudentsT::ppf(0.975, df);
    let p = if se > 0.0 {
        2.0 * (1.0 - StudentsT::cdf((mean / se).abs(), df))
    } else if mean == 0.0 {
        1.0
    } else {
        0.0
    };
    Some(Paired {
        n,
        mean,
        sd,
        ci: (mean - t975 * se, mean + t975 * se),
        p: p.clamp(0.0, 1.0),
        mdd: (t975 + StudentsT::ppf(0.8, df)) * se,
    })
}

/// Holm's step-down adjusted p-values, in the order given.
pub fn holm(ps: &[f64]) -> Vec<f64> {
    let m = ps.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| ps[a].total_cmp(&ps[b]));
    let mut adjusted = vec![0.0; m];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * ps[i]).min(1.0));
        adjusted[i] = running;
    }
    adjusted
}

/// A metric of one run.
struct Metric {
    label: &'static str,
    digits: usize,
    value: fn(&Metrics) -> Option<f64>,
}

const METRICS: [Metric; 8] = [
    Metric {
        label: "final test top-1 (%)",
        digits: 2,
        value: |m| m.final_epoch.as_ref()?.test.top1.map(|v| 100.0 * v),
    },
    Metric {
        label: "test perplexity (epoch of lowest validation loss)",
        digits: 1,
        value: |m| m.best_epoch.as_ref()?.test.perplexity,
    },
    Metric {
        label: "training top-1, eval mode (%)",
        digits: 2,
        value: |m| m.train_eval.as_ref()?.top1.map(|v| 100.0 * v),
    },
    Metric { label: BEST, digits: 2, value: |m| m.best_epoch.as_ref()?.test.top1.map(|v| 100.0 * v) },
    Metric { label: "tr(H), eval mode", digits: 1, value: |m| m.final_trace.as_ref().map(|t| t.mean) },
    Metric { label: "tr(G)", digits: 1, value: |m| m.final_trace.as_ref()?.gauss_newton.map(|t| t.mean) },
    Metric { label: "tr(DHD)", digits: 0, value: |m| m.final_trace.as_ref()?.scale_invariant.map(|t| t.mean) },
    Metric { label: "tr(H), training mode", digits: 1, value: |m| m.final_trace.as_ref()?.train_mode.map(|t| t.mean) },
];

/// The seed of a run named `…-s{seed}`.
fn seed_of(m: &Metrics) -> Option<u64> {
    m.name.rsplit_once("-s").and_then(|(_, s)| s.parse().ok())
}

/// The best-over-epochs row repeats the final one when every run's best
/// epoch is its last: it is then left out (not a test of its own).
const BEST: &str = "best test top-1 over epochs (%)";

/// One row: method × metric.
struct Row {
    method: String,
    metric: &'static Metric,
    stat: Paired,
}

/// Every method × metric row of `runs` against its `baseline`, each with its
/// Holm-adjusted p-value (over all rows); `None` when the table has no
/// baseline or no method with two pairs.
fn rows(runs: &[MethodRuns]) -> Option<Vec<(Row, f64)>> {
    let base = runs.iter().find(|r| r.method == "baseline")?;
    let mut rows: Vec<Row> = Vec::new();
    let final_is_best = |m: &Metrics| {
        m.best_epoch.as_ref().and_then(|e| e.test.top1) == m.final_epoch.as_ref().and_then(|e| e.test.top1)
    };
    for r in runs.iter().filter(|r| r.method != "baseline") {
        for metric in &METRICS {
            if metric.label == BEST && r.metrics.iter().chain(&base.metrics).all(final_is_best) {
                continue;
            }
            let diffs: Vec<f64> = r
                .metrics
                .iter()
                .filter_map(|m| {
                    let seed = seed_of(m)?;
                    let b = base.metrics.iter().find(|b| seed_of(b) == Some(seed))?;
                    Some((metric.value)(m)? - (metric.value)(b)?)
                })
                .collect();
            if let Some(stat) = paired(&diffs) {
                rows.push(Row { method: r.method.clone(), metric, stat });
            }
        }
    }
    if rows.is_empty() {
        return None;
    }
    let adjusted = holm(&rows.iter().map(|r| r.stat.p).collect::<Vec<_>>());
    Some(rows.into_iter().zip(adjusted).collect())
}

/// Per method with two pairs or more: its paired difference to the baseline
/// in the final evaluation-mode `tr(H)` (for the figure).
pub fn trace_differences(runs: &[MethodRuns]) -> Vec<(String, Paired)> {
    rows(runs)
        .unwrap_or_default()
        .into_iter()
        .filter(|(row, _)| row.metric.label == METRICS[4].label)
        .map(|(row, _)| (row.method, row.stat))
        .collect()
}

/// One line per method: its paired difference to the baseline in final test
/// top-1 (or, for a language model, test perplexity at the epoch of lowest
/// validation loss) and in the final evaluation-mode `tr(H)` (relative to the
/// baseline's mean too), with the 95 % confidence interval and the
/// Holm-adjusted p-value of [`report`]'s full set of rows, then a line
/// saying how to read them. `None` where [`report`] has no rows.
pub fn sentences(runs: &[MethodRuns]) -> Option<String> {
    let rows = rows(runs)?;
    let base = runs.iter().find(|r| r.method == "baseline")?;
    let base_trace = {
        let v: Vec<f64> = base.metrics.iter().filter_map(|m| m.final_trace.as_ref().map(|t| t.mean)).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let mut out = String::new();
    for r in runs.iter().filter(|r| r.method != "baseline") {
        let mut parts = Vec::new();
        // Top-1 (images) or perplexity (text), then the trace with its size
        // relative to the baseline's.
        let said = [(METRICS[0].label, " points", false), (METRICS[1].label, "", false), (METRICS[4].label, "", true)];
        for (label, unit, trace) in said {
            let Some((row, adj)) = rows.iter().find(|(row, _)| row.method == r.method && row.metric.label == label)
            else {
                continue;
            };
            let (s, d) = (row.stat, row.metric.digits);
            let relative = match (trace, base_trace) {
                (true, Some(b)) if b.abs() > 0.0 => format!(", {:+.0} % of the baseline's", 100.0 * s.mean / b),
                _ => String::new(),
            };
            parts.push(format!(
                "{label} {:+.d$}{unit} (95 % CI [{:+.d$}, {:+.d$}]{relative}; Holm p = {adj:.2})",
                s.mean, s.ci.0, s.ci.1
            ));
        }
        if let Some(n) = rows.iter().find(|(row, _)| row.method == r.method).map(|(row, _)| row.stat.n) {
            let _ = writeln!(out, "- **{}** − baseline, {n} seeds paired: {}.", r.method, parts.join("; "));
        }
    }
    let m = rows.len();
    let _ = writeln!(
        out,
        "\nPaired by seed (same initial weights, data order and augmentation in both arms): the mean of the per-seed \
         differences, a 95 % confidence interval from Student's t on the pairs, and the p-value Holm-corrected over \
         all {m} method × metric comparisons of the paired table. An interval that contains 0 is no evidence of a \
         difference at this number of seeds; one that excludes it, with a Holm p below 0.05, is."
    );
    Some(out)
}

/// The paired comparison of every method of `runs` with its `baseline`, as
/// Markdown; `None` when the table has no baseline or no method with two
/// pairs.
pub fn report(runs: &[MethodRuns]) -> Option<String> {
    let rows = rows(runs)?;
    let mut md = format!(
        "Differences to the baseline paired by seed (method − baseline), with 95 % confidence intervals \
         (Student's t on the pairs), two-sided p-values, and p-values Holm-corrected over all {} method × metric \
         rows below (a method's best-over-epochs row is left out where every run's best epoch was its last, as it then repeats the final row). MDD: the difference this design detects with 80 % power at the 5 % level (uncorrected), \
         from the pairs' observed spread. A method with one seed, or whose seeds all diverged, has no row.\n\n\
         | method | metric | pairs | difference | 95 % CI | p | p (Holm) | MDD |\n|---|---|---:|---:|---|---:|---:|---:|\n",
        rows.len()
    );
    for (row, adj) in &rows {
        let d = row.metric.digits;
        let s = row.stat;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:+.d$} | [{:+.d$}, {:+.d$}] | {:.3} | {:.3} | {:.d$} |",
            row.method,
            row.metric.label,
            s.n,
            s.mean,
            s.ci.0,
            s.ci.1,
            s.p,
            adj,
            s.mdd,
            d = d
        );
    }
    Some(md)
}

/// The paired comparison of a results folder's main runs of one table
/// (`cargo xtask paired DIR --table T`): runs named
/// `<table>-<method>-s<seed>` under `dir/runs` (λ-grid runs, `-grid-` in
/// their name, are left out), as Markdown.
///
/// # Errors
/// A folder without runs of that table, or a `metrics.json` that does not parse.
pub fn of_folder(dir: &std::path::Path, table: &str) -> crate::Result<String> {
    use crate::error::{Context, ensure};
    let runs_dir = dir.join("runs");
    let prefix = format!("{table}-");
    let mut by: Vec<MethodRuns> = Vec::new();
    let mut unreadable_logs: Vec<String> = Vec::new();
    let mut names: Vec<String> = std::fs::read_dir(&runs_dir)
        .with_context(|| format!("{}", runs_dir.display()))?
        .filter_map(|e| e.ok())
        // Run folders only: `reproduce` keeps each run's log beside it (`<run>.log`).
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&prefix) && !n.contains("-grid-"))
        .collect();
    names.sort();
    for name in names {
        let Some((method, _)) = name[prefix.len()..].rsplit_once("-s") else { continue };
        let m = super::read_metrics(&runs_dir.join(&name))?;
        let i = match by.iter().position(|r| r.method == method) {
            Some(i) => i,
            None => {
                by.push(MethodRuns { method: method.to_string(), ..MethodRuns::default() });
                by.len() - 1
            }
        };
        if m.diverged().is_some() {
            by[i].diverged.push(m)
        } else {
            // The paired table needs `metrics.json` only; the baseline's convergence
            // check also reads `log.jsonl`, and says so when one is unreadable.
            match seht_records::read_log(&runs_dir.join(&name)) {
                Ok(log) => by[i].logs.push(log),
                Err(e) => unreadable_logs.push(e.to_string()),
            }
            by[i].metrics.push(m);
        }
    }
    ensure!(
        !by.is_empty(),
        "{}: no main run named {prefix}<method>-s<seed> (λ-grid runs, `-grid-` in their name, are left out): \
         check --table, or wait for the preset's main rows",
        runs_dir.display()
    );
    let mut md = report(&by).with_context(|| format!("{}: no baseline, or no method with two seeds", dir.display()))?;
    if !unreadable_logs.is_empty() {
        let _ = write!(md, "\nNo convergence check of the baseline: {}.\n", unreadable_logs.join("; "));
    } else if let Some(checks) = baseline_convergence(&by) {
        md.push('\n');
        md.push_str(&checks);
    }
    Ok(md)
}

/// Evaluation-mode training top-1 (%) a converged baseline reaches on its
/// whole training set (issue 32).
pub const CONVERGED_TRAIN_TOP1: f64 = 99.0;
/// Largest spread (points) of the baseline's test top-1 over the last
/// [`PLATEAU_FRACTION`] of its epochs for its accuracy to count as plateaued.
pub const PLATEAU_SPAN: f64 = 0.3;
/// The share of epochs, at the end, over which the plateau is judged.
pub const PLATEAU_FRACTION: f64 = 0.2;

/// Whether the baseline of `runs` converged, seed by seed, as Markdown: its
/// evaluation-mode top-1 on the whole training set against
/// [`CONVERGED_TRAIN_TOP1`], and the spread of its test top-1 over the last
/// `⌈PLATEAU_FRACTION · epochs⌉` epochs against [`PLATEAU_SPAN`]. `None`
/// without a baseline or without its logs.
pub fn baseline_convergence(runs: &[MethodRuns]) -> Option<String> {
    let base = runs.iter().find(|r| r.method == "baseline")?;
    if base.logs.len() != base.metrics.len() || base.logs.is_empty() {
        return None;
    }
    let mut md = format!(
        "Convergence of the baseline, per seed: evaluation-mode top-1 on the whole training set (needs ≥ {CONVERGED_TRAIN_TOP1} %), \
         and the spread of test top-1 over the last {:.0} % of epochs (needs ≤ {PLATEAU_SPAN} points).\n\n\
         | seed | training top-1, eval mode (%) | | last epochs | test top-1 over them (%) | spread (points) | |\n\
         |---:|---:|---|---|---|---:|---|\n",
        100.0 * PLATEAU_FRACTION
    );
    for (m, log) in base.metrics.iter().zip(&base.logs) {
        let seed = seed_of(m).map_or_else(|| "?".to_string(), |s| s.to_string());
        let train = m.train_eval.as_ref().and_then(|e| e.top1).map(|v| 100.0 * v);
        let (train_s, train_ok) = match train {
            Some(v) => (format!("{v:.2}"), if v >= CONVERGED_TRAIN_TOP1 { "met" } else { "missed" }),
            None => ("–".to_string(), "not measured"),
        };
        let tops: Vec<(usize, f64)> = log.iter().filter_map(|e| e.test.top1.map(|t| (e.epoch, 100.0 * t))).collect();
        let k = ((tops.len() as f64) * PLATEAU_FRACTION).ceil() as usize;
        let tail = &tops[tops.len().saturating_sub(k)..];
        let (epochs, range, span_s, span_ok) = match (tail.first(), tail.last()) {
            (Some(a), Some(b)) if k > 0 => {
                let lo = tail.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
                let hi = tail.iter().map(|t| t.1).fold(f64::NEG_INFINITY, f64::max);
                let span = hi - lo;
                (
                    format!("{}–{}", a.0, b.0),
                    format!("{lo:.2}–{hi:.2}"),
                    format!("{span:.2}"),
                    if span <= PLATEAU_SPAN + 1e-9 { "met" } else { "missed" },
                )
            }
            _ => ("–".into(), "–".into(), "–".into(), "no test accuracy logged"),
        };
        let _ = writeln!(md, "| {seed} | {train_s} | {train_ok} | {epochs} | {range} | {span_s} | {span_ok} |");
    }
    Some(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder `reproduce` wrote: run folders and, beside each, its log
    /// `<run>.log`, which is no run.
    #[test]
    fn a_reproduce_folder_with_run_logs_is_read() {
        use crate::report::example_runs::finished;
        let dir = std::env::temp_dir().join(format!("paired-folder-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (method, tops) in [("baseline", [0.80, 0.82]), ("sam", [0.81, 0.84])] {
            for (s, top) in tops.iter().enumerate() {
                let name = format!("t-{method}-s{s}");
                let run = dir.join("runs").join(&name);
                std::fs::create_dir_all(&run).expect("run");
                let json = serde_json::to_vec(&finished(&name, *top, None)).expect("json");
                std::fs::write(run.join("metrics.json"), json).expect("metrics");
                std::fs::write(dir.join("runs").join(format!("{name}.log")), "a log").expect("log");
            }
        }
        let md = of_folder(&dir, "t").expect("paired");
        assert!(md.contains("sam"), "{md}");
        assert!(md.contains("No convergence check of the baseline: "), "runs without log.jsonl: {md}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two seeds of 10 epochs: seed 0 trains to 99.5 % and ends within 0.3
    /// points over epochs 9–10 (its wider epoch 8 is outside the last 20 %);
    /// seed 1 reaches 98 % and moves 0.5 points at the end.
    #[test]
    fn the_baseline_convergence_check_reads_the_last_fifth_of_epochs() {
        use crate::report::example_runs::{epoch, finished};
        let log = |tops: &[f64]| -> Vec<seht_records::EpochRecord> {
            tops.iter()
                .enumerate()
                .map(|(i, &t)| seht_records::EpochRecord { epoch: i + 1, ..epoch(t, None) })
                .collect()
        };
        let with_train = |name: &str, train: f64| {
            let mut m = finished(name, 0.8, None);
            m.train_eval =
                Some(seht_records::EvalMetrics { loss: 0.1, top1: Some(train), top5: None, perplexity: None });
            m
        };
        let base = MethodRuns {
            method: "baseline".into(),
            metrics: vec![with_train("t-baseline-s0", 0.995), with_train("t-baseline-s1", 0.98)],
            logs: vec![
                log(&[0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.81, 0.79, 0.8110, 0.8090]),
                log(&[0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.81, 0.81, 0.8100, 0.8150]),
            ],
            diverged: vec![],
        };
        let md = baseline_convergence(&[base]).expect("a table");
        assert!(md.contains("| 0 | 99.50 | met | 9–10 | 80.90–81.10 | 0.20 | met |"), "{md}");
        assert!(md.contains("| 1 | 98.00 | missed | 9–10 | 81.00–81.50 | 0.50 | missed |"), "{md}");
        assert!(baseline_convergence(&[]).is_none(), "no baseline, no table");
    }

    #[test]
    fn paired_t_against_a_hand_computation() {
        // d = 1, 2, 3, 4, 5: mean 3, sd √2.5, se √0.5, t = 4.2426, df 4:
        // two-sided p = 0.01324 (tables), t_{0.975,4} = 2.7764.
        let p = paired(&[1.0, 2.0, 3.0, 4.0, 5.0]).expect("five pairs");
        assert!((p.mean - 3.0).abs() < 1e-12 && (p.sd - 2.5f64.sqrt()).abs() < 1e-12);
        assert!((p.p - 0.01324).abs() < 2e-4, "p = {}", p.p);
        let half = 2.7764 * 0.5f64.sqrt();
        assert!((p.ci.0 - (3.0 - half)).abs() < 1e-3 && (p.ci.1 - (3.0 + half)).abs() < 1e-3, "{:?}", p.ci);
        // t_{0.8,4} = 0.9410: MDD = (2.7764 + 0.9410)·√0.5.
        assert!((p.mdd - 3.7174 * 0.5f64.sqrt()).abs() < 1e-3, "MDD {}", p.mdd);
        assert!(paired(&[1.0]).is_none(), "one pair has no spread");
        assert_eq!(paired(&[0.0, 0.0, 0.0]).map(|p| p.p), Some(1.0));
    }

    #[test]
    fn sentences_state_each_paired_difference_with_its_interval() {
        use crate::report::tests::finished;
        let runs = |method: &str, tops: &[f64]| MethodRuns {
            method: method.into(),
            metrics: tops.iter().enumerate().map(|(k, &t)| finished(&format!("d-{method}-s{k}"), t, None)).collect(),
            ..MethodRuns::default()
        };
        // Baseline 0.80, 0.85, 0.90; "up" +1, +2, +3 points on the same seeds
        // (paired d = 1, 2, 3: mean 2, CI 2 ± 4.303·1/√3 = [-0.48, 4.48]); the
        // fixture's trace is 100·top1, so tr(H) moves by +1, +2, +3 too.
        let table = [runs("baseline", &[0.80, 0.85, 0.90]), runs("up", &[0.81, 0.87, 0.93])];
        let text = sentences(&table).expect("pairs");
        assert!(
            text.contains(
                "- **up** − baseline, 3 seeds paired: final test top-1 (%) +2.00 points (95 % CI [-0.48, +4.48]"
            ),
            "{text}"
        );
        assert!(text.contains("tr(H), eval mode +2.0 (95 % CI [-0.5, +4.5], +2 % of the baseline's"), "{text}");
        // Unpaired seeds (names without a common seed) give no sentence at all.
        let lone = [runs("baseline", &[0.8]), runs("up", &[0.9])];
        assert!(sentences(&lone).is_none());
        // A language model's table: its perplexity is said (it has no top-1).
        let lm = |method: &str, ppl: &[f64]| {
            let mut r = runs(method, &vec![0.5; ppl.len()]);
            for (m, &p) in r.metrics.iter_mut().zip(ppl) {
                for e in [m.final_epoch.as_mut(), m.best_epoch.as_mut()].into_iter().flatten() {
                    (e.test.top1, e.test.perplexity) = (None, Some(p));
                }
            }
            r
        };
        let text = sentences(&[lm("baseline", &[500.0, 510.0, 520.0]), lm("sgd", &[400.0, 405.0, 415.0])]).expect("lm");
        assert!(text.contains("test perplexity (epoch of lowest validation loss) -103.3 (95 % CI"), "{text}");
    }

    #[test]
    fn holm_multiplies_by_the_remaining_count_and_stays_monotone() {
        // Sorted 0.01, 0.02, 0.04, 0.30 → ×4, ×3, ×2, ×1 = 0.04, 0.06, 0.08, 0.30.
        let adj = holm(&[0.04, 0.01, 0.30, 0.02]);
        let want = [0.08, 0.04, 0.30, 0.06];
        for (a, w) in adj.iter().zip(want) {
            assert!((a - w).abs() < 1e-12, "{adj:?}");
        }
        // Monotone: a later raw p never gets a smaller adjusted one.
        let adj = holm(&[0.001, 0.0125, 0.013]);
        assert!((adj[1] - 0.025).abs() < 1e-12 && (adj[2] - 0.025).abs() < 1e-12, "{adj:?}");
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0], "capped at 1");
    }
}
