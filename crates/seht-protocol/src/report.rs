//! The outputs of a reproduction, from the runs' typed records
//! (`metrics.json`, `log.jsonl` via `seht-records`): what the run found
//! (per method: accuracy, final Hessian trace, cost), the paper's tables
//! beside ours (Markdown and CSV), the training-time and Hessian-trace
//! tables, the figures (`figure`), the λ selection and `summary.md`; and
//! `check-results`, which verifies them.
//!
//! A run that diverged (status `diverged` in its `metrics.json`) is never
//! averaged: every mean and standard deviation is over the finished seeds,
//! and a method with diverged seeds says "diverged (n of N seeds)" beside
//! them (alone when none finished); the CSV files carry the count in their
//! `diverged` column.

pub mod example_runs;
pub mod findings;
pub mod paired;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result, bail, ensure};
use seht_records::{Divergence, EpochRecord, Measured, Metrics, TraceReport, read_log};

use crate::paper::{PaperTable, TABLES};
use crate::preset::{Cell, DataNotes, DataSource, Plan};

/// The numbers a paper table reports for one run, in the paper's column order.
/// (`None` for a run without them: one that diverged.)
fn values(table: &str, m: &Metrics) -> Vec<Option<f64>> {
    let (last, best) = (m.final_epoch.as_ref(), m.best_epoch.as_ref());
    let pct = |v: Option<f64>| v.map(|v| 100.0 * v);
    match table {
        "table1" => vec![pct(last.and_then(|e| e.test.top1))],
        "table2" => vec![pct(last.and_then(|e| e.test.top1)), pct(last.and_then(|e| e.test.top5))],
        _ => vec![best.and_then(|e| e.valid.as_ref()).and_then(|v| v.perplexity), best.and_then(|e| e.test.perplexity)],
    }
}

/// The note beside (or instead of) a mean with diverged seeds.
pub fn diverged_note(diverged: usize, seeds: usize) -> String {
    format!("diverged ({diverged} of {seeds} seeds)")
}

/// A table cell: mean ± standard deviation over the finished seeds' values
/// `xs`, with the note when `diverged` of the `seeds` diverged; the note
/// alone when none finished.
pub(crate) fn cell_with_divergence(xs: &[f64], diverged: usize, seeds: usize) -> String {
    let note = (diverged > 0).then(|| diverged_note(diverged, seeds));
    match (xs.is_empty(), note) {
        (true, Some(n)) => n,
        (true, None) => "—".into(),
        (false, None) => {
            let (m, s) = mean_std(xs);
            pm(m, s)
        }
        (false, Some(n)) => {
            let (m, s) = mean_std(xs);
            format!("{}, {n}", pm(m, s))
        }
    }
}

/// `m,s` for a CSV row, empty fields for no values.
fn csv_mean_std(xs: &[f64]) -> String {
    if xs.is_empty() {
        return ",".into();
    }
    let (m, s) = mean_std(xs);
    format!("{m},{s}")
}

/// The sentence under a table when some run diverged.
const DIVERGED_FOOTNOTE: &str = "Seeds marked \"diverged\" stopped at a non-finite loss or an objective beyond the config's bound (status `diverged` in their metrics.json, with the epoch, step and cause); they are left out of every mean and standard deviation.";

/// Each finished seed's fastest epoch, in seconds of training (the least
/// `train_seconds` over its `log.jsonl` epochs; its `metrics.json`
/// `seconds_per_epoch` where the log has none). A shared machine's other
/// load only ever slows an epoch, so the fastest is the closest to what an
/// epoch costs on an idle machine; the mean over a run's epochs counts
/// whatever else ran beside it (the convergence preset's runs, timed beside
/// builds and benchmarks, had means up to 4× their fastest epoch). Every
/// table's training time and cost ratio use it.
pub fn fastest_epochs(r: &MethodRuns) -> Vec<f64> {
    r.metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let log = r.logs.get(i).map(Vec::as_slice).unwrap_or_default();
            log.iter()
                .map(|e| e.train_seconds)
                .filter(|t| t.is_finite() && *t > 0.0)
                .reduce(f64::min)
                .unwrap_or(m.seconds_per_epoch)
        })
        .collect()
}

/// Mean and sample standard deviation (n − 1; NaN for one value).
pub fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let s = if xs.len() > 1 { (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { f64::NAN };
    (m, s)
}

fn pm(m: f64, s: f64) -> String {
    if s.is_nan() { format!("{m:.2}") } else { format!("{m:.2} ± {s:.2}") }
}

/// The runs of one method of one table (main matrix, not the λ grid).
#[derive(Default)]
pub struct MethodRuns {
    /// Method (config file stem).
    pub method: String,
    /// `metrics.json` of each seed that finished.
    pub metrics: Vec<Metrics>,
    /// `log.jsonl` of each seed that finished.
    pub logs: Vec<Vec<EpochRecord>>,
    /// `metrics.json` of each seed that diverged (no result: in no mean).
    pub diverged: Vec<Metrics>,
}

impl MethodRuns {
    /// Seeds run, finished and diverged.
    pub fn seeds(&self) -> usize {
        self.metrics.len() + self.diverged.len()
    }

    /// The first diverged seed as `run: epoch E, step S: cause`.
    pub fn first_divergence(&self) -> Option<String> {
        let m = self.diverged.first()?;
        m.diverged().map(|d: &Divergence| format!("{}: {d}", m.name))
    }
}

/// What to do about a run record (`metrics.json`, `log.jsonl`) of `run`
/// that does not read back.
pub fn record_fix(run: &Path) -> String {
    format!(
        "restore it from a copy (e.g. `git checkout -- {}`), or delete the run folder {} and run `cargo xtask reproduce` again with the same arguments to train it again",
        run.display(),
        run.display()
    )
}

/// `metrics.json` of `run`, the error naming the file and what to do.
///
/// A record that parses but cannot be this run's — its `name` is not the
/// folder's, or an accuracy lies outside [0, 1] — is refused the same way,
/// naming the field: it would otherwise pair with the wrong seed or move a
/// mean without a word.
pub fn read_metrics(run: &Path) -> Result<Metrics> {
    let fail = |e: String| crate::Error::Invalid(format!("{e}; {}", record_fix(run)));
    let m = Metrics::read(run).map_err(|e| fail(e.to_string()))?;
    let file = run.join(seht_records::METRICS_FILE);
    let folder = run.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
    if m.name != folder {
        return Err(fail(format!("{}: `name` is {:?}, but the run folder is {folder:?}", file.display(), m.name)));
    }
    for (field, e) in [("final_epoch", &m.final_epoch), ("best_epoch", &m.best_epoch)] {
        let Some(e) = e else { continue };
        for (which, v) in [("top1", e.test.top1), ("top5", e.test.top5)] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(fail(format!("{}: `{field}.test.{which}` is {v}, outside [0, 1]", file.display())));
            }
        }
    }
    Ok(m)
}

