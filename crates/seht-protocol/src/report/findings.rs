//! What a run found, per method: final test accuracy (or perplexity), final
//! Hessian trace and time per epoch (each seed's fastest epoch), each as mean ± standard deviation over
//! seeds, the cost relative to the baseline, and one sentence per method
//! comparing it with the baseline (difference ± its standard error). Seeds
//! that diverged are in no statistic: they are counted and said.

use std::fmt::Write as _;

use super::{MethodRuns, diverged_note, mean_std};

/// Mean, standard deviation (NaN for one value) and count of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); NaN when n < 2.
    pub sd: f64,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    fn of(xs: &[f64]) -> Option<Stat> {
        if xs.is_empty() {
            return None;
        }
        let (mean, sd) = mean_std(xs);
        Some(Stat { mean, sd, n: xs.len() })
    }

    /// Squared standard error of the mean (NaN for one value: unknown spread).
    fn var_of_mean(&self) -> f64 {
        self.sd * self.sd / self.n as f64
    }

    fn show(&self, digits: usize) -> String {
        if self.sd.is_finite() {
            format!("{:.d$} ± {:.d$}", self.mean, self.sd, d = digits)
        } else {
            format!("{:.d$}", self.mean, d = digits)
        }
    }
}

/// The quality measure of a table: image tables report test top-1
/// accuracy (higher is better), text tables test perplexity (lower is better).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Final-epoch test top-1 accuracy, %.
    Top1,
    /// Test perplexity of the epoch with the lowest validation loss.
    Perplexity,
}

impl Quality {
    /// Column label.
    pub fn label(self) -> &'static str {
        match self {
            Quality::Top1 => "test top-1 (%)",
            Quality::Perplexity => "test perplexity",
        }
    }
}

/// One method's results over its seeds.
#[derive(Debug, Clone)]
pub struct MethodSummary {
    /// Method (config file stem).
    pub method: String,
    /// Seeds run, finished and diverged.
    pub seeds: usize,
    /// Seeds that diverged (in none of the statistics).
    pub diverged: usize,
    /// The first diverged seed, as `run: epoch E, step S: cause`.
    pub first_divergence: Option<String>,
    /// Test quality.
    pub quality: Option<Stat>,
    /// Images: the best test top-1 over epochs (%), the number the paper's
    /// code reported; choosing the epoch on the test set inflates it.
    pub best: Option<Stat>,
    /// Images: per seed, best over epochs minus final test top-1 (points).
    pub inflation: Option<Stat>,
    /// Final Hessian trace (SEHT-H over the weights), when measured.
    pub trace: Option<Stat>,
    /// Final Gauss–Newton trace `tr(G)`, when measured.
    pub gauss_newton: Option<Stat>,
    /// Final scale-invariant trace `tr(DHD)`, when measured.
    pub scale_invariant: Option<Stat>,
    /// Each seed's fastest epoch in seconds of training
    /// ([`super::fastest_epochs`]), over seeds.
    pub seconds_per_epoch: Option<Stat>,
    /// Seconds per epoch over the baseline's, when the table has a baseline.
    pub cost_ratio: Option<f64>,
}

/// The summaries of `runs` (one per method, in their order) and the
/// quality measure used.
pub fn summarise(runs: &[MethodRuns]) -> (Quality, Vec<MethodSummary>) {
    let quality = if runs
        .iter()
        .flat_map(|r| &r.metrics)
        .any(|m| m.final_epoch.as_ref().is_some_and(|e| e.test.top1.is_some()))
    {
        Quality::Top1
    } else {
        Quality::Perplexity
    };
    let mut out: Vec<MethodSummary> = runs
        .iter()
        .map(|r| {
            let q: Vec<f64> = r
                .metrics
                .iter()
                .filter_map(|m| match quality {
                    Quality::Top1 => m.final_epoch.as_ref()?.test.top1.map(|v| 100.0 * v),
                    Quality::Perplexity => m.best_epoch.as_ref()?.test.perplexity,
                })
                .collect();
            let tr: Vec<f64> = r.metrics.iter().filter_map(|m| m.final_trace.as_ref().map(|t| t.mean)).collect();
            let pair = |m: &seht_records::Metrics| -> Option<(f64, f64)> {
                Some((100.0 * m.best_epoch.as_ref()?.test.top1?, 100.0 * m.final_epoch.as_ref()?.test.top1?))
            };
            let pairs: Vec<(f64, f64)> = match quality {
                Quality::Top1 => r.metrics.iter().filter_map(pair).collect(),
                Quality::Perplexity => Vec::new(),
            };
            let spe = super::fastest_epochs(r);
            let of = |f: fn(&seht_records::TraceReport) -> Option<seht_records::Measured>| -> Vec<f64> {
                r.metrics.iter().filter_map(|m| m.final_trace.as_ref().and_then(f).map(|t| t.mean)).collect()
            };
            MethodSummary {
                gauss_newton: Stat::of(&of(|t| t.gauss_newton)),
                scale_invariant: Stat::of(&of(|t| t.scale_invariant)),
                method: r.method.clone(),
                seeds: r.seeds(),
                diverged: r.diverged.len(),
                first_divergence: r.first_divergence(),
                quality: Stat::of(&q),
                best: Stat::of(&pairs.iter().map(|p| p.0).collect::<Vec<_>>()),
                inflation: Stat::of(&pairs.iter().map(|p| p.0 - p.1).collect::<Vec<_>>()),
                trace: Stat::of(&tr),
                seconds_per_epoch: Stat::of(&spe),
                cost_ratio: None,
            }
        })
        .collect();
    let base = out.iter().find(|s| s.method == "baseline").and_then(|s| s.seconds_per_epoch).map(|s| s.mean);
    for s in &mut out {
        s.cost_ratio = base.zip(s.seconds_per_epoch).map(|(b, m)| m.mean / b);
    }
    (quality, out)
}

