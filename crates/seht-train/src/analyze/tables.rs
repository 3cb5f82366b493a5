//! What `seht analyze` writes: `analysis.json`, the Markdown summary, the
//! one-line cost and the table comparing several analyses (the plots are
//! `plot.rs`'s).

use std::path::{Path, PathBuf};

use super::report::AnalysisReport;
use super::settings::{ModelMode, ParamChoice};
use crate::checkpoint;
use crate::error::{Error, Result, io};
use crate::estimators::Curvature;

/// The files [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Every file, in writing order.
    pub files: Vec<PathBuf>,
}

/// Writes `analysis.json`, `analysis.md` and the plots (`density.{svg,png}`,
/// `layer_traces.{svg,png}`) into `out`.
///
/// # Errors
/// Unwritable files (naming them) and plotting failures.
pub fn write_report(report: &AnalysisReport, out: &Path) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut files = Vec::new();
    let json_path = out.join("analysis.json");
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::Io { path: json_path.clone(), source: e.into() })?;
    checkpoint::write_atomic(&json_path, &json)?;
    files.push(json_path);
    let md_path = out.join("analysis.md");
    checkpoint::write_atomic(&md_path, markdown(report).as_bytes())?;
    files.push(md_path);
    files.extend(crate::analyze::plot::plots(report, out)?);
    Ok(Written { files })
}

fn pm(x: f64, se: Option<f64>) -> String {
    match se {
        Some(s) => format!("{x:.4e} ± {s:.1e}"),
        None => format!("{x:.4e}"),
    }
}

/// The Markdown summary: settings, costs, top eigenvalues, density, the
/// whole-model trace, the per-layer diagonal and traces.
pub fn markdown(r: &AnalysisReport) -> String {
    [heading(r), cost_table(r), findings(r), layer_tables(r)].concat()
}

/// The title and where the Hessian came from.
fn heading(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    format!(
        "# Hessian analysis of `{}` ({})\n\nSource: `{}`. Model in **{}** mode; Hessian of the mean training loss over {} batch(es) of {}, over the {} ({} parameters). Seed {}.\n\n",
        r.name,
        r.method,
        r.source,
        match r.mode {
            ModelMode::Eval => "eval",
            ModelMode::Train => "train",
        },
        r.batches,
        r.batch_size,
        match r.params {
            ParamChoice::Weights => "weights",
            ParamChoice::WeightsAndNormScales => "weights and BatchNorm scales",
            ParamChoice::Trainable => "trainable parameters",
        },
        s.parameters,
        r.settings.seed,
    )
}

/// One row per analysis with its settings and costs, and their sum.
fn cost_table(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut md = String::new();
    md.push_str("| analysis | settings | Hessian-vector products | batch products | seconds |\n| --- | --- | ---: | ---: | ---: |\n");
    let mut row = |what: String, settings: String, hvps: usize, seconds: f64| {
        md.push_str(&format!("| {what} | {settings} | {hvps} | {} | {seconds:.1} |\n", hvps * r.batches));
    };
    if let Some(t) = &s.traces {
        row("per-layer traces (Hutchinson)".into(), format!("{} probes, {}", t.probes, t.probing), t.hvps, t.seconds);
    }
    if let Some(t) = &s.trace {
        let matrix = if t.matrix.is_hessian() { "" } else { ", Gauss–Newton matrix G" };
        row(format!("trace ({}{matrix})", t.estimator.name()), format!("budget {}", t.budget), t.hvps, t.seconds);
    }
    if let Some(d) = &s.diagonal {
        row(format!("per-layer diagonal ({})", d.estimator.name()), format!("budget {}", d.budget), d.hvps, d.seconds);
    }
    if let Some(e) = &s.eigen {
        let settings = format!("≤ {} steps, tolerance {:.0e}", e.max_steps, e.tolerance);
        row(format!("top-{} eigenvalues (Lanczos)", e.values.len()), settings, e.hvps, e.seconds);
    }
    if let Some(d) = &s.density {
        let settings = format!("{} probes × {} steps, σ = {:.3e}", d.probes, d.steps, d.sigma);
        row("density (SLQ)".into(), settings, d.hvps, d.seconds);
    }
    if let Some(b) = &s.block_spectra {
        let settings = format!("{} blocks × {} probes × {} steps", b.blocks.len(), b.probes, b.steps);
        row("blockwise densities (SLQ), JS₀".into(), settings, b.hvps, b.seconds);
    }
    md.push_str(&format!("| all | | {} | {} | {:.1} |\n\n", r.hvps, r.batch_hvps, r.seconds));
    md
}

