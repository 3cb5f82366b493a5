//! Softmax cross-entropy as fused CPU ops whose derivative rules are ops of
//! their own (issue 33), exact at every order.
//!
//! candle's `candle_nn::loss::cross_entropy` is `log_softmax` (max, subtract,
//! exp, sum, log, subtract) then a gather, each a full pass over the
//! `(N, V)` logits with its own graph node: on a language model's 700 ×
//! 10,000 logits it was about a third of a plain step (rayon barriers and
//! broadcast ops, `docs/performance.md`), and the kept intermediates made the
//! LSTM's higher-order steps use more memory than PyTorch's. Here:
//!
//! - [`cross_entropy`]: one pass over the logits per row (max, `Σ exp`,
//!   the label's logit) to the per-row losses `ℓᵢ = log Σⱼ exp zᵢⱼ − zᵢ,yᵢ`;
//!   the graph node holds the logits only.
//! - Its derivative `∂ℓᵢ/∂zᵢⱼ · gᵢ = (softmax(zᵢ)ⱼ − [j = yᵢ]) gᵢ` is one
//!   fused op of `(z, g)`.
//! - That op's derivative (second order): for a cotangent `u` of shape
//!   `(N, V)`, `∂/∂z = s ⊙ (w − rowsum(s ⊙ w))` with `w = u ⊙ g` and
//!   `s = softmax(z)` (a fused op), and `∂/∂g = rowsum(s ⊙ u) − u[i, yᵢ]`.
//! - The softmax op's derivative: `s ⊙ (g − rowsum(s ⊙ g))`, written with
//!   candle ops on the softmax's own output, so the third and every later
//!   order go through the softmax op again.
//!
//! In a pass that keeps no graph (a plain step, the last pass of every
//! penalty) each rule runs as one fused kernel on detached values; in a pass
//! that keeps its graph the rules are built from candle ops and these fused
//! ops. `tests/cross_entropy.rs` checks every order to the fourth against
//! candle's composed loss and against central finite differences, in f64
//! and f32.
//!
//! Sums over a row are accumulated in f64 for f32 logits too (candle's
//! composed loss sums in f32), so f32 values differ from candle's by a few
//! units in the last place.

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, WithDType};
use rayon::prelude::*;

use crate::cpu_op::same_dtype;
use crate::error::{Error, Result};

const OP: &str = "seht-cross-entropy";

fn invalid(message: String) -> Error {
    Error::InvalidOp { op: "cross_entropy", message }
}

/// Mean softmax cross-entropy `(1/N) Σᵢ (log Σⱼ exp zᵢⱼ − zᵢ,yᵢ)` of logits
/// `z` of shape `(N, V)` against class labels `y` of shape `(N,)` (`u8`,
/// `u32` or `i64`, each in `0..V`); a scalar. The value and every derivative
/// order equal `candle_nn::loss::cross_entropy`'s (its composed formula),
/// at a fraction of its passes and graph memory (see the module docs).
///
/// f32 and f64 logits on the CPU take the fused ops; other dtypes and
/// devices take `candle_nn::loss::cross_entropy` itself.
///
/// # Errors
/// [`Error::InvalidOp`] naming the op when `logits` is not two-dimensional
/// or has no rows or no classes, when `labels` is not one label per row, and when a label
/// is negative or not below `V` (naming its row and value); candle's errors
/// otherwise.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let (n, v) = logits
        .dims2()
        .map_err(|_| invalid(format!("expected logits of shape (N, V), got shape {:?}", logits.shape())))?;
    if n == 0 {
        return Err(invalid(format!("logits of shape ({n}, {v}) have no rows to average over")));
    }
    if v == 0 {
        return Err(invalid(format!("logits of shape ({n}, {v}) have no classes")));
    }
    if labels.dims() != [n] {
        return Err(invalid(format!(
            "expected {n} labels (shape ({n},)) for logits ({n}, {v}), got shape {:?}",
            labels.shape()
        )));
    }
    let ys: Vec<i64> = match labels.dtype() {
        DType::U8 | DType::U32 | DType::I64 => labels.to_dtype(DType::I64)?.to_vec1::<i64>()?,
        other => return Err(invalid(format!("labels must be u8, u32 or i64, got {other:?}"))),
    };
    let mut checked = Vec::with_capacity(n);
    for (row, &y) in ys.iter().enumerate() {
        match usize::try_from(y) {
            Ok(c) if c < v => checked.push(c),
            _ => return Err(invalid(format!("label {y} of row {row} is outside the {v} classes 0..{v}"))),
        }
    }
    // Labels are checked above for every dtype and device: candle's gather
    // (the fallback's) reads u32::MAX as "ignore this row".
    if !logits.device().is_cpu() || !matches!(logits.dtype(), DType::F32 | DType::F64) {
        return Ok(candle_nn::loss::cross_entropy(logits, labels)?);
    }
    let rows = logits.contiguous()?.apply_op1(Rows { labels: Arc::new(checked) })?;
    Ok((rows.sum_all()? / n as f64)?)
}