fn cell(s: Option<Stat>, digits: usize) -> String {
    s.map(|s| s.show(digits)).unwrap_or_else(|| "—".into())
}

impl MethodSummary {
    /// "diverged (n of N seeds)", when a seed diverged.
    fn note(&self) -> Option<String> {
        (self.diverged > 0).then(|| diverged_note(self.diverged, self.seeds))
    }

    /// The quality cell: its statistic over the finished seeds and the note,
    /// or the note alone.
    fn quality_cell(&self) -> String {
        match (self.quality, self.note()) {
            (Some(q), Some(n)) => format!("{}, {n}", q.show(2)),
            (None, Some(n)) => n,
            (q, None) => cell(q, 2),
        }
    }
}

/// The findings table (Markdown) of one experiment.
pub fn table(quality: Quality, rows: &[MethodSummary]) -> String {
    // Images: the best test top-1 over epochs beside the final one.
    let best = quality == Quality::Top1;
    let (best_head, best_rule) = if best { (" best over epochs (%) |", " ---: |") } else { ("", "") };
    let mut md = format!(
        "| method | seeds | {} |{best_head} final Hessian trace | final tr(G) | final tr(DHD) | fastest epoch (s) | cost vs baseline |\n| --- | ---: | ---: |{best_rule} ---: | ---: | ---: | ---: | ---: |\n",
        quality.label()
    );
    for r in rows {
        let best_cell = if best { format!(" {} |", cell(r.best, 2)) } else { String::new() };
        let _ = writeln!(
            md,
            "| {} | {} | {} |{best_cell} {} | {} | {} | {} | {} |",
            r.method,
            r.seeds,
            r.quality_cell(),
            cell(r.trace, 1),
            cell(r.gauss_newton, 1),
            cell(r.scale_invariant, 1),
            cell(r.seconds_per_epoch, 2),
            r.cost_ratio.map(|c| format!("{c:.2}×")).unwrap_or_else(|| "—".into())
        );
    }
    md
}

/// `a − b` with the standard error of the difference of two means (NaN
/// when either has a single value).
fn diff(a: Stat, b: Stat) -> (f64, f64) {
    (a.mean - b.mean, (a.var_of_mean() + b.var_of_mean()).sqrt())
}

/// `d ± se`, or `d` alone when the standard error is unknown.
fn signed(d: f64, se: f64, digits: usize) -> String {
    if se.is_finite() { format!("{d:+.p$} ± {se:.p$}", p = digits) } else { format!("{d:+.p$}", p = digits) }
}

