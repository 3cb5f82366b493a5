//! The top (or bottom) eigenvalues and eigenvectors of `H` by the Lanczos
//! method with full reorthogonalisation.
//!
//! **Method** (Lanczos 1950; Golub & Van Loan, *Matrix Computations*, 4th ed.,
//! §10.1–10.3; Parlett, *The Symmetric Eigenvalue Problem*, ch. 13): from a
//! random unit vector `q₁`, the three-term recurrence
//!
//! ```text
//! w = H qⱼ − βⱼ₋₁ qⱼ₋₁,   αⱼ = qⱼᵀ w,   w ← w − αⱼ qⱼ,
//! w ← w − Σᵢ≤ⱼ (qᵢᵀw) qᵢ   (full reorthogonalisation, applied twice),
//! βⱼ = ‖w‖,   qⱼ₊₁ = w / βⱼ
//! ```
//!
//! builds an orthonormal basis `Qₘ` of the Krylov space `span{q₁, Hq₁, …, Hᵐ⁻¹q₁}`
//! and the tridiagonal `Tₘ = QₘᵀHQₘ` (diagonal `α`, off-diagonal `β`). The
//! eigenpairs `(θᵢ, sᵢ)` of `Tₘ` give Ritz pairs `(θᵢ, yᵢ = Qₘsᵢ)` with the
//! residual, in exact arithmetic,
//!
//! ```text
//! ‖H yᵢ − θᵢ yᵢ‖ = βₘ |eₘᵀ sᵢ|,
//! ```
//!
//! and some eigenvalue of `H` lies within that residual of `θᵢ` (and within
//! `residual²/gap` once `θᵢ` is separated by `gap` from the rest of the spectrum).
//!
//! **Why Lanczos, not power iteration with deflation.** One run of `m`
//! products yields every extreme eigenvalue at once, and its error falls like
//! a Chebyshev polynomial in `√(gap)` (Kaniel–Paige–Saad bounds) rather than
//! like `(λ₂/λ₁)ᵐ`; Hessians of trained networks have a few large eigenvalues
//! close together, where power iteration stalls and deflation compounds the
//! error of each earlier pair into the next. Full reorthogonalisation keeps
//! `Qₘ` orthonormal to round-off, so converged Ritz values are not repeated
//! ("ghost" copies of plain Lanczos, Paige 1971).
//!
//! **Convergence.** After each step the residual bounds `βⱼ|eⱼᵀsᵢ|` of the
//! `k` wanted Ritz pairs are compared with `tolerance · max|θ|`; the method stops
//! when all are below it, or after `max_steps` products. The returned
//! residuals `‖Hyᵢ − θᵢyᵢ‖` are computed explicitly (one more product per pair).
//!
//! **Cost and memory.** `m` products for the recurrence plus `k` for the
//! residuals; the basis holds `m` vectors of the operator's dimension `n`:
//! `m · n · 8` bytes in [`BasisPrecision::F64`], `m · n · 4` in
//! [`BasisPrecision::F32`] (e.g. 30 vectors of ResNet-18's 11.2 M weights:
//! 2.7 GB or 1.3 GB); the reorthogonalisation costs `O(m² n)` flops on the host.

use std::num::NonZeroUsize;

use crate::block::BlockVec;
use crate::error::{Error, Result};
use crate::operator::HvpOperator;
use crate::probe::{Gaussian, ProbeDistribution, ProbeRng};
use crate::sample::{split_flat, to_host_flat, to_operator};
use crate::symmetric_eigen::tridiagonal_eigen;

/// How the Lanczos basis is stored on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BasisPrecision {
    /// 8 bytes per entry: orthogonality to ~1e-15.
    #[default]
    F64,
    /// 4 bytes per entry, half the memory: the basis is orthogonal only to
    /// ~1e-7, which bounds the relative accuracy of the Ritz values near 1e-7.
    F32,
}

/// Whether the Lanczos vectors are reorthogonalised against all earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reorthogonalisation {
    /// Against every stored vector, twice ("twice is enough", Giraud et al.
    /// 2005): the basis stays orthonormal; memory `m · n` entries.
    Full(BasisPrecision),
    /// None (the plain three-term recurrence, as analysed for stochastic
    /// Lanczos quadrature by Ubaru, Chen & Saad 2017): memory three vectors,
    /// but converged Ritz values reappear as spurious copies.
    None,
}

