//! Time and peak memory of a penalised training step against a plain one, on
//! the small CNN (batch 32, f32, 32×32 inputs), measured in one run.
//!
//! ```sh
//! cargo run --release -p seht-candle --example step_cost -- [steps]
//! ```
//!
//! Configurations: plain step; SEHT-H (K = 1) penalised step; SEHT-D
//! (p = 0.05, K = 1, unbiased reading) penalised step; SEHT-H estimate only
//! (detached). SEHT-D's cost is bimodal (a step whose layer draw selects no
//! block is a plain step), so its *expected* cost is reported: the mean over
//! its steps, and P(draw selects a block) × cost of such a step + the rest.
//! Peak memory is the peak of live heap bytes during the configuration's steps
//! above what was live before them, from a counting global allocator.

#[path = "common/small_cnn.rs"]
mod small_cnn;

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, SGD, VarBuilder, VarMap};
use seht_candle::malloc::{CountingAlloc, peak_bytes};
use seht_candle::{ParamSet, Selection, penalised_loss, trace_estimate};
use seht_estimator::{Reading, SehtD, SehtH, probe_rng};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Plain,
    SehtH,
    SehtD,
    EstimateOnly,
}

struct Stats {
    times: Vec<f64>,
    hvp_step: Vec<bool>,
    peak_mb: f64,
}

fn main() -> Result<()> {
    seht_candle::retain_freed_memory();
    let steps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = small_cnn::SmallCnn::new(3, 10, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let set = ParamSet::from_varmap(&varmap);
    let weights = set.select(&Selection::Weights)?;
    let mut opt = SGD::new(set.trainable_vars(), 0.01)?;
    let xs = Tensor::randn(0f32, 1.0, (32, 3, 32, 32), &dev)?;
    let ys = Tensor::from_vec((0..32u32).map(|i| i % 10).collect::<Vec<_>>(), 32, &dev)?;
    let seht_h = SehtH::seht_h(1)?;
    let seht_d = SehtD::new(1, 0.05, Reading::Unbiased)?;
    let mut rng = probe_rng(1);

    let mut run = |mode: Mode, n: usize| -> Result<Stats> {
        let mut times = Vec::with_capacity(n);
        let mut hvp_step = Vec::with_capacity(n);
        let (done, peak) = peak_bytes(|| -> Result<()> {
            for _ in 0..n {
                let t0 = Instant::now();
                let loss = candle_nn::loss::cross_entropy(&model.forward_t(&xs, true)?, &ys)?;
                let hvps = match mode {
                    Mode::Plain => {
                        opt.backward_step(&loss)?;
                        0
                    }
                    Mode::SehtH | Mode::SehtD => {
                        let (total, est) = if mode == Mode::SehtH {
                            penalised_loss(&loss, &weights, &seht_h, 1e-3, &mut rng)?
                        } else {
                            penalised_loss(&loss, &weights, &seht_d, 1e-3, &mut rng)?
                        };
                        opt.backward_step(&total)?;
                        est.hvps
                    }
                    Mode::EstimateOnly => {
                        let est = trace_estimate(&loss, &weights, &seht_h, &mut rng)?;
                        est.hvps
                    }
                };
                times.push(t0.elapsed().as_secs_f64());
                hvp_step.push(hvps > 0);
            }
            Ok(())
        });
        done?;
        Ok(Stats { times, hvp_step, peak_mb: peak as f64 / 1e6 })
    };

    // Warm up every path (thread pools, allocator), then measure, interleaved.
    for m in [Mode::Plain, Mode::SehtH, Mode::EstimateOnly] {
        run(m, 1)?;
    }
    let plain = run(Mode::Plain, steps)?;
    let h = run(Mode::SehtH, steps)?;
    let est = run(Mode::EstimateOnly, steps)?;
    let d = run(Mode::SehtD, steps * 8)?;
    let plain2 = run(Mode::Plain, steps)?;

    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let plain_t = mean(&[plain.times.clone(), plain2.times.clone()].concat());
    let blocks = weights.len() as i32;
    let p_select = 1.0 - (1.0f64 - 0.05).powi(blocks);
    let d_hvp: Vec<f64> = d.times.iter().zip(&d.hvp_step).filter(|(_, h)| **h).map(|(t, _)| *t).collect();
    let d_plain: Vec<f64> = d.times.iter().zip(&d.hvp_step).filter(|(_, h)| !**h).map(|(t, _)| *t).collect();
    let d_expected =
        if d_hvp.is_empty() { f64::NAN } else { p_select * mean(&d_hvp) + (1.0 - p_select) * mean(&d_plain) };

    println!(
        "small CNN (32-64-128, BN), batch 32, f32, CPU with {} threads; {steps} steps per configuration",
        candle_core::utils::get_num_threads()
    );
    println!("| configuration | time per step (ms) | ratio to plain | peak extra heap (MB) |");
    println!("| --- | ---: | ---: | ---: |");
    let row = |name: &str, t: f64, mb: f64| println!("| {name} | {:.1} | {:.2}× | {mb:.0} |", t * 1e3, t / plain_t);
    row("plain step", plain_t, plain.peak_mb.max(plain2.peak_mb));
    row("SEHT-H K=1 penalised step", mean(&h.times), h.peak_mb);
    row("SEHT-H K=1 estimate only", mean(&est.times), est.peak_mb);
    row(&format!("SEHT-D p=0.05 penalised, mean of {} steps", d.times.len()), mean(&d.times), d.peak_mb);
    row(
        &format!("SEHT-D p=0.05 expected (P(select)={p_select:.3}; {} HVP steps seen)", d_hvp.len()),
        d_expected,
        d.peak_mb,
    );
    if !d_hvp.is_empty() {
        row("SEHT-D p=0.05, a step whose draw selected a block", mean(&d_hvp), d.peak_mb);
    }
    Ok(())
}
