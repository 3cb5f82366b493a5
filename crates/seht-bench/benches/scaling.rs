#![allow(missing_docs)] // criterion's macros generate undocumented items
//! How the cost grows with the model's width, the number of probes K and
//! SEHT-D's selection probability p. Every group has its own plain step, so
//! each row's ratio is to the plain step of the same model in the same run.
//!
//! - `scaling.width8` … `scaling.width64`: ResNet with widths w, 2w, 4w, 8w
//!   and one block per stage, batch 32: HVP, estimate-only SEHT-H K = 1,
//!   exact and first-order penalised SEHT-H K = 1 (the exact one only up to
//!   width 32: at 64 it needs more than 24 GB);
//! - `scaling.k` (ResNet width 16): estimate-only SEHT-H, exact penalised
//!   (one probe's graph at a time) and first-order, K = 1, 2, 5, 10;
//! - `scaling.p` (ResNet width 16): estimate-only, exact and first-order
//!   penalised SEHT-D (K = 1), p = 0.01 … 0.5, expected over layer draws.
//!
//! `SEHT_BENCH_SCALING=width,k,p` limits the sweeps (default: all three).

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use seht_bench::{Model, Workload, rng};
use seht_estimator::{Reading, SehtD, SehtH};

fn wanted(sweep: &str) -> bool {
    std::env::var("SEHT_BENCH_SCALING").map(|l| l.split(',').any(|s| s.trim() == sweep)).unwrap_or(true)
}

fn scaling(c: &mut Criterion) {
    common::setup();
    if wanted("width") {
        for width in [8usize, 16, 32, 64] {
            let w = Workload::new(Model::ResNet { width, blocks: 1 }, 32).expect("workload");
            let mut g = common::group(c, "scaling", &format!("width{width}"), width >= 64);
            common::plain(&mut g, &w);
            let mut r = rng(1);
            g.bench_function("hvp", |b| b.iter(|| w.hvp(&mut r).expect("hvp")));
            let h1 = SehtH::seht_h(1).expect("cfg");
            g.bench_function("estimate_seht_h_k1", |b| b.iter(|| w.estimate(&h1, &mut r).expect("estimate")));
            if width <= 32 {
                g.bench_function("penalised_seht_h_k1", |b| b.iter(|| w.penalised_step(&h1, &mut r).expect("step")));
            }
            g.bench_function("first_order_seht_h_k1", |b| {
                b.iter(|| w.first_order_step(1, None, &mut r).expect("step"))
            });
            g.finish();
        }
    }
    let w = Workload::new(Model::ResNet { width: 16, blocks: 1 }, 32).expect("workload");
    if wanted("k") {
        let mut g = common::group(c, "scaling", "k", false);
        common::plain(&mut g, &w);
        let mut r = rng(2);
        for k in [1usize, 2, 5, 10] {
            let est = SehtH::seht_h(k).expect("cfg");
            g.bench_function(format!("estimate_seht_h_k{k}"), |b| {
                b.iter(|| w.estimate(&est, &mut r).expect("estimate"))
            });
            g.bench_function(format!("penalised_seht_h_k{k}_per_probe"), |b| {
                b.iter(|| w.penalised_step_per_probe(&est, &mut r).expect("step"))
            });
            g.bench_function(format!("first_order_seht_h_k{k}"), |b| {
                b.iter(|| w.first_order_step(k, None, &mut r).expect("step"))
            });
        }
        g.finish();
    }
    if wanted("p") {
        let mut g = common::group(c, "scaling", "p", false);
        common::plain(&mut g, &w);
        let mut r = rng(3);
        for p in [0.01, 0.02, 0.05, 0.1, 0.2, 0.5] {
            let est = SehtD::new(1, p, Reading::Unbiased).expect("cfg");
            g.bench_function(format!("estimate_seht_d_p{p}"), |b| {
                b.iter(|| w.estimate(&est, &mut r).expect("estimate"))
            });
            g.bench_function(format!("penalised_seht_d_p{p}"), |b| {
                b.iter(|| w.penalised_step_per_probe(&est, &mut r).expect("step"))
            });
            g.bench_function(format!("first_order_seht_d_p{p}"), |b| {
                b.iter(|| w.first_order_step(1, Some(p), &mut r).expect("step"))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, scaling);
criterion_main!(benches);