impl Default for Reorthogonalisation {
    fn default() -> Self {
        Reorthogonalisation::Full(BasisPrecision::F64)
    }
}

/// The stored Lanczos vectors.
enum Basis {
    F64(Vec<Vec<f64>>),
    F32(Vec<Vec<f32>>),
    /// Only the last two vectors (no reorthogonalisation).
    Last(Vec<Vec<f64>>),
}

impl Basis {
    fn new(reorth: Reorthogonalisation) -> Self {
        match reorth {
            Reorthogonalisation::Full(BasisPrecision::F64) => Basis::F64(Vec::new()),
            Reorthogonalisation::Full(BasisPrecision::F32) => Basis::F32(Vec::new()),
            Reorthogonalisation::None => Basis::Last(Vec::new()),
        }
    }

    fn push(&mut self, q: &[f64]) {
        match self {
            Basis::F64(b) => b.push(q.to_vec()),
            Basis::F32(b) => b.push(q.iter().map(|&x| x as f32).collect()),
            Basis::Last(b) => {
                if b.len() == 2 {
                    b.remove(0);
                }
                b.push(q.to_vec());
            }
        }
    }

    /// `w ← w − Σᵢ (qᵢᵀw) qᵢ` over the stored vectors (no-op without a full basis).
    fn orthogonalise(&self, w: &mut [f64]) {
        match self {
            Basis::F64(b) => {
                for q in b {
                    let a = dot(q, w);
                    w.iter_mut().zip(q).for_each(|(x, qi)| *x -= a * qi);
                }
            }
            Basis::F32(b) => {
                for q in b {
                    let a: f64 = q.iter().zip(w.iter()).map(|(&qi, &x)| f64::from(qi) * x).sum();
                    w.iter_mut().zip(q).for_each(|(x, &qi)| *x -= a * f64::from(qi));
                }
            }
            Basis::Last(_) => {}
        }
    }

