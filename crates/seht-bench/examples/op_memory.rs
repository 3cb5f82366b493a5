//! Per-op memory profile of higher-order autodiff: what one layer's graphs hold.
//!
//! ```sh
//! cargo run --release -p seht-bench --example op_memory
//! ```
//!
//! For each op of a ResNet-18 stage-1 layer (input `x`: 32 × 64 × 32 × 32,
//! f32, 8 MiB) with loss `Σ f(x)·c` for a fixed random `c`, it prints the live
//! heap, in units of `x`'s size, that is held:
//!
//! - `forward`: by the output and its graph (what a plain step keeps until
//!   its backward pass);
//! - `grad graph`: additionally, by the gradient kept on the graph
//!   (`backward_create_graph`, the first half of a Hessian-vector product);
//! - `hvp peak`: the peak, above the forward, of building the gradient and one
//!   Hessian-vector product `∂(gᵀv)/∂(x, w)` without its graph.
//!
//! The numbers are the allocator's ([`CountingAlloc`]), one run each; they show
//! which backward rules hold what (docs/performance.md, "Memory").

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Module, ModuleT, VarBuilder, VarMap};
use seht_bench::CountingAlloc;
use seht_candle::malloc::{live_bytes, peak_bytes};
use seht_candle::{backward_create_graph, backward_no_graph};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn randn(shape: &[usize], seed: u64) -> Res<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.sample(rand_distr::StandardNormal)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn profile(name: &str, f: &dyn Fn(&Tensor) -> candle_core::Result<Tensor>, vars: &[Var], x: &Var) -> Res<()> {
    let unit = (x.elem_count() * 4) as f64;
    let c = randn(&f(x.as_tensor())?.dims().to_vec(), 7)?;
    let probes: Vec<Tensor> =
        vars.iter().enumerate().map(|(i, v)| randn(v.dims(), 20 + i as u64)).collect::<Res<_>>()?;
    let base = live_bytes();
    let loss = (f(x.as_tensor())? * &c)?.sum_all()?;
    let forward = live_bytes() - base;
    let (res, plain) = peak_bytes(|| backward_no_graph(&loss).map(drop));
    res?;
    let g = backward_create_graph(&loss)?;
    let grad_graph = live_bytes() - base;
    drop(g);
    // Σ_p g_p·σ_p over the variables with a gradient: one Hessian-vector
    // product's directional derivative.
    let directional = |g: &candle_core::backprop::GradStore| -> Res<Option<Tensor>> {
        let mut s: Option<Tensor> = None;
        for (v, p) in vars.iter().zip(&probes) {
            if let Some(gi) = g.get(v.as_tensor()) {
                let t = (gi * p)?.sum_all()?;
                s = Some(match s {
                    None => t,
                    Some(a) => (a + t)?,
                });
            }
        }
        Ok(s)
    };
    let (res, peak) = peak_bytes(|| -> Res<()> {
        let g = backward_create_graph(&loss)?;
        if let Some(s) = directional(&g)? {
            backward_no_graph(&s)?;
        }
        Ok(())
    });
    res?;
    // The exact penalised step: loss + σᵀHσ, the product kept on the graph
    // and the whole differentiated once more (third order).
    let (res, exact) = peak_bytes(|| -> Res<()> {
        let g = backward_create_graph(&loss)?;
        if let Some(s) = directional(&g)? {
            let hv = backward_create_graph(&s)?;
            if let Some(q) = directional(&hv)? {
                backward_no_graph(&(&loss + q)?)?;
            }
        }
        Ok(())
    });
    res?;
    println!(
        "| {name} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
        forward as f64 / unit,
        plain as f64 / unit,
        grad_graph as f64 / unit,
        peak as f64 / unit,
        exact as f64 / unit
    );
    Ok(())
}

fn main() -> Res<()> {
    let (n, ch, hw) = (32, 64, 32);
    let x = Var::from_tensor(&randn(&[n, ch, hw, hw], 1)?)?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let conv = candle_nn::conv2d_no_bias(
        ch,
        ch,
        3,
        candle_nn::Conv2dConfig { padding: 1, ..Default::default() },
        vb.pp("conv"),
    )?;
    let bn = candle_nn::batch_norm(ch, candle_nn::BatchNormConfig::default(), vb.pp("bn"))?;
    let lean = seht_candle::ops::BatchNorm::new(ch, vb.pp("lean"))?;
    let vars_of = |prefix: &str| -> Vec<Var> {
        let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<(String, Var)> = data
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && !k.contains("running"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, v)| v).collect()
    };
    let with_x = |mut v: Vec<Var>| {
        v.insert(0, x.clone());
        v
    };
    println!(
        "| op (input 32×64×32×32, f32) | forward | plain backward peak | + gradient on the graph | HVP peak | exact step peak |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    profile("conv 3×3, 64→64", &|t| conv.forward(t), &with_x(vars_of("conv")), &x)?;
    profile("BatchNorm (candle_nn, training)", &|t| bn.forward_t(t, true), &with_x(vars_of("bn")), &x)?;
    profile(
        "BatchNorm (seht_candle::ops, training)",
        &|t| lean.forward_t(t, true).map_err(candle_core::Error::wrap),
        &with_x(vars_of("lean")),
        &x,
    )?;
    profile(
        "BatchNorm (seht_candle::ops, composed from candle ops)",
        &|t| lean.forward_t_composed(t, true).map_err(candle_core::Error::wrap),
        &with_x(vars_of("lean")),
        &x,
    )?;
    profile(
        "ReLU (seht_candle::ops)",
        &|t| seht_candle::ops::relu(t).map_err(candle_core::Error::wrap),
        &[x.clone()],
        &x,
    )?;
    profile("x² (one elementwise op)", &|t| t.sqr(), &[x.clone()], &x)?;
    profile(
        "conv → BatchNorm (seht_candle::ops) → ReLU",
        &|t| {
            let h = lean.forward_t(&conv.forward(t)?, true).map_err(candle_core::Error::wrap)?;
            seht_candle::ops::relu(&h).map_err(candle_core::Error::wrap)
        },
        &with_x([vars_of("conv"), vars_of("lean")].concat()),
        &x,
    )?;
    profile(
        "conv → BatchNorm (candle_nn) → ReLU",
        &|t| seht_candle::ops::relu(&bn.forward_t(&conv.forward(t)?, true)?).map_err(candle_core::Error::wrap),
        &with_x([vars_of("conv"), vars_of("bn")].concat()),
        &x,
    )?;
    Ok(())
}
