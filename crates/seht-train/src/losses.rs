//! The loss terms of the comparison methods, each its defining formula.

use candle_core::{D, DType, Tensor, Var};
use candle_nn::ops::log_softmax;
use rand::Rng;

use crate::error::Result;

/// Mean cross-entropy of `logits (n, k)` against `labels (n,)`.
pub fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, labels)?)
}

fn one_hot(labels: &Tensor, k: usize, dtype: DType) -> Result<Tensor> {
    let n = labels.dim(0)?;
    let ids = labels.to_dtype(DType::U32)?;
    let on = Tensor::ones((n, 1), dtype, labels.device())?;
    Ok(Tensor::zeros((n, k), dtype, labels.device())?.scatter_add(&ids.unsqueeze(1)?, &on, 1)?)
}

/// Label smoothing: `−Σ_c q_c log p_c` with `q = (1−ε)·onehot + ε/K`, averaged.
pub fn label_smoothing(logits: &Tensor, labels: &Tensor, epsilon: f64) -> Result<Tensor> {
    let k = logits.dim(D::Minus1)?;
    let logp = log_softmax(logits, D::Minus1)?;
    let q = (one_hot(labels, k, logits.dtype())?.affine(1.0 - epsilon, 0.0)? + epsilon / k as f64)?;
    Ok((q * logp)?.sum(D::Minus1)?.neg()?.mean_all()?)
}

/// Confidence penalty: `CE − β·H(p)`, `H(p) = −Σ p log p`, averaged over the batch.
pub fn confidence_penalty(logits: &Tensor, labels: &Tensor, beta: f64) -> Result<Tensor> {
    let logp = log_softmax(logits, D::Minus1)?;
    let entropy = (logp.exp()? * &logp)?.sum(D::Minus1)?.neg()?.mean_all()?;
    Ok((cross_entropy(logits, labels)? - entropy.affine(beta, 0.0)?)?)
}

/// A mixup draw: `λ ~ Beta(α, α)` and a permutation of the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct MixupDraw {
    /// λ.
    pub lambda: f64,
    /// Partner of each example.
    pub perm: Vec<u32>,
}

impl MixupDraw {
    /// Draws λ and a permutation of `n` examples.
    pub fn draw(n: usize, alpha: f64, rng: &mut impl Rng) -> Result<Self> {
        use rand::seq::SliceRandom;
        let beta = rand_distr::Beta::new(alpha, alpha)
            .map_err(|e| crate::error::config("regularizer.alpha", alpha, e.to_string()))?;
        let lambda: f64 = rng.sample(beta);
        let mut perm: Vec<u32> = (0..n as u32).collect();
        perm.shuffle(rng);
        Ok(Self { lambda, perm })
    }

    /// The mixed inputs `λ·x + (1−λ)·x[perm]`.
    pub fn mix(&self, xs: &Tensor) -> Result<Tensor> {
        let idx = Tensor::from_vec(self.perm.clone(), self.perm.len(), xs.device())?;
        Ok((xs.affine(self.lambda, 0.0)? + xs.index_select(&idx, 0)?.affine(1.0 - self.lambda, 0.0)?)?)
    }

    /// The mixed loss `λ·CE(y) + (1−λ)·CE(y[perm])`.
    pub fn loss(&self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let idx = Tensor::from_vec(self.perm.clone(), self.perm.len(), labels.device())?;
        let a = cross_entropy(logits, labels)?.affine(self.lambda, 0.0)?;
        let b = cross_entropy(logits, &labels.index_select(&idx, 0)?)?.affine(1.0 - self.lambda, 0.0)?;
        Ok((a + b)?)
    }
}

/// Hoffman et al. (2019), Algorithm 1: `‖J‖_F² ≈ (K/n_proj)·Σ ‖∂(vᵀz)/∂x‖²`
/// per example, `v` uniform on the unit sphere of the `K` outputs, averaged
/// over the batch. `input` must be the `Var` the `logits` were computed from;
/// the result stays on the graph (its gradient needs higher-order autodiff).
pub fn jacobian_frobenius_sq(logits: &Tensor, input: &Var, n_proj: usize, rng: &mut impl Rng) -> Result<Tensor> {
    let (n, k) = logits.dims2()?;
    let mut total: Option<Tensor> = None;
    for _ in 0..n_proj {
        let mut v: Vec<f32> = (0..n * k).map(|_| rng.sample::<f32, _>(rand_distr::StandardNormal)).collect();
        for row in v.chunks_mut(k) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        let v = Tensor::from_vec(v, (n, k), logits.device())?.to_dtype(logits.dtype())?;
        let proj = (logits * v)?.sum_all()?;
        let grads = seht_candle::backward_create_graph(&proj)?;
        let Some(jv) = grads.get(input.as_tensor()) else { continue };
        let sq = jv.sqr()?.sum_all()?;
        total = Some(match total {
            None => sq,
            Some(t) => (t + sq)?,
        });
    }
    match total {
        Some(t) => Ok(t.affine(k as f64 / (n_proj as f64 * n as f64), 0.0)?),
        None => Ok(Tensor::zeros((), logits.dtype(), logits.device())?),
    }
}

/// Top-`k` accuracy: the fraction of rows whose label is among the `k` largest logits.
pub fn top_k_correct(logits: &Tensor, labels: &Tensor, k: usize) -> Result<usize> {
    let l = logits.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let y = labels.to_vec1::<u32>()?;
    Ok(l.iter()
        .zip(&y)
        .filter(|(row, label)| {
            let target = row[**label as usize];
            row.iter().filter(|&&v| v > target).count() < k
        })
        .count())
}
