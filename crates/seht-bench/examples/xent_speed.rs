//! Softmax cross-entropy over a language model's logits (700 × 10,000, f32:
//! the LSTM benchmark's batch of 20 × 35 tokens and vocabulary) in one
//! process: candle's composed `candle_nn::loss::cross_entropy` against the
//! fused `seht_candle::ops::cross_entropy` (issue 33), at the three orders a
//! penalised step runs, with the logits themselves as the variable.
//!
//! ```sh
//! cargo run --release -p seht-bench --example xent_speed [-- --reps 7]
//! ```
//!
//! Per implementation and order: the median milliseconds over `--reps`
//! repetitions (default 7, after one warm-up) and the peak of live heap
//! bytes above those live before (MiB, the counting allocator). Orders:
//! `gradient` (forward and a backward keeping no graph: a plain step's
//! share), `HVP` (gradient on the graph, then `Hv` without), `∇(vᵀHv)` (both
//! on the graph, then the third pass without: an exact SEHT-H step's share).
//! Threads: candle's default (`RAYON_NUM_THREADS`).

use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use seht_bench::{CountingAlloc, peak_bytes};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;
type Loss = fn(&Tensor, &Tensor) -> Res<Tensor>;

fn fused(z: &Tensor, y: &Tensor) -> Res<Tensor> {
    Ok(seht_candle::ops::cross_entropy(z, y)?)
}

fn composed(z: &Tensor, y: &Tensor) -> Res<Tensor> {
    Ok(candle_nn::loss::cross_entropy(z, y)?)
}

/// One run of `order` (0, 1, 2) for `loss` at logits `z`.
fn run(loss: Loss, z: &Var, y: &Tensor, v: &Tensor, order: usize) -> Res<()> {
    let l = loss(z.as_tensor(), y)?;
    if order == 0 {
        seht_candle::backward_no_graph(&l)?;
        return Ok(());
    }
    let g = seht_candle::backward_create_graph(&l)?;
    let gv = (g.get(z.as_tensor()).ok_or("no gradient")? * v)?.sum_all()?;
    if order == 1 {
        seht_candle::backward_no_graph(&gv)?;
        return Ok(());
    }
    let hv = seht_candle::backward_create_graph(&gv)?;
    let q = (hv.get(z.as_tensor()).ok_or("no Hv")? * v)?.sum_all()?;
    seht_candle::backward_no_graph(&q)?;
    Ok(())
}

fn main() -> Res<()> {
    seht_candle::retain_freed_memory();
    let mut reps = 7usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--reps" => reps = args.next().ok_or("--reps needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: xent_speed [--reps N]  (N ≥ 1 timed repetitions per cell, default 7)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other} (expected --reps N)").into()),
        }
    }
    if reps == 0 {
        return Err("--reps must be at least 1".into());
    }
    let dev = Device::Cpu;
    let (n, classes) = (700usize, 10_000usize);
    let z = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (n, classes), &dev)? * 3.0)?)?;
    let y = Tensor::arange(0u32, n as u32, &dev)?.affine(13.0, 1.0)?.to_dtype(DType::F32)?;
    let y = (y.clone() - ((y / classes as f64)?.floor()? * classes as f64)?)?.to_dtype(DType::U32)?;
    let v = Tensor::randn(0f32, 1.0, (n, classes), &dev)?;
    println!("cross-entropy, {n} × {classes} f32 logits, {} threads", candle_core::utils::get_num_threads());
    println!("| order | composed (ms) | fused (ms) | time fused / composed | composed heap (MiB) | fused heap (MiB) |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (order, name) in ["gradient", "HVP", "∇(vᵀHv)"].iter().enumerate() {
        let mut row = Vec::new();
        for loss in [composed as Loss, fused as Loss] {
            let (r, peak) = peak_bytes(|| run(loss, &z, &y, &v, order));
            r?;
            let mut t = Vec::new();
            for _ in 0..reps {
                let s = Instant::now();
                run(loss, &z, &y, &v, order)?;
                t.push(s.elapsed().as_secs_f64() * 1e3);
            }
            t.sort_by(f64::total_cmp);
            row.push((t[t.len() / 2], peak as f64 / (1u64 << 20) as f64));
        }
        let ((tc, mc), (tf, mf)) = (row[0], row[1]);
        println!("| {name} | {tc:.1} | {tf:.1} | {:.2}× | {mc:.0} | {mf:.0} |", tf / tc);
    }
    Ok(())
}
