//! Relative error against the number of matrix–vector products for
//! Hutchinson, Hutch++ and XTrace on the Hessian `H`, and for XNysTrace and
//! Hutchinson on the Gauss–Newton matrix `G`, of a network too large to form
//! either matrix (issue 36, item 4b, the larger model): against a long
//! Hutchinson reference.
//!
//! 1. Trains (or, when its run folder is complete, reads back) the demo's
//!    model, a BatchNorm ResNet with widths 8-16-32-64 (one block per
//!    stage), for 3 epochs on the 8,000 Fashion-MNIST training images of
//!    `data/shipped`, through `seht_train::train` (the config is below: the
//!    demo baseline's settings).
//! 2. `H`: the Hessian of the mean cross-entropy over `--batches` training
//!    batches of `--batch-size` images, over the weights, in evaluation mode
//!    (`seht_train::analyze::model_hessian`, as `seht analyze`); `G`: the
//!    Gauss–Newton matrix of the same batches
//!    ([`seht_candle::GaussNewtonOperator`], exact products).
//! 3. The references: Hutchinson (Rademacher) with `--reference` probes on
//!    `H` (`probe_rng(10_000)`) and on `G` (`probe_rng(20_000)`), each with
//!    its standard error. For this network in evaluation mode `tr(H) =
//!    tr(G)` (docs/analysis/estimators.md), so the two references estimate
//!    the same number and check each other.
//! 4. For each seed `s < --seeds` and budget: Hutch++ and XTrace on `H`,
//!    XNysTrace on `G`, with `probe_rng(s)`. Hutchinson's estimate at budget
//!    `m` is the mean of the first `m` reference samples of chunk `s`
//!    (chunks of the largest budget), and is compared with the reference
//!    *without that chunk* (so it is never compared with itself).
//!
//! Writes `OUT` (one row per matrix, estimator, budget and seed: the
//! estimate, its own error estimate, the products spent, the reference it is
//! compared with and that reference's standard error) and `OUT` with
//! `.summary.csv` for `.csv` (the columns of `estimator_comparison`, read by
//! `cargo xtask estimator-figure`, plus `sd_rel`, the standard deviation of
//! the estimates over the seeds relative to the reference, the spread that
//! needs no reference, and `reference_rel_se`, the reference's relative
//! standard error, which bounds the errors that can be resolved).
//! `--summarise RAW.csv` rewrites the summary from a raw file without
//! computing anything.
//!
//! ```sh
//! RAYON_NUM_THREADS=2 cargo run --release -p seht-train --example large_model_estimators -- \
//!     docs/analysis/large-model-comparison.csv --seeds 3 --reference 400 --budgets 10,20,40,80 \
//!     [--batches 1] [--batch-size 128] [--work target/large-model] [--data-dir data/shipped]
//! cargo xtask estimator-figure docs/analysis/large-model-comparison.summary.csv docs/analysis/large-model-comparison.svg
//! ```

#[path = "common/trained_hessian.rs"]
mod trained_hessian;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use seht_candle::GaussNewtonOperator;
use seht_estimator::{
    BlockVec, HutchPlusPlus, HvpOperator, ProbeDistribution, Rademacher, SehtH, TraceEstimate, TraceEstimator,
    XNysTrace, XTrace, probe_rng, total_len,
};
use seht_train::analyze::MeanHessian;

const CONFIG: &str = r#"
name = "large-model-resnet"
seed = 0
epochs = 3

[data]
kind = "image"
dataset = "fashion-mnist"
dir = "fashion-mnist"
batch_size = 64
train_subset = 0
test_subset = 0
validation = 0
crop_padding = 0
hflip = true
workers = 1

[model]
kind = "resnet"
widths = [8, 16, 32, 64]
blocks = [1, 1, 1, 1]

[optim]
lr = 0.1
momentum = 0.9
weight_decay = 5e-4
clip_grad_norm = 5.0

[schedule]
kind = "cosine"

[regularizer]
kind = "baseline"