/// The float types the kernels run in.
trait Real: WithDType + Send + Sync {
    fn exp(self) -> Self;
    fn max(self, other: Self) -> Self;
}

impl Real for f32 {
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }
}

impl Real for f64 {
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }
}

/// The elements of a contiguous argument.
fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [T]> {
    crate::cpu_op::slice(s, l, OP, what)
}

/// `(N, V)` of a contiguous matrix argument.
fn rows_cols(l: &Layout) -> candle_core::Result<(usize, usize)> {
    match l.dims() {
        [n, v] => Ok((*n, *v)),
        d => candle_core::bail!("{OP}: expected a matrix (N, V), got dims {d:?}"),
    }
}

/// The largest entry of a row (the shift that keeps `exp` finite).
fn row_max<T: Real>(z: &[T]) -> T {
    z.iter().copied().fold(T::from_f64(f64::NEG_INFINITY), Real::max)
}

/// Row `z`'s softmax, written into `out` (same length). Max-shifted, the
/// sum accumulated in f64.
fn softmax_row<T: Real>(z: &[T], out: &mut [T]) {
    let m = row_max(z);
    let mut sum = 0f64;
    for (o, &x) in out.iter_mut().zip(z) {
        let e = (x - m).exp();
        sum += e.to_f64();
        *o = e;
    }
    let inv = T::from_f64(1.0 / sum);
    for o in out.iter_mut() {
        *o = *o * inv;
    }
}

/// Per row: `log Σⱼ exp zⱼ − z_y`.
fn rows_kernel<T: Real>(z: &[T], labels: &[usize], v: usize) -> Vec<T> {
    z.par_chunks(v)
        .zip(labels.par_iter())
        .map(|(row, &y)| {
            let m = row_max(row);
            let sum: f64 = row.iter().map(|&x| (x - m).exp().to_f64()).sum();
            T::from_f64(m.to_f64() + sum.ln() - row[y].to_f64())
        })
        .collect()
}

/// `(softmax(z) − onehot(y)) ⊙ g`, `g` one value per row.
fn grad_kernel<T: Real>(z: &[T], g: &[T], labels: &[usize], v: usize) -> Vec<T> {
    let mut out = vec![T::zero(); z.len()];
    out.par_chunks_mut(v).zip(z.par_chunks(v)).zip(g.par_iter().zip(labels.par_iter())).for_each(
        |((o, row), (&gi, &y))| {
            softmax_row(row, o);
            o[y] = o[y] - T::one();
            for x in o.iter_mut() {
                *x = *x * gi;
            }
        },
    );
    out
}

