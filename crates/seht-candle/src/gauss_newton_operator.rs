//! The generalised Gauss–Newton matrix of a mean softmax cross-entropy, as
//! an [`HvpOperator`] whose products are exact.
//!
//! For a batch of `N` rows with logits `z_n = f(x_n; w)` (`C` classes,
//! `p_n = softmax(z_n)`) and the mean loss `L = (1/N) Σ_n ℓ(z_n, y_n)`,
//! the generalised Gauss–Newton matrix (Schraudolph 2002, "Fast
//! curvature matrix-vector products for second-order gradient descent",
//! Neural Computation 14; Martens 2020, "New insights and perspectives on
//! the natural gradient method", JMLR 21, §8) is
//!
//! ```text
//! G = (1/N) Σ_n J_nᵀ H_n J_n,   J_n = ∂z_n/∂w  (C × d),   H_n = ∂²ℓ/∂z_n² = diag(p_n) − p_n p_nᵀ.
//! ```
//!
//! It does not depend on the labels, and `G ⪰ 0` (each `H_n` is a
//! covariance matrix). A product `Gv` is formed without `J`, in three steps
//! (the "double-backward" Jacobian-vector product of reverse-mode
//! frameworks, J. Townsend 2017, "A new trick for calculating Jacobian
//! vector products"):
//!
//! 1. `a = Jv` (`N × C`): with a dummy `u` (`N × C`, a variable that only
//!    carries the graph), the backward pass of `⟨u, z⟩` gives `Jᵀu` on the
//!    autodiff graph, linear in `u` (once, at construction); the backward
//!    pass of `⟨Jᵀu, v⟩` with respect to `u` is then `Jv`;
//! 2. `b_n = (1/N)(p_n ⊙ a_n − p_n (p_nᵀ a_n))`, the softmax Hessian in closed form;
//! 3. `Gv = Jᵀb`, one backward pass of `⟨b, z⟩` (`b` held constant).
//!
//! The quadratic form `vᵀGv = ⟨a, b⟩` needs steps 1–2 only. Products are
//! detached: the operator serves monitoring and analysis (`seht analyze`,
//! `seht trace`), not a differentiable penalty (for that, see
//! [`crate::gauss_newton`]).

use candle_core::{D, DType, Device, Tensor, Var};
use seht_estimator::{Block, BlockVec, HvpOperator};

use crate::autodiff::{backward_create_graph, backward_no_graph, check_higher_order};
use crate::error::{Error, Result};
use crate::params::Param;

/// The Gauss–Newton matrix `G` of the mean cross-entropy of `logits`
/// (`N × C`) over a set of parameters (module docs for the formula and its
/// source).
///
/// Construction runs one backward pass that keeps its graph (`Jᵀu`, the
/// memory of one Hessian operator); each [`hvp`](HvpOperator::hvp) runs two
/// more backward passes (`Jv` through that graph, `Jᵀb` through the
/// forward graph), each [`quadratic_form`](HvpOperator::quadratic_form)
/// one. Only the blocks where `v` is non-zero enter `Jv`.
pub struct GaussNewtonOperator {
    params: Vec<Param>,
    blocks: Vec<Block>,
    logits: Tensor,
    probs: Tensor,
    dual: Var,
    jtu: Vec<Option<Tensor>>,
    rows: usize,
    device: Device,
    dtype: DType,
}

impl std::fmt::Debug for GaussNewtonOperator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GaussNewtonOperator")
            .field("blocks", &self.blocks)
            .field("logits", &self.logits.shape())
            .finish()
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidOp { op: "GaussNewtonOperator", message }
}

