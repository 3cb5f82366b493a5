//! BatchNorm with a lean autodiff graph (Ioffe & Szegedy 2015).
//!
//! Same parameters, initial values, names (`weight`, `bias`, `running_mean`,
//! `running_var`) and defaults as `candle_nn::batch_norm` (ε = 1e-5, momentum
//! 0.1, affine; running variance updated with the unbiased batch variance, as
//! in PyTorch), so checkpoints are interchangeable. The training-mode forward
//! works on `(N, C, …)` in place instead of transposing to channel-major and
//! copying, and folds `γ/√(σ² + ε)` into one per-channel factor:
//!
//! `y = (x − μ) ⊙ (γ/√(σ² + ε)) + β`, with `μ`, `σ²` the biased batch mean and
//! variance over every axis but 1.
//!
//! On the CPU the training-mode forward is one fused op (a candle
//! `CustomOp3`; f16/bf16 inputs computed in f32): its graph node holds only
//! its input `x`, `γ` and `β`, where the same formula built from candle ops
//! keeps 3 more full-size tensors (`x − μ`, its square, the product;
//! `candle_nn`'s keeps 5 plus a transposed copy). Its backward rule is a
//! numerical kernel in a pass that keeps no graph, and custom ops of their
//! own (first and second order) and a closed form in candle ops (third) in a
//! pass that keeps it, so it is differentiable to every order: see the
//! design comment above `Train`. Other devices use the composed formula
//! ([`BatchNorm::forward_t_composed`]). Every derivative is that of the
//! formula above: the finite-difference tests check it to third order, and
//! `tests/batch_norm.rs` checks the fused op against the composed one to
//! fourth order in f64 and f32, with and without kept graphs.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, Var, WithDType};
use candle_nn::{Init, VarBuilder};

use crate::cpu_op::same_dtype;
use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::InvalidOp { op: "batch_norm", message }
}

