//! Building blocks whose candle backward is wrong or missing for higher-order
//! use, rebuilt from operations that are correct to third order.
//!
//! Measured on candle 0.11.1 (see `docs/architecture.md` and the tests):
//! `max_pool2d`'s backward is scaled by 1/k² (wrong already at first order);
//! pools with kernel ≠ stride have no backward; `conv1d` has a wrong weight
//! gradient on the CPU. The pools and `conv1d` here use reshapes, narrows,
//! padding, stacking and reductions only, whose derivatives candle gets
//! right; [`BatchNorm`] and [`conv2d`] are custom ops whose backward rules
//! are ops of their own (lean graphs, fast CPU kernels), checked against the
//! composed formulas to fourth order. [`cross_entropy`] (softmax
//! cross-entropy, the language models' loss) is fused the same way: one pass
//! over the logits per order, every derivative rule an op of its own, equal
//! to candle_nn's composed loss to fourth order (`tests/cross_entropy.rs`).
//!
//! For transformers: candle's fused `softmax_last_dim` and `layer_norm` have
//! no backward at all, and its GELU kernels' derivatives are approximate
//! (≈ 5e-7); [`softmax_last_dim`], [`layer_norm`], [`gelu`], [`gelu_tanh`],
//! [`causal_mask`] and [`scaled_dot_product_attention`] are composed from
//! exact ops (the `attention_ops` module, checked to third order in
//! `tests/attention_ops.rs`).
//!
//! ## Ties: one convention per op, at every derivative order
//!
//! Where an op's derivative routes through a comparison, a tie (two window
//! elements equal to the maximum, a ReLU input exactly 0) needs a convention:
//! finite differences are meaningless there. These ops follow PyTorch's, and
//! since each is written as `input × mask` with a mask that autodiff treats as
//! a constant, the second and third derivatives follow the same convention
//! (they are those of the linear piece the mask selects):
//!
//! | op | at a tie | PyTorch |
//! | --- | --- | --- |
//! | [`relu`] | derivative 0 at `x = 0` | `torch.relu` (candle's `relu` gives 1) |
//! | [`max_pool2d`], [`pool2d`] with [`PoolKind::Max`] | the whole gradient to the *first* maximal element of the window in row-major order (padding never wins) | `max_pool2d` (candle's reduction gives every tied element the whole gradient) |
//! | [`clamp`] | derivative 1 at `x = min` and `x = max` | `torch.clamp` (candle's `clamp` gives ½) |
//! | candle's `maximum`/`minimum` (not replaced) | ½ to each side | `torch.maximum`/`torch.minimum` |
//!
//! candle's `max`/`min` reductions give *every* tied element the whole
//! gradient (PyTorch's `amax` splits it evenly): the models of this workspace
//! use them only inside `log_softmax`, whose value does not depend on the
//! shift, so the shift's gradient cancels exactly at every order.
//!
//! The masks of [`relu`] and the max pools are also what
//! [`crate::pattern`] records and replays, so that first-order finite
//! differences stay on one linear region.

use candle_core::{D, DType, Tensor};

pub use crate::attention_ops::{
    causal_mask, gelu, gelu_tanh, layer_norm, merge_heads, scaled_dot_product_attention, softmax_last_dim, split_heads,
};
pub use crate::batch_norm::BatchNorm;
pub use crate::conv::{Conv2d, conv2d};
pub use crate::cross_entropy::cross_entropy;
use crate::error::{Error, Result};
use crate::pattern;

fn invalid(op: &'static str, message: String) -> Error {
    Error::InvalidOp { op, message }
}

fn dims4(op: &'static str, xs: &Tensor) -> Result<(usize, usize, usize, usize)> {
    xs.dims4().map_err(|_| invalid(op, format!("expected an NCHW tensor, got shape {:?}", xs.shape())))
}

/// `max(x, 0)`, with derivative 0 at `x = 0` (PyTorch's convention; see the
/// module docs). Same shape as `xs`.
///
/// Written as `x · [x > 0]` with the mask held constant, so that every
/// derivative order follows the convention, and the mask can be recorded and
/// replayed ([`crate::pattern`]).
///
/// # Errors
/// [`Error::PatternMismatch`] when replaying a pattern that does not fit.
pub fn relu(xs: &Tensor) -> Result<Tensor> {
    let m = pattern::mask("relu", xs, || Ok(xs.detach().gt(0.0)?))?;
    Ok(xs.mul(&m)?)
}

