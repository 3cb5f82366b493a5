//! Throughput of the convolution's three linear maps (forward, input
//! gradient, kernel gradient) at the shapes of a full-width CIFAR ResNet-18,
//! batch 32, f32: `seht_candle::ops::conv2d` against candle's `conv2d`.
//!
//! ```sh
//! cargo run --release --workspace --example conv_speed [-- --candle]
//! python bench/peer/torch_conv.py --threads 2   # the PyTorch peer
//! ```
//!
//! Prints one line per layer shape: milliseconds per map (median of 5) and
//! GFLOP/s (2 flops per multiply-add).

use std::time::Instant;

use candle_core::{Device, Tensor, Var};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn median_ms(mut f: impl FnMut() -> Res<()>) -> Res<f64> {
    f()?;
    let mut t = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

fn main() -> Res<()> {
    let with_candle = std::env::args().any(|a| a == "--candle");
    let dev = Device::Cpu;
    // (c_in, c_out, size, k, stride, padding)
    let layers = [
        (3, 64, 32, 3, 1, 1),
        (64, 64, 32, 3, 1, 1),
        (64, 128, 32, 3, 2, 1),
        (128, 128, 16, 3, 1, 1),
        (64, 128, 32, 1, 2, 0),
        (256, 256, 8, 3, 1, 1),
        (512, 512, 4, 3, 1, 1),
    ];
    println!("layer,impl,forward_ms,input_grad_ms,kernel_grad_ms,gflops");
    for (ci, co, size, k, s, p) in layers {
        let n = 32;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, ci, size, size), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 0.1, (co, ci, k, k), &dev)?)?;
        for name in ["seht", "candle"] {
            if name == "candle" && !with_candle {
                continue;
            }
            let conv = |x: &Tensor, w: &Tensor| -> Res<Tensor> {
                Ok(if name == "seht" { seht_candle::ops::conv2d(x, w, p, s)? } else { x.conv2d(w, p, s, 1, 1)? })
            };
            let y = conv(x.as_tensor(), w.as_tensor())?;
            let c = y.randn_like(0.0, 1.0)?;
            let fwd = median_ms(|| {
                conv(&x.as_tensor().detach(), &w.as_tensor().detach())?;
                Ok(())
            })?;
            // Input gradient alone: a tracked input, a constant kernel.
            let din = median_ms(|| {
                let y = conv(x.as_tensor(), &w.as_tensor().detach())?;
                seht_candle::backward_no_graph(&(y * &c)?.sum_all()?)?;
                Ok(())
            })? - fwd;
            let dk = median_ms(|| {
                let y = conv(&x.as_tensor().detach(), w.as_tensor())?;
                seht_candle::backward_no_graph(&(y * &c)?.sum_all()?)?;
                Ok(())
            })? - fwd;
            let (oh, ow) = (y.dims()[2], y.dims()[3]);
            let macs = (n * co * oh * ow * ci * k * k) as f64;
            let gflops = 3.0 * 2.0 * macs / ((fwd + din + dk) * 1e-3) / 1e9;
            println!("{ci}x{co}x{size}/k{k}s{s},{name},{fwd:.1},{din:.1},{dk:.1},{gflops:.1}");
        }
    }
    Ok(())
}