/// BatchNorm over axis 1 of an `(N, C, …)` input.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// `num_features` channels; parameters from `vb` under the names above.
    ///
    /// # Errors
    ///
    /// candle's, from `vb` (a stored parameter of another shape).
    pub fn new(num_features: usize, vb: VarBuilder) -> Result<Self> {
        let get = |name: &str, value: f64| vb.get_with_hints(num_features, name, Init::Const(value));
        Ok(Self {
            running_mean: Var::from_tensor(&get("running_mean", 0.0)?)?,
            running_var: Var::from_tensor(&get("running_var", 1.0)?)?,
            weight: get("weight", 1.0)?,
            bias: get("bias", 0.0)?,
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    /// Training mode (`train`): normalise with the batch statistics, on the
    /// graph, and move the running statistics (off the graph). Evaluation:
    /// `x ⊙ s + t` with `s = γ/√(running σ² + ε)`, `t = β − running μ ⊙ s`.
    ///
    /// Training on the CPU uses the fused op (see the module docs), with
    /// derivatives of every order; f16/bf16 inputs are computed in f32 (with
    /// f32 copies of the parameters) and the output cast back, as
    /// `candle_nn` does. Other devices use
    /// [`forward_t_composed`](Self::forward_t_composed). Shapes: `x` is
    /// `(N, C, …)`, the output the same.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOp`] for an input of rank < 2, with another number of
    /// channels (or none), (training) with one value per channel, or of
    /// another dtype than the parameters (unless f16/bf16); candle's.
    /// Statistics are accumulated in f64 by the fused op, in the input's
    /// dtype by the composed one.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.check(x)?;
        let half = matches!(x.dtype(), DType::F16 | DType::BF16);
        if !half && self.weight.dtype() != x.dtype() {
            return Err(invalid(format!(
                "input of dtype {:?} with parameters of dtype {:?} (they must match, or the input be f16/bf16)",
                x.dtype(),
                self.weight.dtype()
            )));
        }
        if !train || !x.device().is_cpu() || !(half || matches!(x.dtype(), DType::F32 | DType::F64)) {
            return self.forward_t_composed(x, train);
        }
        if half {
            // As candle_nn: statistics and normalisation in f32, the output
            // back in the input's dtype (bf16 sums lose the mean at batch 16).
            let f32_params = |t: &Tensor| t.to_dtype(DType::F32);
            let y =
                self.train_fused(&x.to_dtype(DType::F32)?, &f32_params(&self.weight)?, &f32_params(&self.bias)?, c)?;
            return Ok(y.to_dtype(x.dtype())?);
        }
        self.train_fused(x, &self.weight, &self.bias, c)
    }

    /// The fused training forward on `x` with parameters `weight`, `bias`
    /// (all f32 or all f64), moving the running statistics.
    fn train_fused(&self, x: &Tensor, weight: &Tensor, bias: &Tensor, c: usize) -> Result<Tensor> {
        let count = self.count(x, c)?;
        let stats = Arc::new(Mutex::new(None));
        let y = x.contiguous()?.apply_op3(weight, bias, Train { eps: self.eps, stats: stats.clone() })?;
        let (mean, var) = stats
            .lock()
            .map_err(|_| invalid("the fused forward's statistics were poisoned by a panic".into()))?
            .take()
            .ok_or_else(|| invalid("the fused forward left no statistics".into()))?;
        let stat_dtype = self.running_mean.dtype();
        let mean = Tensor::from_vec(mean, c, x.device())?.to_dtype(stat_dtype)?;
        let var = Tensor::from_vec(var, c, x.device())?.to_dtype(stat_dtype)?;
        self.update_running(&mean, &var, count)?;
        Ok(y)
    }

    /// [`forward_t`](Self::forward_t) built from candle ops: the same function
    /// on every device and dtype, with 3 more full-size tensors on the
    /// training graph than the fused CPU op. The reference the fused op is
    /// tested against, and what `forward_t` uses off the CPU or in half
    /// precision.
    ///
    /// # Errors
    ///
    /// As [`forward_t`](Self::forward_t).
    pub fn forward_t_composed(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.check(x)?;
        let mut shape = vec![1usize; x.rank()];
        shape[1] = c;
        let weight = self.weight.reshape(shape.as_slice())?;
        let bias = self.bias.reshape(shape.as_slice())?;
        if !train {
            let scale = weight.broadcast_div(
                &(self.running_var.as_detached_tensor().reshape(shape.as_slice())? + self.eps)?.sqrt()?,
            )?;
            let shift = (bias - self.running_mean.as_detached_tensor().reshape(shape.as_slice())?.mul(&scale)?)?;
            // f16/bf16 inputs with f32 parameters: the factors in the input's dtype.
            let (scale, shift) = (scale.to_dtype(x.dtype())?, shift.to_dtype(x.dtype())?);
            return Ok(((x * per_channel(&scale, x.dims())?)? + per_channel(&shift, x.dims())?)?);
        }
        let count = self.count(x, c)?;
        let inv = 1.0 / count as f64;
        let mean = per_channel_sum(x)?.affine(inv, 0.0)?;
        let centred = (x - per_channel(&mean, x.dims())?)?;
        let var = per_channel_sum(&centred.sqr()?)?.affine(inv, 0.0)?;
        self.update_running(&mean.detach().flatten_all()?, &var.detach().flatten_all()?, count)?;
        let scale = weight.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(((centred * per_channel(&scale, x.dims())?)? + per_channel(&bias, x.dims())?)?)
    }

    /// The number of channels, after checking `x`'s shape against it.
    fn check(&self, x: &Tensor) -> Result<usize> {
        let c = self.weight.elem_count();
        if c == 0 || x.rank() < 2 || x.dim(1)? != c {
            return Err(invalid(format!(
                "BatchNorm over {c} channels given an input of shape {:?} (expected (N, {c}, …))",
                x.dims()
            )));
        }
        Ok(c)
    }

    /// Values per channel of a training batch (at least 2).
    fn count(&self, x: &Tensor, c: usize) -> Result<usize> {
        let count = x.elem_count() / c;
        if count < 2 {
            return Err(invalid(format!(
                "BatchNorm in training mode needs more than one value per channel, got input {:?}",
                x.dims()
            )));
        }
        Ok(count)
    }

    /// Running statistics from a batch's mean and biased variance, both `(C,)`
    /// and detached; the variance enters unbiased, as in PyTorch.
    fn update_running(&self, mean: &Tensor, var: &Tensor, count: usize) -> Result<()> {
        let m = self.momentum;
        let unbiased = count as f64 / (count as f64 - 1.0);
        self.running_mean
            .set(&(self.running_mean.as_detached_tensor().affine(1.0 - m, 0.0)? + mean.affine(m, 0.0)?)?)?;
        self.running_var
            .set(&(self.running_var.as_detached_tensor().affine(1.0 - m, 0.0)? + var.affine(m * unbiased, 0.0)?)?)?;
        Ok(())
    }
}

/// Sum of an `(N, C, …)` tensor over every axis but 1, shape `(1, C, 1, …)`:
/// first over the trailing axes `2..`, then over axis 0.
///
/// One `sum_keepdim` over `(0, 2, 3)` gives the same value but takes candle's
/// strided CPU reduction (a division per element and axis), 28× slower on a
/// ResNet-18 activation than the contiguous reduction over trailing axes that
/// the first stage gets; the second stage reduces only `N·C` values.
fn per_channel_sum(x: &Tensor) -> candle_core::Result<Tensor> {
    let trailing: Vec<usize> = (2..x.rank()).collect();
    let partial = if trailing.is_empty() { x.clone() } else { x.sum_keepdim(trailing)? };
    partial.sum_keepdim(0)
}

/// A `(1, C, 1, …)` tensor broadcast to `dims` in two stages, `(N, C, 1, …)`
/// then `dims`, so that the backward pass's sum (and, in a Hessian-vector
/// product, the sums of every later derivative) is again the two-stage one of
/// [`per_channel_sum`] and not one strided reduction.
fn per_channel(t: &Tensor, dims: &[usize]) -> candle_core::Result<Tensor> {
    let mut stage = vec![1usize; dims.len()];
    stage[0] = dims[0];
    stage[1] = dims[1];
    t.broadcast_as(stage.as_slice())?.broadcast_as(dims)
}

// ---------------------------------------------------------------------------
// The fused CPU path.
//
// `y = Train(x, γ, β)` is one op whose graph node holds only its inputs. Its
// backward rule, in a pass that keeps no graph, is one numerical kernel on
// detached inputs. In a pass that keeps its graph (the gradient inside a
// Hessian-vector product) it is written with ops of its own, one per order
// of derivative, so that what the graph records is one node per order
// holding its inputs, not the dozen full-size intermediates of the formula:
//
// - `x̂ = Normalise(x)` (recomputed) for `∂γ = Σ g ⊙ x̂`;
// - order 1, `NormaliseVjp(x, g) = J(x) g` with J the (symmetric) Jacobian of
//   x ↦ x̂: `J g = (g − mean g − x̂ ⊙ mean(g ⊙ x̂)) / √(σ² + ε)` per channel,
//   so `∂x = J(x)(γ ⊙ g)`;
// - order 2, `NormaliseVjp2(x, g, u) = (∂_x⟨u, J(x) g⟩, J(x) u)`, stacked;
// - order 3, NormaliseVjp2's own backward, by formulas derived by hand and
//   computed with candle ops: on detached inputs in a pass that keeps no
//   graph (every third pass of this crate's penalties), on the tracked ones
//   otherwise, so a fourth derivative and beyond go through candle's rules.
//
// `tests/batch_norm.rs` checks the path against the composed formula to
// fourth order in f64.
// ---------------------------------------------------------------------------

fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    crate::cpu_op::slice(s, l, "seht-batch-norm", what)
}

