//! The Hessian of a candle loss over chosen parameters, as an [`HvpOperator`].

use candle_core::{DType, Device, Tensor};
use seht_estimator::{Block, BlockVec, HvpOperator};

use crate::autodiff::check_higher_order;
use crate::error::{Error, Result};
use crate::params::Param;

/// Whether products stay on the autodiff graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphMode {
    /// Results stay on the graph: differentiating a quadratic form gives the
    /// gradient of `vᵀHv` with respect to every variable (a third-order pass).
    Differentiable,
    /// Results are detached: for monitoring, no third pass is possible or paid.
    Detached,
}

/// The Hessian `H = ∂²L/∂w²` of a scalar loss over a set of parameters.
///
/// Construction runs one backward pass, keeping the gradient `g = ∂L/∂w` on the
/// graph. Each product then runs a second backward pass, of `gᵀv`:
/// `Hv = ∂(gᵀv)/∂w` (Pearlmutter 1994; the paper's eq. 12). Only the blocks
/// where `v` is non-zero enter `gᵀv`, so sparse probes cost less.
///
/// Construction keeps the gradient's graph
/// ([`backward_create_graph`](crate::backward_create_graph)) and runs the
/// per-thread self-check ([`check_higher_order`](crate::check_higher_order)).
pub struct HessianOperator {
    params: Vec<Param>,
    blocks: Vec<Block>,
    grads: Vec<Option<Tensor>>,
    mode: GraphMode,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for HessianOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HessianOperator").field("blocks", &self.blocks).field("mode", &self.mode).finish()
    }
}

impl HessianOperator {
    /// The Hessian of `loss` over `params`, products kept on the graph.
    pub fn new(loss: &Tensor, params: &[Param]) -> Result<Self> {
        Self::with_mode(loss, params, GraphMode::Differentiable)
    }

    /// The Hessian of `loss` over `params`, with the given graph mode.
    pub fn with_mode(loss: &Tensor, params: &[Param], mode: GraphMode) -> Result<Self> {
        Ok(Self::build(loss, params, mode, &[])?.0)
    }

    /// As [`with_mode`](Self::with_mode), also returning the loss's gradient
    /// (detached) for each of `keep`, from the same backward pass.
    pub(crate) fn build(
        loss: &Tensor,
        params: &[Param],
        mode: GraphMode,
        keep: &[candle_core::Var],
    ) -> Result<(Self, Vec<Option<Tensor>>)> {
        check_higher_order()?;
        if loss.elem_count() != 1 {
            return Err(Error::NonScalarLoss(loss.shape().clone()));
        }
        if params.is_empty() {
            return Err(Error::NoParameters("empty parameter list handed to HessianOperator".into()));
        }
        for p in params {
            if !p.var.dtype().is_float() {
                return Err(Error::NonFloatParameter { name: p.name.clone(), dtype: p.var.dtype() });
            }
        }
        let loss = loss.flatten_all()?.sum_all()?;
        let store = crate::autodiff::backward_create_graph(&loss)?;
        let grads = params.iter().map(|p| store.get(p.var.as_tensor()).cloned()).collect();
        let kept = keep.iter().map(|v| store.get(v.as_tensor()).map(Tensor::detach)).collect();
        drop(store);
        let op = Self {
            blocks: params.iter().map(|p| Block::new(p.name.clone(), p.var.elem_count())).collect(),
            params: params.to_vec(),
            grads,
            mode,
            device: loss.device().clone(),
            dtype: loss.dtype(),
        };
        Ok((op, kept))
    }

    /// The parameters, in block order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The gradient `∂L/∂w` of block `i` (on the graph), or `None` if the loss
    /// does not depend on that parameter.
    pub fn gradient(&self, i: usize) -> Option<&Tensor> {
        self.grads.get(i).and_then(Option::as_ref)
    }

    /// The graph mode.
    pub fn mode(&self) -> GraphMode {
        self.mode
    }