/// One sentence per method against the baseline: what its penalty did to the
/// trace, what it cost in accuracy and in time. Empty without a baseline.
pub fn sentences(quality: Quality, rows: &[MethodSummary]) -> String {
    let Some(base) = rows.iter().find(|r| r.method == "baseline") else { return String::new() };
    let mut md = String::new();
    // "diverged (n of N seeds; e.g. run: epoch E, step S: cause)".
    let said = |r: &MethodSummary| {
        r.note().map(|n| match &r.first_divergence {
            Some(d) => format!("{}; e.g. {d})", n.trim_end_matches(')')),
            None => n,
        })
    };
    if let (Some(q), Some(t)) = (base.quality, base.trace) {
        let tail = said(base).map(|n| format!("; {n}, left out")).unwrap_or_default();
        let _ =
            writeln!(md, "- **baseline**: {} {}, final Hessian trace {}{tail}.", quality.label(), q.show(2), t.show(1));
        if let (Some(i), Some(b)) = (base.inflation, base.best) {
            let _ = writeln!(
                md,
                "- **best over epochs** (the number the paper's code reported): the baseline's best test top-1 over epochs is {} %, {} points above its final one (mean ± sd over {} seeds): what choosing the epoch on the test set adds.",
                b.show(2),
                i.show(2),
                i.n
            );
        }
    } else if let Some(n) = said(base) {
        let _ = writeln!(md, "- **baseline**: {n}: no result to compare with.");
    }
    for r in rows.iter().filter(|r| r.method != "baseline") {
        let mut parts = Vec::new();
        if r.quality.is_none()
            && let Some(n) = said(r)
        {
            let _ = writeln!(md, "- **{}**: {n}: no result.", r.method);
            continue;
        }
        if let (Some(a), Some(b)) = (r.trace, base.trace) {
            let (d, se) = diff(a, b);
            let rel = if b.mean.abs() > 0.0 { format!(" ({:+.0}%)", 100.0 * d / b.mean.abs()) } else { String::new() };
            parts.push(format!("final Hessian trace {} against {}: {}{rel}", a.show(1), b.show(1), signed(d, se, 1)));
        }
        for (name, a, b) in
            [("tr(G)", r.gauss_newton, base.gauss_newton), ("tr(DHD)", r.scale_invariant, base.scale_invariant)]
        {
            if let (Some(a), Some(b)) = (a, b) {
                let (d, se) = diff(a, b);
                parts.push(format!("{name} {} against {}: {}", a.show(1), b.show(1), signed(d, se, 1)));
            }
        }
        if let (Some(a), Some(b)) = (r.quality, base.quality) {
            let (d, se) = diff(a, b);
            parts.push(format!("{} {} ({})", quality.label(), a.show(2), signed(d, se, 2)));
        }
        if let Some(c) = r.cost_ratio {
            parts.push(format!("{c:.2}× the baseline's time per epoch (fastest epochs)"));
        }
        if parts.is_empty() {
            parts.push("no baseline result to compare with".into());
        }
        if let Some(n) = said(r) {
            parts.push(format!("{n}, left out of these figures"));
        }
        let _ = writeln!(md, "- **{}**: {}.", r.method, parts.join("; "));
    }
    md.push_str(
        "\nDifferences are against the baseline, ± the standard error of the difference of the two means (seeds as samples); a difference within about two standard errors is not distinguishable from noise at this number of seeds.\n",
    );
    if rows.iter().any(|r| r.diverged > 0) {
        let _ = writeln!(md, "\n{}", super::DIVERGED_FOOTNOTE);
    }
    md
}