[final_trace]
batches = 2
probes = 4
"#;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Seconds per product with `op`, over `k` Rademacher products.
fn time_products<O: HvpOperator>(op: &O, k: usize) -> Res<f64>
where
    O::Error: 'static,
{
    let blocks = op.blocks().to_vec();
    let mut rng = probe_rng(999);
    let t = Instant::now();
    for _ in 0..k {
        let mut v = BlockVec::zeros(blocks.len());
        for (b, block) in blocks.iter().enumerate() {
            v.set(b, op.part_from_host(b, &Rademacher.sample(&mut rng, block.len))?);
        }
        op.hvp(&v)?;
    }
    Ok(t.elapsed().as_secs_f64() / k as f64)
}

/// One row of the raw output.
struct Row {
    matrix: String,
    estimator: String,
    budget: usize,
    seed: u64,
    estimate: f64,
    reported: Option<f64>,
    hvps: usize,
    reference: f64,
    reference_se: f64,
}

const RAW_HEADER: &str =
    "matrix,n,estimator,budget,seed,estimate,reported_std_error,hvps,reference,reference_std_error";

/// Reads a raw file written by this example: its rows and `d`.
fn read_raw(path: &str) -> Res<(Vec<Row>, usize)> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    let mut lines = text.lines();
    if lines.next() != Some(RAW_HEADER) {
        return Err(format!("{path}: not a raw file of this example (header {RAW_HEADER})").into());
    }
    let mut d = 0;
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || format!("{path} line {}: expected 10 fields of the header's kinds", i + 2);
        if f.len() != 10 {
            return Err(bad().into());
        }
        let num = |k: usize| f[k].parse::<f64>().map_err(|_| bad());
        d = f[1].parse().map_err(|_| bad())?;
        rows.push(Row {
            matrix: f[0].to_string(),
            estimator: f[2].to_string(),
            budget: f[3].parse().map_err(|_| bad())?,
            seed: f[4].parse().map_err(|_| bad())?,
            estimate: num(5)?,
            reported: if f[6].is_empty() { None } else { Some(num(6)?) },
            hvps: f[7].parse().map_err(|_| bad())?,
            reference: num(8)?,
            reference_se: num(9)?,
        });
    }
    Ok((rows, d))
}