impl GaussNewtonOperator {
    /// `G` of `L = mean_n ℓ(z_n, ·)` for `logits` `z` of shape `(N, C)`, on
    /// the autodiff graph of `params` (a text model's logits flattened to
    /// one row per token), over `params`.
    ///
    /// # Errors
    /// [`Error::InvalidOp`] when `logits` is not 2-D, has no row or class,
    /// or is not a floating-point tensor; [`Error::NoParameters`] for an
    /// empty `params`; [`Error::NonFloatParameter`];
    /// [`Error::HigherOrderDisabled`] when the backward passes lose their
    /// graph ([`check_higher_order`]); candle's errors.
    pub fn new(logits: &Tensor, params: &[Param]) -> Result<Self> {
        check_higher_order()?;
        let (rows, classes) = logits
            .dims2()
            .map_err(|_| invalid(format!("expected logits of shape (rows, classes), got {:?}", logits.shape())))?;
        if rows == 0 || classes == 0 {
            return Err(invalid(format!("logits of shape {:?} have no entry", logits.shape())));
        }
        if !logits.dtype().is_float() {
            return Err(invalid(format!("logits have dtype {:?}; a float dtype is needed", logits.dtype())));
        }
        if params.is_empty() {
            return Err(Error::NoParameters("empty parameter list handed to GaussNewtonOperator".into()));
        }
        for p in params {
            if !p.var.dtype().is_float() {
                return Err(Error::NonFloatParameter { name: p.name.clone(), dtype: p.var.dtype() });
            }
        }
        let probs = candle_nn::ops::softmax(&logits.detach(), D::Minus1)?;
        let dual = Var::zeros((rows, classes), logits.dtype(), logits.device())?;
        let store = backward_create_graph(&(logits * dual.as_tensor())?.sum_all()?)?;
        let jtu = params.iter().map(|p| store.get(p.var.as_tensor()).cloned()).collect();
        Ok(Self {
            blocks: params.iter().map(|p| Block::new(p.name.clone(), p.var.elem_count())).collect(),
            params: params.to_vec(),
            logits: logits.clone(),
            probs,
            dual,
            jtu,
            rows,
            device: logits.device().clone(),
            dtype: logits.dtype(),
        })
    }

    /// The parameters, in block order.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// `Jv` (`N × C`, detached), `None` when it is zero (no present block
    /// of `v` reaches the logits).
    ///
    /// # Errors
    /// candle's, from the backward pass.
    pub fn jvp(&self, v: &BlockVec<Tensor>) -> Result<Option<Tensor>> {
        let mut s: Option<Tensor> = None;
        for (i, vi) in v.present() {
            if let Some(g) = &self.jtu[i] {
                let term = (g * vi.to_dtype(g.dtype())?)?.sum_all()?;
                s = Some(match s {
                    None => term,
                    Some(acc) => (acc + term)?,
                });
            }
        }
        let Some(s) = s else { return Ok(None) };
        Ok(backward_no_graph(&s)?.get(self.dual.as_tensor()).map(Tensor::detach))
    }

    /// `b_n = (1/N)(diag p_n − p_n p_nᵀ) a_n` for each row of `a` (`N × C`).
    fn output_hessian(&self, a: &Tensor) -> Result<Tensor> {
        let pa = (&self.probs * a)?;
        let mean = pa.sum_keepdim(D::Minus1)?;
        Ok((pa - self.probs.broadcast_mul(&mean)?)?.affine(1.0 / self.rows as f64, 0.0)?)
    }

    fn zero(&self) -> Result<Tensor> {
        crate::operator::parts::zero(self.dtype, &self.device)
    }
}

impl HvpOperator for GaussNewtonOperator {
    type Part = Tensor;
    type Scalar = Tensor;
    type Error = Error;

    fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> Result<Tensor> {
        crate::operator::parts::from_host(&self.params[block], values)
    }

    fn part_to_host(&self, _block: usize, part: &Tensor) -> Result<Vec<f64>> {
        crate::operator::parts::to_host(part)
    }

    fn hvp(&self, v: &BlockVec<Tensor>) -> Result<BlockVec<Tensor>> {
        let mut out = BlockVec::zeros(self.blocks.len());
        let store = match self.jvp(v)? {
            Some(a) => {
                let b = self.output_hessian(&a)?;
                Some(backward_no_graph(&(&self.logits * b)?.sum_all()?)?)
            }
            None => None,
        };
        for (i, p) in self.params.iter().enumerate() {
            let gv = match store.as_ref().and_then(|s| s.get(p.var.as_tensor())) {
                Some(t) => t.detach(),
                None => p.var.zeros_like()?,
            };
            out.set(i, gv);
        }
        Ok(out)
    }

    fn quadratic_form(&self, v: &BlockVec<Tensor>) -> Result<Tensor> {
        match self.jvp(v)? {
            Some(a) => Ok((&a * self.output_hessian(&a)?)?.sum_all()?),
            None => self.zero(),
        }
    }

    fn scalar_value(&self, s: &Tensor) -> Result<f64> {
        crate::operator::parts::value(s)
    }

    fn weighted_sum(&self, terms: &[(f64, Tensor)]) -> Result<Tensor> {
        crate::operator::parts::weighted_sum(terms, self.dtype, &self.device)
    }

    fn constant(&self, value: f64) -> Result<Tensor> {
        crate::operator::parts::constant(value, self.dtype, &self.device)
    }
}