fn collect(out: &Path, cells: &[Cell], table: &str) -> Result<Vec<MethodRuns>> {
    let mut by: Vec<MethodRuns> = Vec::new();
    for c in cells.iter().filter(|c| c.table == table && c.grid_lambda.is_none()) {
        let run = out.join("runs").join(&c.name);
        let m = read_metrics(&run)?;
        let i = match by.iter().position(|r| r.method == c.method) {
            Some(i) => i,
            None => {
                by.push(MethodRuns { method: c.method.clone(), ..MethodRuns::default() });
                by.len() - 1
            }
        };
        if m.diverged().is_some() {
            by[i].diverged.push(m);
        } else {
            by[i].logs.push(read_log(&run).map_err(|e| crate::Error::Invalid(format!("{e}; {}", record_fix(&run))))?);
            by[i].metrics.push(m);
        }
    }
    Ok(by)
}

fn table_outputs(t: &PaperTable, runs: &[MethodRuns], note: Option<&DataSource>) -> (String, String) {
    let mut md = format!("# {}\n\n", t.title);
    if let Some(n) = note {
        let _ = writeln!(md, "**Data:** {}\n", n.describe());
    }
    let _ = write!(md, "| method | seeds |");
    for c in t.columns {
        let _ = write!(md, " ours: {c} | paper | Δ |");
    }
    md.push('\n');
    md.push_str("| --- | ---: |");
    for _ in t.columns {
        md.push_str(" ---: | ---: | ---: |");
    }
    md.push('\n');
    let mut csv = String::from("table,method,column,mean,std,seeds,paper_mean,paper_pm,difference,status,diverged\n");
    for row in t.rows {
        let ours = runs.iter().find(|r| r.method == row.key);
        let _ = write!(
            md,
            "| {} | {} |",
            row.label,
            ours.map(|r| r.seeds().to_string()).unwrap_or_else(|| if row.quoted {
                "quoted, not run".into()
            } else {
                "not run".into()
            })
        );
        for (ci, col) in t.columns.iter().enumerate() {
            let (pmean, ppm) = row.values.get(ci).copied().unwrap_or((f64::NAN, f64::NAN));
            let paper = if ppm.is_nan() { format!("{pmean:.2}") } else { format!("{pmean:.2} ± {ppm:.2}") };
            match ours {
                Some(r) => {
                    let xs: Vec<f64> = r.metrics.iter().filter_map(|m| values(t.id, m)[ci]).collect();
                    let (n, seeds) = (r.diverged.len(), xs.len() + r.diverged.len());
                    let diff = (!xs.is_empty()).then(|| mean_std(&xs).0 - pmean);
                    let _ = write!(
                        md,
                        " {} | {paper} | {} |",
                        cell_with_divergence(&xs, n, seeds),
                        diff.map(|d| format!("{d:+.2}")).unwrap_or_else(|| "—".into())
                    );
                    let _ = writeln!(
                        csv,
                        "{},{},{},{},{seeds},{pmean},{ppm},{},run,{n}",
                        t.id,
                        row.key,
                        col,
                        csv_mean_std(&xs),
                        diff.map(|d| d.to_string()).unwrap_or_default()
                    );
                }
                None => {
                    let _ = write!(md, " — | {paper} | — |");
                    let _ = writeln!(
                        csv,
                        "{},{},{},,,0,{pmean},{ppm},,{},0",
                        t.id,
                        row.key,
                        col,
                        if row.quoted { "quoted" } else { "not run" }
                    );
                }
            }
        }
        md.push('\n');
    }
    for r in runs.iter().filter(|r| !t.rows.iter().any(|row| row.key == r.method)) {
        let _ = write!(md, "| {} (ours, not in the paper) | {} |", r.method, r.seeds());
        for (ci, col) in t.columns.iter().enumerate() {
            let xs: Vec<f64> = r.metrics.iter().filter_map(|m| values(t.id, m)[ci]).collect();
            let (n, seeds) = (r.diverged.len(), xs.len() + r.diverged.len());
            let _ = write!(md, " {} | — | — |", cell_with_divergence(&xs, n, seeds));
            let _ = writeln!(csv, "{},{},{},{},{seeds},,,,run,{n}", t.id, r.method, col, csv_mean_std(&xs));
        }
        md.push('\n');
    }
    let best_by =
        runs.iter().flat_map(|r| r.metrics.iter().chain(&r.diverged)).map(|m| m.best_by.as_str()).next().unwrap_or("");
    let _ = writeln!(
        md,
        "\nOurs: mean ± standard deviation over seeds. {} Δ = ours − paper. Rows marked \"quoted, not run\" are numbers the paper quotes from other papers.",
        if t.id == "table1" || t.id == "table2" {
            "Accuracy of the final epoch.".to_string()
        } else {
            format!("Epoch chosen by {best_by}.")
        }
    );
    if runs.iter().any(|r| !r.diverged.is_empty()) {
        let _ = writeln!(md, "\n{DIVERGED_FOOTNOTE}");
    }
    (md, csv)
}

