#![allow(missing_docs)] // criterion's macros generate undocumented items
//! Estimate-only traces (detached: no penalty gradient) against a plain step,
//! per model: SEHT-H K = 1, 5; SEHT-D p = 0.01, 0.05 (K = 1); Hutch++ with 6
//! HVPs; XTrace, Hutchinson's diagonal and XDiag with 6 HVPs (XNysTrace
//! needs a positive semi-definite operator, which a network's Hessian is
//! not). SEHT-D draws a fresh layer selection every iteration, so criterion's
//! mean is its expected cost over draws (a draw that selects nothing costs a
//! forward pass).
//!
//! And every trace and diagonal estimator on a dense positive semi-definite
//! `1000 × 1000` matrix with 30 products (group `estimate.dense`): there the
//! products are cheap (`n²` flops each) and the host work of the
//! exchangeable estimators (QR, leave-one-out bases: `O(nm²)`) shows.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use seht_bench::rng;
use seht_estimator::{
    DenseOperator, Gaussian, HutchPlusPlus, HutchinsonDiagonal, ProbeDistribution, Reading, SehtD, SehtH,
    TraceEstimator, XDiag, XNysTrace, XTrace, probe_rng,
};

fn estimate(c: &mut Criterion) {
    common::each_model(c, "estimate", |g, w, _| {
        let mut r = rng(1);
        for k in [1usize, 5] {
            let est = SehtH::seht_h(k).expect("cfg");
            g.bench_function(format!("estimate_seht_h_k{k}"), |b| {
                b.iter(|| w.estimate(&est, &mut r).expect("estimate"))
            });
        }
        for p in [0.01, 0.05] {
            let est = SehtD::new(1, p, Reading::Unbiased).expect("cfg");
            g.bench_function(format!("estimate_seht_d_p{p}"), |b| {
                b.iter(|| w.estimate(&est, &mut r).expect("estimate"))
            });
        }
        let hpp = HutchPlusPlus::with_budget(6).expect("cfg");
        g.bench_function("estimate_hutchpp_m6", |b| b.iter(|| w.estimate(&hpp, &mut r).expect("estimate")));
        let xtrace = XTrace::with_budget(6).expect("cfg");
        g.bench_function("estimate_xtrace_m6", |b| {
            b.iter(|| w.measure(|op| Ok(xtrace.estimate(op, &mut r)?.hvps)).expect("estimate"))
        });
        let diag = HutchinsonDiagonal::rademacher(6).expect("cfg");
        g.bench_function("diagonal_hutchinson_m6", |b| {
            b.iter(|| w.measure(|op| Ok(diag.estimate(op, &mut r)?.hvps)).expect("estimate"))
        });
        let xdiag = XDiag::with_budget(6).expect("cfg");
        g.bench_function("diagonal_xdiag_m6", |b| {
            b.iter(|| w.measure(|op| Ok(xdiag.estimate(op, &mut r)?.hvps)).expect("estimate"))
        });
    });
}

/// `A = BBᵀ/n`, `B` an `n × n` Gaussian matrix: dense, positive semi-definite.
fn dense_psd(n: usize) -> DenseOperator {
    let b = Gaussian.sample(&mut probe_rng(3), n * n);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v: f64 = b[i * n..(i + 1) * n].iter().zip(&b[j * n..(j + 1) * n]).map(|(x, y)| x * y).sum();
            a[i * n + j] = v / n as f64;
            a[j * n + i] = v / n as f64;
        }
    }
    DenseOperator::single_block(n, a).expect("dense operator")
}

fn dense(c: &mut Criterion) {
    const M: usize = 30;
    let op = dense_psd(1000);
    let mut g = c.benchmark_group("estimate.dense");
    g.sample_size(10);
    let mut r = rng(1);
    let hutch = SehtH::seht_h(M).expect("cfg");
    g.bench_function("hutchinson_m30", |b| b.iter(|| hutch.estimate(&op, &mut r).expect("estimate").hvps));
    let hpp = HutchPlusPlus::with_budget(M).expect("cfg");
    g.bench_function("hutchpp_m30", |b| b.iter(|| hpp.estimate(&op, &mut r).expect("estimate").hvps));
    let xtrace = XTrace::with_budget(M).expect("cfg");
    g.bench_function("xtrace_m30", |b| b.iter(|| xtrace.estimate(&op, &mut r).expect("estimate").hvps));
    let xnys = XNysTrace::with_budget(M).expect("cfg");
    g.bench_function("xnystrace_m30", |b| b.iter(|| xnys.estimate(&op, &mut r).expect("estimate").hvps));
    let diag = HutchinsonDiagonal::rademacher(M).expect("cfg");
    g.bench_function("diagonal_hutchinson_m30", |b| b.iter(|| diag.estimate(&op, &mut r).expect("estimate").hvps));
    let xdiag = XDiag::with_budget(M).expect("cfg");
    g.bench_function("diagonal_xdiag_m30", |b| b.iter(|| xdiag.estimate(&op, &mut r).expect("estimate").hvps));
    g.finish();
}

criterion_group!(benches, estimate, dense);
criterion_main!(benches);
