//! λ (ρ, ε) selection on a validation split, as the paper selected λ
//! (section 5) but never on the test set: the grid's results per value, the
//! selected value (best mean validation score over positive values, or the
//! largest stable λ), whether it is bracketed, and the main rows' configs
//! changed to it — as typed [`ExperimentConfig`]s, never as text.

use std::fmt::Write as _;
use std::path::Path;

use seht_config::ExperimentConfig;

use crate::error::{Context, Result, bail};
use crate::preset::Cell;
use crate::report::{cell_with_divergence, mean_std, read_metrics};

/// The criterion of λ selection: validation accuracy or perplexity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GridMetric {
    /// Final-epoch validation top-1 accuracy (%), higher is better.
    ValidTop1,
    /// Final-epoch validation perplexity, lower is better.
    ValidPerplexity,
}

impl GridMetric {
    /// Its column heading.
    pub fn label(self) -> &'static str {
        match self {
            GridMetric::ValidTop1 => "valid top-1 (%)",
            GridMetric::ValidPerplexity => "valid perplexity",
        }
    }

    /// Whether a larger value is better.
    pub fn higher_is_better(self) -> bool {
        self == GridMetric::ValidTop1
    }
}

/// Per λ of the grid of `table/method` (in grid order): the finished
/// seeds' validation values and the diverged seeds' count; the metric; and
/// the selected λ — the first positive λ with the best mean over its
/// finished seeds (ties keep the smaller penalty; a λ none of whose seeds
/// finished is never selected; λ = 0, the shared baseline run, is a row of
/// reference and never the selection). For a method selected as the largest
/// stable λ ([`Cell::largest_stable`]): the largest positive λ with no
/// diverged seed.
///
/// # Errors
/// A grid run without metrics.json (not run yet) or without a validation metric.
#[allow(clippy::type_complexity)]
pub fn grid_selection(
    out: &Path,
    grid: &[&Cell],
    table: &str,
    method: &str,
) -> Result<(Vec<(f64, Vec<f64>, usize)>, GridMetric, Option<f64>)> {
    let mut lambdas: Vec<f64> = Vec::new();
    for c in grid.iter().filter(|c| c.in_grid_of(table, method)) {
        let l = c.grid_lambda.unwrap_or(f64::NAN);
        if !lambdas.contains(&l) {
            lambdas.push(l);
        }
    }
    let mut per_lambda: Vec<(f64, Vec<f64>, usize)> = Vec::new();
    let mut metric = None;
    for l in lambdas {
        let (mut xs, mut diverged) = (Vec::new(), 0);
        for c in grid.iter().filter(|c| c.in_grid_of(table, method) && c.grid_lambda == Some(l)) {
            let run = out.join("runs").join(&c.name);
            let m = read_metrics(&run)?;
            if m.diverged().is_some() {
                diverged += 1;
                continue;
            }
            let valid = m.final_epoch.as_ref().and_then(|e| e.valid.as_ref());
            let (kind, v) = match (valid.and_then(|v| v.top1), valid.and_then(|v| v.perplexity)) {
                (Some(a), _) => (GridMetric::ValidTop1, 100.0 * a),
                (None, Some(p)) => (GridMetric::ValidPerplexity, p),
                _ => bail!("{}: no validation metric in metrics.json", run.display()),
            };
            metric = Some(kind);
            xs.push(v);
        }
        per_lambda.push((l, xs, diverged));
    }
    let metric = metric.unwrap_or(GridMetric::ValidTop1);
    if grid.iter().any(|c| c.largest_stable && c.method == method && c.table == table) {
        // The largest λ none of whose seeds diverged (and some finished).
        let best = per_lambda.iter().filter(|r| r.0 > 0.0 && r.2 == 0 && !r.1.is_empty()).map(|r| r.0).reduce(f64::max);
        return Ok((per_lambda, metric, best));
    }
    let higher = metric.higher_is_better();
    let mut best: Option<(f64, f64)> = None;
    for (l, xs, _) in per_lambda.iter().filter(|r| !r.1.is_empty() && r.0 > 0.0) {
        let m = mean_std(xs).0;
        if m.is_finite() && best.is_none_or(|(_, b)| if higher { m > b } else { m < b }) {
            best = Some((*l, m));
        }
    }
    Ok((per_lambda, metric, best.map(|b| b.0)))
}

