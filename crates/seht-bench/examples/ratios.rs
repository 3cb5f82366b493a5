//! Step-time ratios measured round-robin: every round runs each
//! configuration once, in turn, so slow drifts of a shared machine hit all
//! of them alike; the ratio of each configuration to the plain step is taken
//! within each round, then summarised (median, min, max, and the ratio of
//! means). Criterion measures one configuration after another, which on a
//! noisy machine can move a ratio by ±20%; this is the check for the
//! targets of issues 8 and 10.
//!
//! ```sh
//! cargo run --release -p seht-bench --example ratios -- [rounds] [model] [--no-retain]
//! ```
//! `model` is `resnet18` (default: full width, batch 32), `resnet16` or `mlp`;
//! `--no-retain` leaves glibc's `malloc` at its defaults (no
//! `seht_candle::retain_freed_memory`), for the allocator's A/B comparison.
//! Prints a Markdown table, with the minor page faults per step (Linux).

use std::time::Instant;

use seht_bench::{Model, Workload, rng};
use seht_estimator::{Reading, SehtD, SehtH};

/// Minor page faults of the process so far (0 where /proc is missing).
fn minor_faults() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(7)?.parse().ok()))
        .unwrap_or(0)
}

type Step<'a> = Box<dyn FnMut() -> Result<(), seht_candle::Error> + 'a>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let all: Vec<String> = std::env::args().skip(1).collect();
    let retain = !all.iter().any(|a| a == "--no-retain");
    if retain {
        seht_candle::retain_freed_memory();
    }
    let mut args = all.iter().filter(|a| !a.starts_with("--")).cloned();
    let rounds: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(6);
    let key = args.next().unwrap_or_else(|| "resnet18".into());
    let model = match key.as_str() {
        "resnet18" => Model::ResNet { width: 64, blocks: 2 },
        "resnet16" => Model::ResNet { width: 16, blocks: 1 },
        "mlp" => Model::Mlp { hidden: 512 },
        other => return Err(format!("unknown model {other:?} (resnet18, resnet16, mlp)").into()),
    };
    let w = Workload::new(model, 32)?;
    let mut r = rng(5);
    let h1 = SehtH::seht_h(1)?;
    let d5 = SehtD::new(1, 0.05, Reading::Unbiased)?;
    let mut configs: Vec<(&str, Step)> = vec![
        ("plain step", Box::new(|| Ok(w.plain_step()?))),
        ("first-order SEHT-H K=1", Box::new(|| w.first_order_step(1, None, &mut rng(11)).map(drop))),
        ("first-order SEHT-D p=0.05 (expected)", Box::new(|| w.first_order_step(1, Some(0.05), &mut r).map(drop))),
        ("estimate-only SEHT-H K=1", Box::new(|| w.estimate(&h1, &mut rng(12)).map(drop))),
        ("estimate-only SEHT-D p=0.05 (expected)", Box::new(|| w.estimate(&d5, &mut rng(13)).map(drop))),
    ];
    // Warm-up round: the first touch of each configuration's memory.
    for (_, f) in configs.iter_mut() {
        f()?;
    }
    let mut times = vec![Vec::with_capacity(rounds); configs.len()];
    let mut faults = vec![0u64; configs.len()];
    for round in 0..rounds {
        for (i, (_, f)) in configs.iter_mut().enumerate() {
            let before = minor_faults();
            let t = Instant::now();
            f()?;
            times[i].push(t.elapsed().as_secs_f64());
            faults[i] += minor_faults().saturating_sub(before);
        }
        eprintln!("round {}/{rounds}: plain {:.3} s", round + 1, times[0][round]);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    // (median, min, max) of per-round ratios.
    let spread = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!(
        "{key}, batch 32, {rounds} rounds after a warm-up round, freed memory {}\n\n| configuration | mean time (s) | ratio of means | per-round ratio: median | min | max | page faults per step |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        if retain { "retained (`retain_freed_memory`)" } else { "returned to the kernel (glibc defaults)" }
    );
    for (i, (name, _)) in configs.iter().enumerate() {
        let (med, min, max) = spread(times[i].iter().zip(&times[0]).map(|(a, p)| a / p).collect());
        println!(
            "| {name} | {:.3} | {:.2}× | {med:.2}× | {min:.2}× | {max:.2}× | {} |",
            mean(&times[i]),
            mean(&times[i]) / mean(&times[0]),
            faults[i] / rounds as u64
        );
    }
    // Applying the first-order penalty every 4th step: (FO + 3 plain) / 4.
    let (med, min, max) = spread(times[1].iter().zip(&times[0]).map(|(f, p)| (f + 3.0 * p) / 4.0 / p).collect());
    let amortised = (mean(&times[1]) + 3.0 * mean(&times[0])) / 4.0;
    println!(
        "| first-order SEHT-H K=1 every 4 steps, (FO + 3 plain)/4 | {amortised:.3} | {:.2}× | {med:.2}× | {min:.2}× | {max:.2}× | |",
        amortised / mean(&times[0])
    );
    Ok(())
}