/// CSV rows (`table,method,column,mean,std,seeds,paper_mean,paper_pm,difference,status,diverged`)
/// of an experiment that is not one of the paper's tables: statistics over
/// the finished seeds, `seeds` counting the diverged ones too; a method all
/// of whose seeds diverged has a quality row without a mean.
pub fn csv(table: &str, quality: Quality, rows: &[MethodSummary]) -> String {
    let mut csv = String::from("table,method,column,mean,std,seeds,paper_mean,paper_pm,difference,status,diverged\n");
    for r in rows {
        let d = r.diverged;
        for (col, s) in [
            (quality.label(), r.quality),
            ("final Hessian trace", r.trace),
            ("final Gauss-Newton trace", r.gauss_newton),
            ("final scale-invariant trace", r.scale_invariant),
            ("fastest epoch (s)", r.seconds_per_epoch),
        ] {
            match s {
                Some(s) => {
                    let _ = writeln!(csv, "{table},{},{col},{},{},{},,,,run,{d}", r.method, s.mean, s.sd, s.n + d);
                }
                None if col == quality.label() && d > 0 => {
                    let _ = writeln!(csv, "{table},{},{col},,,{d},,,,run,{d}", r.method);
                }
                None => {}
            }
        }
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(xs: &[f64]) -> Stat {
        Stat::of(xs).expect("values")
    }

    /// Training time is each seed's fastest epoch, not the mean over its
    /// epochs: a run timed beside other load (a build, a benchmark) is slowed
    /// in some epochs only. Before, the convergence preset's table said
    /// label smoothing cost 0.43× the baseline (whose seeds had run beside
    /// builds) although both do the same work per step.
    #[test]
    fn training_time_is_the_fastest_epoch_of_each_seed() {
        use crate::report::example_runs::{epoch, finished};
        let run = |method: &str, seconds: &[f64]| {
            let logs = vec![
                seconds
                    .iter()
                    .map(|&t| seht_records::EpochRecord { train_seconds: t, ..epoch(0.8, None) })
                    .collect::<Vec<_>>(),
            ];
            let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
            let m = seht_records::Metrics { seconds_per_epoch: mean, ..finished(method, 0.8, None) };
            MethodRuns { method: method.into(), metrics: vec![m], logs, diverged: vec![] }
        };
        // The baseline slowed in its first epoch by a build beside it.
        let runs = [run("baseline", &[30.0, 4.0, 5.0]), run("label-smoothing", &[4.5, 4.0, 4.5])];
        let (quality, rows) = summarise(&runs);
        assert_eq!(rows[0].seconds_per_epoch.map(|s| s.mean), Some(4.0));
        assert_eq!(rows[1].cost_ratio, Some(1.0));
        let md = table(quality, &rows);
        assert!(md.contains("| fastest epoch (s) |") && md.contains("| 4.00 | 1.00× |"), "{md}");
        // A run without epochs in its log falls back to metrics.json's mean.
        let mut no_log = run("baseline", &[6.0]);
        no_log.logs[0].clear();
        assert_eq!(crate::report::fastest_epochs(&no_log), vec![6.0]);
    }

    #[test]
    fn difference_and_its_standard_error() {
        // Means 2 and 5, sample variances 1 and 4 over 3 values: se = sqrt(1/3 + 4/3).
        let (d, se) = diff(stat(&[1.0, 2.0, 3.0]), stat(&[3.0, 5.0, 7.0]));
        assert_eq!(d, -3.0);
        assert!((se - (5.0f64 / 3.0).sqrt()).abs() < 1e-12, "{se}");
        // One seed: the spread, and so the standard error, is unknown.
        let (d, se) = diff(stat(&[4.0]), stat(&[1.0]));
        assert_eq!((d, se.is_nan()), (3.0, true));
        assert_eq!(signed(d, se, 1), "+3.0");
    }

    #[test]
    fn sentences_compare_each_method_with_the_baseline() {
        let row = |m: &str, q: &[f64], t: &[f64], ratio| MethodSummary {
            method: m.into(),
            seeds: q.len(),
            diverged: 0,
            first_divergence: None,
            quality: Some(stat(q)),
            best: Some(stat(&q.iter().map(|x| x + 0.5).collect::<Vec<_>>())),
            inflation: Some(stat(&q.iter().map(|_| 0.5).collect::<Vec<_>>())),
            trace: Some(stat(t)),
            gauss_newton: Some(stat(&t.iter().map(|x| x / 10.0).collect::<Vec<_>>())),
            scale_invariant: None,
            seconds_per_epoch: Some(stat(&[1.0])),
            cost_ratio: Some(ratio),
        };
        let rows =
            [row("baseline", &[80.0, 82.0], &[100.0, 120.0], 1.0), row("seht-h", &[79.0, 81.0], &[50.0, 70.0], 6.0)];
        let s = sentences(Quality::Top1, &rows);
        assert!(
            s.contains("**seht-h**: final Hessian trace 60.0 ± 14.1 against 110.0 ± 14.1: -50.0 ± 14.1 (-45%)"),
            "{s}"
        );
        assert!(s.contains("6.00× the baseline's time per epoch"), "{s}");
        assert!(s.contains("tr(G) 6.0 ± 1.4 against 11.0 ± 1.4: -5.0 ± 1.4"), "{s}");
        assert!(!s.contains("tr(DHD)"), "not measured, not said: {s}");
        assert!(s.contains("test top-1 (%) 80.00 ± 1.41 (-1.00 ± 1.41)"), "{s}");
        assert!(sentences(Quality::Top1, &rows[1..]).is_empty());
        assert!(
            s.contains("best test top-1 over epochs is 81.50 ± 1.41 %, 0.50 ± 0.00 points above its final one"),
            "{s}"
        );
        let t = table(Quality::Top1, &rows);
        assert!(
            t.contains("| test top-1 (%) | best over epochs (%) |") && t.contains("| 80.00 ± 1.41 | 80.50 ± 1.41 |"),
            "{t}"
        );
        assert!(!table(Quality::Perplexity, &rows).contains("best over epochs"), "text tables have no such column");
    }
}