/// `min(max(x, lo), hi)` with derivative 1 on the closed interval
/// `[lo, hi]` and 0 outside (PyTorch's `torch.clamp`; candle's `clamp` gives ½
/// at the bounds). Same shape as `xs`.
///
/// # Errors
/// [`Error::InvalidOp`] when `lo > hi` or either is NaN.
pub fn clamp(xs: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    if lo.is_nan() || hi.is_nan() || lo > hi {
        return Err(invalid("clamp", format!("bounds [{lo}, {hi}] are not an interval")));
    }
    let x = xs.detach();
    let inside = pattern::mask("clamp", xs, || Ok((x.ge(lo)? * x.le(hi)?)?))?;
    // x inside the interval; the (constant) clamped value outside.
    let outside = (x.clamp(lo, hi)? * (1.0 - &inside)?)?;
    Ok((xs.mul(&inside)? + outside)?)
}

/// A one-hot `u8` mask over the last axis of `windows` `(…, k)`, marking the
/// first maximal element of each row (the lowest index among ties). Built
/// from comparisons only, the same on every device.
fn first_max_mask(windows: &Tensor) -> Result<Tensor> {
    let x = windows.detach();
    let k = x.dim(D::Minus1)?;
    let is_max = x.broadcast_eq(&x.max_keepdim(D::Minus1)?)?.to_dtype(DType::F32)?;
    // Priority k − i for index i: among tied maxima the lowest index has the
    // highest score; non-maxima score 0, and every row has a maximum.
    let priority: Vec<f32> = (0..k).map(|i| (k - i) as f32).collect();
    let priority = Tensor::from_vec(priority, k, x.device())?;
    let score = is_max.broadcast_mul(&priority)?;
    Ok(score.broadcast_eq(&score.max_keepdim(D::Minus1)?)?)
}

/// Max pooling with a square window equal to its stride (the common 2×2/2):
/// `(n, c, h, w)` → `(n, c, h/k, w/k)`; `h` and `w` must be multiples of `k`.
///
/// Ties go to the first maximal element of the window in row-major order,
/// as in PyTorch, at every derivative order (module docs): the output is the
/// window's sum of `x · mask` with the one-hot mask held constant.
///
/// # Errors
/// [`Error::InvalidOp`] for a kernel that does not divide the input;
/// [`Error::PatternMismatch`] when replaying a pattern that does not fit.
pub fn max_pool2d(xs: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = dims4("max_pool2d", xs)?;
    if k == 0 || h % k != 0 || w % k != 0 {
        return Err(invalid("max_pool2d", format!("kernel {k} must be ≥ 1 and divide the input size {h}×{w}")));
    }
    // (n, c, h/k, w/k, k·k): each window's elements in row-major order.
    let windows =
        xs.reshape((n, c, h / k, k, w / k, k))?.permute((0, 1, 2, 4, 3, 5))?.reshape((n, c, h / k, w / k, k * k))?;
    max_over_last(&windows, "max_pool2d")
}

/// `Σ_last(windows · first_max_mask(windows))`, the mask recorded/replayed.
fn max_over_last(windows: &Tensor, op: &'static str) -> Result<Tensor> {
    let m = pattern::mask(op, windows, || first_max_mask(windows))?;
    Ok(windows.mul(&m)?.sum(D::Minus1)?)
}

/// Average pooling with a square window equal to its stride.
pub fn avg_pool2d(xs: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = dims4("avg_pool2d", xs)?;
    if k == 0 || h % k != 0 || w % k != 0 {
        return Err(invalid("avg_pool2d", format!("kernel {k} must be ≥ 1 and divide the input size {h}×{w}")));
    }
    Ok(xs.reshape((n, c, h / k, k, w / k, k))?.mean(5)?.mean(3)?)
}

/// Global average pooling: `(n, c, h, w)` → `(n, c)`.
pub fn global_avg_pool(xs: &Tensor) -> Result<Tensor> {
    dims4("global_avg_pool", xs)?;
    Ok(xs.flatten_from(2)?.mean(D::Minus1)?)
}

/// Which reduction a general pool applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// Maximum over the window (padding never wins).
    Max,
    /// Mean over the window, padding counted as zeros (PyTorch's
    /// `count_include_pad=True`).
    Avg,
}

