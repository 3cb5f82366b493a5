//! `cargo xtask estimator-figure CSV OUT`: draws the CSV written by
//! `seht-estimator`'s `estimator_comparison` example (synthetic spectra) or
//! by `seht-train`'s `real_hessian_estimators` (a trained network's `H` and
//! `G`, same columns) (mean relative error of
//! each trace estimator against the Hessian-vector products spent, one panel
//! per spectrum, log–log axes) as an SVG (or PNG, by `OUT`'s extension), and
//! prints the same numbers as a Markdown table. Where the CSV has a column
//! `reference_rel_se` (`large_model_estimators`: errors measured against a
//! Hutchinson reference), each panel also draws that relative standard
//! error as a dashed line: errors near or below it are not resolved.
//!
//! The example computes; this subcommand only reads its CSV and draws.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use plotters::prelude::*;

/// Arguments of `cargo xtask estimator-figure`.
#[derive(clap::Args)]
pub struct Args {
    /// The CSV written by `cargo run --release -p seht-estimator --example estimator_comparison -- CSV`.
    csv: PathBuf,
    /// The figure to write (`.svg` or `.png`).
    out: PathBuf,
}

/// One row of the CSV.
#[derive(Debug, Clone)]
struct Row {
    spectrum: String,
    n: usize,
    estimator: String,
    budget: usize,
    hvps: f64,
    seeds: usize,
    mean: f64,
    se: f64,
    rms: f64,
    reported: f64,
    /// The reference's own relative standard error, where the CSV has it.
    reference_se: Option<f64>,
}

fn parse(text: &str) -> Result<Vec<Row>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().context("empty CSV")?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).with_context(|| format!("no column {name}"));
    let idx: [usize; 10] = [
        col("spectrum")?,
        col("n")?,
        col("estimator")?,
        col("budget")?,
        col("hvps_mean")?,
        col("seeds")?,
        col("mean_rel_error")?,
        col("se_mean_rel_error")?,
        col("rms_rel_error")?,
        col("mean_reported_rel_error")?,
    ];
    let reference_col = header.iter().position(|h| *h == "reference_rel_se");
    lines
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let get = |k: usize| f.get(idx[k]).copied().with_context(|| format!("line {}: too few fields", i + 2));
            let num = |k: usize| -> Result<f64> {
                get(k)?.parse::<f64>().with_context(|| format!("line {}: field {} is not a number", i + 2, idx[k] + 1))
            };
            Ok(Row {
                spectrum: get(0)?.to_string(),
                n: num(1)? as usize,
                estimator: get(2)?.to_string(),
                budget: num(3)? as usize,
                hvps: num(4)?,
                seeds: num(5)? as usize,
                mean: num(6)?,
                se: num(7)?,
                rms: num(8)?,
                reported: num(9)?,
                reference_se: match reference_col {
                    Some(c) => Some(f.get(c).and_then(|x| x.parse::<f64>().ok()).with_context(|| {
                        format!("line {}: field {} (reference_rel_se) is not a number", i + 2, c + 1)
                    })?),
                    None => None,
                },
            })
        })
        .collect()
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the estimator figure: {e:?}")
}

