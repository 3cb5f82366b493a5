//! `cargo xtask layer-figure`: what the `[monitor]` section of `seht train`
//! logged per epoch (per-layer weight norms and training-mode Hessian block
//! traces), for several runs side by side — a table (Markdown) and a figure
//! (SVG and PNG) of four panels per epoch: the total trace `Σ_l tr(H_ll)`,
//! the scale-invariant total `Σ_l ‖w_l‖²·tr(H_ll)`, the norm of the weights
//! that feed BatchNorm, and the trace of those layers alone.
//!
//! "Feeds BatchNorm" is read from the name: in this project's ResNets every
//! convolution (`…conv…`, `…shortcut.0…`) is followed by BatchNorm and the
//! classifier (`linear`) is not; for other models no layer is counted.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use plotters::prelude::*;
use seht_records::{EpochRecord, LayerRecord, read_log};

/// Arguments of `cargo xtask layer-figure`.
#[derive(clap::Args)]
pub struct Args {
    /// Run folders written by `seht train` with `[monitor]` (their log.jsonl).
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    /// Output folder: layers.md, layers.svg, layers.png.
    #[arg(long)]
    out: PathBuf,
}

/// Whether the weight `name` is followed by BatchNorm in this project's ResNets.
pub fn feeds_batch_norm(name: &str) -> bool {
    (name.contains("conv") || name.contains("shortcut.0")) && !name.contains("linear")
}

/// Per-epoch totals of one run.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochTotals {
    /// Epoch (1-based).
    pub epoch: usize,
    /// `Σ_l tr(H_ll)` over every weight.
    pub trace: f64,
    /// `Σ_l ‖w_l‖²·tr(H_ll)`.
    pub scaled: f64,
    /// `sqrt(Σ ‖w_l‖²)` over the weights that feed BatchNorm.
    pub bn_norm: f64,
    /// `Σ tr(H_ll)` over the weights that feed BatchNorm.
    pub bn_trace: f64,
    /// Test loss after the epoch.
    pub test_loss: f64,
}

/// The totals of each monitored epoch of `log`.
pub fn totals(log: &[EpochRecord]) -> Vec<EpochTotals> {
    log.iter()
        .filter_map(|r| {
            let layers: &[LayerRecord] = r.layers.as_deref()?;
            let bn: Vec<&LayerRecord> = layers.iter().filter(|l| feeds_batch_norm(&l.name)).collect();
            Some(EpochTotals {
                epoch: r.epoch,
                trace: layers.iter().map(|l| l.trace).sum(),
                scaled: layers.iter().map(|l| l.weight_norm.powi(2) * l.trace).sum(),
                bn_norm: bn.iter().map(|l| l.weight_norm.powi(2)).sum::<f64>().sqrt(),
                bn_trace: bn.iter().map(|l| l.trace).sum(),
                test_loss: r.test.loss,
            })
        })
        .collect()
}

/// `sign(x)·log10(1 + |x|)`: a scale for values of both signs over many decades.
fn symlog(x: f64) -> f64 {
    x.signum() * x.abs().ln_1p() / std::f64::consts::LN_10
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the layer figure: {e:?}")
}

type Runs = Vec<(String, Vec<EpochTotals>)>;

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    runs: &Runs,
    (caption, y_desc): (&str, &str),
    value: fn(&EpochTotals) -> f64,
    text: bool,
) -> Result<()> {
    let epochs = runs.iter().flat_map(|r| r.1.iter().map(|t| t.epoch)).max().unwrap_or(1).max(2);
    let ys: Vec<f64> = runs.iter().flat_map(|r| r.1.iter().map(value)).filter(|v| v.is_finite()).collect();
    let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let pad = 0.05 * (hi - lo);
    let mut b = ChartBuilder::on(area);
    b.margin(15).x_label_area_size(if text { 35 } else { 5 }).y_label_area_size(if text { 55 } else { 5 });
    if text {
        b.caption(caption, ("sans-serif", 16));
    }
    let mut chart = b.build_cartesian_2d(1f64..epochs as f64, (lo - pad)..(hi + pad)).map_err(err)?;
    if text {
        chart.configure_mesh().x_desc("epoch").y_desc(y_desc).draw().map_err(err)?;
    }
    for (i, (name, pts)) in runs.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let line: Vec<(f64, f64)> =
            pts.iter().map(|t| (t.epoch as f64, value(t))).filter(|p| p.1.is_finite()).collect();
        let series = chart.draw_series(LineSeries::new(line.clone(), color.stroke_width(2))).map_err(err)?;
        if text {
            series.label(name.as_str()).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
        }
        chart.draw_series(line.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
    }
    if text {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::MiddleRight)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, runs: &Runs, text: bool) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((2, 2));
    panel(&areas[0], runs, ("training-mode tr(H) over all weights", "symlog10 Σ tr(H_ll)"), |t| symlog(t.trace), text)?;
    panel(
        &areas[1],
        runs,
        ("scale-invariant Σ ‖w_l‖²·tr(H_ll)", "symlog10 Σ ‖w‖²tr(H_ll)"),
        |t| symlog(t.scaled),
        text,
    )?;
    panel(&areas[2], runs, ("norm of the weights that feed BatchNorm", "‖w_BN‖"), |t| t.bn_norm, text)?;
    panel(
        &areas[3],
        runs,
        ("tr(H) of the layers that feed BatchNorm", "symlog10 Σ_BN tr(H_ll)"),
        |t| symlog(t.bn_trace),
        text,
    )?;
    root.present().map_err(err)?;
    Ok(())
}