fn time_and_trace(table: &str, runs: &[MethodRuns]) -> (String, String) {
    let base = runs.iter().find(|r| r.method == "baseline").map(|r| mean_std(&fastest_epochs(r)).0);
    let mut time = format!(
        "## {table}: training time\n\nEach run's fastest epoch (seconds of training; other load on the machine only slows an epoch), mean over seeds, beside the mean over every epoch of every seed.\n\n| method | fastest epoch (s) | ratio to baseline | s / epoch, all epochs | penalty steps / steps |\n| --- | ---: | ---: | ---: | ---: |\n"
    );
    let mut trace = format!(
        "## {table}: curvature of the final model (over the weights, evaluation mode)\n\n\
         `tr(H)`: the Hessian trace (Hutchinson, Rademacher probes); `tr(G)`: the generalised Gauss–Newton \
         trace (labels sampled from the model; never negative); `tr(DHD)` = Σ_l ‖w_l‖²·tr(H_ll): the Hessian \
         trace with each layer scaled by its weight norm, unchanged when a layer before BatchNorm is rescaled. \
         Each: mean ± std over seeds; the last column is one run's standard error of `tr(H)` (probes and batches).\n\n\
         | method | tr(H) | tr(G) | tr(DHD) | standard error of one run's tr(H) |\n| --- | ---: | ---: | ---: | ---: |\n"
    );
    for r in runs {
        let (n, seeds) = (r.diverged.len(), r.seeds());
        let spes = fastest_epochs(r);
        let fastest = mean_std(&spes).0;
        let all = if spes.is_empty() {
            "—".to_string()
        } else {
            format!("{:.2}", mean_std(&r.metrics.iter().map(|m| m.seconds_per_epoch).collect::<Vec<_>>()).0)
        };
        let ratio = match (base, spes.is_empty()) {
            (Some(b), false) => format!("{:.2}×", fastest / b),
            _ => "—".into(),
        };
        let ps: u64 = r.metrics.iter().map(|m| m.penalty_steps).sum();
        let st: u64 = r.metrics.iter().map(|m| m.steps).sum();
        let time_cell = match (spes.is_empty(), n > 0) {
            (true, _) => cell_with_divergence(&spes, n, seeds),
            (false, note) => {
                if note {
                    format!("{fastest:.2}, {}", diverged_note(n, seeds))
                } else {
                    format!("{fastest:.2}")
                }
            }
        };
        let _ = writeln!(time, "| {} | {time_cell} | {ratio} | {all} | {ps} / {st} |", r.method);
        let tr: Vec<f64> = r.metrics.iter().filter_map(|m| m.final_trace.as_ref().map(|t| t.mean)).collect();
        let of = |f: fn(&TraceReport) -> Option<Measured>| -> Vec<f64> {
            r.metrics.iter().filter_map(|m| m.final_trace.as_ref().and_then(f).map(|t| t.mean)).collect()
        };
        let (gn, scaled) = (of(|t| t.gauss_newton), of(|t| t.scale_invariant));
        let se = r.metrics.first().and_then(|m| m.final_trace.as_ref()).map(|t| t.std_error);
        if tr.is_empty() && n == 0 {
            let _ = writeln!(trace, "| {} | not measured | | | |", r.method);
        } else {
            let cell = |xs: &[f64]| {
                if xs.is_empty() && !tr.is_empty() {
                    "not measured".into()
                } else {
                    cell_with_divergence(xs, n, xs.len() + n)
                }
            };
            let _ = writeln!(
                trace,
                "| {} | {} | {} | {} | {} |",
                r.method,
                cell(&tr),
                cell(&gn),
                cell(&scaled),
                se.map(|s| format!("{s:.2}")).unwrap_or_default()
            );
        }
    }
    if runs.iter().any(|r| !r.diverged.is_empty()) {
        let _ = writeln!(time, "\n{DIVERGED_FOOTNOTE}");
        let _ = writeln!(trace, "\n{DIVERGED_FOOTNOTE}");
    }
    (time, trace)
}

/// Total wall time of the runs that trained, over every invocation
/// (`runs/timing.csv`), in seconds, and the number of runs it covers.
fn recorded_time(out: &Path) -> Option<(f64, usize)> {
    let text = std::fs::read_to_string(out.join("runs").join("timing.csv")).ok()?;
    let mut seen = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some((name, secs)) = line.rsplit_once(',')
            && let Ok(v) = secs.trim().parse::<f64>()
        {
            seen.insert(name.to_string(), v);
        }
    }
    Some((seen.values().sum(), seen.len()))
}

/// The figure of a table: `figure1` for the paper's Table 1, `<table>-figure`
/// for a preset's own experiment; `None` for text tables.
fn figure_stem(table: &str) -> String {
    if table == "table1" { "figure1".into() } else { format!("{table}-figure") }
}

/// The dataset the runs trained on, for a figure's caption: the name in
/// their `metrics.json` `data` field (`FashionMnist from …`), spelt as the
/// field spells it (Fashion-MNIST, CIFAR-10, CIFAR-100); "configured data"
/// where no run says.
fn dataset_of(runs: &[MethodRuns]) -> String {
    let first =
        runs.iter().flat_map(|r| r.metrics.iter().chain(&r.diverged)).find_map(|m| m.data.split(" from ").next());
    match first {
        Some("FashionMnist") => "Fashion-MNIST".into(),
        Some("Cifar10") => "CIFAR-10".into(),
        Some("Cifar100") => "CIFAR-100".into(),
        Some(other) if !other.is_empty() => other.into(),
        _ => "configured data".into(),
    }
}

fn is_image_table(runs: &[MethodRuns]) -> bool {
    runs.iter().flat_map(|r| &r.metrics).any(|m| m.final_epoch.as_ref().is_some_and(|e| e.test.top1.is_some()))
}

/// Where the main outputs went.
pub struct Written {
    /// `summary.md`.
    pub summary: PathBuf,
    /// The figure (PNG), when a table has one.
    pub figure: Option<PathBuf>,
}

/// Where and how the outputs were made: what the orchestrator knows.
pub struct Provenance {
    /// The machine, in words (cores, CPU model, memory, OS).
    pub machine: String,
    /// The git revision of the code that ran.
    pub revision: String,
    /// Wall time of this invocation, in seconds.
    pub wall_secs: f64,
}

/// Draws a table's figure: `(runs, out, stem, caption, own_table)` →
/// whether a font was found for its labels. (Drawing lives in xtask.)
pub type DrawFigure<'a> = &'a dyn Fn(&[MethodRuns], &Path, &str, &str, bool) -> Result<bool>;

/// The parts of `summary.md` that every table adds to.
#[derive(Default)]
struct Summary {
    found: String,
    data: String,
    outputs: String,
    times: String,
    traces: String,
    figure_png: Option<PathBuf>,
}