    /// `Σᵢ cᵢ qᵢ`, the Ritz vector of coefficients `c` (full basis only).
    fn combine(&self, c: &[f64], n: usize) -> Option<Vec<f64>> {
        let mut y = vec![0.0; n];
        match self {
            Basis::F64(b) => b.iter().zip(c).for_each(|(q, &ci)| y.iter_mut().zip(q).for_each(|(x, qi)| *x += ci * qi)),
            Basis::F32(b) => {
                b.iter().zip(c).for_each(|(q, &ci)| y.iter_mut().zip(q).for_each(|(x, &qi)| *x += ci * f64::from(qi)))
            }
            Basis::Last(_) => return None,
        }
        Some(y)
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// The result of a Lanczos run: the tridiagonal `T` and (with full
/// reorthogonalisation) the basis.
pub(crate) struct LanczosRun {
    /// Diagonal of `T` (length `m`, the number of steps taken).
    pub alpha: Vec<f64>,
    /// Off-diagonal of `T` (length `m − 1`).
    pub beta: Vec<f64>,
    /// `βₘ`, the norm of the last residual (0 at an invariant subspace).
    pub beta_last: f64,
    basis: Basis,
    /// Products spent.
    pub hvps: usize,
}

/// `y = H x` for a flat host vector.
pub(crate) fn apply<O: HvpOperator>(op: &O, x: &[f64]) -> Result<Vec<f64>> {
    let v: BlockVec<Vec<f64>> = split_flat(op.blocks(), x);
    let hv = op.hvp(&to_operator(op, &v)?).map_err(Error::operator)?;
    to_host_flat(op, &hv)
}

/// Runs up to `max_steps` Lanczos steps from `start` (any non-zero vector,
/// normalised here). After each step `stop(α, β, βⱼ)` may end the run early.
/// The run also ends at an invariant subspace (`βⱼ ≤ 1e-12·‖T‖`).
pub(crate) fn lanczos_run<O: HvpOperator>(
    op: &O,
    start: &[f64],
    max_steps: usize,
    reorth: Reorthogonalisation,
    mut stop: impl FnMut(&[f64], &[f64], f64) -> bool,
) -> Result<LanczosRun> {
    let n = start.len();
    let s = norm(start);
    if s == 0.0 || !s.is_finite() {
        return Err(Error::InvalidParameter {
            name: "Lanczos start vector norm",
            value: s,
            reason: "must be finite and non-zero".into(),
        });
    }
    let mut q: Vec<f64> = start.iter().map(|x| x / s).collect();
    let mut q_prev = vec![0.0; n];
    let mut basis = Basis::new(reorth);
    basis.push(&q);
    let (mut alpha, mut beta) = (Vec::new(), Vec::new());
    let mut beta_last = 0.0;
    let mut t_norm: f64 = 0.0;
    let mut hvps = 0;
    for j in 0..max_steps.min(n) {
        let mut w = apply(op, &q)?;
        hvps += 1;
        let b_prev = if j > 0 { beta[j - 1] } else { 0.0 };
        w.iter_mut().zip(&q_prev).for_each(|(x, p)| *x -= b_prev * p);
        let a = dot(&q, &w);
        w.iter_mut().zip(&q).for_each(|(x, qi)| *x -= a * qi);
        basis.orthogonalise(&mut w);
        basis.orthogonalise(&mut w);
        let b = norm(&w);
        if !a.is_finite() || !b.is_finite() {
            return Err(Error::NonFinite { context: format!("Lanczos step {}", j + 1) });
        }
        alpha.push(a);
        t_norm = t_norm.max(a.abs() + b + b_prev);
        beta_last = b;
        let invariant = b <= 1e-12 * t_norm;
        if invariant || j + 1 == max_steps.min(n) || stop(&alpha, &beta, b) {
            break;
        }
        beta.push(b);
        q_prev = std::mem::replace(&mut q, w.iter().map(|x| x / b).collect());
        basis.push(&q);
    }
    Ok(LanczosRun { alpha, beta, beta_last, basis, hvps })
}

impl LanczosRun {
    /// Ritz vector `Qs` (`None` without a stored basis).
    pub(crate) fn ritz_vector(&self, s: &[f64], n: usize) -> Option<Vec<f64>> {
        self.basis.combine(s, n)
    }
}

/// Which end of the spectrum [`Lanczos`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Which {
    /// The algebraically largest eigenvalues (the "sharpness" `λ_max`).
    #[default]
    Largest,
    /// The algebraically smallest (most negative) eigenvalues.
    Smallest,
    /// The eigenvalues largest in absolute value (what power iteration finds).
    LargestMagnitude,
}

/// One eigenpair with its residual.
#[derive(Debug, Clone, PartialEq)]
pub struct Eigenpair {
    /// The Ritz value `θ`.
    pub value: f64,
    /// The unit Ritz vector `y`, flat over the operator's blocks in order
    /// (length `n`).
    pub vector: Vec<f64>,
    /// `‖Hy − θy‖`, computed with one extra product: some eigenvalue of `H` lies
    /// within this distance of `value`.
    pub residual: f64,
    /// The recurrence's bound `βₘ|eₘᵀs|` that decided convergence.
    pub residual_bound: f64,
}

/// The result of [`Lanczos::eigenpairs`].
#[derive(Debug, Clone, PartialEq)]
pub struct Eigenpairs {
    /// The `k` wanted pairs, most extreme first.
    pub pairs: Vec<Eigenpair>,
    /// Every Ritz value of the final `T` (ascending).
    pub ritz_values: Vec<f64>,
    /// Lanczos steps taken (`m`).
    pub steps: usize,
    /// Whether every wanted pair met the tolerance before `max_steps`.
    pub converged: bool,
    /// Hessian-vector products spent (steps + one per residual).
    pub hvps: usize,
}

/// Extreme eigenpairs by Lanczos with full reorthogonalisation (see the module
/// documentation for the method, its convergence test and its memory).
#[derive(Debug, Clone, PartialEq)]
pub struct Lanczos {
    k: NonZeroUsize,
    max_steps: NonZeroUsize,
    tolerance: f64,
    which: Which,
    precision: BasisPrecision,
}

impl Lanczos {
    /// `k ≥ 1` eigenpairs, at most `max_steps ≥ k` products for the
    /// recurrence, stopping when every residual bound is below
    /// `tolerance · max|θ|` (`tolerance` finite and positive).
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for `k = 0`; [`Error::InvalidParameter`] for
    /// `max_steps < k` or a tolerance that is not finite and positive.
    pub fn new(k: usize, max_steps: usize, tolerance: f64) -> Result<Self> {
        let k = NonZeroUsize::new(k).ok_or(Error::ZeroCount { name: "k (eigenpairs)" })?;
        let max_steps = NonZeroUsize::new(max_steps).ok_or(Error::ZeroCount { name: "max_steps" })?;
        if max_steps < k {
            return Err(Error::InvalidParameter {
                name: "max_steps",
                value: max_steps.get() as f64,
                reason: format!("must be at least k = {k}"),
            });
        }
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(Error::InvalidParameter {
                name: "tolerance",
                value: tolerance,
                reason: "must be finite and positive".into(),
            });
        }
        Ok(Self { k, max_steps, tolerance, which: Which::Largest, precision: BasisPrecision::F64 })
    }