fn tensor_of<T: WithDType>(s: &CpuStorage, l: &Layout, what: &str) -> candle_core::Result<Tensor> {
    Tensor::from_slice(slice::<T>(s, l, what)?, l.dims(), &candle_core::Device::Cpu)
}

/// Per-channel statistics of a contiguous `(N, C, S…)` slice, accumulated in
/// f64 (two passes): `(mean, biased variance)` of channel `j` for each `j`.
fn channel_stats<T: WithDType>(x: &[T], n: usize, c: usize, s: usize) -> (Vec<f64>, Vec<f64>) {
    let count = (n * s) as f64;
    let mut mean = vec![0f64; c];
    let mut var = vec![0f64; c];
    for i in 0..n {
        for (j, m) in mean.iter_mut().enumerate() {
            *m += x[(i * c + j) * s..(i * c + j + 1) * s].iter().map(|v| v.to_f64()).sum::<f64>();
        }
    }
    mean.iter_mut().for_each(|m| *m /= count);
    for i in 0..n {
        for (j, v) in var.iter_mut().enumerate() {
            let mu = mean[j];
            *v += x[(i * c + j) * s..(i * c + j + 1) * s].iter().map(|v| (v.to_f64() - mu).powi(2)).sum::<f64>();
        }
    }
    var.iter_mut().for_each(|v| *v /= count);
    (mean, var)
}

