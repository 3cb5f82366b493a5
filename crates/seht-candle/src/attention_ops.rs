//! The blocks of a pre-norm transformer (GPT-2 style), built from operations
//! whose derivatives candle gets right to every order (re-exported through
//! [`crate::ops`]).
//!
//! Measured on candle 0.11.1 in f64 against central finite differences
//! (`tests/attention_ops.rs`):
//!
//! | candle's | its backward | here |
//! | --- | --- | --- |
//! | `candle_nn::ops::softmax_last_dim` (fused kernel) | none: no gradient reaches the input | [`softmax_last_dim`] |
//! | `candle_nn::ops::layer_norm`, `candle_nn::LayerNorm::forward` on contiguous input (fused kernel) | none for the input, γ or β (and no f64 kernel on the CPU) | [`layer_norm`] |
//! | `Tensor::gelu` (tanh form) | its derivative is written with six-digit constants (`0.0356774`, `0.797885`, …): gradient relative error 9e-7, HVP 1e-7, `∇(σᵀHσ)` 4e-7 (the derivatives of that approximation) | [`gelu_tanh`] |
//! | `Tensor::gelu_erf` | its derivative uses `0.398942` for `1/√(2π)`: gradient relative error 5e-7, HVP 9e-8, `∇(σᵀHσ)` 3e-7 | [`gelu`] |
//! | `candle_nn::ops::softmax` (composite) | correct to third order | [`softmax_last_dim`] is the same function with the row maximum detached, which spares the gradient of the maximum (it cancels exactly) |
//!
//! candle's GELU errors pass a 1e-6 tolerance; ours are at 1e-11–5e-10.
//!
//! Multi-head attention needs no op of its own: reshapes, transposes and
//! batched (4-d) matrix products are exact in candle to third order (checked
//! in the tests, with [`scaled_dot_product_attention`] composed from them).

use candle_core::{D, Tensor};

use crate::error::{Error, Result};

fn invalid(op: &'static str, message: String) -> Error {
    Error::InvalidOp { op, message }
}

/// `softmax(x)_i = exp(x_i − m) / Σ_j exp(x_j − m)` over the last dimension,
/// with `m` the row maximum held constant (detached). Same shape as `xs`.
///
/// The value does not depend on `m`, so neither does any derivative: holding
/// it constant changes no derivative of any order, and it keeps `exp` from
/// overflowing. Entries equal to `−∞` (a masked score, [`causal_mask`]) get
/// probability 0 and gradient 0 at every order, as long as each row has one
/// finite entry; a row of `−∞` only gives NaN.
///
/// # Errors
/// [`Error::InvalidOp`] for a rank-0 tensor; candle's for a non-float dtype.
pub fn softmax_last_dim(xs: &Tensor) -> Result<Tensor> {
    if xs.rank() == 0 {
        return Err(invalid("softmax_last_dim", "expected at least one dimension, got a scalar".into()));
    }
    let max = xs.detach().max_keepdim(D::Minus1)?;
    let num = xs.broadcast_sub(&max)?.exp()?;
    let den = num.sum_keepdim(D::Minus1)?;
    Ok(num.broadcast_div(&den)?)
}

/// Layer normalisation over the last dimension (Ba, Kiros & Hinton 2016;
/// PyTorch's `nn.LayerNorm`): `γ ⊙ (x − μ) / √(σ² + ε) + β`, with `μ` and the
/// biased variance `σ² = mean((x − μ)²)` over the last dimension of size `d`.
/// `xs` is `(…, d)`, `gamma` and `beta` are `(d)`; the result has the shape of
/// `xs`. PyTorch's default is `eps = 1e-5`.
///
/// # Errors
/// [`Error::InvalidOp`] when `gamma` or `beta` is not `(d)`, or `eps` is not
/// positive and finite.
pub fn layer_norm(xs: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64) -> Result<Tensor> {
    let d = xs.dims().last().copied().ok_or_else(|| invalid("layer_norm", "expected (…, d), got a scalar".into()))?;
    if gamma.dims() != [d] || beta.dims() != [d] {
        return Err(invalid(
            "layer_norm",
            format!("γ {:?} and β {:?} must both be ({d}) for input {:?}", gamma.dims(), beta.dims(), xs.dims()),
        ));
    }
    if !(eps > 0.0 && eps.is_finite()) {
        return Err(invalid("layer_norm", format!("eps = {eps} must be positive and finite")));
    }
    let centred = xs.broadcast_sub(&xs.mean_keepdim(D::Minus1)?)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(gamma)?.broadcast_add(beta)?)
}

/// GELU, exact form (Hendrycks & Gimpel 2016; PyTorch's `nn.GELU()`
/// default): `x · Φ(x) = ½ x (1 + erf(x / √2))`. Same shape as `xs`.
///
/// Composed from candle's `erf`, whose derivative `2/√π · exp(−x²)` is built
/// from tracked ops with exact constants, so every order is exact.
pub fn gelu(xs: &Tensor) -> Result<Tensor> {
    let phi = ((xs * std::f64::consts::FRAC_1_SQRT_2)?.erf()? + 1.0)?;
    Ok((xs.mul(&phi)? * 0.5)?)
}