    /// Chooses the end of the spectrum (default [`Which::Largest`]).
    pub fn which(mut self, which: Which) -> Self {
        self.which = which;
        self
    }

    /// Chooses the basis storage (default [`BasisPrecision::F64`]).
    pub fn precision(mut self, precision: BasisPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// Host memory of the basis in bytes for an operator of dimension `n`:
    /// `max_steps · n · (8 or 4)`.
    pub fn basis_bytes(&self, n: usize) -> usize {
        let per = match self.precision {
            BasisPrecision::F64 => 8,
            BasisPrecision::F32 => 4,
        };
        self.max_steps.get().min(n) * n * per
    }

    /// Indices of the wanted Ritz values among `values` (ascending), most
    /// extreme first.
    fn wanted(&self, values: &[f64]) -> Vec<usize> {
        let m = values.len();
        let k = self.k.get().min(m);
        match self.which {
            Which::Largest => (0..m).rev().take(k).collect(),
            Which::Smallest => (0..k).collect(),
            Which::LargestMagnitude => {
                let mut idx: Vec<usize> = (0..m).collect();
                idx.sort_by(|&i, &j| values[j].abs().total_cmp(&values[i].abs()));
                idx.truncate(k);
                idx
            }
        }
    }

    /// The `k` wanted eigenpairs of `op`, from a Gaussian start vector drawn from `rng`.
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`] for an operator without blocks,
    /// [`Error::NonFinite`] if a product is not finite, and the operator's errors.
    pub fn eigenpairs<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<Eigenpairs> {
        if op.blocks().is_empty() {
            return Err(Error::EmptyBlockSet);
        }
        let n = crate::block::total_len(op.blocks());
        let start = Gaussian.sample(rng, n);
        let min_steps = self.k.get().min(n);
        let mut converged = false;
        let run = lanczos_run(
            op,
            &start,
            self.max_steps.get(),
            Reorthogonalisation::Full(self.precision),
            |alpha, beta, b| {
                if alpha.len() < min_steps {
                    return false;
                }
                let (values, vectors) = tridiagonal_eigen(alpha, beta);
                let m = values.len();
                let scale = values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
                converged = self
                    .wanted(&values)
                    .iter()
                    .all(|&i| (b * vectors[(m - 1) * m + i]).abs() <= self.tolerance * scale);
                converged
            },
        )?;
        let (values, vectors) = tridiagonal_eigen(&run.alpha, &run.beta);
        let m = values.len();
        let mut hvps = run.hvps;
        let scale = values.iter().fold(0.0f64, |s, v| s.max(v.abs()));
        let mut pairs = Vec::new();
        let mut all_met = true;
        for i in self.wanted(&values) {
            let s: Vec<f64> = (0..m).map(|r| vectors[r * m + i]).collect();
            let mut y = run.ritz_vector(&s, n).expect("full reorthogonalisation stores the basis");
            let ny = norm(&y);
            y.iter_mut().for_each(|x| *x /= ny);
            let hy = apply(op, &y)?;
            hvps += 1;
            let residual = hy.iter().zip(&y).map(|(h, x)| (h - values[i] * x).powi(2)).sum::<f64>().sqrt();
            let residual_bound = (run.beta_last * s[m - 1]).abs();
            all_met &= residual_bound <= self.tolerance * scale;
            pairs.push(Eigenpair { value: values[i], vector: y, residual, residual_bound });
        }
        Ok(Eigenpairs { pairs, ritz_values: values, steps: m, converged: converged || all_met, hvps })
    }
}
