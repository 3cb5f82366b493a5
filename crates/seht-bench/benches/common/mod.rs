#![allow(dead_code)] // each benchmark file uses part of it
//! What every benchmark file shares: the models, the set-up of the process,
//! and the group settings.

use criterion::{BenchmarkGroup, Criterion, SamplingMode, measurement::WallTime};
use seht_bench::{Model, Workload};

/// The models of the topic benchmarks, as `(key, model, batch)`:
/// `SEHT_BENCH_MODELS=mlp,tiny,resnet16` limits them (default: all, including
/// full-width ResNet-18 at batch 32, whose rows take tens of minutes).
pub fn models() -> Vec<(&'static str, Model, usize)> {
    let all = vec![
        ("mlp", Model::Mlp { hidden: 512 }, 32),
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

/// Freed buffers kept (as the `seht` CLI does).
pub fn setup() {
    seht_candle::retain_freed_memory();
}

/// A group `topic.key` of 10 samples; flat sampling (one iteration per
/// sample) when a step takes seconds.
pub fn group<'a>(c: &'a mut Criterion, topic: &str, key: &str, slow: bool) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(format!("{topic}.{key}"));
    g.sample_size(10);
    if slow {
        g.sampling_mode(SamplingMode::Flat);
    }
    g
}

/// The group's reference: a plain step (forward + backward).
pub fn plain(g: &mut BenchmarkGroup<'_, WallTime>, w: &Workload) {
    g.bench_function("plain_step", |b| b.iter(|| w.plain_step().expect("step")));
}

/// For each model of [`models`]: the group `topic.key` with its plain step,
/// then `body`'s rows (given the group, the workload and the model's key).
pub fn each_model(
    c: &mut Criterion,
    topic: &str,
    mut body: impl FnMut(&mut BenchmarkGroup<'_, WallTime>, &Workload, &str),
) {
    setup();
    for (key, model, batch) in models() {
        let w = Workload::new(model, batch).expect("workload");
        let mut g = group(c, topic, key, key == "resnet18");
        plain(&mut g, &w);
        body(&mut g, &w, key);
        g.finish();
    }
}

/// Whether the exact (third-order) penalised step fits in memory here: on
/// full-width ResNet-18 it needs more than 24 GB, so it runs only when
/// `SEHT_BENCH_EXACT_RESNET18` is set.
pub fn exact_fits(key: &str) -> bool {
    key != "resnet18" || std::env::var_os("SEHT_BENCH_EXACT_RESNET18").is_some()
}
