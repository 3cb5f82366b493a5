//! Plots of a Hessian analysis (plotters, SVG and PNG): the eigenvalue
//! density on a log scale, the per-layer traces as bars with ±1 standard
//! error, and densities of several runs overlaid.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::analyze::report::AnalysisReport;
use crate::analyze::settings::ModelMode;
use crate::error::{Error, Result};

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

/// Registers DejaVu Sans as "sans-serif" (plotters' ab_glyph backend has no
/// system font lookup); without it the plots have no text.
fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        FONTS.iter().any(|f| {
            std::fs::read(f).is_ok_and(|bytes| {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    })
}

fn plot_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Io { path: path.to_path_buf(), source: std::io::Error::other(message) }
}

/// One density curve: label, grid, values.
type Curve<'a> = (&'a str, &'a [f64], &'a [f64]);

fn draw_density<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    curves: &[Curve<'_>],
    title: &str,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(e)?;
    let (mut xmin, mut xmax, mut ymax) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for (_, g, d) in curves {
        xmin = xmin.min(g.first().copied().unwrap_or(0.0));
        xmax = xmax.max(g.last().copied().unwrap_or(1.0));
        ymax = d.iter().fold(ymax, |m, &y| m.max(y));
    }
    if !xmin.is_finite() || xmin >= xmax || ymax.is_nan() || ymax <= 0.0 {
        return Err("empty density".into());
    }
    let ymin = ymax * 1e-9;
    let mut b = ChartBuilder::on(&root);
    b.margin(20).x_label_area_size(if text { 40 } else { 5 }).y_label_area_size(if text { 70 } else { 5 });
    if text {
        b.caption(title, ("sans-serif", 18));
    }
    let mut chart = b.build_cartesian_2d(xmin..xmax, (ymin..ymax * 2.0).log_scale()).map_err(e)?;
    if text {
        chart
            .configure_mesh()
            .x_desc("eigenvalue")
            .y_desc("density (log scale)")
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(e)?;
    }
    for (i, (label, g, d)) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let series = chart
            .draw_series(LineSeries::new(
                g.iter().zip(d.iter()).map(|(&x, &y)| (x, y.max(ymin))),
                color.stroke_width(2),
            ))
            .map_err(e)?;
        if text && curves.len() > 1 {
            let label = label.to_string();
            series
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text && curves.len() > 1 {
        chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw().map_err(e)?;
    }
    root.present().map_err(e)
}

fn draw_traces<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    r: &AnalysisReport,
    text: bool,
) -> std::result::Result<(), String> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    let Some(t) = &r.spectrum.traces else { return Ok(()) };
    root.fill(&WHITE).map_err(e)?;
    let l = t.layers.len();
    let lo = t.layers.iter().map(|x| x.trace - x.std_error.unwrap_or(0.0)).fold(0.0f64, f64::min);
    let hi = t.layers.iter().map(|x| x.trace + x.std_error.unwrap_or(0.0)).fold(0.0f64, f64::max);
    let pad = 0.05 * (hi - lo).max(f64::MIN_POSITIVE);
    let names: Vec<String> = t.layers.iter().map(|x| x.name.trim_end_matches(".weight").to_string()).collect();
    let mut b = ChartBuilder::on(&root);
    b.margin(20).x_label_area_size(if text { 40 } else { 5 }).y_label_area_size(if text { 170 } else { 5 });
    if text {
        b.caption(format!("Per-layer Hessian trace ± 1 s.e. ({}, {} mode)", r.name, mode(r)), ("sans-serif", 18));
    }
    let mut chart = b.build_cartesian_2d((lo - pad)..(hi + pad), (0..l).into_segmented()).map_err(e)?;
    if text {
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(l)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => names.get(*i).cloned().unwrap_or_default(),
                SegmentValue::Last => String::new(),
            })
            .x_desc("tr(H_bb)")
            .draw()
            .map_err(e)?;
    }
    let color = Palette99::pick(0).to_rgba();
    chart
        .draw_series(t.layers.iter().enumerate().map(|(i, x)| {
            Rectangle::new(
                [(0.0, SegmentValue::Exact(i)), (x.trace, SegmentValue::Exact(i + 1))],
                color.mix(0.6).filled(),
            )
        }))
        .map_err(e)?;
    chart
        .draw_series(t.layers.iter().enumerate().filter_map(|(i, x)| {
            x.std_error.map(|s| {
                PathElement::new(
                    vec![(x.trace - s, SegmentValue::CenterOf(i)), (x.trace + s, SegmentValue::CenterOf(i))],
                    BLACK.stroke_width(2),
                )
            })
        }))
        .map_err(e)?;
    root.present().map_err(e)
}

