//! Relative error against the number of Hessian-vector products for
//! Hutchinson (SEHT-H), Hutch++, XTrace and XNysTrace on dense positive
//! semi-definite matrices with three synthetic spectra (issue 36, item 4a):
//!
//! | spectrum | eigenvalues, `i = 1 … n` |
//! | --- | --- |
//! | `flat` | `λᵢ = 3 − 2(i − 1)/(n − 1)` (all in `[1, 3]`) |
//! | `poly` | `λᵢ = i⁻²` |
//! | `exp` | `λᵢ = 0.9^(i−1)` |
//!
//! Each matrix is `U diag(λ) Uᵀ` with `U` a random orthonormal basis
//! (Gram–Schmidt of a seeded Gaussian matrix), so its diagonal is not its
//! spectrum. Every estimator gets the same budgets and the same seeds
//! (`probe_rng(seed)`, seeds `0 … S−1`), and the CSV has one row per spectrum,
//! estimator and budget with the mean and RMS relative error `|tr̂ − tr|/tr`
//! over the seeds, the standard error of that mean, the products actually
//! spent (XTrace spends `m + rank(HΩ) ≤` its budget) and the mean relative
//! error the estimator reported about itself (its `std_error`).
//!
//! ```sh
//! cargo run --release -p seht-estimator --example estimator_comparison -- out.csv [--n 1000] [--seeds 30]
//! ```

use std::fmt::Write as _;
use std::time::Instant;

use seht_estimator::{
    DenseOperator, Gaussian, HutchPlusPlus, ProbeDistribution, SehtH, TraceEstimate, TraceEstimator, XNysTrace, XTrace,
    probe_rng,
};

const BUDGETS: [usize; 8] = [10, 20, 30, 50, 80, 120, 160, 200];
const ESTIMATORS: [&str; 4] = ["hutchinson", "hutch++", "xtrace", "xnystrace"];

fn spectrum(name: &str, n: usize) -> Vec<f64> {
    (1..=n)
        .map(|i| match name {
            "flat" => 3.0 - 2.0 * (i - 1) as f64 / (n - 1) as f64,
            "poly" => (i as f64).powi(-2),
            _ => 0.9f64.powi(i as i32 - 1),
        })
        .collect()
}

/// `U diag(λ) Uᵀ` with `U` from Gram–Schmidt (twice) of a seeded Gaussian matrix.
fn matrix(eigs: &[f64], seed: u64) -> Result<DenseOperator, seht_estimator::Error> {
    let n = eigs.len();
    let mut rng = probe_rng(seed);
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(n);
    while cols.len() < n {
        let mut c = Gaussian.sample(&mut rng, n);
        for _ in 0..2 {
            for q in &cols {
                let a: f64 = q.iter().zip(&c).map(|(x, y)| x * y).sum();
                c.iter_mut().zip(q).for_each(|(x, qi)| *x -= a * qi);
            }
        }
        let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        c.iter_mut().for_each(|x| *x /= norm);
        cols.push(c);
    }
    // a_ij = Σ_k λ_k u_ik u_jk, with u_ik = cols[k][i].
    let mut a = vec![0.0; n * n];
    for (k, c) in cols.iter().enumerate() {
        for i in 0..n {
            let li = eigs[k] * c[i];
            for j in 0..=i {
                a[i * n + j] += li * c[j];
            }
        }
    }
    for i in 0..n {
        for j in 0..i {
            a[j * n + i] = a[i * n + j];
        }
    }
    DenseOperator::single_block(n, a)
}

fn estimate(
    name: &str,
    budget: usize,
    op: &DenseOperator,
    seed: u64,
) -> Result<TraceEstimate<f64>, seht_estimator::Error> {
    let mut rng = probe_rng(seed);
    match name {
        "hutchinson" => SehtH::seht_h(budget)?.estimate(op, &mut rng),
        "hutch++" => HutchPlusPlus::with_budget(budget)?.estimate(op, &mut rng),
        "xtrace" => XTrace::with_budget(budget)?.estimate(op, &mut rng),
        _ => XNysTrace::with_budget(budget)?.estimate(op, &mut rng),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args.first().filter(|a| !a.starts_with("--")).ok_or(
        "usage: estimator_comparison OUT.csv [--n N] [--seeds S]  (writes the CSV of relative errors to OUT.csv)",
    )?;
    let flag = |name: &str, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        match args.iter().position(|a| a == name) {
            Some(i) => {
                let v = args.get(i + 1).ok_or_else(|| format!("{name} needs a value"))?;
                Ok(v.parse().map_err(|e| format!("{name} {v}: {e}"))?)
            }
            None => Ok(default),
        }
    };
    let n = flag("--n", 1000)?;
    let seeds = flag("--seeds", 30)? as u64;
    if n < *BUDGETS.iter().max().unwrap_or(&1) || seeds < 2 {
        return Err(format!("--n must be at least {} and --seeds at least 2", BUDGETS[BUDGETS.len() - 1]).into());
    }
    let mut csv = String::from(
        "spectrum,n,estimator,budget,hvps_mean,seeds,mean_rel_error,se_mean_rel_error,rms_rel_error,mean_reported_rel_error\n",
    );
    let start = Instant::now();
    for (s, name) in ["flat", "poly", "exp"].iter().enumerate() {
        let op = matrix(&spectrum(name, n), 100 + s as u64)?;
        let tr = op.trace();
        for est in ESTIMATORS {
            for budget in BUDGETS {
                let (mut rel, mut reported, mut hvps) = (Vec::new(), Vec::new(), 0usize);
                for seed in 0..seeds {
                    let e = estimate(est, budget, &op, seed)?;
                    rel.push((e.mean - tr).abs() / tr);
                    reported.push(e.std_error.unwrap_or(f64::NAN) / tr);
                    hvps += e.hvps;
                }
                let k = rel.len() as f64;
                let mean = rel.iter().sum::<f64>() / k;
                let sd = (rel.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0)).sqrt();
                let rms = (rel.iter().map(|x| x * x).sum::<f64>() / k).sqrt();
                let rep = reported.iter().sum::<f64>() / k;
                writeln!(
                    csv,
                    "{name},{n},{est},{budget},{:.1},{seeds},{mean:.6e},{:.6e},{rms:.6e},{rep:.6e}",
                    hvps as f64 / k,
                    sd / k.sqrt()
                )?;
            }
            eprintln!("{name:>4} {est:<10} done ({:.0} s)", start.elapsed().as_secs_f64());
        }
    }
    std::fs::write(out, csv).map_err(|e| format!("writing {out}: {e}"))?;
    eprintln!("wrote {out} ({} s)", start.elapsed().as_secs());
    Ok(())
}