/// The summary (see the module docs) of `rows`, one line per matrix,
/// estimator and budget.
fn summarise(rows: &[Row], d: usize) -> Res<String> {
    let mut summary = String::from(
        "spectrum,n,estimator,budget,hvps_mean,seeds,mean_rel_error,se_mean_rel_error,rms_rel_error,\
         mean_reported_rel_error,sd_rel,reference_rel_se\n",
    );
    let mut keys: Vec<(&str, &str, usize)> = Vec::new();
    for r in rows {
        let k = (r.matrix.as_str(), r.estimator.as_str(), r.budget);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let order = ["hutchinson", "hutch++", "xtrace", "xnystrace"];
    keys.sort_by_key(|&(matrix, est, m)| (matrix != "hessian", order.iter().position(|o| *o == est), m));
    for (matrix, est, m) in keys {
        let sel: Vec<&Row> =
            rows.iter().filter(|r| r.matrix == matrix && r.estimator == est && r.budget == m).collect();
        let k = sel.len() as f64;
        let rel: Vec<f64> = sel.iter().map(|r| (r.estimate - r.reference).abs() / r.reference.abs()).collect();
        let (mean, se) = mean_se(&rel);
        let rms = (rel.iter().map(|x| x * x).sum::<f64>() / k).sqrt();
        let rep = sel.iter().map(|r| r.reported.unwrap_or(f64::NAN) / r.reference.abs()).sum::<f64>() / k;
        let hvps = sel.iter().map(|r| r.hvps as f64).sum::<f64>() / k;
        let (_, est_se) = mean_se(&sel.iter().map(|r| r.estimate).collect::<Vec<_>>());
        let sd_rel = est_se * k.sqrt() / sel[0].reference.abs();
        let ref_se = sel.iter().map(|r| r.reference_se / r.reference.abs()).sum::<f64>() / k;
        writeln!(
            summary,
            "{matrix}-reference,{d},{est},{m},{hvps:.1},{},{mean:.6e},{se:.6e},{rms:.6e},{rep:.6e},{sd_rel:.6e},{ref_se:.6e}",
            sel.len()
        )?;
    }
    Ok(summary)
}

fn summary_path(out: &str) -> String {
    format!("{}.summary.csv", out.strip_suffix(".csv").unwrap_or(out))
}

fn mean_se(x: &[f64]) -> (f64, f64) {
    let k = x.len() as f64;
    let m = x.iter().sum::<f64>() / k;
    let var = x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (k - 1.0);
    (m, (var / k).sqrt())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(raw) = args.iter().position(|a| a == "--summarise").and_then(|i| args.get(i + 1)) {
        let (rows, d) = read_raw(raw)?;
        let path = summary_path(raw);
        std::fs::write(&path, summarise(&rows, d)?).map_err(|e| format!("writing {path}: {e}"))?;
        eprintln!("wrote {path}");
        return Ok(());
    }
    let out = args.first().filter(|a| !a.starts_with("--") && a.ends_with(".csv")).ok_or(
        "usage: large_model_estimators OUT.csv [--seeds S] [--reference R] [--budgets 10,20,40,80] [--batches B] \
         [--batch-size N] [--work DIR] [--data-dir DIR]",
    )?;
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let number = |name: &str, default: usize| -> Res<usize> {
        match value(name) {
            Some(v) => Ok(v.parse().map_err(|e| format!("{name} {v}: {e}"))?),
            None => Ok(default),
        }
    };
    let seeds = number("--seeds", 5)?;
    let reference_probes = number("--reference", 500)?;
    let batches = number("--batches", 1)?;
    let batch_size = number("--batch-size", 128)?;
    let budgets: Vec<usize> = value("--budgets")
        .map_or("10,20,40,80", String::as_str)
        .split(',')
        .map(|b| b.trim().parse::<usize>().map_err(|e| format!("--budgets {b}: {e}")))
        .collect::<Result<_, _>>()?;
    let work = PathBuf::from(value("--work").map_or("target/large-model", String::as_str));
    let data = PathBuf::from(value("--data-dir").map_or("data/shipped", String::as_str));
    let largest = budgets.iter().copied().max().ok_or("--budgets is empty")?;
    if seeds < 2 || budgets.iter().any(|&b| b < 4) {
        return Err("--seeds must be at least 2 and every budget at least 4 (XTrace's least)".into());
    }
    if reference_probes < seeds * largest + 2 {
        return Err(format!(
            "--reference {reference_probes}: Hutchinson's chunks need at least seeds × largest budget + 2 = {} probes",
            seeds * largest + 2
        )
        .into());
    }
    seht_candle::retain_freed_memory();
    let start = Instant::now();

    let mh = trained_hessian::train_then_hessian(
        CONFIG,
        "large_model_estimators.rs",
        (&work, data),
        (batches, batch_size),
        start,
    )?;
    let h = &mh.operator;
    let g_ops = mh.logits.iter().map(|z| GaussNewtonOperator::new(z, &mh.params)).collect::<Result<Vec<_>, _>>()?;
    let g = MeanHessian::new(g_ops)?;
    let d = total_len(h.blocks());
    let (th, tg) = (time_products(h, 3)?, time_products(&g, 3)?);
    println!(
        "d = {d} weights in {} tensors; {batches} batch(es) of {batch_size} (eval mode); one product: H {th:.2} s, G {tg:.2} s",
        mh.params.len()
    );

    // References: Hutchinson's samples, kept for the chunks.
    let t = Instant::now();
    let ref_h = SehtH::seht_h(reference_probes)?.estimate(h, &mut probe_rng(10_000))?;
    let ref_g = SehtH::seht_h(reference_probes)?.estimate(&g, &mut probe_rng(20_000))?;
    let describe = |name: &str, e: &TraceEstimate<_>| {
        let (m, se) = mean_se(&e.samples);
        let sd = se * (e.samples.len() as f64).sqrt();
        format!(
            "{name}: {m:.6} ± {se:.6} (relative s.e. {:.2e}; relative s.d. per probe {:.3})",
            se / m.abs(),
            sd / m.abs()
        )
    };
    println!(
        "references ({reference_probes} Hutchinson probes each, {:.0} s): {}; {}",
        t.elapsed().as_secs_f64(),
        describe("tr(H)", &ref_h),
        describe("tr(G)", &ref_g)
    );

    let mut rows = Vec::new();
    // Chunk s of Hutchinson's samples at budget m, and the reference without that chunk.
    let chunk = |samples: &[f64], s: usize, m: usize| -> (f64, (f64, f64)) {
        let (lo, hi) = (s * largest, s * largest + m);
        let est = samples[lo..hi].iter().sum::<f64>() / m as f64;
        let rest: Vec<f64> = samples
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < lo || *i >= s * largest + largest)
            .map(|(_, x)| *x)
            .collect();
        (est, mean_se(&rest))
    };
    let (full_h, full_g) = (mean_se(&ref_h.samples), mean_se(&ref_g.samples));
    for s in 0..seeds {
        let t = Instant::now();
        for &m in &budgets {
            for (matrix, samples) in [("hessian", &ref_h.samples), ("gauss-newton", &ref_g.samples)] {
                let (est, (reference, reference_se)) = chunk(samples, s, m);
                let se = mean_se(&samples[s * largest..s * largest + m]).1;
                rows.push(Row {
                    matrix: matrix.into(),
                    estimator: "hutchinson".into(),
                    budget: m,
                    seed: s as u64,
                    estimate: est,
                    reported: Some(se),
                    hvps: m,
                    reference,
                    reference_se,
                });
            }
            let e = HutchPlusPlus::with_budget(m)?.estimate(h, &mut probe_rng(s as u64))?;
            rows.push(Row {
                matrix: "hessian".into(),
                estimator: "hutch++".into(),
                budget: m,
                seed: s as u64,
                estimate: e.mean,
                reported: None,
                hvps: e.hvps,
                reference: full_h.0,
                reference_se: full_h.1,
            });
            let e = XTrace::with_budget(m)?.estimate(h, &mut probe_rng(s as u64))?;
            rows.push(Row {
                matrix: "hessian".into(),
                estimator: "xtrace".into(),
                budget: m,
                seed: s as u64,
                estimate: e.mean,
                reported: e.std_error,
                hvps: e.hvps,
                reference: full_h.0,
                reference_se: full_h.1,
            });
            let e = XNysTrace::with_budget(m)?.estimate(&g, &mut probe_rng(s as u64))?;
            rows.push(Row {
                matrix: "gauss-newton".into(),
                estimator: "xnystrace".into(),
                budget: m,
                seed: s as u64,
                estimate: e.mean,
                reported: e.std_error,
                hvps: e.hvps,
                reference: full_g.0,
                reference_se: full_g.1,
            });
        }
        eprintln!(
            "seed {s} done in {:.0} s ({:.0} s so far)",
            t.elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }

    let mut raw = format!("{RAW_HEADER}\n");
    for r in &rows {
        let rep = r.reported.map_or(String::new(), |x| format!("{x:.9e}"));
        writeln!(
            raw,
            "{},{d},{},{},{},{:.9e},{rep},{},{:.9e},{:.9e}",
            r.matrix, r.estimator, r.budget, r.seed, r.estimate, r.hvps, r.reference, r.reference_se
        )?;
    }
    std::fs::write(out, raw).map_err(|e| format!("writing {out}: {e}"))?;
    let summary_path = summary_path(out);
    std::fs::write(&summary_path, summarise(&rows, d)?).map_err(|e| format!("writing {summary_path}: {e}"))?;
    eprintln!("wrote {out} and {summary_path} in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