fn caption(spectrum: &str) -> &str {
    match spectrum {
        "flat" => "flat: λᵢ = 3 − 2(i−1)/(n−1)",
        "poly" => "polynomial: λᵢ = i⁻²",
        "exp" => "exponential: λᵢ = 0.9^(i−1)",
        "hessian" => "trained ResNet: Hessian H (eval mode)",
        "gauss-newton" => "trained ResNet: Gauss–Newton G",
        "hessian-reference" => "ResNet 8-64: Hessian H (eval mode)",
        "gauss-newton-reference" => "ResNet 8-64: Gauss–Newton G",
        other => other,
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, plotters::coord::Shift>, rows: &[Row]) -> Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let mut spectra: Vec<&str> = Vec::new();
    for r in rows {
        if !spectra.contains(&r.spectrum.as_str()) {
            spectra.push(&r.spectrum);
        }
    }
    let areas = root.split_evenly((1, spectra.len().max(1)));
    for (area, spectrum) in areas.iter().zip(&spectra) {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.spectrum == *spectrum && r.mean > 0.0).collect();
        let (x_lo, x_hi) = rs.iter().fold((f64::INFINITY, 0f64), |(a, b), r| (a.min(r.hvps), b.max(r.hvps)));
        let floor = rs.iter().find_map(|r| r.reference_se);
        let (y_lo, y_hi) = rs.iter().fold((f64::INFINITY, 0f64), |(a, b), r| (a.min(r.mean), b.max(r.mean)));
        let (y_lo, y_hi) = floor.map_or((y_lo, y_hi), |f| (y_lo.min(f), y_hi.max(f)));
        if rs.is_empty() {
            continue;
        }
        let n = rs[0].n;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{} (n = {n})", caption(spectrum)), ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d((x_lo * 0.9..x_hi * 1.1).log_scale(), (y_lo * 0.5..y_hi * 2.0).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("Hessian-vector products")
            .y_desc("mean relative error")
            .x_labels(8)
            .y_labels(8)
            .light_line_style(WHITE.mix(0.0))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()
            .map_err(err)?;
        let mut by_est: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
        for r in &rs {
            by_est.entry(r.estimator.as_str()).or_default().push(r);
        }
        let order = ["hutchinson", "hutch++", "xtrace", "xnystrace"];
        let mut names: Vec<&str> = by_est.keys().copied().collect();
        names.sort_by_key(|e| order.iter().position(|o| o == e).unwrap_or(order.len()));
        for (i, name) in names.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let mut pts: Vec<(f64, f64)> = by_est[name].iter().map(|r| (r.hvps, r.mean)).collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        if let Some(f) = floor {
            let grey = RGBColor(110, 110, 110);
            let (a, b) = (x_lo * 0.9, x_hi * 1.1);
            // Dashes drawn as short segments, equally spaced on the log axis.
            let k = 24;
            let at = |t: f64| a * (b / a).powf(t);
            let dashes = (0..k).map(|i| (at(i as f64 / k as f64), at((i as f64 + 0.5) / k as f64)));
            chart
                .draw_series(dashes.map(|(x0, x1)| PathElement::new(vec![(x0, f), (x1, f)], grey.stroke_width(2))))
                .map_err(err)?
                .label("reference's s.e.")
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y)], grey.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