/// The derivatives of `(z, g) ↦ (softmax(z) − onehot(y)) ⊙ g` along the
/// cotangent `u`: `(s ⊙ (w − rowsum(s ⊙ w)), rowsum(s ⊙ u) − u[·, y])` with
/// `w = u ⊙ g`.
fn grad_vjp_kernel<T: Real>(z: &[T], g: &[T], u: &[T], labels: &[usize], v: usize) -> (Vec<T>, Vec<T>) {
    let mut dz = vec![T::zero(); z.len()];
    let mut dg = vec![T::zero(); g.len()];
    dz.par_chunks_mut(v)
        .zip(dg.par_iter_mut())
        .zip(z.par_chunks(v).zip(u.par_chunks(v)))
        .zip(g.par_iter().zip(labels.par_iter()))
        .for_each(|(((o, dgi), (row, ur)), (&gi, &y))| {
            softmax_row(row, o);
            let su: f64 = o.iter().zip(ur).map(|(&s, &x)| s.to_f64() * x.to_f64()).sum();
            *dgi = T::from_f64(su - ur[y].to_f64());
            // rowsum(s ⊙ w) = g · rowsum(s ⊙ u)
            let sw = T::from_f64(su * gi.to_f64());
            for (s, &x) in o.iter_mut().zip(ur) {
                *s = *s * (x * gi - sw);
            }
        });
    (dz, dg)
}

/// `s ⊙ (g − rowsum(s ⊙ g))`: the softmax's vector-Jacobian product from its
/// output `s`.
fn softmax_vjp_kernel<T: Real>(s: &[T], g: &[T], v: usize) -> Vec<T> {
    let mut out = vec![T::zero(); s.len()];
    out.par_chunks_mut(v).zip(s.par_chunks(v).zip(g.par_chunks(v))).for_each(|(o, (sr, gr))| {
        let sg = T::from_f64(sr.iter().zip(gr).map(|(&a, &b)| a.to_f64() * b.to_f64()).sum::<f64>());
        for ((x, &a), &b) in o.iter_mut().zip(sr).zip(gr) {
            *x = a * (b - sg);
        }
    });
    out
}

/// `s ⊙ (g − rowsum(s ⊙ g))` in candle ops (a graph for later orders).
fn softmax_vjp_composed(s: &Tensor, g: &Tensor) -> candle_core::Result<Tensor> {
    let sg = (s * g)?.sum_keepdim(1)?;
    s * g.broadcast_sub(&sg)?
}

/// The CPU storages and layouts of `ts`, detached and made contiguous,
/// handed to `f`.
fn on_detached<R>(
    ts: &[&Tensor],
    f: impl FnOnce(&[&CpuStorage], &[Layout]) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let ts: Vec<Tensor> = ts.iter().map(|t| t.detach().contiguous()).collect::<candle_core::Result<_>>()?;
    let guards: Vec<_> = ts.iter().map(|t| t.storage_and_layout()).collect();
    let mut storages = Vec::with_capacity(guards.len());
    let mut layouts = Vec::with_capacity(guards.len());
    for (s, l) in &guards {
        match &**s {
            candle_core::Storage::Cpu(c) => storages.push(c),
            _ => candle_core::bail!("{OP}: the fused op runs on the CPU only"),
        }
        layouts.push((*l).clone());
    }
    f(&storages, &layouts)
}

fn tensor<T: WithDType>(v: Vec<T>, dims: &[usize]) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, dims, &candle_core::Device::Cpu)
}

/// `z (N, V) ↦ ℓ (N,)`, the per-row losses.
struct Rows {
    labels: Arc<Vec<usize>>,
}

impl CustomOp1 for Rows {
    fn name(&self) -> &'static str {
        OP
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = rows_cols(l)?;
        let out = match same_dtype(OP, &[s.dtype()])? {
            DType::F32 => f32::to_cpu_storage_owned(rows_kernel(slice::<f32>(s, l, "the logits")?, &self.labels, v)),
            _ => f64::to_cpu_storage_owned(rows_kernel(slice::<f64>(s, l, "the logits")?, &self.labels, v)),
        };
        Ok((out, Shape::from(n)))
    }

    fn bwd(&self, z: &Tensor, _res: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let op = Grad { labels: self.labels.clone() };
        Ok(Some(if candle_core::backprop::do_not_detach() {
            z.apply_op2(&g.contiguous()?, op)?
        } else {
            z.detach().apply_op2_no_bwd(&g.detach().contiguous()?, &op)?
        }))
    }
}

/// `(z (N, V), g (N,)) ↦ (softmax(z) − onehot(y)) ⊙ g (N, V)`.
struct Grad {
    labels: Arc<Vec<usize>>,
}

