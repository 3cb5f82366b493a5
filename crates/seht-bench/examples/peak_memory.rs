//! Peak extra heap of each configuration of the benchmarks, one run each.
//!
//! ```sh
//! cargo run --release -p seht-bench --example peak_memory
//! ```
//! Prints `model,configuration,peak_mb` lines (read by `cargo xtask bench-report`).

use seht_bench::{CountingAlloc, Model, Workload, peak_bytes, rng};
use seht_estimator::{Reading, SehtD, SehtH};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    seht_candle::retain_freed_memory();
    let only = std::env::var("SEHT_BENCH_MODELS").ok();
    for (key, model, batch) in [
        ("mlp", Model::Mlp { hidden: 512 }, 32),
        ("tiny", Model::Tiny, 32),
        ("resnet16", Model::ResNet { width: 16, blocks: 1 }, 32),
        ("lstm128", Model::Lstm { hidden: 128 }, 20),
        ("resnet18", Model::ResNet { width: 64, blocks: 2 }, 32),
    ] {
        if only.as_deref().is_some_and(|l| !l.split(',').any(|w| w.trim() == key)) {
            continue;
        }
        let w = Workload::new(model, batch)?;
        w.plain_step()?; // warm-up
        let mut r = rng(3);
        let (res, b) = peak_bytes(|| w.plain_step());
        res?;
        println!("{key},plain_step,{:.1}", b as f64 / 1e6);
        let (res, b) = peak_bytes(|| w.first_order_step(1, None, &mut r));
        res?;
        println!("{key},first_order_seht_h_k1,{:.1}", b as f64 / 1e6);
        let (res, b) = peak_bytes(|| w.estimate(&SehtH::seht_h(1).expect("cfg"), &mut r));
        res?;
        println!("{key},estimate_seht_h_k1,{:.1}", b as f64 / 1e6);
        // The exact penalised step on full-width ResNet-18 needs more than
        // 24 GB; it runs only when asked for.
        if key == "resnet18" && std::env::var_os("SEHT_BENCH_EXACT_RESNET18").is_none() {
            continue;
        }
        let (res, b) = peak_bytes(|| w.penalised_step(&SehtH::seht_h(1).expect("cfg"), &mut r));
        res?;
        println!("{key},penalised_seht_h_k1,{:.1}", b as f64 / 1e6);
        let h5 = SehtH::seht_h(5).expect("cfg");
        // All probes' graphs at once: killed for memory (> 24 GB) beyond the tiny model.
        if matches!(key, "tiny" | "mlp") {
            let (res, b) = peak_bytes(|| w.penalised_step(&h5, &mut r));
            res?;
            println!("{key},penalised_seht_h_k5,{:.1}", b as f64 / 1e6);
        }
        let (res, b) = peak_bytes(|| w.penalised_step_per_probe(&h5, &mut r));
        res?;
        println!("{key},penalised_seht_h_k5_per_probe,{:.1}", b as f64 / 1e6);
        // SEHT-D: the peak of a step whose draw selected layers (draw until one does).
        let d = SehtD::new(1, 0.05, Reading::Unbiased)?;
        let mut worst = 0;
        for _ in 0..40 {
            let (res, b) = peak_bytes(|| w.penalised_step(&d, &mut r));
            if res? > 0 {
                worst = worst.max(b);
            }
        }
        println!("{key},penalised_seht_d_p0.05,{:.1}", worst as f64 / 1e6);
    }
    Ok(())
}