/// Rows `start, start + s, start + 2s, …` (`count` of them) along `dim`, built
/// from a narrow and a reshape so that the backward is exact.
fn strided(xs: &Tensor, dim: usize, start: usize, count: usize, s: usize) -> Result<Tensor> {
    let len = xs.dim(dim)?;
    let need = start + count * s;
    let xs = if need > len { xs.pad_with_zeros(dim, 0, need - len)? } else { xs.clone() };
    let taken = xs.narrow(dim, start, count * s)?;
    let mut shape = taken.dims().to_vec();
    shape[dim] = count;
    shape.insert(dim + 1, s);
    Ok(taken.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)?)
}

/// A general square pool (kernel, stride, zero padding), from the `k·k`
/// strided views of the padded input, stacked and reduced. Use it where the
/// kernel differs from the stride (e.g. 3×3/2 with padding 1).
/// `(n, c, h, w)` → `(n, c, (h + 2p − k)/s + 1, (w + 2p − k)/s + 1)`.
///
/// For [`PoolKind::Max`], ties go to the first maximal element of the window
/// in row-major order (PyTorch's convention; module docs).
///
/// # Errors
/// [`Error::InvalidOp`] for a zero kernel or stride, padding above half the
/// kernel, or a kernel larger than the padded input;
/// [`Error::PatternMismatch`] when replaying a pattern that does not fit.
pub fn pool2d(xs: &Tensor, kernel: usize, stride: usize, padding: usize, kind: PoolKind) -> Result<Tensor> {
    let (_, _, h, w) = dims4("pool2d", xs)?;
    if kernel == 0 || stride == 0 {
        return Err(invalid("pool2d", format!("kernel {kernel} and stride {stride} must be ≥ 1")));
    }
    if padding * 2 > kernel {
        return Err(invalid("pool2d", format!("padding {padding} must be at most half the kernel {kernel}")));
    }
    let (hp, wp) = (h + 2 * padding, w + 2 * padding);
    if hp < kernel || wp < kernel {
        return Err(invalid("pool2d", format!("kernel {kernel} is larger than the padded input {hp}×{wp}")));
    }
    let xs = if padding > 0 {
        match kind {
            PoolKind::Avg => xs.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?,
            PoolKind::Max => {
                // Pad with a value below any input so that padding never wins the max.
                let low = (xs.min_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? - 1.0).min(-1.0);
                let shifted = (xs.affine(1.0, -low))?;
                let padded = shifted.pad_with_zeros(2, padding, padding)?.pad_with_zeros(3, padding, padding)?;
                padded.affine(1.0, low)?
            }
        }
    } else {
        xs.clone()
    };
    let (oh, ow) = ((hp - kernel) / stride + 1, (wp - kernel) / stride + 1);
    let mut views = Vec::with_capacity(kernel * kernel);
    for di in 0..kernel {
        let rows = strided(&xs, 2, di, oh, stride)?;
        for dj in 0..kernel {
            views.push(strided(&rows, 3, dj, ow, stride)?);
        }
    }
    let stacked = Tensor::stack(&views, 4)?;
    Ok(match kind {
        PoolKind::Max => max_over_last(&stacked, "pool2d")?,
        PoolKind::Avg => stacked.mean(4)?,
    })
}

/// 1-D convolution `(n, c_in, l)` * `(c_out, c_in, k)` → `(n, c_out, l_out)`,
/// computed as a 2-D convolution over `(n, c_in, 1, l)` with zero padding on
/// the length axis only.
pub fn conv1d(xs: &Tensor, kernel: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (_, c_in, _) =
        xs.dims3().map_err(|_| invalid("conv1d", format!("expected (n, c, l), got {:?}", xs.shape())))?;
    let (_, kc, _) = kernel
        .dims3()
        .map_err(|_| invalid("conv1d", format!("expected a (c_out, c_in, k) kernel, got {:?}", kernel.shape())))?;
    if kc != c_in {
        return Err(invalid("conv1d", format!("kernel has {kc} input channels, input has {c_in}")));
    }
    let xs = xs.unsqueeze(2)?;
    let xs = if padding > 0 { xs.pad_with_zeros(3, padding, padding)? } else { xs };
    let kernel = kernel.unsqueeze(2)?;
    Ok(xs.conv2d(&kernel, 0, stride, 1, 1)?.squeeze(2)?)
}