/// Whether `best` has a smaller (0 counts) and a larger neighbour among the
/// grid's values `lambdas`.
pub fn bracketed(lambdas: &[f64], best: f64) -> bool {
    lambdas.iter().any(|l| *l < best) && lambdas.iter().any(|l| *l > best)
}

/// The value the grid's runs of a main cell's method select on validation
/// ([`Cell::selected`]), without changing anything. With `bracket` (the
/// preset's `lambda_grid.bracket`), a selection at the grid's edge is
/// refused.
///
/// # Errors
/// A grid run that has not finished (run the grid cells first), a grid
/// none of whose seeds finished, a selection at the edge of its grid (with
/// `bracket`).
pub fn selected_value(out: &Path, cells: &[Cell], cell: &Cell, bracket: bool) -> Result<f64> {
    let grid: Vec<&Cell> = cells.iter().filter(|c| c.in_grid_of(&cell.table, &cell.method)).collect();
    if grid.is_empty() {
        bail!("{}: selected on a grid, but the matrix has no grid cells for {}/{}", cell.name, cell.table, cell.method);
    }
    let (_, _, best) = grid_selection(out, &grid, &cell.table, &cell.method).with_context(|| {
        format!("{}: its λ (ρ for SAM/ASAM) is selected by the grid, whose runs must finish first", cell.name)
    })?;
    let best = best.with_context(|| {
        format!("{}: no seed of any grid value of {}/{} finished", cell.name, cell.table, cell.method)
    })?;
    let lambdas: Vec<f64> = grid.iter().filter_map(|c| c.grid_lambda).collect();
    if bracket && !bracketed(&lambdas, best) {
        let mut sorted = lambdas.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.dedup();
        bail!(
            "{}: the value selected on validation, {best:e}, lies at the edge of the grid {sorted:?} of {}/{}: \
             extend the grid beyond it (`values_for` in configs/presets.toml) and run the new grid cells first",
            cell.name,
            cell.table,
            cell.method
        );
    }
    Ok(best)
}

/// Before a main cell of a selecting grid runs ([`Cell::selected`]): sets
/// its config's λ (ρ, ε) to [`selected_value`], by type, and returns the
/// setting's symbol and the value.
///
/// # Errors
/// Those of [`selected_value`], and a config that cannot be read, take the
/// value or be written.
pub fn apply_selection(out: &Path, cells: &[Cell], cell: &Cell, bracket: bool) -> Result<(&'static str, f64)> {
    let best = selected_value(out, cells, cell, bracket)?;
    write_selected(cell, best)
}

/// Writes `best` into `cell`'s config as its λ (ρ, ε).
fn write_selected(cell: &Cell, best: f64) -> Result<(&'static str, f64)> {
    let mut cfg = ExperimentConfig::from_file(&cell.config)?;
    let field = select(&mut cfg, best).with_context(|| format!("{}", cell.config.display()))?;
    crate::write_atomic(&cell.config, cfg.to_toml())?;
    Ok((field.symbol(), best))
}

/// Writing the matrix writes every main cell's config with its method's
/// starting value; this then writes the selected value into the config of
/// every selected main cell whose grid has finished, so that `configs/`
/// says what each run trained with also for the cells that are done (before,
/// a `--cell` run reset the configs of every finished selected cell to the
/// starting value). A cell whose selection is not known yet (grid running,
/// or at the grid's edge with `bracket`) keeps the starting value; it gets
/// its value, or its error, when it runs. Returns how many configs were
/// written.
///
/// # Errors
/// A config that cannot be read, take the value or be written.
pub fn apply_available_selections(out: &Path, cells: &[Cell], bracket: bool) -> Result<usize> {
    // One selection per table/method, shared by its seeds' cells.
    let mut known: std::collections::BTreeMap<(&str, &str), Option<f64>> = std::collections::BTreeMap::new();
    let mut n = 0;
    for cell in cells.iter().filter(|c| c.selected) {
        let best = *known
            .entry((cell.table.as_str(), cell.method.as_str()))
            .or_insert_with(|| selected_value(out, cells, cell, bracket).ok());
        if let Some(best) = best {
            write_selected(cell, best)?;
            n += 1;
        }
    }
    Ok(n)
}

