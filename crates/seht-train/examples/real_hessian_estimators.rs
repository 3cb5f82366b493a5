//! Relative error against the number of Hessian-vector products for
//! Hutchinson (SEHT-H), Hutch++ and XTrace on the exact Hessian `H` of a
//! trained network, and for all four (XNysTrace included) on its exact
//! Gauss–Newton matrix `G` (issue 36, item 4b).
//!
//! 1. Trains (or, when its run folder is complete, reads back) a small
//!    BatchNorm ResNet (widths 4-4-8-8, one block per stage) for 5 epochs on
//!    the 3,000 training images of the Fashion-MNIST subset shipped in
//!    `data/shipped`, through `seht_train::train` (the config is below).
//! 2. Forms `H`, the Hessian of the mean cross-entropy over `--batches`
//!    training batches of `--batch-size` images over the weights (BatchNorm
//!    and biases excluded, as `seht analyze`), in evaluation mode, column by
//!    column from `d` unit-vector products (`seht_train::analyze::model_hessian`),
//!    then symmetrises it (the largest asymmetry is printed).
//! 3. Forms `G = (1/B) Σ_b (1/N) Σ_n J_nᵀ(diag p_n − p_n p_nᵀ)J_n` on the
//!    same batches, `J_n` row by row (one backward pass per logit).
//! 4. Prints what the spectra look like (the 50 eigenvalues largest in
//!    magnitude and the extreme ones, by Lanczos), and writes the CSV of
//!    `estimator_comparison` (seht-estimator's example for synthetic
//!    spectra): one row per operator (`hessian`, `gauss-newton`), estimator
//!    and budget, with the mean and RMS of `|tr̂ − tr|/|tr|` over the seeds
//!    (`probe_rng(0 … S−1)`, the same for every estimator), the standard
//!    error of that mean, the products spent, and the mean relative error
//!    the estimator reported about itself.
//!
//! `H` and `G` are kept in the work folder (`d²` f64 each, 64 MB at
//! `d = 2820`) and read back by a later run with the same batches.
//!
//! ```sh
//! RAYON_NUM_THREADS=1 cargo run --release -p seht-train --example real_hessian_estimators -- \
//!     docs/analysis/real-hessian-comparison.csv [--seeds 30] [--batches 2] [--batch-size 64] [--work target/real-hessian]
//! cargo xtask estimator-figure docs/analysis/real-hessian-comparison.csv docs/analysis/real-hessian-comparison.svg
//! ```

#[path = "common/trained_hessian.rs"]
mod trained_hessian;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{D, DType, Tensor};
use std::convert::Infallible;

use seht_estimator::{
    Block, BlockVec, HutchPlusPlus, HvpOperator, Lanczos, ProbeRng, SehtH, TraceEstimate, TraceEstimator, Which,
    XNysTrace, XTrace, probe_rng, total_len,
};

const BUDGETS: [usize; 8] = [10, 20, 30, 50, 80, 120, 160, 200];

const CONFIG: &str = r#"
name = "real-hessian-resnet"
seed = 0
epochs = 5

[data]
kind = "image"
dataset = "fashion-mnist"
dir = "fashion-mnist"
batch_size = 32
train_subset = 0
test_subset = 0
validation = 0
crop_padding = 0
hflip = false
workers = 1

[model]
kind = "resnet"
widths = [4, 4, 8, 8]
blocks = [1, 1, 1, 1]

[optim]
lr = 0.02
momentum = 0.9
weight_decay = 5e-4
clip_grad_norm = 5.0

[schedule]
kind = "cosine"

[regularizer]
kind = "baseline"

[final_trace]
batches = 1
probes = 2
"#;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// A dense symmetric matrix as one-block operator, with a matrix-vector
/// product in eight independent partial sums (vectorisable, unlike
/// `seht_estimator::DenseOperator`'s reference loop: about 1.2 against 0.3
/// GMAC/s on the loaded machine of the measurement, which matters for the
/// ~10⁵ products of `d = 2820` the comparison spends).
struct Matrix {
    n: usize,
    a: Vec<f64>,
    blocks: Vec<Block>,
}

impl Matrix {
    fn new(n: usize, a: Vec<f64>) -> Self {
        Self { n, a, blocks: vec![Block::new("all", n)] }
    }

    fn entry(&self, i: usize, j: usize) -> f64 {
        self.a[i * self.n + j]
    }

    fn trace(&self) -> f64 {
        (0..self.n).map(|i| self.entry(i, i)).sum()
    }

    fn frobenius_sq(&self) -> f64 {
        self.a.iter().map(|x| x * x).sum()
    }

    fn diag_sq(&self) -> f64 {
        (0..self.n).map(|i| self.entry(i, i).powi(2)).sum()
    }