/// Writes every output of a finished matrix into `out`.
///
/// # Errors
/// A run record that does not read back (naming it and what to do), a
/// file that cannot be written, and the figure's errors.
pub fn write(
    root: &Path,
    out: &Path,
    plan: &Plan,
    cells: &[Cell],
    notes: &DataNotes,
    provenance: &Provenance,
    figure: DrawFigure,
) -> Result<Written> {
    let preset = &plan.preset;
    let mut head = format!(
        "# Stochastic Estimators of Hessian Trace — preset `{}`\n\n{}.\n\n\
         - Machine: {}\n- Git revision: {}\n- Wall time: {:.1} minutes ({} runs, {} at a time; preset's estimate: {} minutes on 2 cores)\n- Seeds per cell: {}\n",
        preset.name,
        preset.description,
        provenance.machine,
        provenance.revision,
        provenance.wall_secs / 60.0,
        cells.len(),
        plan.jobs,
        preset.expected_minutes,
        plan.seeds,
    );
    if let Some((secs, n)) = recorded_time(out) {
        let _ = writeln!(
            head,
            "- Training time of all {n} runs, summed over every invocation of this preset (runs/timing.csv): {:.1} minutes",
            secs / 60.0
        );
    }
    let mut sum = Summary {
        found: "\n## What this run found\n\n".into(),
        data: "\n## Data\n\n".into(),
        outputs: "\n## Outputs\n\n".into(),
        ..Summary::default()
    };
    for table in &plan.tables {
        write_table(out, plan, cells, notes.get(table), table, figure, &mut sum)?;
    }
    crate::write_atomic(
        out.join("training_time.md"),
        format!("# Training time per epoch (measured in this run)\n\n{}", sum.times),
    )?;
    crate::write_atomic(
        out.join("hessian_trace.md"),
        format!(
            "# Curvature of the final models\n\nDid the penalty lower the curvature? The Hessian trace, the Gauss–Newton trace and the scale-invariant trace over the weights, on training batches, evaluation mode.\n\n{}",
            sum.traces
        ),
    )?;
    if crate::selection::lambda_report(out, cells, root)?.is_some() {
        sum.outputs.push_str("- λ selection on a validation split: [lambda.md](lambda.md) ([CSV](lambda.csv))\n");
    }
    sum.outputs.push_str("- [training_time.md](training_time.md), [hessian_trace.md](hessian_trace.md)\n- Configs of every run: `configs/`; run folders (config, log.jsonl, metrics.json, checkpoint): `runs/`\n");
    let summary = out.join("summary.md");
    crate::write_atomic(&summary, format!("{head}{}{}{}", sum.found, sum.data, sum.outputs))?;
    Ok(Written { summary, figure: sum.figure_png })
}

/// One table's outputs (`<table>.md`, `.csv`, `-paired.md`, its figure) and
/// its parts of the summary.
fn write_table(
    out: &Path,
    plan: &Plan,
    cells: &[Cell],
    note: Option<&DataSource>,
    table: &str,
    figure: DrawFigure,
    sum: &mut Summary,
) -> Result<()> {
    let runs = collect(out, cells, table)?;
    let data_used = runs
        .iter()
        .flat_map(|r| r.metrics.iter().chain(&r.diverged))
        .map(|m| m.data.clone())
        .next()
        .unwrap_or_default();
    let _ = writeln!(
        sum.data,
        "- {table}: {data_used}{}",
        note.map(|n| format!(" — **{}**", n.describe())).unwrap_or_default()
    );
    let (quality, rows) = findings::summarise(&runs);
    let paper = TABLES.iter().find(|t| t.id == table);
    let _ = writeln!(
        sum.found,
        "### {}\n\n{}\n{}",
        paper
            .map(|t| t.title.to_string())
            .unwrap_or_else(|| format!("{table} ({})", note.map(DataSource::short).unwrap_or("configured data"))),
        findings::table(quality, &rows),
        paired::sentences(&runs).unwrap_or_else(|| findings::sentences(quality, &rows))
    );
    let (md, csv) = match paper {
        Some(t) => table_outputs(t, &runs, note),
        None => (
            format!(
                "# {table}\n\n{}{}\n{}",
                note.map(|n| format!("**Data:** {}\n\n", n.describe())).unwrap_or_default(),
                findings::table(quality, &rows),
                findings::sentences(quality, &rows)
            ),
            findings::csv(table, quality, &rows),
        ),
    };
    crate::write_atomic(out.join(format!("{table}.md")), md)?;
    crate::write_atomic(out.join(format!("{table}.csv")), csv)?;
    let _ = writeln!(sum.outputs, "- [{table}.md]({table}.md) ([CSV]({table}.csv))");
    if let Some(p) = paired::report(&runs) {
        let checks = paired::baseline_convergence(&runs).map(|c| format!("\n{c}")).unwrap_or_default();
        crate::write_atomic(
            out.join(format!("{table}-paired.md")),
            format!("# {table}: every method against the baseline, paired by seed\n\n{p}{checks}"),
        )?;
        let _ = writeln!(
            sum.outputs,
            "- Paired by seed, with confidence intervals and Holm-corrected p-values: [{table}-paired.md]({table}-paired.md)"
        );
    }
    let (tm, tr) = time_and_trace(table, &runs);
    sum.times.push_str(&tm);
    sum.times.push('\n');
    sum.traces.push_str(&tr);
    sum.traces.push('\n');
    if (table == "table1" || paper.is_none()) && is_image_table(&runs) {
        let stem = figure_stem(table);
        let source = note.map(|n| n.short().to_string()).unwrap_or_else(|| dataset_of(&runs));
        let caption = match paper {
            Some(_) => format!("Figure 1: test accuracy per epoch ({} preset, {source})", plan.preset.name),
            None => format!("test accuracy per epoch ({} preset, {source})", plan.preset.name),
        };
        if !figure(&runs, out, &stem, &caption, paper.is_none())? {
            sum.outputs.push_str("- (No DejaVu font found: the figure was drawn without axis labels.)\n");
        }
        let _ = writeln!(sum.outputs, "- Figure: [{stem}.svg]({stem}.svg), [{stem}.png]({stem}.png)");
        sum.figure_png.get_or_insert(out.join(format!("{stem}.png")));
    }
    Ok(())
}

/// What `cargo xtask check-results` checks.
#[derive(Debug, Clone)]
pub struct CheckArgs {
    /// The output folder of one preset (e.g. results/demo).
    pub dir: PathBuf,
    /// The preset it holds (default: the folder's name, when it names one).
    pub preset: Option<String>,
    /// Config folders to check (default: the preset's).
    pub tables: Option<Vec<String>>,
    /// Seeds each method must have (default: the preset's).
    pub seeds: Option<usize>,
}

