//! Forward and forward+backward time per batch of each full-size model at the
//! paper's batch size, on the current device (CPU by default).
//!
//! ```sh
//! cargo run --release -p seht-models --example model_cost -- [reps]
//! ```
//!
//! ResNet-18 (CIFAR-10) and WRN-28-10 (CIFAR-100, dropout 0.3): batch 32 of
//! 3×32×32. LSTM and GRU language models (WikiText-2 vocabulary, 33,278
//! words): batch 20, BPTT window 35. f32; training mode. Each figure is the
//! median of `reps` runs after one warm-up run.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use seht_models::{Phase, ResNet, ResNetConfig, RnnLm, RnnLmConfig, WideResNet, WideResNetConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut ts = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        ts.push(t0.elapsed().as_secs_f64());
    }
    Ok(median(ts))
}

fn main() -> Result<()> {
    seht_candle::retain_freed_memory();
    let reps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(3);
    let dev = Device::Cpu;
    println!("| model | parameters | batch | forward (s) | forward+backward (s) |");
    println!("| --- | ---: | --- | ---: | ---: |");

    let xs = Tensor::randn(0f32, 1.0, (32, 3, 32, 32), &dev)?;
    let image_row = |name: &str, classes: u32, n: usize, fwd: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<()> {
        let ys = Tensor::from_vec((0..32u32).map(|i| i % classes).collect::<Vec<_>>(), 32, &dev)?;
        let f = time(reps, || fwd(&xs).map(|_| ()))?;
        let fb = time(reps, || {
            candle_nn::loss::cross_entropy(&fwd(&xs)?, &ys)?.backward()?;
            Ok(())
        })?;
        println!("| {name} | {n} | 32×3×32×32 | {f:.3} | {fb:.3} |");
        Ok(())
    };
    {
        let varmap = VarMap::new();
        let m = ResNet::new(&ResNetConfig::resnet18(3, 10), VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let n = m.roles().param_set(&varmap)?.num_trainable();
        image_row("ResNet-18 (CIFAR-10)", 10, n, &|x| Ok(m.forward_t(x, Phase::Train { seed: 0 })?))?;
    }
    {
        let varmap = VarMap::new();
        let m = WideResNet::new(
            &WideResNetConfig::wrn_28_10(3, 100, 0.3),
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )?;
        let n = m.roles().param_set(&varmap)?.num_trainable();
        image_row("WRN-28-10 (CIFAR-100)", 100, n, &|x| Ok(m.forward_t(x, Phase::Train { seed: 0 })?))?;
    }
    for cfg in [RnnLmConfig::paper_lstm(33_278), RnnLmConfig::paper_gru(33_278)] {
        let varmap = VarMap::new();
        let m = RnnLm::new(&cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let n = m.roles().param_set(&varmap)?.num_trainable();
        let tokens =
            Tensor::from_vec((0..20 * 35u32).map(|i| (i * 7919) % 33_278).collect::<Vec<_>>(), (20, 35), &dev)?;
        let state = m.zero_state(20)?;
        let f = time(reps, || Ok(m.forward_t(&tokens, &state, Phase::Train { seed: 0 }).map(|_| ())?))?;
        let fb = time(reps, || {
            let (logits, _) = m.forward_t(&tokens, &state, Phase::Train { seed: 0 })?;
            RnnLm::loss(&logits, &tokens)?.backward()?;
            Ok(())
        })?;
        println!("| {:?} LM (2×512, WikiText-2 vocab) | {n} | 20×35 tokens | {f:.3} | {fb:.3} |", cfg.kind);
    }
    Ok(())
}