/// The Markdown table of `runs`.
pub fn table(runs: &Runs) -> String {
    let mut md = String::from(
        "| run | epoch | Σ tr(H_ll) | Σ ‖w_l‖²·tr(H_ll) | ‖w‖ feeding BatchNorm | Σ tr(H_ll) feeding BatchNorm | test loss |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for (name, pts) in runs {
        for t in pts {
            let _ = writeln!(
                md,
                "| {name} | {} | {:.4e} | {:.4e} | {:.4} | {:.4e} | {:.4} |",
                t.epoch, t.trace, t.scaled, t.bn_norm, t.bn_trace, t.test_loss
            );
        }
    }
    md
}

/// Runs the command.
pub fn run(a: Args) -> Result<()> {
    let mut runs: Runs = Vec::new();
    for dir in &a.runs {
        // The error names the file and the OS error itself (no source chain, which would repeat it).
        let log = read_log(dir).map_err(|e| anyhow::anyhow!("reading the monitor's log: {e}"))?;
        let t = totals(&log);
        if t.is_empty() {
            bail!("{}: no epoch of log.jsonl has per-layer records (train with a [monitor] section)", dir.display());
        }
        let name =
            dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| dir.display().to_string());
        runs.push((name, t));
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let md_path = a.out.join("layers.md");
    std::fs::write(&md_path, table(&runs)).with_context(|| format!("writing {}", md_path.display()))?;
    let text = crate::figure::register_font();
    let svg = a.out.join("layers.svg");
    draw(SVGBackend::new(&svg, (1100, 800)).into_drawing_area(), &runs, true)?;
    let png: &Path = &a.out.join("layers.png");
    draw(BitMapBackend::new(png, (1100, 800)).into_drawing_area(), &runs, text)?;
    eprintln!("wrote {}, {} and {}", md_path.display(), svg.display(), png.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seht_records::EvalMetrics;

    fn layer(name: &str, norm: f64, trace: f64) -> LayerRecord {
        LayerRecord { name: name.into(), weight_norm: norm, trace, trace_std_error: None }
    }

    #[test]
    fn totals_split_the_layers_that_feed_batch_norm() {
        let rec = EpochRecord {
            epoch: 2,
            lr: 0.1,
            train_loss: 1.0,
            train_top1: None,
            valid: None,
            test: EvalMetrics { loss: 0.5, top1: None, top5: None, perplexity: None },
            trace_mean: None,
            penalty_steps: 0,
            steps: 1,
            train_seconds: 1.0,
            seconds_per_step: 1.0,
            layers: Some(vec![
                layer("conv1.weight", 3.0, -2.0),
                layer("layer1.0.shortcut.0.weight", 4.0, 1.0),
                layer("linear.weight", 2.0, 10.0),
            ]),
        };
        let t = totals(&[rec.clone(), EpochRecord { layers: None, ..rec }]);
        assert_eq!(t.len(), 1, "epochs without layers are skipped");
        assert_eq!(
            t[0],
            EpochTotals {
                epoch: 2,
                trace: 9.0,
                scaled: -18.0 + 16.0 + 40.0,
                bn_norm: 5.0,
                bn_trace: -1.0,
                test_loss: 0.5
            }
        );
        assert!((symlog(-999.0) + 3.0).abs() < 1e-12 && symlog(0.0) == 0.0);
        let md = table(&vec![("r".into(), t)]);
        assert!(md.contains("| r | 2 | 9.0000e0 | 3.8000e1 | 5.0000 | -1.0000e0 | 0.5000 |"), "{md}");
    }
}
