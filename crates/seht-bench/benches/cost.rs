#![allow(missing_docs)] // criterion's macros generate undocumented items
//! What a Hessian trace costs, against a plain training step, for several
//! models: HVP vs gradient, estimate-only traces (SEHT-H K = 1, 5; SEHT-D
//! p = 0.01, 0.05; Hutch++), penalised steps (SEHT-H K = 1, SEHT-D p = 0.05),
//! first-order penalised steps (SEHT-H K = 1, SEHT-D p = 0.05, and SEHT-H
//! amortised over n = 4 steps), and the scaling with K. Each group is one model; ratios are taken to the
//! group's `plain_step` by `cargo xtask bench-report`.
//!
//! SEHT-D's cost is bimodal: every iteration draws a fresh layer selection,
//! so criterion's mean is the expected cost over draws.
//!
//! `SEHT_BENCH_MODELS=tiny,resnet16` limits the models (default: all,
//! including full-width ResNet-18 at batch 32, which takes tens of minutes).

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use seht_bench::{Model, Workload, rng};
use seht_estimator::{HutchPlusPlus, Reading, SehtD, SehtH};

fn models() -> Vec<(&'static str, Model, usize)> {
    let all = vec![
        ("tiny", Model::Tiny, 32),
        ("resnet16", Model::ResNet { width: 16, blocks: 1 }, 32),
        ("lstm128", Model::Lstm { hidden: 128 }, 20),
        ("resnet18", Model::ResNet { width: 64, blocks: 2 }, 32),
    ];
    match std::env::var("SEHT_BENCH_MODELS") {
        Ok(list) => all.into_iter().filter(|(k, _, _)| list.split(',').any(|w| w.trim() == *k)).collect(),
        Err(_) => all,
    }
}

fn cost(c: &mut Criterion) {
    // SAFETY: first thing in the benchmark binary, before other threads.
    unsafe { seht_candle::enable_higher_order() }.expect("higher-order autodiff");
    for (key, model, batch) in models() {
        let w = Workload::new(model, batch).expect("workload");
        let mut g = c.benchmark_group(key.to_string());
        g.sample_size(10);
        if key == "resnet18" {
            // Seconds per iteration: ten iterations, not criterion's 55 of linear sampling.
            g.sampling_mode(SamplingMode::Flat);
        }
        g.bench_function("plain_step", |b| b.iter(|| w.plain_step().expect("step")));
        let mut r = rng(1);
        g.bench_function("hvp", |b| b.iter(|| w.hvp(&mut r).expect("hvp")));
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
        // The exact penalised step on full-width ResNet-18 needs more than
        // 24 GB of memory; it runs only when asked for.
        if key != "resnet18" || std::env::var_os("SEHT_BENCH_EXACT_RESNET18").is_some() {
            let h1 = SehtH::seht_h(1).expect("cfg");
            g.bench_function("penalised_seht_h_k1", |b| b.iter(|| w.penalised_step(&h1, &mut r).expect("step")));
            // K = 5: one third-order pass over all probes' graphs, or one per probe.
            let h5 = SehtH::seht_h(5).expect("cfg");
            // All probes' graphs at once: more than 24 GB beyond the tiny model
            // (killed on resnet16); the training loop uses the per-probe path.
            if key == "tiny" {
                g.bench_function("penalised_seht_h_k5", |b| b.iter(|| w.penalised_step(&h5, &mut r).expect("step")));
            }
            g.bench_function("penalised_seht_h_k5_per_probe", |b| {
                b.iter(|| w.penalised_step_per_probe(&h5, &mut r).expect("step"))
            });
            let d5 = SehtD::new(1, 0.05, Reading::Unbiased).expect("cfg");
            g.bench_function("penalised_seht_d_p0.05", |b| b.iter(|| w.penalised_step(&d5, &mut r).expect("step")));
        }
        // First-order penalty (seht_candle::first_order): no third-order pass.
        g.bench_function("first_order_seht_h_k1", |b| b.iter(|| w.first_order_step(1, None, &mut r).expect("step")));
        g.bench_function("first_order_seht_d_p0.05", |b| {
            b.iter(|| w.first_order_step(1, Some(0.05), &mut r).expect("step"))
        });
        // Amortised every n = 4 steps: one first-order step, three plain ones;
        // the mean per iteration is the amortised cost of a step.
        let mut i = 0u64;
        g.bench_function("first_order_seht_h_k1_every4", |b| {
            b.iter(|| {
                i += 1;
                if i % 4 == 0 {
                    w.first_order_step(1, None, &mut r).expect("step");
                } else {
                    w.plain_step().expect("step");
                }
            })
        });
        g.finish();
    }
}

criterion_group!(benches, cost);
criterion_main!(benches);
