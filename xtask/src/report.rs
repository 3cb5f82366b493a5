//! Tables (Markdown and CSV), the training-time and Hessian-trace tables,
//! Figure 1 (SVG and PNG) and `summary.md`, from the runs' `metrics.json`
//! and `log.jsonl`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::paper::{PaperTable, TABLES};
use crate::reproduce::{Args, Cell, DataNotes, Preset};

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&std::fs::read(path).with_context(|| format!("{}", path.display()))?)
        .with_context(|| format!("{}", path.display()))
}

fn num(v: &Value, path: &[&str]) -> Option<f64> {
    let mut v = v;
    for p in path {
        v = v.get(p)?;
    }
    v.as_f64()
}

/// The numbers a table reports for one run, in the paper's column order.
fn values(table: &str, m: &Value) -> Vec<Option<f64>> {
    match table {
        "table1" => vec![num(m, &["final_epoch", "test", "top1"]).map(|v| 100.0 * v)],
        "table2" => vec![
            num(m, &["final_epoch", "test", "top1"]).map(|v| 100.0 * v),
            num(m, &["final_epoch", "test", "top5"]).map(|v| 100.0 * v),
        ],
        _ => vec![num(m, &["best_epoch", "valid", "perplexity"]), num(m, &["best_epoch", "test", "perplexity"])],
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

pub struct MethodRuns {
    pub method: String,
    pub metrics: Vec<Value>,
    pub logs: Vec<Vec<Value>>,
}

fn collect(out: &Path, cells: &[Cell], table: &str) -> Result<Vec<MethodRuns>> {
    let mut by: BTreeMap<usize, MethodRuns> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    for c in cells.iter().filter(|c| c.table == table && c.grid_lambda.is_none()) {
        if !order.contains(&c.method) {
            order.push(c.method.clone());
        }
        let i = order.iter().position(|m| m == &c.method).unwrap_or(0);
        let run = out.join("runs").join(&c.name);
        let m = read_json(&run.join("metrics.json"))?;
        let log: Vec<Value> = std::fs::read_to_string(run.join("log.jsonl"))?
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let e = by.entry(i).or_insert_with(|| MethodRuns {
            method: c.method.clone(),
            metrics: Vec::new(),
            logs: Vec::new(),
        });
        e.metrics.push(m);
        e.logs.push(log);
    }
    Ok(by.into_values().collect())
}

fn table_outputs(t: &PaperTable, runs: &[MethodRuns], note: Option<&String>) -> (String, String) {
    let mut md = format!("# {}\n\n", t.title);
    if let Some(n) = note {
        let _ = writeln!(md, "**Data:** {n}\n");
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
    let best_by = runs
        .first()
        .and_then(|r| r.metrics.first())
        .and_then(|m| m.get("best_by"))
        .and_then(Value::as_str)
        .unwrap_or("");
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

fn time_and_trace(t: &PaperTable, runs: &[MethodRuns]) -> (String, String) {
    let spe =
        |r: &MethodRuns| mean_std(&r.metrics.iter().filter_map(|m| num(m, &["seconds_per_epoch"])).collect::<Vec<_>>());
    let base = runs.iter().find(|r| r.method == "baseline").map(|r| spe(r).0);
    let mut time = format!(
        "## {}: training time\n\n| method | s / epoch | ratio to baseline | penalty steps / steps |\n| --- | ---: | ---: | ---: |\n",
        t.id
    );
    let mut trace = format!(
        "## {}: Hessian trace of the final model (SEHT-H over the weights)\n\n| method | trace, mean ± std over seeds | standard error of one run |\n| --- | ---: | ---: |\n",
        t.id
    );
    for r in runs {
        let (m, _) = spe(r);
        let ratio = base.map(|b| format!("{:.2}×", m / b)).unwrap_or_else(|| "—".into());
        let ps: f64 = r.metrics.iter().filter_map(|m| num(m, &["penalty_steps"])).sum();
        let st: f64 = r.metrics.iter().filter_map(|m| num(m, &["steps"])).sum();
        let _ = writeln!(time, "| {} | {m:.2} | {ratio} | {:.0} / {:.0} |", r.method, ps, st);
        let tr: Vec<f64> = r.metrics.iter().filter_map(|m| num(m, &["final_trace", "mean"])).collect();
        let se = r.metrics.first().and_then(|m| num(m, &["final_trace", "std_error"]));
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

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn register_font() -> bool {
    for f in FONTS {
        if let Ok(bytes) = std::fs::read(f) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

type Series<'a> = Vec<(&'a str, Vec<(f64, f64, f64)>)>;

fn draw_chart<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    series: &Series<'_>,
    epochs: usize,
    (ymin, ymax): (f64, f64),
    text: bool,
    note: &str,
) -> Result<()> {
    use plotters::prelude::*;
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut b = ChartBuilder::on(&root);
    b.margin(20).x_label_area_size(if text { 40 } else { 5 }).y_label_area_size(if text { 50 } else { 5 });
    if text {
        b.caption(format!("Figure 1: test accuracy per epoch ({note})"), ("sans-serif", 18));
    }
    let mut chart =
        b.build_cartesian_2d(1f64..(epochs as f64).max(2.0), ymin..ymax).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if text {
        chart.configure_mesh().x_desc("epoch").y_desc("test top-1 (%)").draw().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let band: Vec<(f64, f64)> = pts
            .iter()
            .enumerate()
            .map(|(e, p)| ((e + 1) as f64, p.2))
            .chain(pts.iter().enumerate().rev().map(|(e, p)| ((e + 1) as f64, p.1)))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(band, color.mix(0.15))))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let line = chart
            .draw_series(LineSeries::new(
                pts.iter().enumerate().map(|(e, p)| ((e + 1) as f64, p.0)),
                color.stroke_width(2),
            ))
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        if text {
            line.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}

/// Figure 1: test accuracy per epoch, baseline vs SEHT variants, mean and a
/// band (min to max over seeds).
fn figure(runs: &[MethodRuns], out: &Path, note: &str) -> Result<bool> {
    use plotters::prelude::*;
    let series: Series<'_> = runs
        .iter()
        .filter(|r| r.method == "baseline" || r.method.starts_with("seht"))
        .map(|r| {
            let epochs = r.logs.iter().map(Vec::len).min().unwrap_or(0);
            let pts = (0..epochs)
                .map(|e| {
                    let xs: Vec<f64> =
                        r.logs.iter().filter_map(|l| num(&l[e], &["test", "top1"]).map(|v| 100.0 * v)).collect();
                    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    (xs.iter().sum::<f64>() / xs.len().max(1) as f64, lo, hi)
                })
                .collect();
            (r.method.as_str(), pts)
        })
        .collect();
    let epochs = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1);
    let (ymin, ymax) =
        series.iter().flat_map(|s| s.1.iter()).fold((100.0f64, 0.0f64), |(a, b), p| (a.min(p.1), b.max(p.2)));
    let (ymin, ymax) = if ymin > ymax { (0.0, 100.0) } else { ((ymin - 2.0).max(0.0), (ymax + 2.0).min(100.0)) };
    let has_font = register_font();
    draw_chart(
        SVGBackend::new(&out.join("figure1.svg"), (900, 560)).into_drawing_area(),
        &series,
        epochs,
        (ymin, ymax),
        has_font,
        note,
    )?;
    draw_chart(
        BitMapBackend::new(&out.join("figure1.png"), (900, 560)).into_drawing_area(),
        &series,
        epochs,
        (ymin, ymax),
        has_font,
        note,
    )?;
    Ok(has_font)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
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
         The main tables' rows use the λ the paper reports, stated under each grid with whether the selection agrees. \
         SAM's and ASAM's ρ (not in the paper) are selected the same way, from their authors' CIFAR values' neighbourhood.\n\n",
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
        let field = crate::reproduce::grid_field(&base);
        let symbol = if field == "rho" { "ρ" } else { "λ" };
        let main_lambda = base.get("regularizer").and_then(|r| r.get(field)).and_then(toml::Value::as_float);
        let mut rows: Vec<(f64, String, f64, f64, usize)> = Vec::new();
        let mut lambdas: Vec<f64> = Vec::new();
        for c in grid.iter().filter(|c| c.table == table && c.method == method) {
            let l = c.grid_lambda.unwrap_or(f64::NAN);
            if !lambdas.contains(&l) {
                lambdas.push(l);
            }
        }
        for l in lambdas {
            let mut xs = Vec::new();
            let mut metric = String::new();
            for c in grid.iter().filter(|c| c.table == table && c.method == method && c.grid_lambda == Some(l)) {
                let m = read_json(&out.join("runs").join(&c.name).join("metrics.json"))?;
                let (name, v) = match (
                    num(&m, &["final_epoch", "valid", "top1"]),
                    num(&m, &["final_epoch", "valid", "perplexity"]),
                ) {
                    (Some(a), _) => ("valid top-1 (%)", 100.0 * a),
                    (None, Some(p)) => ("valid perplexity", p),
                    _ => anyhow::bail!("{}: no validation metric in metrics.json", c.name),
                };
                metric = name.into();
                xs.push(v);
            }
            let (m, sd) = mean_std(&xs);
            rows.push((l, metric, m, sd, xs.len()));
        }
        let higher = rows.first().is_some_and(|r| r.1.contains("top-1"));
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
            "## {table}, {method}\n\n| {symbol} | {} | seeds | |\n|---|---|---|---|",
            rows.first().map(|r| r.1.as_str()).unwrap_or("metric")
        );
        for (l, metric, m, sd, n) in &rows {
            let sel = best == Some(*l);
            let _ = writeln!(md, "| {l:e} | {} | {n} | {} |", pm(*m, *sd), if sel { "**selected**" } else { "" });
            let _ = writeln!(csv, "{table},{method},{l:e},{metric},{m:.6},{sd:.6},{n},{}", u8::from(sel));
        }
        let _ = writeln!(
            md,
            "\nSelected {symbol} = {}; {symbol} in the main rows = {}{}.\n",
            best.map(|b| format!("{b:e}")).unwrap_or("none".into()),
            main_lambda.map(|l| format!("{l:e}")).unwrap_or("?".into()),
            match (best, main_lambda) {
                (Some(b), Some(l)) if (b - l).abs() > 1e-12 * l.abs() =>
                    " (the selection differs from the main rows' value)",
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

pub fn write(
    root: &Path,
    out: &Path,
    preset: &Preset,
    args: &Args,
    cells: &[Cell],
    notes: &DataNotes,
    wall: f64,
) -> Result<()> {
    let mut summary = format!(
        "# Reproduction of \"Stochastic Estimators of Hessian Trace\" — preset `{}`\n\n{}.\n\n\
         - Machine: {}\n- Git revision: {}\n- Wall time: {:.1} minutes ({} runs, {} at a time; preset's estimate: {} minutes)\n- Seeds per cell: {}\n\n## Data\n\n",
        preset.name,
        preset.description,
        machine(),
        git_revision(root),
        wall / 60.0,
        cells.len(),
        args.jobs,
        preset.expected_minutes,
        args.seeds.unwrap_or(preset.seeds),
    );
    let mut times = String::new();
    let mut traces = String::new();
    for t in TABLES.iter().filter(|t| args.tables.iter().any(|a| a == t.id)) {
        let runs = collect(out, cells, t.id)?;
        let data_used = runs
            .first()
            .and_then(|r| r.metrics.first())
            .and_then(|m| m.get("data"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let note = notes.get(t.id);
        let _ =
            writeln!(summary, "- {}: {}{}", t.id, data_used, note.map(|n| format!(" — **{n}**")).unwrap_or_default());
        let (md, csv) = table_outputs(t, &runs, note);
        std::fs::write(out.join(format!("{}.md", t.id)), md)?;
        std::fs::write(out.join(format!("{}.csv", t.id)), csv)?;
        let (tm, tr) = time_and_trace(t, &runs);
        times.push_str(&tm);
        times.push('\n');
        traces.push_str(&tr);
        traces.push('\n');
        if t.id == "table1" {
            let fig_note = match note {
                Some(n) if n.starts_with("fixture") => "fixture data".to_string(),
                Some(n) if n.contains("Fashion-MNIST") => "Fashion-MNIST in place of CIFAR-10".to_string(),
                _ => "CIFAR-10".to_string(),
            };
            let text = figure(&runs, out, &format!("{} preset, {fig_note}", preset.name))?;
            if !text {
                summary.push_str("\n(No DejaVu font found: the figure was drawn without axis labels.)\n");
            }
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
    let lambda = lambda_report(out, cells, root)?;
    if let Some((secs, n)) = recorded_time(out) {
        let _ = writeln!(
            summary,
            "\nTraining time of all {n} runs, summed over every invocation of this preset (runs/timing.csv): {:.1} minutes.",
            secs / 60.0
        );
    }
    summary.push_str("\n## Outputs\n\n");
    if lambda.is_some() {
        summary.push_str("- λ selection on a validation split: [lambda.md](lambda.md) ([CSV](lambda.csv))\n");
    }
    for t in &args.tables {
        let _ = writeln!(summary, "- [{t}.md]({t}.md) ([CSV]({t}.csv))");
    }
    if args.tables.iter().any(|t| t == "table1") {
        summary.push_str("- Figure 1: [figure1.svg](figure1.svg), [figure1.png](figure1.png)\n");
    }
    summary.push_str("- [training_time.md](training_time.md), [hessian_trace.md](hessian_trace.md)\n- Configs of every run: `configs/`; run folders (config, log.jsonl, metrics.json, checkpoint): `runs/`\n");
    std::fs::write(out.join("summary.md"), summary)?;
    Ok(())
}

/// `cargo xtask check-results DIR --tables … --seeds N`: every expected file
/// exists and parses, with one row per method and the configured seed count.
pub fn check(root: &Path, dir: &Path, tables: &[String], seeds: usize) -> Result<()> {
    for f in ["summary.md", "training_time.md", "hessian_trace.md"] {
        let p = dir.join(f);
        anyhow::ensure!(
            std::fs::metadata(&p).map(|m| m.len() > 0).unwrap_or(false),
            "{} is missing or empty",
            p.display()
        );
    }
    for t in tables {
        let methods = crate::reproduce::methods(root, t)?;
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
    if tables.iter().any(|t| t == "table1") {
        let svg = std::fs::read_to_string(dir.join("figure1.svg")).context("figure1.svg")?;
        anyhow::ensure!(svg.contains("<svg") && svg.contains("</svg>"), "figure1.svg is not an SVG document");
        let png = std::fs::read(dir.join("figure1.png")).context("figure1.png")?;
        anyhow::ensure!(png.starts_with(b"\x89PNG"), "figure1.png is not a PNG file");
    }
    println!("{}: all outputs present and well-formed for {} ({} seeds each)", dir.display(), tables.join(", "), seeds);
    Ok(())
}