/// `x̂ ⊙ γ + β` per channel (`affine` = `(γ, β)`; `None`: `x̂`) of a contiguous
/// `(N, C, S…)` slice, given its statistics, computed in f64.
fn normalise_kernel<T: WithDType>(
    x: &[T],
    mean: &[f64],
    var: &[f64],
    eps: f64,
    (n, c, s): (usize, usize, usize),
    affine: Option<(&[T], &[T])>,
) -> Vec<T> {
    let mut y = vec![T::zero(); x.len()];
    for i in 0..n {
        for j in 0..c {
            let (w, b) = affine.map_or((1.0, 0.0), |(w, b)| (w[j].to_f64(), b[j].to_f64()));
            let (mu, scale) = (mean[j], w / (var[j] + eps).sqrt());
            let r = (i * c + j) * s..(i * c + j + 1) * s;
            for (out, v) in y[r.clone()].iter_mut().zip(&x[r]) {
                *out = T::from_f64((v.to_f64() - mu) * scale + b);
            }
        }
    }
    y
}

/// `J(x)(γ ⊙ g)` per channel (`weight` = γ; `None`: `J(x) g`) of contiguous
/// `(N, C, S…)` slices, with the per-channel sums `Σ g` and `Σ g ⊙ x̂` it
/// needs (the gradients of β and γ), computed in f64.
fn vjp_kernel<T: WithDType>(
    x: &[T],
    g: &[T],
    eps: f64,
    (n, c, s): (usize, usize, usize),
    weight: Option<&[T]>,
) -> (Vec<T>, Vec<f64>, Vec<f64>) {
    let count = (n * s) as f64;
    let (mean, var) = channel_stats(x, n, c, s);
    let inv: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let (mut g_sum, mut gx_sum) = (vec![0f64; c], vec![0f64; c]);
    for i in 0..n {
        for j in 0..c {
            let r = (i * c + j) * s..(i * c + j + 1) * s;
            for (gv, xv) in g[r.clone()].iter().zip(&x[r]) {
                let gv = gv.to_f64();
                g_sum[j] += gv;
                gx_sum[j] += gv * (xv.to_f64() - mean[j]) * inv[j];
            }
        }
    }
    let mut out = vec![T::zero(); x.len()];
    for i in 0..n {
        for j in 0..c {
            let f = weight.map_or(1.0, |w| w[j].to_f64()) * inv[j];
            let (gm, gxm) = (g_sum[j] / count, gx_sum[j] / count);
            let r = (i * c + j) * s..(i * c + j + 1) * s;
            for ((o, gv), xv) in out[r.clone()].iter_mut().zip(&g[r.clone()]).zip(&x[r]) {
                let x_hat = (xv.to_f64() - mean[j]) * inv[j];
                *o = T::from_f64((gv.to_f64() - gm - x_hat * gxm) * f);
            }
        }
    }
    (out, g_sum, gx_sum)
}

/// `(N, C, S)` of a layout of rank ≥ 2.
fn ncs(l: &Layout) -> candle_core::Result<(usize, usize, usize)> {
    let d = l.dims();
    if d.len() < 2 {
        candle_core::bail!("seht-batch-norm: input of rank {} (expected (N, C, …))", d.len());
    }
    Ok((d[0], d[1], d[2..].iter().product()))
}

/// Per-channel batch mean and biased variance, left by the fused forward.
type Stats = Arc<Mutex<Option<(Vec<f64>, Vec<f64>)>>>;

/// `(x, γ, β) ↦ x̂ ⊙ γ + β`, leaving the batch mean and biased variance in
/// `stats`.
struct Train {
    eps: f64,
    stats: Stats,
}

impl Train {
    fn run<T: WithDType>(&self, x: &[T], w: &[T], b: &[T], l: &Layout) -> candle_core::Result<CpuStorage> {
        let (n, c, s) = ncs(l)?;
        if w.len() != c || b.len() != c {
            candle_core::bail!("seht-batch-norm: {} weights and {} biases for {c} channels", w.len(), b.len());
        }
        let (mean, var) = channel_stats(x, n, c, s);
        let y = normalise_kernel(x, &mean, &var, self.eps, (n, c, s), Some((w, b)));
        *self.stats.lock().map_err(|_| candle_core::Error::Msg("seht-batch-norm: poisoned statistics".into()))? =
            Some((mean, var));
        Ok(T::to_cpu_storage_owned(y))
    }

