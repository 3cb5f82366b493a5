#![allow(missing_docs)] // criterion's macros generate undocumented items
//! Estimate-only traces (detached: no penalty gradient) against a plain step,
//! per model: SEHT-H K = 1, 5; SEHT-D p = 0.01, 0.05 (K = 1); Hutch++ with 6
//! HVPs. SEHT-D draws a fresh layer selection every iteration, so criterion's
//! mean is its expected cost over draws (a draw that selects nothing costs a
//! forward pass).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use seht_bench::rng;
use seht_estimator::{HutchPlusPlus, Reading, SehtD, SehtH};

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
    });
}

criterion_group!(benches, estimate);
criterion_main!(benches);
