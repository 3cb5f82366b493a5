//! Figures (SVG and PNG via plotters): test accuracy per epoch, mean and a
//! band from min to max over seeds (the paper's Figure 1), and, for the
//! presets' own experiments, a second panel with each method's final Hessian
//! trace minus the baseline's, paired by seed, with its 95 % confidence
//! interval.

use std::path::Path;

use anyhow::Result;
use plotters::prelude::*;

use seht_protocol::report::MethodRuns;

const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

pub(crate) fn register_font() -> bool {
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

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the figure: {e:?}")
}

/// Per method: (mean, min, max) test top-1 (%) per epoch.
type Series<'a> = Vec<(&'a str, Vec<(f64, f64, f64)>)>;
/// Per method: final Hessian trace, a centre and a half-width (mean ± sd over
/// seeds, or the paired difference to the baseline ± its 95 % CI half-width),
/// and the method's colour index (its place among the accuracy series).
type Traces<'a> = Vec<(&'a str, f64, f64, usize)>;

fn accuracy_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    series: &Series<'_>,
    text: bool,
    caption: &str,
) -> Result<()> {
    let epochs = series.iter().map(|s| s.1.len()).max().unwrap_or(0).max(1);
    let (lo, hi) =
        series.iter().flat_map(|s| s.1.iter()).fold((100.0f64, 0.0f64), |(a, b), p| (a.min(p.1), b.max(p.2)));
    let (ymin, ymax) = if lo > hi { (0.0, 100.0) } else { ((lo - 2.0).max(0.0), (hi + 2.0).min(100.0)) };
    let mut b = ChartBuilder::on(area);
    b.margin(20).x_label_area_size(if text { 40 } else { 5 }).y_label_area_size(if text { 50 } else { 5 });
    if text {
        b.caption(caption, ("sans-serif", 18));
    }
    let mut chart = b.build_cartesian_2d(1f64..(epochs as f64).max(2.0), ymin..ymax).map_err(err)?;
    if text {
        chart.configure_mesh().x_desc("epoch").y_desc("test top-1 (%)").draw().map_err(err)?;
    }
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let band: Vec<(f64, f64)> = pts
            .iter()
            .enumerate()
            .map(|(e, p)| ((e + 1) as f64, p.2))
            .chain(pts.iter().enumerate().rev().map(|(e, p)| ((e + 1) as f64, p.1)))
            .collect();
        chart.draw_series(std::iter::once(Polygon::new(band, color.mix(0.15)))).map_err(err)?;
        let line = chart
            .draw_series(LineSeries::new(
                pts.iter().enumerate().map(|(e, p)| ((e + 1) as f64, p.0)),
                color.stroke_width(2),
            ))
            .map_err(err)?;
        if text {
            line.label(*name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

fn trace_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    traces: &Traces<'_>,
    paired: bool,
    left_out: usize,
    text: bool,
) -> Result<()> {
    let (lo, hi) = traces.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, m, s, _)| {
        let s = if s.is_finite() { *s } else { 0.0 };
        (a.min(m - s), b.max(m + s))
    });
    let (lo, hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    let pad = ((hi - lo) * 0.15).max(1e-6);
    let (ymin, ymax) = ((lo - pad).min(0.0), (hi + pad).max(if paired { pad } else { 0.0 }));
    let n = traces.len().max(1);
    let mut b = ChartBuilder::on(area);
    // More than 5 names do not fit side by side: written downwards.
    let upright = n > 5;
    let longest = traces.iter().map(|t| t.0.chars().count()).max().unwrap_or(0) as u32;
    let label_area = if !text {
        5
    } else if upright {
        36 + 7 * longest
    } else {
        40
    };
    b.margin(20).x_label_area_size(label_area).y_label_area_size(if text { 60 } else { 5 });
    if text {
        let title = if paired {
            "final tr(H) − baseline's, paired by seed (mean, 95 % CI)"
        } else {
            "final Hessian trace (mean ± sd over seeds)"
        };
        b.caption(title, ("sans-serif", 18));
        if paired && left_out > 0 {
            // In the panel's bottom margin, below the method names.
            let note = format!("({left_out} method(s) with fewer than 2 seeds not shown)");
            let y = area.dim_in_pixel().1 as i32 - 16;
            area.draw(&Text::new(note, (70, y), ("sans-serif", 12))).map_err(err)?;
        }
    }
    let mut chart = b.build_cartesian_2d(-0.5f64..(n as f64 - 0.5), ymin..ymax).map_err(err)?;
    if text {
        let names: Vec<String> = traces.iter().map(|t| t.0.to_string()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .x_label_style(if upright {
                ("sans-serif", 12).into_font().transform(FontTransform::Rotate90).into_text_style(area)
            } else {
                ("sans-serif", 11).into_text_style(area)
            })
            .y_desc(if paired { "Δ tr(H), eval mode, over the weights" } else { "tr(H), SEHT-H over the weights" })
            .draw()
            .map_err(err)?;
    }
    if paired {
        chart.draw_series(LineSeries::new([(-0.5, 0.0), (n as f64 - 0.5, 0.0)], BLACK.stroke_width(1))).map_err(err)?;
    }
    for (i, (_, m, s, c)) in traces.iter().enumerate() {
        let color = Palette99::pick(*c).to_rgba();
        let s = if s.is_finite() { *s } else { 0.0 };
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(i as f64, m - s, *m, m + s, color.stroke_width(2), 12)))
            .map_err(err)?;
        chart.draw_series(std::iter::once(Circle::new((i as f64, *m), 5, color.filled()))).map_err(err)?;
    }
    Ok(())
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    series: &Series<'_>,
    traces: Option<(&Traces<'_>, bool, usize)>,
    text: bool,
    caption: &str,
) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    match traces {
        None => accuracy_panel(&root, series, text, caption)?,
        Some((t, paired, left_out)) => {
            let (left, right) = root.split_horizontally(root.dim_in_pixel().0 * 11 / 20);
            accuracy_panel(&left, series, text, caption)?;
            trace_panel(&right, t, paired, left_out, text)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

/// Writes `<out>/<stem>.svg` and `.png`: test accuracy per epoch of the
/// baseline and the SEHT methods of `runs` (the paper's Figure 1), or, with
/// `with_traces`, of every method beside its final Hessian trace: the
/// difference to the baseline paired by seed with its 95 % confidence
/// interval ([`super::paired`]) where any method has two pairs or more (a
/// method with fewer is then left out of that panel, which says how many),
/// else mean ± sd over seeds. Only finished seeds are drawn (a method none of
/// whose seeds finished is not). Returns false when no DejaVu font was found
/// (the figure then has no text).
pub fn write(runs: &[MethodRuns], out: &Path, stem: &str, caption: &str, with_traces: bool) -> Result<bool> {
    let shown: Vec<&MethodRuns> = runs
        .iter()
        .filter(|r| with_traces || r.method == "baseline" || r.method.starts_with("seht"))
        .filter(|r| !r.metrics.is_empty())
        .collect();
    let series: Series<'_> = shown
        .iter()
        .map(|r| {
            let epochs = r.logs.iter().map(Vec::len).min().unwrap_or(0);
            let pts = (0..epochs)
                .map(|e| {
                    let xs: Vec<f64> = r.logs.iter().filter_map(|l| l[e].test.top1.map(|v| 100.0 * v)).collect();
                    let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    (xs.iter().sum::<f64>() / xs.len().max(1) as f64, lo, hi)
                })
                .collect();
            (r.method.as_str(), pts)
        })
        .collect();
    let differences = seht_protocol::report::paired::trace_differences(runs);
    // Paired wherever any method has two pairs or more; a method with fewer
    // (e.g. the convergence preset's one-seed paper-code arm) is then left
    // out of the trace panel, whose title says so.
    let paired = !differences.is_empty();
    let traces: Traces<'_> = shown
        .iter()
        .enumerate()
        .filter_map(|(c, r)| {
            if paired {
                let (_, d) = differences.iter().find(|(m, _)| m == &r.method)?;
                return Some((r.method.as_str(), d.mean, (d.ci.1 - d.ci.0) / 2.0, c));
            }
            let xs: Vec<f64> = r.metrics.iter().filter_map(|m| m.final_trace.as_ref().map(|t| t.mean)).collect();
            (!xs.is_empty()).then(|| {
                let (m, s) = seht_protocol::report::mean_std(&xs);
                (r.method.as_str(), m, s, c)
            })
        })
        .collect();
    let left_out = if paired { shown.iter().filter(|r| r.method != "baseline").count() - traces.len() } else { 0 };
    let traces = (with_traces && !traces.is_empty()).then_some((&traces, paired, left_out));
    let size = if traces.is_some() { (1200, 560) } else { (900, 560) };
    let text = register_font();
    draw(SVGBackend::new(&out.join(format!("{stem}.svg")), size).into_drawing_area(), &series, traces, text, caption)?;
    draw(
        BitMapBackend::new(&out.join(format!("{stem}.png")), size).into_drawing_area(),
        &series,
        traces,
        text,
        caption,
    )?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seht_protocol::report::example_runs::finished;

    fn runs(method: &str, tops: &[f64]) -> MethodRuns {
        let metrics: Vec<_> =
            tops.iter().enumerate().map(|(k, &t)| finished(&format!("d-{method}-s{k}"), t, None)).collect();
        let logs = metrics.iter().map(|m| vec![m.final_epoch.clone().expect("epoch")]).collect();
        MethodRuns { method: method.into(), metrics, logs, ..MethodRuns::default() }
    }

    #[test]
    fn a_table_of_our_own_draws_every_method_and_paired_trace_differences() {
        let dir = std::env::temp_dir().join(format!("xtask-figure-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let table = [
            runs("baseline", &[0.80, 0.85, 0.90]),
            runs("paper-code", &[0.80]),
            runs("sam", &[0.81, 0.87, 0.93]),
            runs("seht-h", &[0.8, 0.8, 0.8]),
        ];
        let text = write(&table, &dir, "f", "caption", true).expect("figure");
        let svg = std::fs::read_to_string(dir.join("f.svg")).expect("svg");
        assert!(dir.join("f.png").exists());
        if text {
            // SAM is not a SEHT method: the paper's Figure 1 leaves it out, a
            // table of our own shows it; the trace panel is paired by seed.
            assert!(svg.contains("\nsam\n") && svg.contains("\nseht-h\n"), "methods missing");
            // A one-seed method has no pairs: the panel stays paired, leaves
            // it out and says so (before, one such method turned the whole
            // panel into unpaired means).
            assert!(svg.contains("paired by seed"), "trace panel not paired");
            assert!(svg.contains("1 method(s) with fewer than 2 seeds not shown"), "left-out method not named");
        }
        let text = write(&table, &dir, "g", "caption", false).expect("figure");
        let svg = std::fs::read_to_string(dir.join("g.svg")).expect("svg");
        if text {
            assert!(!svg.contains("\nsam\n") && svg.contains("\nseht-h\n"), "Figure 1 shows the SEHT methods");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