    /// `(∂x, ∂γ, ∂β)` for the incoming gradient `g`, numerically.
    fn gradients<T: WithDType>(
        &self,
        x: &[T],
        w: &[T],
        g: &[T],
        dims: &[usize],
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let (n, c, s) = (dims[0], dims[1], dims[2..].iter().product::<usize>());
        if x.len() != n * c * s || g.len() != x.len() || w.len() != c {
            candle_core::bail!(
                "seht-batch-norm: {} inputs, {} gradients and {} weights for shape {dims:?}",
                x.len(),
                g.len(),
                w.len()
            );
        }
        let (dx, g_sum, gx_sum) = vjp_kernel(x, g, self.eps, (n, c, s), Some(w));
        let dev = candle_core::Device::Cpu;
        let small = |v: Vec<f64>| Tensor::from_vec(v.into_iter().map(T::from_f64).collect::<Vec<T>>(), c, &dev);
        Ok((Tensor::from_vec(dx, dims, &dev)?, small(gx_sum)?, small(g_sum)?))
    }
}

impl CustomOp3 for Train {
    fn name(&self) -> &'static str {
        "seht-batch-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match same_dtype(self.name(), &[s1.dtype(), s2.dtype(), s3.dtype()])? {
            DType::F32 => self.run(
                slice::<f32>(s1, l1, "the input")?,
                slice::<f32>(s2, l2, "γ")?,
                slice::<f32>(s3, l3, "β")?,
                l1,
            )?,
            _ => self.run(
                slice::<f64>(s1, l1, "the input")?,
                slice::<f64>(s2, l2, "γ")?,
                slice::<f64>(s3, l3, "β")?,
                l1,
            )?,
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        if !candle_core::backprop::do_not_detach() {
            let (x, w, g) = (x.detach(), weight.detach().contiguous()?, g.detach().contiguous()?);
            let (xs, xl) = x.storage_and_layout();
            let (ws, wl) = w.storage_and_layout();
            let (gs, gl) = g.storage_and_layout();
            let (candle_core::Storage::Cpu(xs), candle_core::Storage::Cpu(ws), candle_core::Storage::Cpu(gs)) =
                (&*xs, &*ws, &*gs)
            else {
                candle_core::bail!("seht-batch-norm: the fused op runs on the CPU only");
            };
            let (dx, dw, db) = match same_dtype(self.name(), &[xs.dtype(), ws.dtype(), gs.dtype()])? {
                DType::F32 => self.gradients(
                    slice::<f32>(xs, xl, "the input")?,
                    slice::<f32>(ws, wl, "γ")?,
                    slice::<f32>(gs, gl, "the gradient")?,
                    x.dims(),
                )?,
                _ => self.gradients(
                    slice::<f64>(xs, xl, "the input")?,
                    slice::<f64>(ws, wl, "γ")?,
                    slice::<f64>(gs, gl, "the gradient")?,
                    x.dims(),
                )?,
            };
            return Ok((Some(dx), Some(dw), Some(db)));
        }
        let mut shape = vec![1usize; x.rank()];
        shape[1] = weight.elem_count();
        let x_hat = x.apply_op1(Normalise { eps: self.eps })?;
        let scaled = (g * per_channel(&weight.reshape(shape.as_slice())?, g.dims())?)?;
        let d_x = x.apply_op2(&scaled, NormaliseVjp { eps: self.eps })?;
        let d_weight = per_channel_sum(&(g * x_hat)?)?.flatten_all()?;
        let d_bias = per_channel_sum(g)?.flatten_all()?;
        Ok((Some(d_x), Some(d_weight), Some(d_bias)))
    }
}

/// `x ↦ x̂`.
struct Normalise {
    eps: f64,
}

impl Normalise {
    fn run<T: WithDType>(&self, x: &[T], l: &Layout) -> candle_core::Result<CpuStorage> {
        let (n, c, s) = ncs(l)?;
        let (mean, var) = channel_stats(x, n, c, s);
        let y = normalise_kernel(x, &mean, &var, self.eps, (n, c, s), None);
        Ok(T::to_cpu_storage_owned(y))
    }
}