    /// `gᵀv` over `v`'s support, and the product `Hv`: on every block, or
    /// (`support_only`) on the blocks of `v`'s support only, by a backward
    /// pass that visits only the graph leading to them.
    fn products(
        &self,
        v: &BlockVec<Tensor>,
        create_graph: bool,
        support_only: bool,
    ) -> Result<Option<candle_core::backprop::GradStore>> {
        let mut s: Option<Tensor> = None;
        for (i, vi) in v.present() {
            if let Some(g) = &self.grads[i] {
                let term = (g * vi)?.sum_all()?;
                s = Some(match s {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
        }
        match s {
            None => Ok(None),
            Some(s) if support_only => {
                let targets: Vec<&Tensor> = v.present().map(|(i, _)| self.params[i].var.as_tensor()).collect();
                Ok(Some(crate::autodiff::backward_to_with(&s, &targets, create_graph)?))
            }
            Some(s) => Ok(Some(crate::autodiff::backward_with(&s, create_graph)?)),
        }
    }

    fn finish(&self, t: Tensor) -> Tensor {
        match self.mode {
            GraphMode::Differentiable => t,
            GraphMode::Detached => t.detach(),
        }
    }

    /// `Hv`, on the graph (`create_graph`) or detached, whatever the mode.
    pub(crate) fn hvp_with(&self, v: &BlockVec<Tensor>, create_graph: bool) -> Result<BlockVec<Tensor>> {
        let store = self.products(v, create_graph, false)?;
        let mut out = BlockVec::zeros(self.blocks.len());
        for (i, p) in self.params.iter().enumerate() {
            let hv = match store.as_ref().and_then(|s| s.get(p.var.as_tensor())) {
                Some(t) if create_graph => self.finish(t.clone()),
                Some(t) => t.detach(),
                None => p.var.zeros_like()?,
            };
            out.set(i, hv);
        }
        Ok(out)
    }

    fn zero(&self) -> Result<Tensor> {
        parts::zero(self.dtype, &self.device)
    }
}

impl HvpOperator for HessianOperator {
    type Part = Tensor;
    type Scalar = Tensor;
    type Error = Error;

    fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> Result<Tensor> {
        parts::from_host(&self.params[block], values)
    }

    fn part_to_host(&self, _block: usize, part: &Tensor) -> Result<Vec<f64>> {
        parts::to_host(part)
    }

    fn hvp(&self, v: &BlockVec<Tensor>) -> Result<BlockVec<Tensor>> {
        self.hvp_with(v, self.mode == GraphMode::Differentiable)
    }

    fn quadratic_form(&self, v: &BlockVec<Tensor>) -> Result<Tensor> {
        // The products carry their graph only where they are differentiated again.
        // `vᵀHv` needs `Hv` on `v`'s support only (a SEHT-D draw's blocks).
        let Some(store) = self.products(v, self.mode == GraphMode::Differentiable, true)? else {
            return self.zero();
        };
        let mut q: Option<Tensor> = None;
        for (i, vi) in v.present() {
            if let Some(hv) = store.get(self.params[i].var.as_tensor()) {
                let term = (hv * vi)?.sum_all()?;
                q = Some(match q {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
        }
        match q {
            Some(q) => Ok(self.finish(q)),
            None => self.zero(),
        }
    }

    fn scalar_value(&self, s: &Tensor) -> Result<f64> {
        parts::value(s)
    }

    fn weighted_sum(&self, terms: &[(f64, Tensor)]) -> Result<Tensor> {
        parts::weighted_sum(terms, self.dtype, &self.device)
    }

    fn constant(&self, value: f64) -> Result<Tensor> {
        parts::constant(value, self.dtype, &self.device)
    }
}

/// The parts of a candle [`HvpOperator`] that do not depend on the matrix:
/// host conversion of one parameter's block, scalar reads, weighted sums and
/// constants, shared by [`HessianOperator`] and
/// [`GaussNewtonOperator`](crate::GaussNewtonOperator).
pub(crate) mod parts {
    use candle_core::{DType, Device, Tensor};

    use crate::error::Result;
    use crate::params::Param;

    /// Block `values` shaped, typed and placed like `param`.
    pub(crate) fn from_host(param: &Param, values: &[f64]) -> Result<Tensor> {
        let var = &param.var;
        Ok(Tensor::from_slice(values, var.shape(), var.device())?.to_dtype(var.dtype())?)
    }

    /// A block's values as `f64`, flattened.
    pub(crate) fn to_host(part: &Tensor) -> Result<Vec<f64>> {
        Ok(part.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    }

    /// A scalar tensor's value.
    pub(crate) fn value(s: &Tensor) -> Result<f64> {
        Ok(s.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }

    /// A scalar zero.
    pub(crate) fn zero(dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(Tensor::zeros((), dtype, device)?)
    }

    /// `Σ cᵢ tᵢ` (a scalar zero for no terms), keeping the terms' graphs.
    pub(crate) fn weighted_sum(terms: &[(f64, Tensor)], dtype: DType, device: &Device) -> Result<Tensor> {
        let mut acc: Option<Tensor> = None;
        for (c, t) in terms {
            let t = t.affine(*c, 0.0)?;
            acc = Some(match acc {
                None => t,
                Some(a) => (a + t)?,
            });
        }
        match acc {
            Some(a) => Ok(a),
            None => zero(dtype, device),
        }
    }

    /// A scalar constant.
    pub(crate) fn constant(value: f64, dtype: DType, device: &Device) -> Result<Tensor> {
        Ok(Tensor::new(value, device)?.to_dtype(dtype)?)
    }
}