    fn matvec(&self, x: &[f64]) -> Vec<f64> {
        self.a
            .chunks_exact(self.n)
            .map(|row| {
                let mut acc = [0.0f64; 8];
                let (rc, xc) = (row.chunks_exact(8), x.chunks_exact(8));
                let tail: f64 = rc.remainder().iter().zip(xc.remainder()).map(|(a, b)| a * b).sum();
                for (r, v) in rc.zip(xc) {
                    for k in 0..8 {
                        acc[k] += r[k] * v[k];
                    }
                }
                acc.iter().sum::<f64>() + tail
            })
            .collect()
    }

    fn flat(&self, v: &BlockVec<Vec<f64>>) -> Vec<f64> {
        v.get(0).cloned().unwrap_or_else(|| vec![0.0; self.n])
    }
}

impl HvpOperator for Matrix {
    type Part = Vec<f64>;
    type Scalar = f64;
    type Error = Infallible;

    fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn part_from_host(&self, _block: usize, values: &[f64]) -> Result<Vec<f64>, Infallible> {
        Ok(values.to_vec())
    }

    fn part_to_host(&self, _block: usize, part: &Vec<f64>) -> Result<Vec<f64>, Infallible> {
        Ok(part.clone())
    }

    fn hvp(&self, v: &BlockVec<Vec<f64>>) -> Result<BlockVec<Vec<f64>>, Infallible> {
        Ok(BlockVec::from_parts(vec![Some(self.matvec(&self.flat(v)))]))
    }

    fn quadratic_form(&self, v: &BlockVec<Vec<f64>>) -> Result<f64, Infallible> {
        let x = self.flat(v);
        Ok(self.matvec(&x).iter().zip(&x).map(|(a, b)| a * b).sum())
    }

    fn scalar_value(&self, s: &f64) -> Result<f64, Infallible> {
        Ok(*s)
    }

    fn weighted_sum(&self, terms: &[(f64, f64)]) -> Result<f64, Infallible> {
        Ok(terms.iter().map(|(c, s)| c * s).sum())
    }

    fn constant(&self, value: f64) -> Result<f64, Infallible> {
        Ok(value)
    }
}

/// Reads `path` (little-endian f64) if it holds `len` numbers.
fn read_cache(path: &Path, len: usize) -> Option<Vec<f64>> {
    let bytes = std::fs::read(path).ok()?;
    (bytes.len() == 8 * len)
        .then(|| bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8]))).collect())
}

