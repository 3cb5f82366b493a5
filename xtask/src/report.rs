//! The outputs of a reproduction, from the runs' typed records
//! (`metrics.json`, `log.jsonl` via `seht-records`): what the run found
//! (per method: accuracy, final Hessian trace, cost), the paper's tables
//! beside ours (Markdown and CSV), the training-time and Hessian-trace
//! tables, the figures (`figure`), the λ selection and `summary.md`; and
//! `check-results`, which verifies them.

mod figure;
mod findings;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use seht_records::{EpochRecord, Metrics, read_log};

use crate::paper::{PaperTable, TABLES};
use crate::preset::{Cell, DataNotes, DataSource, Plan};

/// The numbers a paper table reports for one run, in the paper's column order.
fn values(table: &str, m: &Metrics) -> Vec<Option<f64>> {
    match table {
        "table1" => vec![m.final_epoch.test.top1.map(|v| 100.0 * v)],
        "table2" => vec![m.final_epoch.test.top1.map(|v| 100.0 * v), m.final_epoch.test.top5.map(|v| 100.0 * v)],
        _ => vec![m.best_epoch.valid.as_ref().and_then(|v| v.perplexity), m.best_epoch.test.perplexity],
    }
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let s = if xs.len() > 1 { (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt() } else { f64::NAN };
    (m, s)
}

fn pm(m: f64, s: f64) -> String {
    if s.is_nan() { format!("{m:.2}") } else { format!("{m:.2} ± {s:.2}") }
}

/// The runs of one method of one table (main matrix, not the λ grid).
pub struct MethodRuns {
    /// Method (config file stem).
    pub method: String,
    /// `metrics.json` of each seed.
    pub metrics: Vec<Metrics>,
    /// `log.jsonl` of each seed.
    pub logs: Vec<Vec<EpochRecord>>,
}

fn collect(out: &Path, cells: &[Cell], table: &str) -> Result<Vec<MethodRuns>> {
    let mut by: Vec<MethodRuns> = Vec::new();
    for c in cells.iter().filter(|c| c.table == table && c.grid_lambda.is_none()) {
        let run = out.join("runs").join(&c.name);
        let m = Metrics::read(&run)?;
        let log = read_log(&run)?;
        let i = match by.iter().position(|r| r.method == c.method) {
            Some(i) => i,
            None => {
                by.push(MethodRuns { method: c.method.clone(), metrics: Vec::new(), logs: Vec::new() });
                by.len() - 1
            }
        };
        by[i].metrics.push(m);
        by[i].logs.push(log);
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
    let mut csv = String::from("table,method,column,mean,std,seeds,paper_mean,paper_pm,difference,status\n");
    for row in t.rows {
        let ours = runs.iter().find(|r| r.method == row.key);
        let _ = write!(
            md,
            "| {} | {} |",
            row.label,
            ours.map(|r| r.metrics.len().to_string()).unwrap_or_else(|| if row.quoted {
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
                    let (m, s) = mean_std(&xs);
                    let _ = write!(md, " {} | {paper} | {:+.2} |", pm(m, s), m - pmean);
                    let _ = writeln!(
                        csv,
                        "{},{},{},{m},{s},{},{pmean},{ppm},{},run",
                        t.id,
                        row.key,
                        col,
                        xs.len(),
                        m - pmean
                    );
                }
                None => {
                    let _ = write!(md, " — | {paper} | — |");
                    let _ = writeln!(
                        csv,
                        "{},{},{},,,0,{pmean},{ppm},,{}",
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
        let _ = write!(md, "| {} (ours, not in the paper) | {} |", r.method, r.metrics.len());
        for (ci, col) in t.columns.iter().enumerate() {
            let xs: Vec<f64> = r.metrics.iter().filter_map(|m| values(t.id, m)[ci]).collect();
            let (m, s) = mean_std(&xs);
            let _ = write!(md, " {} | — | — |", pm(m, s));
            let _ = writeln!(csv, "{},{},{},{m},{s},{},,,,run", t.id, r.method, col, xs.len());
        }
        md.push('\n');
    }
    let best_by = runs.first().and_then(|r| r.metrics.first()).map(|m| m.best_by.as_str()).unwrap_or("");
    let _ = writeln!(
        md,
        "\nOurs: mean ± standard deviation over seeds. {} Δ = ours − paper. Rows marked \"quoted, not run\" are numbers the paper quotes from other papers.",
        if t.id == "table1" || t.id == "table2" {
            "Accuracy of the final epoch.".to_string()
        } else {
            format!("Epoch chosen by {best_by}.")
        }
    );
    (md, csv)
}

fn time_and_trace(table: &str, runs: &[MethodRuns]) -> (String, String) {
    let spe = |r: &MethodRuns| mean_std(&r.metrics.iter().map(|m| m.seconds_per_epoch).collect::<Vec<_>>());
    let base = runs.iter().find(|r| r.method == "baseline").map(|r| spe(r).0);
    let mut time = format!(
        "## {table}: training time\n\n| method | s / epoch | ratio to baseline | penalty steps / steps |\n| --- | ---: | ---: | ---: |\n"
    );
    let mut trace = format!(
        "## {table}: Hessian trace of the final model (SEHT-H over the weights)\n\n| method | trace, mean ± std over seeds | standard error of one run |\n| --- | ---: | ---: |\n"
    );
    for r in runs {
        let (m, _) = spe(r);
        let ratio = base.map(|b| format!("{:.2}×", m / b)).unwrap_or_else(|| "—".into());
        let ps: u64 = r.metrics.iter().map(|m| m.penalty_steps).sum();
        let st: u64 = r.metrics.iter().map(|m| m.steps).sum();
        let _ = writeln!(time, "| {} | {m:.2} | {ratio} | {ps} / {st} |", r.method);
        let tr: Vec<f64> = r.metrics.iter().filter_map(|m| m.final_trace.as_ref().map(|t| t.mean)).collect();
        let se = r.metrics.first().and_then(|m| m.final_trace.as_ref()).map(|t| t.std_error);
        if tr.is_empty() {
            let _ = writeln!(trace, "| {} | not measured | |", r.method);
        } else {
            let (tm, ts) = mean_std(&tr);
            let _ = writeln!(
                trace,
                "| {} | {} | {} |",
                r.method,
                pm(tm, ts),
                se.map(|s| format!("{s:.2}")).unwrap_or_default()
            );
        }
    }
    (time, trace)
}

/// The CPU's model name from `/proc/cpuinfo`, when it can be read.
pub fn cpu_model() -> Option<String> {
    std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
    })
}

fn machine() -> String {
    let cpu = cpu_model().unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|k| k.parse::<f64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} memory, {} {}", std::env::consts::OS, std::env::consts::ARCH)
}

fn git_revision(root: &Path) -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// The criterion of λ selection: validation accuracy or perplexity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GridMetric {
    ValidTop1,
    ValidPerplexity,
}

impl GridMetric {
    fn label(self) -> &'static str {
        match self {
            GridMetric::ValidTop1 => "valid top-1 (%)",
            GridMetric::ValidPerplexity => "valid perplexity",
        }
    }

    fn higher_is_better(self) -> bool {
        self == GridMetric::ValidTop1
    }
}

/// The λ grid's validation results and the selected λ per method
/// (`lambda.md`, `lambda.csv`); `None` when the matrix has no grid cells.
fn lambda_report(out: &Path, cells: &[Cell], root: &Path) -> Result<Option<String>> {
    let grid: Vec<&Cell> = cells.iter().filter(|c| c.grid_lambda.is_some()).collect();
    if grid.is_empty() {
        return Ok(None);
    }
    let mut md = String::from(
        "# λ selection on a validation split\n\nAs the paper selected λ (section 5: grid {1e-4, 1e-3, 1e-2, 1e-1}), but on data held out from training \
         (image tables: images held out of the training subset; text tables: the corpus's validation split), never on the test set. \
         Criterion: final-epoch validation top-1 accuracy (higher is better) or perplexity (lower is better). \
         The main tables' rows use the λ the paper reports, stated under each grid with whether the selection agrees.\n\n",
    );
    let mut csv = String::from("table,method,lambda,metric,mean,std,seeds,selected\n");
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in &grid {
        let k = (c.table.clone(), c.method.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (table, method) in keys {
        let base: toml::Value = toml::from_str(&std::fs::read_to_string(
            root.join("configs").join(&table).join(format!("{method}.toml")),
        )?)?;
        let main_lambda = base.get("regularizer").and_then(|r| r.get("lambda")).and_then(toml::Value::as_float);
        let mut rows: Vec<(f64, GridMetric, f64, f64, usize)> = Vec::new();
        let mut lambdas: Vec<f64> = Vec::new();
        for c in grid.iter().filter(|c| c.table == table && c.method == method) {
            let l = c.grid_lambda.unwrap_or(f64::NAN);
            if !lambdas.contains(&l) {
                lambdas.push(l);
            }
        }
        for l in lambdas {
            let mut xs = Vec::new();
            let mut metric = None;
            for c in grid.iter().filter(|c| c.table == table && c.method == method && c.grid_lambda == Some(l)) {
                let run = out.join("runs").join(&c.name);
                let m = Metrics::read(&run)?;
                let valid = m.final_epoch.valid.as_ref();
                let (kind, v) = match (valid.and_then(|v| v.top1), valid.and_then(|v| v.perplexity)) {
                    (Some(a), _) => (GridMetric::ValidTop1, 100.0 * a),
                    (None, Some(p)) => (GridMetric::ValidPerplexity, p),
                    _ => anyhow::bail!("{}: no validation metric in metrics.json", run.display()),
                };
                metric = Some(kind);
                xs.push(v);
            }
            let (m, sd) = mean_std(&xs);
            rows.push((l, metric.unwrap_or(GridMetric::ValidTop1), m, sd, xs.len()));
        }
        let higher = rows.first().is_some_and(|r| r.1.higher_is_better());
        // The first λ (in grid order) with the best metric: ties keep the smaller penalty.
        let mut best: Option<(f64, f64)> = None;
        for r in rows.iter().filter(|r| r.2.is_finite()) {
            let better = best.is_none_or(|(_, m)| if higher { r.2 > m } else { r.2 < m });
            if better {
                best = Some((r.0, r.2));
            }
        }
        let best = best.map(|b| b.0);
        let _ = writeln!(
            md,
            "## {table}, {method}\n\n| λ | {} | seeds | |\n|---|---|---|---|",
            rows.first().map(|r| r.1.label()).unwrap_or("metric")
        );
        for (l, metric, m, sd, n) in &rows {
            let sel = best == Some(*l);
            let _ = writeln!(md, "| {l:e} | {} | {n} | {} |", pm(*m, *sd), if sel { "**selected**" } else { "" });
            let _ = writeln!(csv, "{table},{method},{l:e},{},{m:.6},{sd:.6},{n},{}", metric.label(), u8::from(sel));
        }
        let _ = writeln!(
            md,
            "\nSelected λ = {}; λ in the main rows = {}{}.\n",
            best.map(|b| format!("{b:e}")).unwrap_or("none".into()),
            main_lambda.map(|l| format!("{l:e}")).unwrap_or("?".into()),
            match (best, main_lambda) {
                (Some(b), Some(l)) if (b - l).abs() > 1e-12 * l.abs() => " (the selection differs from the paper's λ)",
                _ => "",
            }
        );
    }
    std::fs::write(out.join("lambda.md"), &md)?;
    std::fs::write(out.join("lambda.csv"), &csv)?;
    Ok(Some(md))
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

fn is_image_table(runs: &[MethodRuns]) -> bool {
    runs.iter().flat_map(|r| &r.metrics).any(|m| m.final_epoch.test.top1.is_some())
}

/// Where the main outputs went.
pub struct Written {
    /// `summary.md`.
    pub summary: PathBuf,
    /// The figure (PNG), when a table has one.
    pub figure: Option<PathBuf>,
}

/// Writes every output of a finished matrix into `out`.
pub fn write(root: &Path, out: &Path, plan: &Plan, cells: &[Cell], notes: &DataNotes, wall: f64) -> Result<Written> {
    let preset = &plan.preset;
    let mut head = format!(
        "# Stochastic Estimators of Hessian Trace — preset `{}`\n\n{}.\n\n\
         - Machine: {}\n- Git revision: {}\n- Wall time: {:.1} minutes ({} runs, {} at a time; preset's estimate: {} minutes on 2 cores)\n- Seeds per cell: {}\n",
        preset.name,
        preset.description,
        machine(),
        git_revision(root),
        wall / 60.0,
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
    let mut found = String::from("\n## What this run found\n\n");
    let mut data = String::from("\n## Data\n\n");
    let mut outputs = String::from("\n## Outputs\n\n");
    let (mut times, mut traces) = (String::new(), String::new());
    let mut figure_png = None;
    for table in &plan.tables {
        let runs = collect(out, cells, table)?;
        let data_used = runs.first().and_then(|r| r.metrics.first()).map(|m| m.data.clone()).unwrap_or_default();
        let note = notes.get(table);
        let _ = writeln!(
            data,
            "- {table}: {data_used}{}",
            note.map(|n| format!(" — **{}**", n.describe())).unwrap_or_default()
        );
        let (quality, rows) = findings::summarise(&runs);
        let paper = TABLES.iter().find(|t| t.id == table);
        let _ = writeln!(
            found,
            "### {}\n\n{}\n{}",
            paper
                .map(|t| t.title.to_string())
                .unwrap_or_else(|| format!("{table} ({})", note.map(DataSource::short).unwrap_or("configured data"))),
            findings::table(quality, &rows),
            findings::sentences(quality, &rows)
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
        std::fs::write(out.join(format!("{table}.md")), md)?;
        std::fs::write(out.join(format!("{table}.csv")), csv)?;
        let _ = writeln!(outputs, "- [{table}.md]({table}.md) ([CSV]({table}.csv))");
        let (tm, tr) = time_and_trace(table, &runs);
        times.push_str(&tm);
        times.push('\n');
        traces.push_str(&tr);
        traces.push('\n');
        if (table == "table1" || paper.is_none()) && is_image_table(&runs) {
            let stem = figure_stem(table);
            let source = note.map(DataSource::short).unwrap_or("CIFAR-10");
            let caption = match paper {
                Some(_) => format!("Figure 1: test accuracy per epoch ({} preset, {source})", preset.name),
                None => format!("test accuracy per epoch ({} preset, {source})", preset.name),
            };
            if !figure::write(&runs, out, &stem, &caption, paper.is_none())? {
                outputs.push_str("- (No DejaVu font found: the figure was drawn without axis labels.)\n");
            }
            let _ = writeln!(outputs, "- Figure: [{stem}.svg]({stem}.svg), [{stem}.png]({stem}.png)");
            figure_png.get_or_insert(out.join(format!("{stem}.png")));
        }
    }
    std::fs::write(
        out.join("training_time.md"),
        format!("# Training time per epoch (measured in this run)\n\n{times}"),
    )?;
    std::fs::write(
        out.join("hessian_trace.md"),
        format!(
            "# Hessian trace of the final models\n\nDid the penalty lower the trace? SEHT-H (Rademacher) over the weights, on training batches, evaluation mode.\n\n{traces}"
        ),
    )?;
    if lambda_report(out, cells, root)?.is_some() {
        outputs.push_str("- λ selection on a validation split: [lambda.md](lambda.md) ([CSV](lambda.csv))\n");
    }
    outputs.push_str("- [training_time.md](training_time.md), [hessian_trace.md](hessian_trace.md)\n- Configs of every run: `configs/`; run folders (config, log.jsonl, metrics.json, checkpoint): `runs/`\n");
    let summary = out.join("summary.md");
    std::fs::write(&summary, format!("{head}{found}{data}{outputs}"))?;
    Ok(Written { summary, figure: figure_png })
}

/// `cargo xtask check-results`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The output folder of one preset (e.g. results/demo).
    dir: PathBuf,
    /// The preset it holds (default: the folder's name, when it names one).
    #[arg(long)]
    preset: Option<String>,
    /// Config folders to check, comma-separated (default: the preset's).
    #[arg(long, value_delimiter = ',')]
    tables: Option<Vec<String>>,
    /// Seeds each method must have (default: the preset's).
    #[arg(long)]
    seeds: Option<usize>,
}

/// Every expected file exists and parses, with one row per method and the
/// expected seed count.
pub fn check(root: &Path, args: &CheckArgs) -> Result<()> {
    let dir = &args.dir;
    let preset_name = args.preset.clone().or_else(|| {
        let name = dir.file_name()?.to_string_lossy().to_string();
        crate::preset::load_preset(root, &name).is_ok().then_some(name)
    });
    let preset = preset_name.map(|p| crate::preset::load_preset(root, &p)).transpose()?;
    let tables = match (&args.tables, &preset) {
        (Some(t), _) => crate::preset::table_names(root, t)?,
        (None, Some(p)) => p.tables.clone(),
        (None, None) => anyhow::bail!(
            "{}: name the preset (--preset) or the tables (--tables): the folder's name is not a preset",
            dir.display()
        ),
    };
    let seeds = args.seeds.or(preset.as_ref().map(|p| p.seeds)).unwrap_or(1);
    for f in ["summary.md", "training_time.md", "hessian_trace.md"] {
        let p = dir.join(f);
        anyhow::ensure!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{} is missing or empty",
            p.display()
        );
    }
    for t in &tables {
        let methods = crate::preset::methods(root, t)?;
        let csv = std::fs::read_to_string(dir.join(format!("{t}.csv"))).with_context(|| format!("{t}.csv"))?;
        let mut lines = csv.lines();
        anyhow::ensure!(lines.next().is_some_and(|h| h.starts_with("table,method,")), "{t}.csv has no header");
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        for m in &methods {
            let mine: Vec<&Vec<&str>> = rows.iter().filter(|r| r.get(1) == Some(&m.as_str())).collect();
            anyhow::ensure!(!mine.is_empty(), "{t}.csv has no row for {m}");
            for r in mine {
                anyhow::ensure!(
                    r.get(5).and_then(|s| s.parse::<usize>().ok()) == Some(seeds),
                    "{t}.csv: {m} has {:?} seeds, expected {seeds}",
                    r.get(5)
                );
                anyhow::ensure!(
                    r.get(3).and_then(|s| s.parse::<f64>().ok()).is_some_and(f64::is_finite),
                    "{t}.csv: {m} has no finite mean"
                );
            }
        }
        let md = std::fs::read_to_string(dir.join(format!("{t}.md")))?;
        anyhow::ensure!(md.lines().filter(|l| l.starts_with("| ")).count() > methods.len(), "{t}.md lacks rows");
        let is_paper = TABLES.iter().any(|p| p.id == t);
        let images = rows.iter().any(|r| r.get(2) == Some(&findings::Quality::Top1.label()));
        let stem = figure_stem(t);
        if t == "table1" || (!is_paper && images) {
            let svg =
                std::fs::read_to_string(dir.join(format!("{stem}.svg"))).with_context(|| format!("{stem}.svg"))?;
            anyhow::ensure!(svg.contains("<svg") && svg.contains("</svg>"), "{stem}.svg is not an SVG document");
            let png = std::fs::read(dir.join(format!("{stem}.png"))).with_context(|| format!("{stem}.png"))?;
            anyhow::ensure!(png.starts_with(b"\x89PNG"), "{stem}.png is not a PNG file");
        }
    }
    if std::fs::read_to_string(dir.join("summary.md"))?.contains("lambda.md") {
        let csv = std::fs::read_to_string(dir.join("lambda.csv")).context("lambda.csv")?;
        let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
        anyhow::ensure!(!rows.is_empty(), "lambda.csv has no rows");
        for r in &rows {
            anyhow::ensure!(
                r.len() == 8 && r[4].parse::<f64>().is_ok_and(f64::is_finite),
                "lambda.csv: bad row {}",
                r.join(",")
            );
        }
        anyhow::ensure!(rows.iter().any(|r| r[7] == "1"), "lambda.csv selects no λ");
    }
    println!("{}: all outputs present and well-formed for {} ({} seeds each)", dir.display(), tables.join(", "), seeds);
    Ok(())
}
