#![allow(missing_docs)] // criterion's macros generate undocumented items
//! A penalised training step's work (forward, penalty, gradient of
//! `loss + λ·tr̂`) against a plain step, per model:
//! - exact (third-order) SEHT-H K = 1 and SEHT-D p = 0.05; K = 5 one probe's
//!   graph at a time (`penalised_gradients`, as training does it) and, on the
//!   smallest models, all probes' graphs at once (`penalised_loss`);
//! - first-order (`seht_candle::first_order`) SEHT-H K = 1, SEHT-D p = 0.05,
//!   and SEHT-H applied every 4th step (each iteration is a cycle of four
//!   steps, reported per step: the amortised cost);
//! - the Gauss–Newton trace penalty, one label draw, its gradient by double
//!   backprop (second order) and by central differences (first order).
//!
//! SEHT-D draws a fresh layer selection every iteration: criterion's mean is
//! the expected cost over draws.

mod common;

use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use seht_bench::rng;
use seht_candle::Gradient;
use seht_estimator::{Reading, SehtD, SehtH};

fn penalised(c: &mut Criterion) {
    common::each_model(c, "penalised", |g, w, key| {
        let mut r = rng(1);
        if common::exact_fits(key) {
            let h1 = SehtH::seht_h(1).expect("cfg");
            g.bench_function("penalised_seht_h_k1", |b| b.iter(|| w.penalised_step(&h1, &mut r).expect("step")));
            let h5 = SehtH::seht_h(5).expect("cfg");
            // All probes' graphs at once: more than 24 GB beyond the small models.
            if matches!(key, "tiny" | "mlp") {
                g.bench_function("penalised_seht_h_k5", |b| b.iter(|| w.penalised_step(&h5, &mut r).expect("step")));
            }
            g.bench_function("penalised_seht_h_k5_per_probe", |b| {
                b.iter(|| w.penalised_step_per_probe(&h5, &mut r).expect("step"))
            });
            let d5 = SehtD::new(1, 0.05, Reading::Unbiased).expect("cfg");
            g.bench_function("penalised_seht_d_p0.05", |b| b.iter(|| w.penalised_step(&d5, &mut r).expect("step")));
        }
        g.bench_function("gauss_newton_double_backprop", |b| {
            b.iter(|| w.gauss_newton_step(Gradient::ExactPerProbe, &mut r).expect("step"))
        });
        g.bench_function("gauss_newton_first_order", |b| {
            b.iter(|| w.gauss_newton_step(Gradient::FirstOrder { relative_step: Some(2e-2) }, &mut r).expect("step"))
        });
        g.bench_function("first_order_seht_h_k1", |b| b.iter(|| w.first_order_step(1, None, &mut r).expect("step")));
        g.bench_function("first_order_seht_d_p0.05", |b| {
            b.iter(|| w.first_order_step(1, Some(0.05), &mut r).expect("step"))
        });
        // One iteration is a whole cycle of 4 steps (1 first-order, 3 plain),
        // reported per step: the amortised cost, with no dependence on where
        // criterion's warm-up leaves a step counter.
        g.bench_function("first_order_seht_h_k1_every4", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                for _ in 0..iters {
                    w.first_order_step(1, None, &mut r).expect("step");
                    for _ in 0..3 {
                        w.plain_step().expect("step");
                    }
                }
                t.elapsed() / 4
            })
        });
    });
}

criterion_group!(benches, penalised);
criterion_main!(benches);