/// Every expected file exists and parses, with one row per method and the
/// expected seed count. Returns the sentence that says so.
///
/// # Errors
/// The first file that is missing or malformed, naming it and how to
/// rewrite it.
pub fn check(root: &Path, args: &CheckArgs) -> Result<String> {
    let dir = &args.dir;
    ensure!(
        dir.is_dir(),
        "{}: no such folder; give the output folder of one preset (e.g. results/demo)",
        dir.display()
    );
    let preset_name = args.preset.clone().or_else(|| {
        let name = dir.file_name()?.to_string_lossy().to_string();
        crate::preset::load_preset(root, &name).is_ok().then_some(name)
    });
    let preset = preset_name.map(|p| crate::preset::load_preset(root, &p)).transpose()?;
    let tables = match (&args.tables, &preset) {
        (Some(t), _) => crate::preset::table_names(root, t)?,
        (None, Some(p)) => p.tables.clone(),
        (None, None) => bail!(
            "{}: name the preset (--preset) or the tables (--tables): the folder's name is not a preset",
            dir.display()
        ),
    };
    let seeds = args.seeds.or(preset.as_ref().map(|p| p.seeds)).unwrap_or(1);
    // Every error names the file and the way out: the outputs are written
    // from the run folders, which `reproduce` reads without retraining.
    let again = |p: &Path| {
        format!(
            "{}: rewrite the outputs with `cargo xtask reproduce` (the same arguments; finished runs are read, not trained again)",
            p.display()
        )
    };
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| again(p));
    for f in ["summary.md", "training_time.md", "hessian_trace.md"] {
        let p = dir.join(f);
        let text = read(&p)?;
        ensure!(!text.trim().is_empty(), "{}: it is empty", again(&p));
    }
    for t in &tables {
        let methods = crate::preset::methods(root, t)?;
        let path = dir.join(format!("{t}.csv"));
        let csv = read(&path)?;
        let rows = (|| {
            let mut lines = csv.lines();
            ensure!(lines.next().is_some_and(|h| h.starts_with("table,method,")), "{t}.csv has no header");
            let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
            // A preset's `seeds_for` gives some methods fewer seeds (at most `seeds`), as `reproduce` ran them.
            let expected = |m: &str| {
                preset.as_ref().and_then(|p| p.seeds_for.get(&format!("{t}/{m}"))).map_or(seeds, |&n| n.min(seeds))
            };
            check_table_rows(t, &rows, &methods, &expected)?;
            Ok(rows)
        })()
        .with_context(|| again(&path))?;
        let path = dir.join(format!("{t}.md"));
        let md = read(&path)?;
        ensure!(
            md.lines().filter(|l| l.starts_with("| ")).count() > methods.len(),
            "{}: {t}.md lacks rows",
            again(&path)
        );
        let is_paper = TABLES.iter().any(|p| p.id == t);
        let images = rows.iter().any(|r| r.get(2) == Some(&findings::Quality::Top1.label()));
        let stem = figure_stem(t);
        if t == "table1" || (!is_paper && images) {
            let path = dir.join(format!("{stem}.svg"));
            let svg = read(&path)?;
            ensure!(svg.contains("<svg") && svg.contains("</svg>"), "{}: not an SVG document", again(&path));
            let path = dir.join(format!("{stem}.png"));
            let png = std::fs::read(&path).with_context(|| again(&path))?;
            ensure!(png.starts_with(b"\x89PNG"), "{}: not a PNG file", again(&path));
        }
    }
    if read(&dir.join("summary.md"))?.contains("lambda.md") {
        let path = dir.join("lambda.csv");
        check_lambda_rows(&read(&path)?).with_context(|| again(&path))?;
    }
    let fewer = preset.as_ref().is_some_and(|p| !p.seeds_for.is_empty());
    Ok(format!(
        "{}: all outputs present and well-formed for {} ({} seeds each{})",
        dir.display(),
        tables.join(", "),
        seeds,
        if fewer { ", fewer where the preset's seeds_for says" } else { "" }
    ))
}

/// The rows of a table's CSV (`table,method,column,mean,std,seeds,…,status,
/// diverged`): every method has a row, each with the expected seed count and
/// a finite mean over its finished seeds — no mean where all diverged.
fn check_table_rows(t: &str, rows: &[Vec<&str>], methods: &[String], seeds_of: &dyn Fn(&str) -> usize) -> Result<()> {
    for m in methods {
        let seeds = seeds_of(m);
        let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r.get(1) == Some(&m.as_str())).collect();
        ensure!(!mine.is_empty(), "{t}.csv has no row for {m}");
        for r in mine {
            ensure!(
                r.get(5).and_then(|s| s.parse::<usize>().ok()) == Some(seeds),
                "{t}.csv: {m} has {} seeds, expected {seeds}",
                r.get(5).copied().unwrap_or("no")
            );
            // Files written before divergence was recorded have no column.
            let diverged = match r.get(10) {
                None => 0,
                Some(s) => s.parse::<usize>().with_context(|| format!("{t}.csv: {m}: diverged = {s:?}"))?,
            };
            ensure!(diverged <= seeds, "{t}.csv: {m} has {diverged} diverged of {seeds} seeds");
            let mean = r.get(3).copied().unwrap_or_default();
            if diverged < seeds {
                ensure!(
                    mean.parse::<f64>().is_ok_and(f64::is_finite),
                    "{t}.csv: {m} has no finite mean over its {} finished seeds",
                    seeds - diverged
                );
            } else {
                ensure!(mean.is_empty(), "{t}.csv: {m} has a mean ({mean}) but every seed diverged");
            }
        }
    }
    Ok(())
}

/// `lambda.csv` (`table,method,lambda,metric,mean,std,seeds,selected,
/// diverged`): rows with a finite mean unless every seed of the λ diverged,
/// and a selected λ for each method with a λ whose seeds did not all diverge.
fn check_lambda_rows(csv: &str) -> Result<()> {
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    ensure!(!rows.is_empty(), "lambda.csv has no rows");
    for r in &rows {
        // Files written before divergence was recorded have 8 columns.
        let diverged = match r.len() {
            8 => Some(0),
            9 => r[8].parse::<usize>().ok(),
            _ => None,
        };
        let seeds = r.get(6).and_then(|s| s.parse::<usize>().ok());
        let ok = match (diverged, seeds) {
            (Some(d), Some(n)) if d < n => r[4].parse::<f64>().is_ok_and(f64::is_finite),
            (Some(d), Some(n)) => d == n && r[4].is_empty() && r[7] == "0",
            _ => false,
        };
        ensure!(ok, "lambda.csv: bad row {}", r.join(","));
    }
    for r in &rows {
        let grid: Vec<&Vec<&str>> = rows.iter().filter(|o| o[..2] == r[..2]).collect();
        let all_diverged = grid.iter().all(|o| o[4].is_empty());
        ensure!(all_diverged || grid.iter().any(|o| o[7] == "1"), "lambda.csv selects no λ for {}, {}", r[0], r[1]);
    }
    Ok(())
}