/// GELU, tanh form (GPT-2's, PyTorch's `nn.GELU(approximate="tanh")`):
/// `½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`. Same shape as `xs`.
pub fn gelu_tanh(xs: &Tensor) -> Result<Tensor> {
    let sqrt_2_over_pi = (2.0 / std::f64::consts::PI).sqrt();
    let inner = ((xs.sqr()?.mul(xs)? * 0.044715)? + xs)?;
    let t = ((inner * sqrt_2_over_pi)?.tanh()? + 1.0)?;
    Ok((xs.mul(&t)? * 0.5)?)
}

/// Causal masking of attention scores `(…, t, t)` (query × key): the score
/// of query `i` for key `j > i` becomes `−∞`, a constant; the others pass
/// unchanged. After [`softmax_last_dim`] the masked weights are exactly 0 and
/// no derivative of any order reaches the masked scores.
///
/// Written with `where_cond` (its backward routes the gradient by the same
/// constant mask), not by adding `−∞`, so no `0 · ∞` can appear in a
/// backward pass.
///
/// # Errors
/// [`Error::InvalidOp`] when the last two dimensions are not equal or the
/// rank is below 2.
pub fn causal_mask(scores: &Tensor) -> Result<Tensor> {
    let dims = scores.dims();
    let [.., tq, tk] = dims else {
        return Err(invalid("causal_mask", format!("expected (…, t, t) scores, got {dims:?}")));
    };
    if tq != tk {
        return Err(invalid("causal_mask", format!("expected square (…, t, t) scores, got {dims:?}")));
    }
    let t = *tq;
    let keep: Vec<u8> = (0..t * t).map(|k| u8::from(k % t <= k / t)).collect();
    let keep = Tensor::from_vec(keep, (t, t), scores.device())?.broadcast_as(dims)?;
    let minus_inf = Tensor::new(f64::NEG_INFINITY, scores.device())?.to_dtype(scores.dtype())?.broadcast_as(dims)?;
    Ok(keep.where_cond(scores, &minus_inf)?)
}

/// Scaled dot-product attention (Vaswani et al. 2017, eq. 1) per head:
/// `softmax(q kᵀ / √d_k [+ causal mask]) v`, for `q`, `k`, `v` of shape
/// `(b, h, t, d_k)` (`v` may have its own last dimension); returns
/// `(b, h, t, d_v)`.
///
/// # Errors
/// [`Error::InvalidOp`] when the shapes do not fit.
pub fn scaled_dot_product_attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    let (b, h, t, dk) =
        q.dims4().map_err(|_| invalid("attention", format!("q must be (b, h, t, d), got {:?}", q.dims())))?;
    let kd = k.dims4().map_err(|_| invalid("attention", format!("k must be (b, h, t, d), got {:?}", k.dims())))?;
    let vd = v.dims4().map_err(|_| invalid("attention", format!("v must be (b, h, t, d), got {:?}", v.dims())))?;
    if kd != (b, h, t, dk) || (vd.0, vd.1, vd.2) != (b, h, t) {
        return Err(invalid("attention", format!("q {:?}, k {:?}, v {:?} do not fit", q.dims(), k.dims(), v.dims())));
    }
    let scores = (q.contiguous()?.matmul(&k.t()?.contiguous()?)? / (dk as f64).sqrt())?;
    let scores = if causal { causal_mask(&scores)? } else { scores };
    Ok(softmax_last_dim(&scores)?.matmul(&v.contiguous()?)?)
}

/// `(b, t, h·d)` → `(b, h, t, d)`: the heads of a projection, side by side
/// in its last dimension (PyTorch's `view(b, t, h, d).transpose(1, 2)`).
///
/// # Errors
/// [`Error::InvalidOp`] when the last dimension is not a multiple of `heads`.
pub fn split_heads(xs: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, c) =
        xs.dims3().map_err(|_| invalid("split_heads", format!("expected (b, t, c), got {:?}", xs.dims())))?;
    if heads == 0 || c % heads != 0 {
        return Err(invalid("split_heads", format!("{c} channels do not split into {heads} heads")));
    }
    Ok(xs.reshape((b, t, heads, c / heads))?.transpose(1, 2)?.contiguous()?)
}

/// `(b, h, t, d)` → `(b, t, h·d)`, the inverse of [`split_heads`].
///
/// # Errors
/// [`Error::InvalidOp`] for a tensor that is not 4-d.
pub fn merge_heads(xs: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) =
        xs.dims4().map_err(|_| invalid("merge_heads", format!("expected (b, h, t, d), got {:?}", xs.dims())))?;
    Ok(xs.transpose(1, 2)?.contiguous()?.reshape((b, t, h * d))?)
}
