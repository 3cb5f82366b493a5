//! Trains a small CNN on synthetic data with the Hessian-trace penalty and
//! prints the loss and the trace estimate at every step.
//!
//! ```sh
//! cargo run --release -p seht-candle --example penalised_training -- [steps] [lambda]
//! ```
//!
//! The data are 256 synthetic 32×32 RGB images: one random template per
//! class plus noise, so the task is learnable in a few dozen steps. The
//! penalty is SEHT-H with one probe over the weights (convolutions and the
//! head; biases and BatchNorm excluded).
//!
//! Note what a run shows: the Hessian trace of a network loss is not bounded
//! below (it is often negative at initialisation), so a large λ drives it
//! towards −∞ and the loss up. The paper's λ grid starts at 1e-4.

#[path = "common/small_cnn.rs"]
mod small_cnn;

use anyhow::{Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Optimizer, SGD, VarBuilder, VarMap};
use seht_candle::{ParamSet, Selection, penalised_loss};
use seht_estimator::{SehtH, probe_rng};

fn main() -> Result<()> {
    seht_candle::retain_freed_memory();
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose().context("steps must be an integer")?.unwrap_or(30);
    let lambda: f64 = args.next().map(|s| s.parse()).transpose().context("lambda must be a number")?.unwrap_or(1e-4);

    let dev = Device::Cpu;
    let (n, batch, classes) = (256usize, 32usize, 10usize);
    let templates = Tensor::randn(0f32, 1.0, (classes, 3, 32, 32), &dev)?;
    let labels =
        Tensor::from_vec((0..n as u32).map(|i| (i * 7 + i / 3) % classes as u32).collect::<Vec<_>>(), n, &dev)?;
    let images = (templates.index_select(&labels, 0)? + Tensor::randn(0f32, 1.0, (n, 3, 32, 32), &dev)?)?;

    let varmap = VarMap::new();
    let model = small_cnn::SmallCnn::new(3, classes, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let set = ParamSet::from_varmap(&varmap);
    let weights = set.select(&Selection::Weights)?;
    let mut opt = SGD::new(set.trainable_vars(), 0.05)?;
    let estimator = SehtH::seht_h(1)?;
    let mut rng = probe_rng(0);
    println!(
        "small CNN, {} trainable parameters, penalty over {} weight tensors, λ = {lambda}",
        set.num_trainable(),
        weights.len()
    );
    println!("{:>5} {:>10} {:>14} {:>10}", "step", "loss", "trace (SEHT-H)", "time (s)");
    for step in 0..steps {
        let start = (step * batch) % n;
        let xs = images.i(start..start + batch)?;
        let ys = labels.i(start..start + batch)?;
        let t0 = std::time::Instant::now();
        let loss = candle_nn::loss::cross_entropy(&model.forward_t(&xs, true)?, &ys)?;
        let (total, est) = penalised_loss(&loss, &weights, &estimator, lambda, &mut rng)?;
        opt.backward_step(&total)?;
        println!(
            "{step:>5} {:>10.4} {:>14.3} {:>10.3}",
            loss.to_scalar::<f32>()?,
            est.mean,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