fn write_cache(path: &Path, a: &[f64]) -> Res<()> {
    let bytes: Vec<u8> = a.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

/// `H` as a dense `d × d` matrix (row-major), from `d` unit-vector products.
fn dense_hessian<O: HvpOperator>(op: &O) -> Res<Vec<f64>> {
    let blocks = op.blocks().to_vec();
    let d = total_len(&blocks);
    let mut h = vec![0.0; d * d];
    let t0 = Instant::now();
    let mut col = 0;
    for (b, block) in blocks.iter().enumerate() {
        for i in 0..block.len {
            let mut e = vec![0.0; block.len];
            e[i] = 1.0;
            let mut v = BlockVec::zeros(blocks.len());
            v.set(b, op.part_from_host(b, &e)?);
            let hv = op.hvp(&v)?;
            let mut row = 0;
            for (k, part) in hv.present() {
                for x in op.part_to_host(k, part)? {
                    h[row * d + col] = x;
                    row += 1;
                }
            }
            col += 1;
            if col % 500 == 0 {
                eprintln!("  H: {col}/{d} columns, {:.0} s", t0.elapsed().as_secs_f64());
            }
        }
    }
    Ok(h)
}

/// Symmetrises `a` in place; returns `max|a − aᵀ| / max|a|`.
fn symmetrise(a: &mut [f64], d: usize) -> f64 {
    let (mut asym, mut big) = (0.0f64, 0.0f64);
    for i in 0..d {
        for j in 0..i {
            let (x, y) = (a[i * d + j], a[j * d + i]);
            asym = asym.max((x - y).abs());
            a[i * d + j] = 0.5 * (x + y);
            a[j * d + i] = 0.5 * (x + y);
        }
        for j in 0..=i {
            big = big.max(a[i * d + j].abs());
        }
    }
    asym / big
}

/// `G = (1/B) Σ_b (1/N_b) Σ_n J_nᵀ(diag p_n − p_n p_nᵀ)J_n` over `params`.
fn dense_gauss_newton(logits: &[Tensor], params: &[seht_candle::Param]) -> Res<Vec<f64>> {
    let d: usize = params.iter().map(|p| p.var.elem_count()).sum();
    let mut g = vec![0.0; d * d];
    let t0 = Instant::now();
    for z in logits {
        let (n, c) = z.dims2()?;
        let p = candle_nn::ops::softmax(&z.detach().to_dtype(DType::F64)?, D::Minus1)?.to_vec2::<f64>()?;
        let scale = 1.0 / (n as f64 * logits.len() as f64);
        for (row, p_row) in p.iter().enumerate() {
            // J_n, one row per class.
            let mut j = Vec::with_capacity(c);
            for k in 0..c {
                let grads = seht_candle::backward_no_graph(&z.get(row)?.get(k)?)?;
                let mut flat = Vec::with_capacity(d);
                for prm in params {
                    match grads.get(prm.var.as_tensor()) {
                        Some(t) => flat.extend(t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?),
                        None => flat.extend(std::iter::repeat_n(0.0, prm.var.elem_count())),
                    }
                }
                j.push(flat);
            }
            // M = (diag p − p pᵀ) J_n, then G += scale · J_nᵀ M.
            let mean: Vec<f64> = (0..d).map(|i| (0..c).map(|k| p_row[k] * j[k][i]).sum()).collect();
            for k in 0..c {
                let m: Vec<f64> = (0..d).map(|i| scale * p_row[k] * (j[k][i] - mean[i])).collect();
                for (a, ja) in j[k].iter().enumerate() {
                    if *ja == 0.0 {
                        continue;
                    }
                    let ga = &mut g[a * d..(a + 1) * d];
                    ga.iter_mut().zip(&m).for_each(|(x, y)| *x += ja * y);
                }
            }
        }
        eprintln!("  G: batch done, {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(g)
}

/// The `k` eigenvalues largest in magnitude, and the extreme ones
/// (Lanczos with full reorthogonalisation, relative residual 1e-8).
struct Extremes {
    by_magnitude: Vec<f64>,
    min: f64,
    max: f64,
}

fn extremes(op: &Matrix, k: usize) -> Res<Extremes> {
    let run = |which: Which, k: usize| -> Res<Vec<f64>> {
        let e = Lanczos::new(k, 4 * k + 60, 1e-8)?.which(which).eigenpairs(op, &mut probe_rng(99))?;
        if !e.converged {
            eprintln!("  Lanczos ({which:?}, k = {k}) stopped at {} steps before its tolerance", e.steps);
        }
        Ok(e.pairs.iter().map(|p| p.value).collect())
    };
    let by_magnitude = run(Which::LargestMagnitude, k)?;
    let min = run(Which::Smallest, 1)?[0];
    let max = run(Which::Largest, 1)?[0];
    Ok(Extremes { by_magnitude, min, max })
}

/// A few numbers that decide how hard a trace is to estimate.
fn describe(name: &str, op: &Matrix, e: &Extremes) -> String {
    let tr = op.trace();
    let fro = op.frobenius_sq();
    let top = |k: usize| e.by_magnitude.iter().take(k).map(|x| x * x).sum::<f64>() / fro;
    let hutch_sd = (2.0 * (fro - op.diag_sq())).sqrt() / tr.abs();
    let neg = e.by_magnitude.iter().filter(|x| **x < 0.0).count();
    format!(
        "{name}: d = {}, tr = {tr:.6e}, ‖·‖_F = {:.6e}, λ_max = {:.4e}, λ_min = {:.4e}; share of ‖·‖_F² in the top \
         1 / 10 / {} eigenvalues by magnitude: {:.3} / {:.3} / {:.3} ({neg} of those {} negative); sum of the top \
         10 by magnitude / tr = {:.3}; Hutchinson's relative standard deviation per probe \
         √(2(‖A‖_F² − Σaᵢᵢ²))/|tr| = {hutch_sd:.3}",
        op.n,
        fro.sqrt(),
        e.max,
        e.min,
        e.by_magnitude.len(),
        top(1),
        top(10),
        top(e.by_magnitude.len()),
        e.by_magnitude.len(),
        e.by_magnitude.iter().take(10).sum::<f64>() / tr,
    )
}

fn estimate(name: &str, budget: usize, op: &Matrix, rng: &mut ProbeRng) -> Res<TraceEstimate<f64>> {
    Ok(match name {
        "hutchinson" => SehtH::seht_h(budget)?.estimate(op, rng)?,
        "hutch++" => HutchPlusPlus::with_budget(budget)?.estimate(op, rng)?,
        "xtrace" => XTrace::with_budget(budget)?.estimate(op, rng)?,
        _ => XNysTrace::with_budget(budget)?.estimate(op, rng)?,
    })
}

fn compare(csv: &mut String, operator: &str, op: &Matrix, estimators: &[&str], seeds: u64) -> Res<()> {
    let (n, tr) = (op.n, op.trace());
    for est in estimators {
        let t0 = Instant::now();
        for budget in BUDGETS {
            let (mut rel, mut reported, mut hvps) = (Vec::new(), Vec::new(), 0usize);
            for seed in 0..seeds {
                let e = estimate(est, budget, op, &mut probe_rng(seed))?;
                rel.push((e.mean - tr).abs() / tr.abs());
                reported.push(e.std_error.unwrap_or(f64::NAN) / tr.abs());
                hvps += e.hvps;
            }
            let k = rel.len() as f64;
            let mean = rel.iter().sum::<f64>() / k;
            let sd = (rel.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
            let rms = (rel.iter().map(|x| x * x).sum::<f64>() / k).sqrt();
            let rep = reported.iter().sum::<f64>() / k;
            writeln!(
                csv,
                "{operator},{n},{est},{budget},{:.1},{seeds},{mean:.6e},{:.6e},{rms:.6e},{rep:.6e}",
                hvps as f64 / k,
                sd / k.sqrt()
            )?;
        }
        eprintln!("  {operator} {est}: {:.0} s", t0.elapsed().as_secs_f64());
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().filter(|a| !a.starts_with("--")).ok_or(
        "usage: real_hessian_estimators OUT.csv [--seeds S] [--batches B] [--batch-size N] [--work DIR] [--data-dir DIR]",
    )?;
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1));
    let number = |name: &str, default: usize| -> Res<usize> {
        match value(name) {
            Some(v) => Ok(v.parse().map_err(|e| format!("{name} {v}: {e}"))?),
            None => Ok(default),
        }
    };
    let seeds = number("--seeds", 30)? as u64;
    let batches = number("--batches", 2)?;
    let batch_size = number("--batch-size", 64)?;
    let work = PathBuf::from(value("--work").map_or("target/real-hessian", String::as_str));
    let data = PathBuf::from(value("--data-dir").map_or("data/shipped", String::as_str));
    if seeds < 2 {
        return Err("--seeds must be at least 2".into());
    }
    seht_candle::retain_freed_memory();
    let start = Instant::now();

    let mh = trained_hessian::train_then_hessian(
        CONFIG,
        "real_hessian_estimators.rs",
        (&work, data),
        (batches, batch_size),
        start,
    )?;
    let d = total_len(mh.operator.blocks());
    eprintln!("H over {} weight tensors, d = {d}, {batches} batches of {batch_size} (eval mode)", mh.params.len());
    // H and G are kept in the work folder (d² f64 each), keyed by the batches.
    let cache = |m: &str| work.join(format!("{m}-{batches}x{batch_size}.f64"));
    let h = match read_cache(&cache("hessian"), d * d) {
        Some(h) => h,
        None => {
            let t = Instant::now();
            let mut h = dense_hessian(&mh.operator)?;
            let asym = symmetrise(&mut h, d);
            eprintln!("H formed in {:.0} s; max|H − Hᵀ|/max|H| = {asym:.2e}", t.elapsed().as_secs_f64());
            write_cache(&cache("hessian"), &h)?;
            h
        }
    };
    let g = match read_cache(&cache("gauss-newton"), d * d) {
        Some(g) => g,
        None => {
            let t = Instant::now();
            let mut g = dense_gauss_newton(&mh.logits, &mh.params)?;
            let g_asym = symmetrise(&mut g, d);
            eprintln!("G formed in {:.0} s; max|G − Gᵀ|/max|G| = {g_asym:.2e}", t.elapsed().as_secs_f64());
            write_cache(&cache("gauss-newton"), &g)?;
            g
        }
    };
    let hop = Matrix::new(d, h);
    let gop = Matrix::new(d, g);

    let t = Instant::now();
    for (name, op) in [("hessian", &hop), ("gauss-newton", &gop)] {
        let e = extremes(op, 50)?;
        println!("{}", describe(name, op, &e));
    }
    println!(
        "diag(H) vs diag(G): max |hᵢᵢ − gᵢᵢ| / max |hᵢᵢ| = {:.2e} (spectra in {:.0} s)",
        (0..d).map(|i| (hop.entry(i, i) - gop.entry(i, i)).abs()).fold(0.0, f64::max)
            / (0..d).map(|i| hop.entry(i, i).abs()).fold(0.0, f64::max),
        t.elapsed().as_secs_f64()
    );

    let mut csv = String::from(
        "spectrum,n,estimator,budget,hvps_mean,seeds,mean_rel_error,se_mean_rel_error,rms_rel_error,mean_reported_rel_error\n",
    );
    compare(&mut csv, "hessian", &hop, &["hutchinson", "hutch++", "xtrace"], seeds)?;
    compare(&mut csv, "gauss-newton", &gop, &["hutchinson", "hutch++", "xtrace", "xnystrace"], seeds)?;
    std::fs::write(out, csv).map_err(|e| format!("writing {out}: {e}"))?;
    eprintln!("wrote {out} in {:.0} s", start.elapsed().as_secs_f64());
    Ok(())
}