impl candle_core::CustomOp1 for Normalise {
    fn name(&self) -> &'static str {
        "seht-batch-norm-normalise"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match same_dtype(self.name(), &[s.dtype()])? {
            DType::F32 => self.run(slice::<f32>(s, l, "the input")?, l)?,
            _ => self.run(slice::<f64>(s, l, "the input")?, l)?,
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = NormaliseVjp { eps: self.eps };
        Ok(Some(if candle_core::backprop::do_not_detach() {
            x.apply_op2(&g.contiguous()?, op)?
        } else {
            x.detach().apply_op2_no_bwd(&g.detach().contiguous()?, &op)?
        }))
    }
}

/// `(x, g) ↦ J(x) g`.
struct NormaliseVjp {
    eps: f64,
}

impl NormaliseVjp {
    fn run<T: WithDType>(&self, x: &[T], g: &[T], l: &Layout) -> candle_core::Result<CpuStorage> {
        let (n, c, s) = ncs(l)?;
        if g.len() != x.len() {
            candle_core::bail!("seht-batch-norm: gradient of {} values for an input of {}", g.len(), x.len());
        }
        let (out, _, _) = vjp_kernel(x, g, self.eps, (n, c, s), None);
        Ok(T::to_cpu_storage_owned(out))
    }
}

impl candle_core::CustomOp2 for NormaliseVjp {
    fn name(&self) -> &'static str {
        "seht-batch-norm-vjp"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match same_dtype(self.name(), &[s1.dtype(), s2.dtype()])? {
            DType::F32 => self.run(slice::<f32>(s1, l1, "the input")?, slice::<f32>(s2, l2, "the gradient")?, l1)?,
            _ => self.run(slice::<f64>(s1, l1, "the input")?, slice::<f64>(s2, l2, "the gradient")?, l1)?,
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let op = NormaliseVjp2 { eps: self.eps };
        let both = if candle_core::backprop::do_not_detach() {
            x.apply_op3(g, &u.contiguous()?, op)?
        } else {
            x.detach().apply_op3_no_bwd(&g.detach(), &u.detach().contiguous()?, &op)?
        };
        Ok((Some(both.get(0)?), Some(both.get(1)?)))
    }
}

/// `(x, g, u) ↦ (∂_x⟨u, J(x) g⟩, J(x) u)`, stacked on a new axis 0.
struct NormaliseVjp2 {
    eps: f64,
}

/// Per-channel algebra of `x ↦ x̂` at one `x` (`(N, C, …)`, `n` values per
/// channel): `x̂`, `r = 1/√(σ² + ε)` (shape `(1, C, 1, …)`), per-channel dot
/// products and `J v = r (v − mean v − x̂ ⟨v, x̂⟩/n)`. Built from candle ops:
/// on tracked inputs every result is differentiable again.
struct Channel {
    x_hat: Tensor,
    r: Tensor,
    n: f64,
    dims: Vec<usize>,
}

impl Channel {
    fn new(x: &Tensor, eps: f64) -> candle_core::Result<Self> {
        let dims = x.dims().to_vec();
        let n = (x.elem_count() / x.dim(1)?) as f64;
        let mean = per_channel_sum(x)?.affine(1.0 / n, 0.0)?;
        let centred = (x - per_channel(&mean, &dims)?)?;
        let var = per_channel_sum(&centred.sqr()?)?.affine(1.0 / n, 0.0)?;
        let r = (var + eps)?.sqrt()?.recip()?;
        let x_hat = (centred * per_channel(&r, &dims)?)?;
        Ok(Self { x_hat, r, n, dims })
    }

    /// `(1, C, 1, …)` tensor broadcast to the full shape.
    fn full(&self, t: &Tensor) -> candle_core::Result<Tensor> {
        per_channel(t, &self.dims)
    }

    /// Per-channel `⟨a, b⟩`, shape `(1, C, 1, …)`.
    fn dot(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        per_channel_sum(&(a * b)?)
    }

    /// `K(a, b) = ⟨a, b⟩ − n·mean(a)·mean(b)` per channel.
    fn k(&self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        self.dot(a, b)? - (per_channel_sum(a)? * per_channel_sum(b)?)?.affine(1.0 / self.n, 0.0)?
    }