#[cfg(test)]
mod faults;

#[cfg(test)]
mod tests {
    use super::*;
    pub(super) use crate::report::example_runs::finished;

    /// A main cell of `t/m` whose λ its grid selects, with a copy of the
    /// demo's SEHT-H config as its config.
    fn selected_main(out: &Path, t: &str, m: &str) -> (Cell, PathBuf) {
        let config = out.join("main.toml");
        std::fs::copy(workspace().join("configs/demo/seht-h.toml"), &config).expect("config");
        let mut main = write_run(out, t, m, 0, None, finished("main", 0.6, None));
        (main.config, main.selected) = (config.clone(), true);
        (main, config)
    }

    /// The workspace root (this crate is `crates/seht-protocol`).
    pub(super) fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }
    use crate::selection::*;
    use seht_records::RunStatus;

    /// A fresh folder under the system's temporary directory.
    pub(super) fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-report-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("runs")).expect("temp dir");
        dir
    }

    /// A run record that parses but cannot be its folder's run is refused,
    /// naming the field: before, a `name` copied from another seed paired
    /// with that seed, and a top-1 of 7.5 moved SAM's paired mean by 66
    /// points, both with exit code 0 (a new user's trial of `paired`).
    #[test]
    fn a_record_of_another_run_or_an_impossible_accuracy_is_refused() {
        let out = temp("record-checks");
        write_run(&out, "t", "sam", 3, None, finished("t-sam-s3", 0.88, None));
        let run = out.join("runs").join("t-sam-s3");
        read_metrics(&run).expect("a sound record reads");
        let wrong_name = Metrics { name: "t-sam-s4".into(), ..finished("t-sam-s3", 0.88, None) };
        std::fs::write(run.join("metrics.json"), serde_json::to_vec(&wrong_name).expect("json")).expect("write");
        let e = read_metrics(&run).expect_err("another run's name").to_string();
        assert!(e.contains("`name` is \"t-sam-s4\", but the run folder is \"t-sam-s3\""), "{e}");
        let mut m = finished("t-sam-s3", 0.88, None);
        if let Some(e) = m.final_epoch.as_mut() {
            e.test.top1 = Some(7.5);
        }
        std::fs::write(run.join("metrics.json"), serde_json::to_vec(&m).expect("json")).expect("write");
        let e = read_metrics(&run).expect_err("top-1 above 1").to_string();
        assert!(e.contains("`final_epoch.test.top1` is 7.5, outside [0, 1]"), "{e}");
        let _ = std::fs::remove_dir_all(&out);
    }

    /// The figure's caption names the dataset the runs trained on: before
    /// this, every image table without a data note was captioned CIFAR-10,
    /// the convergence preset's Fashion-MNIST figure included.
    #[test]
    fn the_figure_caption_names_the_runs_dataset() {
        let runs = |data: &str, diverged_only: bool| {
            let m = Metrics { data: data.into(), ..finished("r", 0.9, None) };
            let (metrics, diverged) = if diverged_only { (vec![], vec![m]) } else { (vec![m], vec![]) };
            vec![MethodRuns { method: "baseline".into(), metrics, logs: vec![], diverged }]
        };
        let fmnist =
            "FashionMnist from /usr/share/datasets/fashion-mnist (5000 of 60000 training images, 10000 test images)";
        assert_eq!(dataset_of(&runs(fmnist, false)), "Fashion-MNIST");
        assert_eq!(dataset_of(&runs(fmnist, true)), "Fashion-MNIST");
        assert_eq!(
            dataset_of(&runs("Cifar10 from data (50000 of 50000 training images, 10000 test images)", false)),
            "CIFAR-10"
        );
        assert_eq!(dataset_of(&runs("Cifar100 from data (…)", false)), "CIFAR-100");
        assert_eq!(dataset_of(&runs("", false)), "configured data");
        assert_eq!(dataset_of(&[]), "configured data");
    }

    fn diverged(name: &str) -> Metrics {
        Metrics {
            status: RunStatus::Diverged,
            divergence: Some(Divergence { epoch: 1, step: 2, cause: "non-finite loss NaN".into() }),
            final_epoch: None,
            best_epoch: None,
            final_trace: None,
            ..finished(name, 0.0, None)
        }
    }

    /// Writes the run folder of `m` (metrics.json, log.jsonl) and its cell.
    pub(super) fn write_run(out: &Path, table: &str, method: &str, seed: u64, grid: Option<f64>, m: Metrics) -> Cell {
        let name = m.name.clone();
        let run = out.join("runs").join(&name);
        std::fs::create_dir_all(&run).expect("run folder");
        std::fs::write(run.join("metrics.json"), serde_json::to_vec_pretty(&m).expect("json")).expect("metrics");
        let log = match (&m.final_epoch, m.diverged()) {
            (Some(e), _) => seht_records::LogLine::Epoch(e.clone()),
            (None, Some(d)) => seht_records::LogLine::Diverged(d.clone()),
            (None, None) => unreachable!("a fixture is finished or diverged"),
        };
        std::fs::write(run.join("log.jsonl"), log.to_json().expect("line") + "\n").expect("log");
        let config = out.join(format!("{name}.toml"));
        Cell {
            table: table.into(),
            method: method.into(),
            seed,
            name,
            config,
            grid_lambda: grid,
            selected: false,
            zero_for: Vec::new(),
            largest_stable: false,
        }
    }

    /// Table 1 with the baseline finished (3 seeds), SEHT-H diverged in 2 of
    /// 3 seeds, SEHT-D (K = 1) in all 3.
    fn table1_runs(out: &Path) -> Vec<Cell> {
        let mut cells = Vec::new();
        for (s, a) in [0.80, 0.82, 0.84].into_iter().enumerate() {
            cells.push(write_run(out, "table1", "baseline", s as u64, None, finished(&format!("b-s{s}"), a, None)));
        }
        let h = [finished("h-s0", 0.50, None), diverged("h-s1"), diverged("h-s2")];
        for (s, m) in h.into_iter().enumerate() {
            cells.push(write_run(out, "table1", "seht-h-k5", s as u64, None, m));
        }
        for s in 0..3 {
            cells.push(write_run(out, "table1", "seht-d-k1-p0.01", s, None, diverged(&format!("d-s{s}"))));
        }
        cells
    }

    fn csv_rows(csv: &str) -> Vec<Vec<&str>> {
        csv.lines().skip(1).map(|l| l.split(',').collect()).collect()
    }

    #[test]
    fn diverged_seeds_are_counted_and_left_out_of_every_mean() {
        let out = temp("table");
        let cells = table1_runs(&out);
        let runs = collect(&out, &cells, "table1").expect("collect");
        let h = runs.iter().find(|r| r.method == "seht-h-k5").expect("seht-h");
        assert_eq!((h.metrics.len(), h.diverged.len(), h.logs.len(), h.seeds()), (1, 2, 1, 3));
        assert_eq!(h.first_divergence().as_deref(), Some("h-s1: epoch 1, step 2: non-finite loss NaN"));

        let t1 = TABLES.iter().find(|t| t.id == "table1").expect("table1");
        let (md, csv) = table_outputs(t1, &runs, None);
        assert!(md.contains("| Baseline with weight decay | 3 | 82.00 ± 2.00 | 94.00 ± 0.24 | -12.00 |"), "{md}");
        assert!(
            md.contains("| SEHT-H (maxIter=5) | 3 | 50.00, diverged (2 of 3 seeds) | 95.59 ± 0.06 | -45.59 |"),
            "{md}"
        );
        assert!(md.contains("| SEHT-D (maxIter=1, p=0.01) | 3 | diverged (3 of 3 seeds) | 95.37 ± 0.09 | — |"), "{md}");
        assert!(md.contains(DIVERGED_FOOTNOTE), "{md}");
        let rows = csv_rows(&csv);
        let row = |m: &str| rows.iter().find(|r| r[1] == m).expect(m).clone();
        assert_eq!(row("seht-h-k5")[3..6], ["50", "NaN", "3"]);
        assert_eq!(row("seht-h-k5")[10], "2");
        assert_eq!(row("seht-d-k1-p0.01")[3..6], ["", "", "3"]);
        assert_eq!((row("seht-d-k1-p0.01")[9], row("seht-d-k1-p0.01")[10]), ("run", "3"));
        assert_eq!(row("baseline")[10], "0");

        // check-results accepts them, and refuses a mean over no finished
        // seed or a missing one over some.
        let methods: Vec<String> = ["baseline", "seht-h-k5", "seht-d-k1-p0.01"].map(String::from).to_vec();
        check_table_rows("table1", &rows, &methods, &|_| 3).expect("accepted");
        // Per-method seed counts (a preset's `seeds_for`): one method with
        // fewer seeds than the rest is expected so, not refused.
        let fewer = |m: &str| if m == "baseline" { 2 } else { 3 };
        let e = check_table_rows("table1", &rows, &methods, &fewer).expect_err("baseline has 3, expected 2");
        assert!(e.to_string().contains("baseline has 3 seeds, expected 2"), "{e}");
        assert!(check_table_rows("table1", &rows, &methods, &|_| 2).is_err(), "seed count");
        let mut bad = rows.clone();
        bad.iter_mut().filter(|r| r[1] == "seht-d-k1-p0.01").for_each(|r| r[3] = "10.0");
        let e = check_table_rows("table1", &bad, &methods, &|_| 3).expect_err("mean of nothing");
        assert!(e.to_string().contains("every seed diverged"), "{e}");
        let mut bad = rows.clone();
        bad.iter_mut().filter(|r| r[1] == "seht-h-k5").for_each(|r| r[3] = "");
        assert!(check_table_rows("table1", &bad, &methods, &|_| 3).is_err(), "no mean over a finished seed");
        // An older CSV (no `diverged` column) still checks.
        let old: Vec<Vec<&str>> = rows.iter().filter(|r| r[1] == "baseline").map(|r| r[..10].to_vec()).collect();
        check_table_rows("table1", &old, &methods[..1], &|_| 3).expect("old layout");

        let (time, trace) = time_and_trace("table1", &runs);
        assert!(time.contains("| seht-h-k5 | 4.00, diverged (2 of 3 seeds) | 1.00× | 4.00 | 0 / 20 |"), "{time}");
        assert!(time.contains("| seht-d-k1-p0.01 | diverged (3 of 3 seeds) | — | — | 0 / 0 |"), "{time}");
        assert!(
            trace.contains(
                "| seht-h-k5 | 50.00, diverged (2 of 3 seeds) | 0.50, diverged (2 of 3 seeds) | not measured | 1.00 |"
            ),
            "{trace}"
        );
        assert!(trace.contains("| baseline | 82.00 ± 2.00 | 0.82 ± 0.02 | not measured | 1.00 |"), "{trace}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn findings_say_which_seeds_diverged_and_average_the_others() {
        let out = temp("findings");
        let cells = table1_runs(&out);
        let runs = collect(&out, &cells, "table1").expect("collect");
        let (quality, rows) = findings::summarise(&runs);
        let h = rows.iter().find(|r| r.method == "seht-h-k5").expect("seht-h");
        assert_eq!((h.seeds, h.diverged, h.quality.map(|q| (q.mean, q.n))), (3, 2, Some((50.0, 1))));
        let md = findings::table(quality, &rows);
        assert!(
            md.contains("| seht-h-k5 | 3 | 50.00, diverged (2 of 3 seeds) | 50.00 | 50.0 | 0.5 | — | 4.00 | 1.00× |"),
            "{md}"
        );
        assert!(md.contains("| seht-d-k1-p0.01 | 3 | diverged (3 of 3 seeds) | — | — | — | — | — | — |"), "{md}");
        let s = findings::sentences(quality, &rows);
        assert!(
            s.contains("- **seht-d-k1-p0.01**: diverged (3 of 3 seeds; e.g. d-s0: epoch 1, step 2: non-finite loss NaN): no result."),
            "{s}"
        );
        assert!(
            s.contains("diverged (2 of 3 seeds; e.g. h-s1: epoch 1, step 2: non-finite loss NaN), left out"),
            "{s}"
        );
        let csv = findings::csv("demo", quality, &rows);
        let rows = csv_rows(&csv);
        let methods: Vec<String> = ["baseline", "seht-h-k5", "seht-d-k1-p0.01"].map(String::from).to_vec();
        check_table_rows("demo", &rows, &methods, &|_| 3).expect("accepted");
        assert!(rows.iter().any(|r| r[1] == "seht-d-k1-p0.01" && r[3].is_empty() && r[10] == "3"), "{csv}");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn the_lambda_grid_never_selects_or_averages_a_diverged_seed() {
        let out = temp("lambda");
        let root = &workspace();
        let (t, m) = ("table1", "seht-d-k1-p0.01");
        let cells = vec![
            write_run(&out, t, m, 0, Some(1e-3), finished("g3-s0", 0.6, Some(0.40))),
            write_run(&out, t, m, 1, Some(1e-3), diverged("g3-s1")),
            // The best value, but one of its two seeds diverged: the mean of the other.
            write_run(&out, t, m, 0, Some(1e-2), finished("g2-s0", 0.6, Some(0.45))),
            write_run(&out, t, m, 1, Some(1e-2), diverged("g2-s1")),
            write_run(&out, t, m, 0, Some(1e-1), diverged("g1-s0")),
            write_run(&out, t, m, 1, Some(1e-1), diverged("g1-s1")),
        ];
        let md = lambda_report(&out, &cells, root).expect("report").expect("a grid");
        assert!(md.contains("| 1e-2 | 45.00, diverged (1 of 2 seeds) | 2 | **selected** |"), "{md}");
        assert!(md.contains("| 1e-1 | diverged (2 of 2 seeds) | 2 |  |"), "{md}");
        let csv = std::fs::read_to_string(out.join("lambda.csv")).expect("lambda.csv");
        check_lambda_rows(&csv).expect("accepted");
        assert!(csv.contains("table1,seht-d-k1-p0.01,1e-1,valid top-1 (%),,,2,0,2"), "{csv}");
        assert!(check_lambda_rows(&csv.replace(",,,2,0,2", ",,,2,0,1")).is_err(), "a mean missing for a finished seed");
        let old = "table,method,lambda,metric,mean,std,seeds,selected\nt,m,1e-3,valid top-1 (%),40.0,1.0,2,1\n";
        check_lambda_rows(old).expect("an older lambda.csv checks");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn a_selecting_grid_sets_the_main_cells_lambda_or_rho_from_validation() {
        let out = temp("select");
        let (t, m) = ("evidence", "seht-d");
        let mut cells = vec![
            write_run(&out, t, m, 0, Some(1e-4), finished("g4", 0.6, Some(0.40))),
            write_run(&out, t, m, 0, Some(1e-3), finished("g3", 0.6, Some(0.47))),
            write_run(&out, t, m, 0, Some(1e-2), finished("g2", 0.6, Some(0.47))),
            write_run(&out, t, m, 0, Some(1e-1), diverged("g1")),
        ];
        let (main, config) = selected_main(&out, t, m);
        cells.push(main.clone());
        // The best validation accuracy, the smaller λ of a tie; the diverged λ never.
        assert_eq!(apply_selection(&out, &cells, &main, false).expect("selected"), ("λ", 1e-3));
        let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&config).expect("read")).expect("toml");
        assert_eq!(cfg["regularizer"]["lambda"].as_float(), Some(1e-3));
        assert_eq!(cfg["regularizer"]["kind"].as_str(), Some("seht"), "the rest of the config is kept");
        // SAM's ρ: the field a grid varies.
        std::fs::copy(workspace().join("configs/demo/sam.toml"), &config).expect("config");
        assert_eq!(apply_selection(&out, &cells, &main, false).expect("selected"), ("ρ", 1e-3));
        let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&config).expect("read")).expect("toml");
        assert_eq!(cfg["regularizer"]["rho"].as_float(), Some(1e-3));
        assert!(cfg["regularizer"].get("lambda").is_none());
        // Every selected cell at once, as `reproduce` does after writing the
        // matrix: the config written with the starting value gets the
        // selected one back.
        std::fs::copy(workspace().join("configs/demo/seht-h.toml"), &config).expect("config");
        assert_eq!(apply_available_selections(&out, &cells, false).expect("applied"), 1);
        let cfg: toml::Value = toml::from_str(&std::fs::read_to_string(&config).expect("read")).expect("toml");
        assert_eq!(cfg["regularizer"]["lambda"].as_float(), Some(1e-3));
        // A grid run that has not finished: a clear error, nothing guessed.
        std::fs::remove_dir_all(out.join("runs").join("g2")).expect("remove");
        let e = apply_selection(&out, &cells, &main, false).expect_err("unfinished grid");
        assert!(format!("{e:#}").contains("must finish first"), "{e:#}");
        // …and a selection not known yet leaves the config as written.
        std::fs::copy(workspace().join("configs/demo/seht-h.toml"), &config).expect("config");
        let before = std::fs::read_to_string(&config).expect("read");
        assert_eq!(apply_available_selections(&out, &cells, false).expect("nothing to apply"), 0);
        assert_eq!(std::fs::read_to_string(&config).expect("read"), before);
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn the_shared_zero_row_is_reported_never_selected_and_a_selection_must_be_bracketed() {
        let out = temp("bracket");
        let root = &workspace();
        let (t, m) = ("evidence-fmnist", "seht-d");
        let mut zero = write_run(&out, t, "baseline", 0, Some(0.0), finished("z0", 0.6, Some(0.50)));
        zero.zero_for = vec![m.into()];
        let mut cells = vec![
            zero,
            write_run(&out, t, m, 0, Some(1e-4), finished("b4", 0.6, Some(0.41))),
            write_run(&out, t, m, 0, Some(1e-3), finished("b3", 0.6, Some(0.45))),
        ];
        let (main, _) = selected_main(&out, t, m);
        cells.push(main.clone());
        // λ = 0 has the best validation accuracy but is a reference row: the
        // best positive λ is selected.
        assert_eq!(apply_selection(&out, &cells, &main, false).expect("selected"), ("λ", 1e-3));
        // 1e-3 is the largest value of the grid: refused when bracketing is asked for…
        let e = apply_selection(&out, &cells, &main, true).expect_err("at the edge");
        assert!(format!("{e:#}").contains("edge of the grid [0.0, 0.0001, 0.001]"), "{e:#}");
        // …and accepted once a larger value was run and is worse.
        cells.push(write_run(&out, t, m, 0, Some(1e-2), finished("b2", 0.6, Some(0.30))));
        assert_eq!(apply_selection(&out, &cells, &main, true).expect("bracketed"), ("λ", 1e-3));
        let md = lambda_report(&out, &cells, root).expect("report").expect("a grid");
        assert!(md.contains("| 0e0 | 50.00 | 1 |  |"), "the shared λ = 0 row is in the method's table:\n{md}");
        assert!(!md.contains("## evidence-fmnist, baseline"), "the shared run is no method of its own:\n{md}");
        assert!(bracketed(&[0.0, 1e-4], 1e-4) == false && bracketed(&[0.0, 1e-4, 1e-3], 1e-4));
        let _ = std::fs::remove_dir_all(&out);
    }
}
