//! The GPU check: is the penalty right on the GPU, and what does it cost there?
//!
//! 1. On a small ResNet (width 8, one block per stage, BatchNorm, batch 8,
//!    f32), the HVP `Hσ` and the exact penalised gradient `∇(L + λσᵀHσ)` are
//!    computed on the CPU and on the GPU from the same weights, batch and
//!    probe; their relative difference is printed (and must be below 1e-3).
//! 2. On full-width ResNet-18 at batch 32 and 128, the median time of a plain
//!    step (forward + backward), an exact penalised SEHT-H step (K = 1), an
//!    exact penalised SEHT-D step (p = 0.05, expected cost: the mean over fresh
//!    layer draws), and first-order penalised steps (SEHT-H, SEHT-D p = 0.05)
//!    is printed as a Markdown table with ratios to the plain step.
//!
//! Build it where Rust and the CUDA compiler are, carry the binary to the GPU
//! machine (it needs the NVIDIA driver and CUDA libraries, no toolchain):
//!
//! ```sh
//! scripts/cuda-build.sh                      # here: toolkit from PyPI, then the build
//! ./target-cuda/debug/examples/gpu_check     # on the GPU machine
//! ```
//!
//! `SEHT_GPU_BATCHES=32` limits the batch sizes; `SEHT_GPU_REPS=5` sets the
//! timed repetitions (default 10; SEHT-D's mean uses 4× as many).

use std::time::Instant;

use candle_core::Device;
use seht_bench::{Model, Workload, rng};
use seht_estimator::{Reading, SehtD, SehtH};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn rel_diff(a: &[f32], b: &[f32]) -> Res<f64> {
    if a.len() != b.len() {
        return Err(format!("length {} on the CPU, {} on the GPU", a.len(), b.len()).into());
    }
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (f64::from(*x) - f64::from(*y)).powi(2);
        den += f64::from(*x).powi(2);
    }
    Ok((num / den.max(f64::MIN_POSITIVE)).sqrt())
}

/// Median and mean seconds of `reps` runs of `f` (after one warm-up),
/// synchronising the device around each.
fn time(dev: &Device, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<(f64, f64)> {
    f()?;
    dev.synchronize()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        dev.synchronize()?;
        ts.push(t.elapsed().as_secs_f64());
    }
    let mean = ts.iter().sum::<f64>() / ts.len() as f64;
    ts.sort_by(f64::total_cmp);
    Ok((ts[ts.len() / 2], mean))
}

fn main() -> Res<()> {
    seht_candle::retain_freed_memory();
    let gpu = Device::new_cuda(0).map_err(|e| format!("no CUDA device 0: {e}"))?;
    let reps: usize = std::env::var("SEHT_GPU_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let batches: Vec<usize> = std::env::var("SEHT_GPU_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![32, 128]);

    println!("## Correctness: GPU against CPU (f32, ResNet width 8, 1 block per stage, batch 8)\n");
    let small = Model::ResNet { width: 8, blocks: 1 };
    let (cpu_w, gpu_w) = (Workload::new(small, 8)?, Workload::on(small, 8, &gpu)?);
    let hv = rel_diff(&cpu_w.hvp_host(&mut rng(7))?, &gpu_w.hvp_host(&mut rng(7))?)?;
    let h1 = SehtH::seht_h(1)?;
    let pg = rel_diff(
        &cpu_w.penalised_grads_host(&h1, 1e-2, &mut rng(8))?,
        &gpu_w.penalised_grads_host(&h1, 1e-2, &mut rng(8))?,
    )?;
    println!("| quantity | relative difference ‖gpu − cpu‖/‖cpu‖ |\n|---|---|");
    println!("| HVP Hσ | {hv:.2e} |\n| ∇(L + λσᵀHσ), λ = 1e-2 | {pg:.2e} |\n");
    if !(hv < 1e-3 && pg < 1e-3) {
        return Err(format!("GPU and CPU disagree: HVP {hv:.2e}, penalised gradient {pg:.2e} (limit 1e-3)").into());
    }

    println!("## Step cost on {gpu:?}: ResNet-18 (11.2M parameters), f32, median of {reps}\n");
    println!("| batch | step | time (ms) | ratio to plain |\n|---|---|---|---|");
    let d5 = SehtD::new(1, 0.05, Reading::Unbiased)?;
    for &batch in &batches {
        let w = Workload::on(Model::ResNet { width: 64, blocks: 2 }, batch, &gpu)?;
        let mut r = rng(11);
        let (plain, _) = time(&gpu, reps, || Ok(w.plain_step()?))?;
        let row = |name: &str, t: f64| println!("| {batch} | {name} | {:.1} | {:.2}× |", t * 1e3, t / plain);
        row("plain (forward + backward)", plain);
        let (t, _) = time(&gpu, reps, || Ok(w.penalised_step(&h1, &mut r).map(|_| ())?))?;
        row("SEHT-H K=1, exact penalised", t);
        let (_, t) = time(&gpu, 4 * reps, || Ok(w.penalised_step(&d5, &mut r).map(|_| ())?))?;
        row("SEHT-D p=0.05, exact penalised (expected: mean)", t);
        let (t, _) = time(&gpu, reps, || Ok(w.first_order_step(1, None, &mut r).map(|_| ())?))?;
        row("SEHT-H K=1, first-order penalised", t);
        let (_, t) = time(&gpu, 4 * reps, || Ok(w.first_order_step(1, Some(0.05), &mut r).map(|_| ())?))?;
        row("SEHT-D p=0.05, first-order penalised (expected: mean)", t);
        let (t, _) = time(&gpu, reps, || Ok(w.estimate(&h1, &mut r).map(|_| ())?))?;
        row("SEHT-H K=1, estimate only", t);
    }
    Ok(())
}