    /// `J v`, given `vx = ⟨v, x̂⟩`.
    fn j(&self, v: &Tensor, vx: &Tensor) -> candle_core::Result<Tensor> {
        let mean = per_channel_sum(v)?.affine(1.0 / self.n, 0.0)?;
        let centred = (v - self.full(&mean)?)?;
        (centred - (&self.x_hat * self.full(&vx.affine(1.0 / self.n, 0.0)?)?)?)? * self.full(&self.r)?
    }

    /// `F(g, u) = ∂_x⟨u, J(x) g⟩ = −(r²/n)(K(g, u) − ab/n) x̂ − (r/n)(b J u + a J g)`
    /// with `a = ⟨u, x̂⟩`, `b = ⟨g, x̂⟩`, `J u`, `J g` given.
    #[allow(clippy::too_many_arguments)]
    fn f(
        &self,
        g: &Tensor,
        u: &Tensor,
        a: &Tensor,
        b: &Tensor,
        ju: &Tensor,
        jg: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let n = self.n;
        let r2 = self.r.sqr()?;
        let coef = ((r2 * (self.k(g, u)? - (a * b)?.affine(1.0 / n, 0.0)?)?)?).affine(-1.0 / n, 0.0)?;
        let rn = self.r.affine(-1.0 / n, 0.0)?;
        let first = (&self.x_hat * self.full(&coef)?)?;
        let second = ((ju * self.full(&(&rn * b)?)?)? + (jg * self.full(&(&rn * a)?)?)?)?;
        first + second
    }
}

impl NormaliseVjp2 {
    /// `(F(g, u), J u)`, stacked on axis 0.
    fn value(&self, x: &Tensor, g: &Tensor, u: &Tensor) -> candle_core::Result<Tensor> {
        let ch = Channel::new(x, self.eps)?;
        let (a, b) = (ch.dot(u, &ch.x_hat)?, ch.dot(g, &ch.x_hat)?);
        let (ju, jg) = (ch.j(u, &a)?, ch.j(g, &b)?);
        Tensor::stack(&[ch.f(g, u, &a, &b, &ju, &jg)?, ju], 0)
    }