/// The blockwise densities' heterogeneity: JS₀ of the spectra as measured
/// and of their shapes, each against its noise floor, the most different
/// pair, and per block its trace, scale and mean divergence (of shapes) to
/// the others.
fn block_spectra(b: &super::report::BlockSpectraSection) -> String {
    let line = |what: &str, j: &super::report::Js0| {
        let floor = j.floor.map_or("no floor (one probe)".into(), |f| format!("noise floor {f:.4}"));
        format!(
            "- {what}: JS₀ = **{:.4}** nats ({floor}); most different pair `{}` and `{}` ({:.4}).\n",
            j.js0, j.max_pair.0, j.max_pair.1, j.max_pair.2
        )
    };
    let mut md = format!(
        "## Blockwise spectra (block heterogeneity)\n\nThe mean Jensen–Shannon divergence between the {} blocks' densities (at most ln 2 = 0.6931), against its noise floor (the divergence between two halves of one block's probes):\n\n{}{}\nPlot of the shapes: `block_spectra.svg`.\n\n| block | entries | tr(H_bb) (first moment) | largest abs. Ritz value | mean JS of shapes to the others |\n| --- | ---: | ---: | ---: | ---: |\n",
        b.blocks.len(),
        line("as measured", &b.as_measured),
        line("shapes (each block divided by its largest absolute eigenvalue)", &b.shape),
    );
    for (i, blk) in b.blocks.iter().enumerate() {
        let others: Vec<f64> = b
            .blocks
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, o)| seht_estimator::jensen_shannon(&blk.density, &o.density))
            .collect();
        let mean = others.iter().sum::<f64>() / others.len().max(1) as f64;
        md.push_str(&format!("| `{}` | {} | {:.4e} | {:.4e} | {mean:.4} |\n", blk.name, blk.len, blk.trace, blk.scale));
    }
    md.push('\n');
    md
}

/// The top eigenvalues, the density and the whole-model trace.
fn findings(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut md = String::new();
    if let Some(e) = &s.eigen {
        md.push_str(&format!(
            "## Top eigenvalues\n\n{} after {} Lanczos steps.\n\n| # | eigenvalue | residual ‖Hv − λv‖ |\n| ---: | ---: | ---: |\n",
            if e.converged { "Converged" } else { "**Not converged**" },
            e.steps
        ));
        for (i, v) in e.values.iter().enumerate() {
            md.push_str(&format!("| {} | {:.6e} | {:.1e} |\n", i + 1, v.value, v.residual));
        }
        md.push('\n');
    }
    if let Some(d) = &s.density {
        md.push_str(&format!(
            "## Density\n\nTrace from the density's first moment: {}. Fraction of negative eigenvalues: {}. Plot: `density.svg`.\n\n",
            pm(d.trace.0, d.trace.1),
            pm(d.negative_mass.0, d.negative_mass.1),
        ));
    }
    if let Some(b) = &s.block_spectra {
        md.push_str(&block_spectra(b));
    }
    if let Some(t) = &s.trace {
        md.push_str(&format!(
            "## Trace ({})\n\n{}{} = {} ({}; {} {}-vector products).\n\n",
            t.estimator.name(),
            if t.matrix.is_hessian() {
                ""
            } else {
                "Of the generalised Gauss–Newton matrix G = (1/N) Σ_n J_nᵀ(diag p_n − p_n p_nᵀ)J_n of the same batches \
                 (positive semi-definite, as XNysTrace needs), not of the Hessian: "
            },
            t.matrix.trace_symbol(),
            pm(t.trace, t.std_error),
            if t.std_error.is_some() {
                "± the estimator's own error estimate"
            } else {
                "Hutch++ reports no error of its own"
            },
            t.hvps,
            if t.matrix.is_hessian() { "Hessian" } else { "Gauss–Newton matrix" }
        ));
    }
    md
}