impl CustomOp2 for Grad {
    fn name(&self) -> &'static str {
        "seht-cross-entropy-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, v) = rows_cols(l1)?;
        if l2.dims() != [n] {
            candle_core::bail!("{OP}: a gradient of shape {:?} for {n} rows", l2.dims());
        }
        let out = match same_dtype(OP, &[s1.dtype(), s2.dtype()])? {
            DType::F32 => f32::to_cpu_storage_owned(grad_kernel(
                slice::<f32>(s1, l1, "the logits")?,
                slice::<f32>(s2, l2, "the gradient")?,
                &self.labels,
                v,
            )),
            _ => f64::to_cpu_storage_owned(grad_kernel(
                slice::<f64>(s1, l1, "the logits")?,
                slice::<f64>(s2, l2, "the gradient")?,
                &self.labels,
                v,
            )),
        };
        Ok((out, l1.shape().clone()))
    }

    fn bwd(
        &self,
        z: &Tensor,
        g: &Tensor,
        _res: &Tensor,
        u: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (n, v) = z.dims2()?;
        if !candle_core::backprop::do_not_detach() {
            return on_detached(&[z, g, u], |s, l| {
                fn both<T: Real>(
                    s: &[&CpuStorage],
                    l: &[Layout],
                    labels: &[usize],
                    (n, v): (usize, usize),
                ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
                    let (dz, dg) = grad_vjp_kernel(
                        slice::<T>(s[0], &l[0], "the logits")?,
                        slice::<T>(s[1], &l[1], "the gradient")?,
                        slice::<T>(s[2], &l[2], "the cotangent")?,
                        labels,
                        v,
                    );
                    Ok((Some(tensor(dz, &[n, v])?), Some(tensor(dg, &[n])?)))
                }
                match same_dtype(OP, &[s[0].dtype(), s[1].dtype(), s[2].dtype()])? {
                    DType::F32 => both::<f32>(s, l, &self.labels, (n, v)),
                    _ => both::<f64>(s, l, &self.labels, (n, v)),
                }
            });
        }
        let s = z.apply_op1(Softmax)?;
        let dz = softmax_vjp_composed(&s, &u.broadcast_mul(&g.unsqueeze(1)?)?)?;
        let ys: Vec<u32> = self.labels.iter().map(|&y| y as u32).collect();
        let ys = Tensor::from_vec(ys, (n, 1), z.device())?;
        let dg = ((&s * u)?.sum(1)? - u.gather(&ys, 1)?.squeeze(1)?)?;
        Ok((Some(dz), Some(dg)))
    }
}

/// `z (N, V) ↦ softmax(z)` along rows.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "seht-cross-entropy-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (_, v) = rows_cols(l)?;
        fn run<T: Real>(z: &[T], v: usize) -> Vec<T> {
            let mut out = vec![T::zero(); z.len()];
            out.par_chunks_mut(v).zip(z.par_chunks(v)).for_each(|(o, row)| softmax_row(row, o));
            out
        }
        let out = match same_dtype(OP, &[s.dtype()])? {
            DType::F32 => f32::to_cpu_storage_owned(run(slice::<f32>(s, l, "the logits")?, v)),
            _ => f64::to_cpu_storage_owned(run(slice::<f64>(s, l, "the logits")?, v)),
        };
        Ok((out, l.shape().clone()))
    }

    fn bwd(&self, _z: &Tensor, s: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if candle_core::backprop::do_not_detach() {
            return Ok(Some(softmax_vjp_composed(s, g)?));
        }
        let dims = s.dims().to_vec();
        let v = dims[1];
        on_detached(&[s, g], |st, l| {
            Ok(Some(match same_dtype(OP, &[st[0].dtype(), st[1].dtype()])? {
                DType::F32 => tensor(
                    softmax_vjp_kernel(
                        slice::<f32>(st[0], &l[0], "the softmax")?,
                        slice::<f32>(st[1], &l[1], "the gradient")?,
                        v,
                    ),
                    &dims,
                )?,
                _ => tensor(
                    softmax_vjp_kernel(
                        slice::<f64>(st[0], &l[0], "the softmax")?,
                        slice::<f64>(st[1], &l[1], "the gradient")?,
                        v,
                    ),
                    &dims,
                )?,
            }))
        })
    }
}