    /// `∂_{x, g, u} Φ` for `Φ = ⟨w₁, F(g, u)⟩ + ⟨w₂, J u⟩` (the third
    /// derivatives, derived by hand from the formulas above; checked against
    /// autodiff of the composed formula by `tests/batch_norm.rs`):
    ///
    /// - `∂_u Φ = −(r/n)(p J g + b J w₁ + ⟨w₁, J g⟩ x̂) + J w₂`,
    /// - `∂_g Φ = −(r/n)(p J u + a J w₁ + ⟨w₁, J u⟩ x̂)`,
    /// - `∂_x Φ = ∇T₁ + ∇T₂ + F(u, w₂)`, where `T₁ = −(r²/n)(K(g, u) − ab/n) p`
    ///   and `T₂ = −(r/n)(b⟨w₁, J u⟩ + a⟨w₁, J g⟩)` are the two parts of
    ///   `⟨w₁, F(g, u)⟩`, with `∇r = −r² x̂/n`, `∇a = J u`, `∇b = J g`,
    ///   `∇p = J w₁`, `∇⟨w₁, J u⟩ = F(u, w₁)`, `∇⟨w₁, J g⟩ = F(g, w₁)`;
    ///
    /// `p = ⟨w₁, x̂⟩`, `a = ⟨u, x̂⟩`, `b = ⟨g, x̂⟩`.
    fn vjp(&self, x: &Tensor, g: &Tensor, u: &Tensor, w: &Tensor) -> candle_core::Result<[Tensor; 3]> {
        let ch = Channel::new(x, self.eps)?;
        let n = ch.n;
        let (w1, w2) = (w.get(0)?, w.get(1)?);
        let x_hat = &ch.x_hat;
        let (a, b) = (ch.dot(u, x_hat)?, ch.dot(g, x_hat)?);
        let (p, s) = (ch.dot(&w1, x_hat)?, ch.dot(&w2, x_hat)?);
        let (ju, jg) = (ch.j(u, &a)?, ch.j(g, &b)?);
        let (jw1, jw2) = (ch.j(&w1, &p)?, ch.j(&w2, &s)?);
        let (q_u, q_g) = (ch.dot(&w1, &ju)?, ch.dot(&w1, &jg)?);
        let r = &ch.r;
        let full = |t: &Tensor| ch.full(t);
        let rn = r.affine(-1.0 / n, 0.0)?;
        // ∂_u Φ and ∂_g Φ.
        let d_u = ((((&jg * full(&(&rn * &p)?)?)? + (&jw1 * full(&(&rn * &b)?)?)?)?
            + (x_hat * full(&(&rn * &q_g)?)?)?)?
            + &jw2)?;
        let d_g = (((&ju * full(&(&rn * &p)?)?)? + (&jw1 * full(&(&rn * &a)?)?)?)? + (x_hat * full(&(&rn * &q_u)?)?)?)?;
        // ∇T₁ = −(1/n)[−(2r³/n)(K − ab/n) p x̂ − (r² p/n)(b J u + a J g) + r² (K − ab/n) J w₁].
        let r2 = r.sqr()?;
        let kab = (ch.k(g, u)? - (&a * &b)?.affine(1.0 / n, 0.0)?)?;
        let t1 = ((((x_hat * full(&((&r2 * r)? * (&kab * &p)?)?.affine(2.0 / (n * n), 0.0)?)?)?
            + (&ju * full(&((&r2 * &p)? * &b)?.affine(1.0 / (n * n), 0.0)?)?)?)?
            + (&jg * full(&((&r2 * &p)? * &a)?.affine(1.0 / (n * n), 0.0)?)?)?)?
            - (&jw1 * full(&(&r2 * &kab)?.affine(1.0 / n, 0.0)?)?)?)?;
        // ∇T₂ = −(1/n)[−(r²/n)(b q_u + a q_g) x̂ + r(q_u J g + q_g J u + b F(u, w₁) + a F(g, w₁))].
        let f_uw1 = ch.f(u, &w1, &p, &a, &jw1, &ju)?;
        let f_gw1 = ch.f(g, &w1, &p, &b, &jw1, &jg)?;
        let t2 = ((((x_hat * full(&(&r2 * ((&b * &q_u)? + (&a * &q_g)?)?)?.affine(1.0 / (n * n), 0.0)?)?)?
            + (&jg * full(&(&rn * &q_u)?)?)?)?
            + (&ju * full(&(&rn * &q_g)?)?)?)?
            + ((&f_uw1 * full(&(&rn * &b)?)?)? + (&f_gw1 * full(&(&rn * &a)?)?)?)?)?;
        let f_uw2 = ch.f(u, &w2, &s, &a, &jw2, &ju)?;
        let d_x = ((t1 + t2)? + f_uw2)?;
        Ok([d_x, d_g, d_u])
    }
}

impl CustomOp3 for NormaliseVjp2 {
    fn name(&self) -> &'static str {
        "seht-batch-norm-vjp2"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let out = match same_dtype(self.name(), &[s1.dtype(), s2.dtype(), s3.dtype()])? {
            DType::F32 => self.value(
                &tensor_of::<f32>(s1, l1, "the input")?,
                &tensor_of::<f32>(s2, l2, "the gradient")?,
                &tensor_of::<f32>(s3, l3, "the direction")?,
            )?,
            _ => self.value(
                &tensor_of::<f64>(s1, l1, "the input")?,
                &tensor_of::<f64>(s2, l2, "the gradient")?,
                &tensor_of::<f64>(s3, l3, "the direction")?,
            )?,
        };
        let shape = out.shape().clone();
        let storage = match out.dtype() {
            DType::F32 => f32::to_cpu_storage_owned(out.flatten_all()?.to_vec1::<f32>()?),
            _ => f64::to_cpu_storage_owned(out.flatten_all()?.to_vec1::<f64>()?),
        };
        Ok((storage, shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        u: &Tensor,
        _res: &Tensor,
        w: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [d_x, d_g, d_u] = if candle_core::backprop::do_not_detach() {
            // Kept graph (a fourth derivative to come): the same formulas on
            // the tracked inputs, differentiable again.
            self.vjp(x, g, u, w)?
        } else {
            self.vjp(&x.detach(), &g.detach(), &u.detach(), &w.detach())?
        };
        Ok((Some(d_x), Some(d_g), Some(d_u)))
    }
}
