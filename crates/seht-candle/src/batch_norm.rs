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
//! It keeps 4 full-size tensors on the graph (`x − μ`, its square, the
//! product, the sum) where `candle_nn`'s keeps 5 plus a transposed copy, and
//! the gradient graph that a Hessian-vector product builds through it is
//! about half as large (`op_memory` example, docs/performance.md "Memory").
//! Every derivative is that of the formula above: the finite-difference tests
//! check it to third order.

use candle_core::{Tensor, Var};
use candle_nn::{Init, VarBuilder};

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
    /// # Errors
    ///
    /// [`Error::InvalidOp`] for an input of rank < 2, with another number of
    /// channels (or none), or (training) with one value per channel; candle's.
    /// Statistics are computed in the input's dtype (`candle_nn` computes
    /// them in f32 for f16/bf16 inputs; no model here uses half precision).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let c = self.weight.elem_count();
        if c == 0 || x.rank() < 2 || x.dim(1)? != c {
            return Err(invalid(format!(
                "BatchNorm over {c} channels given an input of shape {:?} (expected (N, {c}, …))",
                x.dims()
            )));
        }
        let mut shape = vec![1usize; x.rank()];
        shape[1] = c;
        let weight = self.weight.reshape(shape.as_slice())?;
        let bias = self.bias.reshape(shape.as_slice())?;
        if !train {
            let scale = weight.broadcast_div(
                &(self.running_var.as_detached_tensor().reshape(shape.as_slice())? + self.eps)?.sqrt()?,
            )?;
            let shift = (bias - self.running_mean.as_detached_tensor().reshape(shape.as_slice())?.mul(&scale)?)?;
            return Ok(x.broadcast_mul(&scale)?.broadcast_add(&shift)?);
        }
        let axes: Vec<usize> = (0..x.rank()).filter(|&d| d != 1).collect();
        let count = x.elem_count() / c;
        if count < 2 {
            return Err(invalid(format!(
                "BatchNorm in training mode needs more than one value per channel, got input {:?}",
                x.dims()
            )));
        }
        let inv = 1.0 / count as f64;
        let mean = x.sum_keepdim(axes.clone())?.affine(inv, 0.0)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.sum_keepdim(axes)?.affine(inv, 0.0)?;
        let m = self.momentum;
        let unbiased = count as f64 / (count as f64 - 1.0);
        self.running_mean.set(
            &(self.running_mean.as_detached_tensor().affine(1.0 - m, 0.0)?
                + mean.detach().flatten_all()?.affine(m, 0.0)?)?,
        )?;
        self.running_var.set(
            &(self.running_var.as_detached_tensor().affine(1.0 - m, 0.0)?
                + var.detach().flatten_all()?.affine(m * unbiased, 0.0)?)?,
        )?;
        let scale = weight.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(centred.broadcast_mul(&scale)?.broadcast_add(&bias)?)
    }
}