/// Sets the config's grid setting ([`seht_config::Regularizer::strength`])
/// to the selected `value`, checked as every config value is.
///
/// # Errors
/// A method without such a setting, or a value its config refuses.
pub fn select(cfg: &mut ExperimentConfig, value: f64) -> Result<seht_config::Strength> {
    let Some(field) = cfg.regularizer.set_strength(value) else {
        bail!("regularizer `{}` has no λ, ρ or ε for a grid to select", cfg.regularizer.label())
    };
    cfg.validate()?;
    Ok(field)
}

/// The λ grid's validation results and the selected λ per method
/// (`lambda.md`, `lambda.csv`); `None` when the matrix has no grid cells.
pub fn lambda_report(out: &Path, cells: &[Cell], root: &Path) -> Result<Option<String>> {
    let grid: Vec<&Cell> = cells.iter().filter(|c| c.grid_lambda.is_some()).collect();
    if grid.is_empty() {
        return Ok(None);
    }
    let mut md = String::from(
        "# λ selection on a validation split\n\nAs the paper selected λ (section 5: grid {1e-4, 1e-3, 1e-2, 1e-1}), but on data held out from training \
         (image tables: images held out of the training subset; text tables: the corpus's validation split), never on the test set. \
         Criterion: final-epoch validation top-1 accuracy (higher is better) or perplexity (lower is better). \
         Unless a grid says its main rows trained with the selected λ, the main tables' rows use the λ the paper reports, stated under each grid with whether the selection agrees.\n\n",
    );
    let mut csv = String::from("table,method,lambda,metric,mean,std,seeds,selected,diverged\n");
    let mut keys: Vec<(String, String)> = Vec::new();
    for c in grid.iter().filter(|c| c.zero_for.is_empty()) {
        let k = (c.table.clone(), c.method.clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    for (table, method) in keys {
        let base = ExperimentConfig::from_file(&root.join("configs").join(&table).join(format!("{method}.toml")))?;
        // SAM and ASAM vary ρ, label smoothing ε, the others λ.
        let (strength, main_lambda) = match base.regularizer.strength() {
            Some((s, v)) => (s, Some(v)),
            None => (seht_config::Strength::Lambda, None),
        };
        let (field, sym) = (strength.field(), strength.symbol());
        let (per_lambda, metric, best) = grid_selection(out, &grid, &table, &method)?;
        let _ = writeln!(md, "## {table}, {method}\n\n| {sym} | {} | seeds | |\n|---|---|---|---|", metric.label());
        for (l, xs, diverged) in &per_lambda {
            let sel = best == Some(*l);
            let n = xs.len() + diverged;
            let mean_sd = match xs.is_empty() {
                true => ",".to_string(),
                false => {
                    let (m, sd) = mean_std(xs);
                    format!("{m:.6},{sd:.6}")
                }
            };
            let _ = writeln!(
                md,
                "| {l:e} | {} | {n} | {} |",
                cell_with_divergence(xs, *diverged, n),
                if sel { "**selected**" } else { "" }
            );
            let _ =
                writeln!(csv, "{table},{method},{l:e},{},{mean_sd},{n},{},{diverged}", metric.label(), u8::from(sel));
        }
        let lambdas: Vec<f64> = per_lambda.iter().map(|r| r.0).collect();
        let edge = match best {
            Some(b) if !bracketed(&lambdas, b) => " It lies at the edge of its grid: the best value may lie beyond it.",
            _ => "",
        };
        if cells.iter().any(|c| c.selected && c.table == table && c.method == method) {
            let _ = writeln!(
                md,
                "\nSelected {sym} = {}; the main rows of this method trained with it.{edge}\n",
                best.map(|b| format!("{b:e}")).unwrap_or("none".into())
            );
            continue;
        }
        let _ = writeln!(
            md,
            "\nSelected {sym} = {}; {sym} in the main rows = {}{}.\n",
            best.map(|b| format!("{b:e}")).unwrap_or("none".into()),
            main_lambda.map(|l| format!("{l:e}")).unwrap_or("?".into()),
            match (best, main_lambda) {
                (Some(b), Some(l)) if (b - l).abs() > 1e-12 * l.abs() && field != "lambda" => {
                    " (the selection differs from the config's value)"
                }
                (Some(b), Some(l)) if (b - l).abs() > 1e-12 * l.abs() => " (the selection differs from the paper's λ)",
                _ => "",
            }
        );
    }
    crate::write_atomic(out.join("lambda.md"), &md)?;
    crate::write_atomic(out.join("lambda.csv"), &csv)?;
    Ok(Some(md))
}