/// The per-layer diagonal and the per-layer traces.
fn layer_tables(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut md = String::new();
    if let Some(d) = &s.diagonal {
        md.push_str(&format!(
            "## Per-layer Hessian diagonal ({})\n\nSum of the estimated diagonal: {:.4e} ({} Hessian-vector products). Per layer: the mean, smallest and largest estimated entry, the root-mean-square standard error of one entry, and a bound on the standard error of the mean (the mean of the entries' standard errors). The extremes of noisy entries lie further out than the true ones.\n\n| layer | parameters | mean | min | max | s.e. of an entry | s.e. of the mean ≤ |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            d.estimator.name(),
            d.trace,
            d.hvps
        ));
        let opt = |x: Option<f64>| x.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "–".into());
        for l in &d.layers {
            md.push_str(&format!(
                "| `{}` | {} | {:.4e} | {:.3e} | {:.3e} | {} | {} |\n",
                l.name,
                l.len,
                l.mean,
                l.min,
                l.max,
                opt(l.entry_std_error),
                opt(l.mean_std_error_bound)
            ));
        }
        md.push('\n');
    }
    if let Some(t) = &s.traces {
        md.push_str(&format!(
            "## Per-layer traces\n\nTotal: {} (standard error over {} probes). Plot: `layer_traces.svg`.\n\n| layer | parameters | trace | standard error | trace / parameter |\n| --- | ---: | ---: | ---: | ---: |\n",
            pm(t.total, t.total_std_error),
            t.probes
        ));
        for l in &t.layers {
            md.push_str(&format!(
                "| `{}` | {} | {:.4e} | {} | {:.3e} |\n",
                l.name,
                l.len,
                l.trace,
                l.std_error.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "–".into()),
                l.trace / l.len as f64
            ));
        }
    }
    md
}

/// The one-line cost summary printed by `seht analyze`.
pub fn cost_line(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut parts = Vec::new();
    if let Some(t) = &s.traces {
        parts.push(format!("traces {} HVPs {:.1} s", t.hvps, t.seconds));
    }
    if let Some(t) = &s.trace {
        let of = if t.matrix.is_hessian() { "" } else { " of G" };
        parts.push(format!("trace ({}{of}) {} HVPs {:.1} s", t.estimator.name(), t.hvps, t.seconds));
    }
    if let Some(d) = &s.diagonal {
        parts.push(format!("diagonal ({}) {} HVPs {:.1} s", d.estimator.name(), d.hvps, d.seconds));
    }
    if let Some(e) = &s.eigen {
        parts.push(format!("top-{} eigenvalues {} HVPs {:.1} s", e.values.len(), e.hvps, e.seconds));
    }
    if let Some(d) = &s.density {
        parts.push(format!("density {} HVPs {:.1} s", d.hvps, d.seconds));
    }
    if let Some(b) = &s.block_spectra {
        parts.push(format!("blockwise densities {} HVPs {:.1} s", b.hvps, b.seconds));
    }
    format!(
        "cost: {} — {} HVPs of the mean loss over {} batch(es) = {} batch HVPs, {:.1} s",
        parts.join(", "),
        r.hvps,
        r.batches,
        r.batch_hvps,
        r.seconds
    )
}

/// A table comparing several analyses (one row each): top eigenvalue with
/// its residual, `tr(H)` with its standard error, and the fraction of
/// negative eigenvalues.
pub fn comparison_markdown(reports: &[AnalysisReport]) -> String {
    let mut md = String::from(
        "| run | method | mode | top eigenvalue (residual) | tr(H) ± s.e. | negative fraction | HVPs |\n| --- | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        let s = &r.spectrum;
        let top = s
            .eigen
            .as_ref()
            .and_then(|e| {
                e.values
                    .first()
                    .map(|v| format!("{:.4e} ({:.0e}){}", v.value, v.residual, if e.converged { "" } else { "*" }))
            })
            .unwrap_or_else(|| "–".into());
        let trace = s
            .traces
            .as_ref()
            .map(|t| pm(t.total, t.total_std_error))
            .or_else(|| {
                s.trace.as_ref().map(|t| match t.matrix {
                    Curvature::Hessian => format!("{} ({})", pm(t.trace, t.std_error), t.estimator.name()),
                    Curvature::GaussNewton => format!("tr(G) {} ({})", pm(t.trace, t.std_error), t.estimator.name()),
                })
            })
            .unwrap_or_else(|| "–".into());
        let neg = s.density.as_ref().map(|d| pm(d.negative_mass.0, d.negative_mass.1)).unwrap_or_else(|| "–".into());
        md.push_str(&format!(
            "| `{}` | {} | {} | {top} | {trace} | {neg} | {} |\n",
            r.name,
            r.method,
            match r.mode {
                ModelMode::Eval => "eval",
                ModelMode::Train => "train",
            },
            r.hvps
        ));
    }
    md.push_str("\n`*`: Lanczos did not reach its tolerance; the residual bounds the error.\n");
    md
}
