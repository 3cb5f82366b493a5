//! Building blocks whose candle backward is wrong or missing for higher-order
//! use, rebuilt from operations that are correct to third order.
//!
//! Measured on candle 0.11.1 (see `docs/architecture.md` and the tests):
//! `max_pool2d`'s backward is scaled by 1/k² (wrong already at first order);
//! pools with kernel ≠ stride have no backward; `conv1d` has a wrong weight
//! gradient on the CPU. The versions here use reshapes, narrows, padding,
//! stacking and reductions only, whose derivatives candle gets right.

use candle_core::{D, Tensor};

use crate::error::{Error, Result};

fn invalid(op: &'static str, message: String) -> Error {
    Error::InvalidOp { op, message }
}

fn dims4(op: &'static str, xs: &Tensor) -> Result<(usize, usize, usize, usize)> {
    xs.dims4().map_err(|_| invalid(op, format!("expected an NCHW tensor, got shape {:?}", xs.shape())))
}

/// Max pooling with a square window equal to its stride (the common 2×2/2).
///
/// `(n, c, h, w)` is reshaped to `(n, c, h/k, k, w/k, k)` and reduced with
/// `max` over the two window axes. `h` and `w` must be multiples of `k`.
pub fn max_pool2d(xs: &Tensor, k: usize) -> Result<Tensor> {
    let (n, c, h, w) = dims4("max_pool2d", xs)?;
    if k == 0 || h % k != 0 || w % k != 0 {
        return Err(invalid("max_pool2d", format!("kernel {k} must be ≥ 1 and divide the input size {h}×{w}")));
    }
    Ok(xs.reshape((n, c, h / k, k, w / k, k))?.max(5)?.max(3)?)
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
        PoolKind::Max => stacked.max(4)?,
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
