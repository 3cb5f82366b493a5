#![allow(missing_docs)] // criterion's macros generate undocumented items
//! An HVP against a gradient, per model: the plain step (forward + backward),
//! the gradient kept on the graph (forward + first backward of an HVP), and
//! the whole HVP (plus the second backward). Ratios to `plain_step` by
//! `cargo xtask bench-report`.

mod common;

use criterion::{Criterion, criterion_group, criterion_main};
use seht_bench::rng;

fn hvp(c: &mut Criterion) {
    common::each_model(c, "hvp", |g, w, _| {
        g.bench_function("gradient_on_graph", |b| b.iter(|| w.gradient_on_graph().expect("gradient")));
        let mut r = rng(1);
        g.bench_function("hvp", |b| b.iter(|| w.hvp(&mut r).expect("hvp")));
    });
}

criterion_group!(benches, hvp);
criterion_main!(benches);