/// The Markdown table: one row per spectrum and budget, one column per estimator
/// (mean relative error ± its standard error; the products spent where they
/// differ from the budget).
fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut keys: Vec<(String, usize)> = Vec::new();
    for r in rows {
        let k = (r.spectrum.clone(), r.budget);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let ests = ["hutchinson", "hutch++", "xtrace", "xnystrace"];
    out.push_str("| spectrum | budget | Hutchinson | Hutch++ | XTrace | XNysTrace |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
    for (spectrum, budget) in keys {
        out.push_str(&format!("| {spectrum} | {budget} |"));
        for e in ests {
            match rows.iter().find(|r| r.spectrum == spectrum && r.budget == budget && r.estimator == e) {
                Some(r) => {
                    let spent = if (r.hvps - budget as f64).abs() > 0.05 {
                        format!(" ({:.0} HVPs)", r.hvps)
                    } else {
                        String::new()
                    };
                    out.push_str(&format!(" {:.2e} ± {:.1e}{spent} |", r.mean, r.se));
                }
                None => out.push_str(" – |"),
            }
        }
        out.push('\n');
    }
    let seeds = rows.first().map_or(0, |r| r.seeds);
    out.push_str(&format!(
        "\nMean relative error |tr̂ − tr|/tr over {seeds} seeds ± the standard error of that mean.\n\n\
         Each estimator's own error estimate (mean over seeds) divided by its actual RMS relative error:\n\n\
         | spectrum | budget | XTrace | XNysTrace |\n| --- | ---: | ---: | ---: |\n"
    ));
    for r in rows.iter().filter(|r| r.estimator == "xtrace") {
        let ratio = |q: &Row| format!("{:.2}", q.reported / q.rms);
        let x = rows.iter().find(|x| x.spectrum == r.spectrum && x.budget == r.budget && x.estimator == "xnystrace");
        // XNysTrace is absent where the matrix is indefinite (a loss Hessian).
        let x = x.map_or_else(|| "–".to_string(), ratio);
        out.push_str(&format!("| {} | {} | {} | {x} |\n", r.spectrum, r.budget, ratio(r)));
    }
    out
}

/// Runs the subcommand.
pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.csv).with_context(|| format!("reading {}", args.csv.display()))?;
    let rows = parse(&text).with_context(|| format!("parsing {}", args.csv.display()))?;
    if rows.is_empty() {
        bail!("{} has no rows", args.csv.display());
    }
    // Text is laid out with a registered TrueType font (DejaVu Sans), for SVG as for PNG.
    if !crate::figure::register_font() {
        bail!("no DejaVu Sans font found to lay out the figure's text (install fonts-dejavu-core)");
    }
    let size = (1500, 480);
    match args.out.extension().and_then(|e| e.to_str()) {
        Some("svg") => draw(SVGBackend::new(&args.out, size).into_drawing_area(), &rows)?,
        Some("png") => draw(BitMapBackend::new(&args.out, size).into_drawing_area(), &rows)?,
        _ => bail!("{}: the figure must end in .svg or .png", args.out.display()),
    }
    print!("{}", table(&rows));
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "spectrum,n,estimator,budget,hvps_mean,seeds,mean_rel_error,se_mean_rel_error,rms_rel_error,mean_reported_rel_error\n\
        poly,500,xtrace,20,20.0,30,1.0e-2,1.0e-3,1.2e-2,0.9e-2\n\
        poly,500,xnystrace,20,20.0,30,5.0e-3,4.0e-4,6.0e-3,3.0e-3\n";

    #[test]
    fn the_table_has_each_estimator_in_its_column_and_the_calibration_ratio() {
        let rows = parse(CSV).expect("valid CSV");
        assert_eq!(rows.len(), 2);
        let t = table(&rows);
        assert!(t.contains("| poly | 20 | – | – | 1.00e-2 ± 1.0e-3 | 5.00e-3 ± 4.0e-4 |"), "{t}");
        // reported / RMS: 0.9e-2 / 1.2e-2 and 3e-3 / 6e-3.
        assert!(t.contains("| poly | 20 | 0.75 | 0.50 |"), "{t}");
    }

    #[test]
    fn an_indefinite_matrix_without_xnystrace_keeps_its_calibration_row() {
        let csv = CSV.replace("poly,500,xnystrace", "hessian,500,xtrace").replace("poly,", "p,");
        let t = table(&parse(&csv).expect("valid CSV"));
        // reported / RMS of the hessian row: 3e-3 / 6e-3; no XNysTrace there.
        assert!(t.contains("| hessian | 20 | 0.50 | – |"), "{t}");
    }

    #[test]
    fn the_reference_error_column_is_optional_and_read_where_present() {
        assert!(parse(CSV).expect("valid CSV").iter().all(|r| r.reference_se.is_none()));
        let csv = CSV.replacen("mean_reported_rel_error", "mean_reported_rel_error,reference_rel_se", 1);
        let csv = csv.replace("0.9e-2\n", "0.9e-2,2e-2\n").replace("3.0e-3\n", "3.0e-3,2e-2\n");
        let rows = parse(&csv).expect("valid CSV");
        assert!(rows.iter().all(|r| r.reference_se == Some(2e-2)), "{rows:?}");
        let bad = csv.replace("0.9e-2,2e-2", "0.9e-2,x");
        assert!(parse(&bad).expect_err("not a number").to_string().contains("reference_rel_se"));
    }

    #[test]
    fn a_bad_field_names_its_line() {
        let bad = CSV.replace("1.0e-2,1.0e-3", "x,1.0e-3");
        let e = parse(&bad).expect_err("not a number");
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