fn mode(r: &AnalysisReport) -> &'static str {
    match r.mode {
        ModelMode::Eval => "eval",
        ModelMode::Train => "train",
    }
}

/// The plots of one report; returns the files written.
pub(crate) fn plots(r: &AnalysisReport, out: &Path) -> Result<Vec<PathBuf>> {
    let text = register_font();
    let mut files = Vec::new();
    if let Some(d) = &r.spectrum.density {
        let title = format!(
            "Hessian eigenvalue density ({}, {} mode; SLQ {}×{}, σ = {:.2e})",
            r.name,
            mode(r),
            d.probes,
            d.steps,
            d.sigma
        );
        let curves = [(r.name.as_str(), d.grid.as_slice(), d.density.as_slice())];
        let svg = out.join("density.svg");
        draw_density(SVGBackend::new(&svg, (900, 520)).into_drawing_area(), &curves, &title, text)
            .map_err(plot_err(&svg))?;
        let png = out.join("density.png");
        draw_density(BitMapBackend::new(&png, (900, 520)).into_drawing_area(), &curves, &title, text)
            .map_err(plot_err(&png))?;
        files.extend([svg, png]);
    }
    if let Some(b) = &r.spectrum.block_spectra {
        let title = format!(
            "Blockwise spectra / max |λ| ({}, {} mode; JS₀ {:.3}, floor {})",
            r.name,
            mode(r),
            b.shape.js0,
            b.shape.floor.map_or("–".into(), |f| format!("{f:.3}")),
        );
        let curves: Vec<(&str, &[f64], &[f64])> =
            b.blocks.iter().map(|k| (k.name.as_str(), b.grid.as_slice(), k.density.as_slice())).collect();
        let svg = out.join("block_spectra.svg");
        draw_density(SVGBackend::new(&svg, (900, 520)).into_drawing_area(), &curves, &title, text)
            .map_err(plot_err(&svg))?;
        let png = out.join("block_spectra.png");
        draw_density(BitMapBackend::new(&png, (900, 520)).into_drawing_area(), &curves, &title, text)
            .map_err(plot_err(&png))?;
        files.extend([svg, png]);
    }
    if let Some(t) = &r.spectrum.traces {
        let h = (120 + 28 * t.layers.len()) as u32;
        let svg = out.join("layer_traces.svg");
        draw_traces(SVGBackend::new(&svg, (900, h)).into_drawing_area(), r, text).map_err(plot_err(&svg))?;
        let png = out.join("layer_traces.png");
        draw_traces(BitMapBackend::new(&png, (900, h)).into_drawing_area(), r, text).map_err(plot_err(&png))?;
        files.extend([svg, png]);
    }
    Ok(files)
}

/// Densities of several analyses overlaid (`density_comparison.{svg,png}`),
/// labelled by each report's method; reports without a density are skipped.
///
/// # Errors
/// Unwritable files and plotting failures (naming the file).
pub fn density_comparison(reports: &[AnalysisReport], out: &Path) -> Result<Vec<PathBuf>> {
    let text = register_font();
    let curves: Vec<Curve<'_>> = reports
        .iter()
        .filter_map(|r| {
            r.spectrum.density.as_ref().map(|d| (r.method.as_str(), d.grid.as_slice(), d.density.as_slice()))
        })
        .collect();
    let title = "Hessian eigenvalue density of the final models (SLQ)";
    let svg = out.join("density_comparison.svg");
    draw_density(SVGBackend::new(&svg, (900, 520)).into_drawing_area(), &curves, title, text)
        .map_err(plot_err(&svg))?;
    let png = out.join("density_comparison.png");
    draw_density(BitMapBackend::new(&png, (900, 520)).into_drawing_area(), &curves, title, text)
        .map_err(plot_err(&png))?;
    Ok(vec![svg, png])
}
