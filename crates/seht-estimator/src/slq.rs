//! The spectral density of `H` by stochastic Lanczos quadrature (SLQ).
//!
//! **Formula** (Golub & Meurant 1994/2010; Ubaru, Chen & Saad, "Fast
//! estimation of tr(f(A)) via stochastic Lanczos quadrature", SIAM J. Matrix
//! Anal. Appl. 38(4), 2017; Ghorbani, Krishnan & Xiao, "An investigation into
//! neural net optimization via Hessian eigenvalue density", ICML 2019). The
//! eigenvalue density of a symmetric `n × n` matrix with eigenvalues `λᵢ` is
//! `φ(t) = (1/n) Σᵢ δ(t − λᵢ)`. For a probe `v` with `E[vvᵀ] = I`, `‖v‖² = n`
//! (Rademacher), and `m` Lanczos steps from `v/‖v‖` with tridiagonal
//! `Tₘ = S Θ Sᵀ`,
//!
//! ```text
//! vᵀ f(H) v / n  ≈  Σᵢ τᵢ f(θᵢ),     τᵢ = (e₁ᵀ sᵢ)²,   Σᵢ τᵢ = 1,
//! ```
//!
//! the `m`-node Gauss quadrature of the measure `Σⱼ (uⱼᵀv)²/n · δ(t − λⱼ)`,
//! exact for polynomials `f` of degree `≤ 2m − 1`. Its expectation over `v` is
//! `tr f(H)/n`; averaging `n_v` probes and replacing `δ` by a Gaussian of
//! width `σ` (the broadening) gives the smoothed density
//!
//! ```text
//! φ̂_σ(t) = (1/n_v) Σₗ Σᵢ τᵢ⁽ˡ⁾ · exp(−(t − θᵢ⁽ˡ⁾)²/(2σ²)) / (σ√(2π)),
//! ```
//!
//! which integrates to one. `n·φ̂` counts eigenvalues per unit of `t`.
//!
//! **Cost and memory.** `n_v · m` products. With
//! [`Reorthogonalisation::Full`] the basis of one probe is held (`m · n`
//! entries, as for [`crate::Lanczos`]); with [`Reorthogonalisation::None`]
//! three vectors, at the price of spurious copies of converged Ritz values,
//! whose weights still sum correctly (Ubaru et al. 2017, §4).

use std::num::NonZeroUsize;

use crate::error::{Error, Result};
use crate::estimate::mean_and_std_error;
use crate::lanczos::{Reorthogonalisation, lanczos_run};
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::symmetric_eigen::tridiagonal_eigen;

/// The Gaussian broadening `σ` of a spectral density, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Broadening(BroadeningKind);

#[derive(Debug, Clone, Copy, PartialEq)]
enum BroadeningKind {
    Absolute(f64),
    Relative(f64),
}

impl Broadening {
    /// A width `σ > 0` in the units of the eigenvalues.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `σ` is finite and positive.
    pub fn absolute(sigma: f64) -> Result<Self> {
        check_positive("broadening sigma", sigma)?;
        Ok(Self(BroadeningKind::Absolute(sigma)))
    }

    /// A width `σ = fraction · (θ_max − θ_min)` relative to the range of the
    /// quadrature nodes (PyHessian's convention, with `σ² = 1e-5` there).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `fraction` is finite and positive.
    pub fn relative(fraction: f64) -> Result<Self> {
        check_positive("broadening fraction", fraction)?;
        Ok(Self(BroadeningKind::Relative(fraction)))
    }

    /// `σ` for nodes spanning `range` (a zero range counts as 1).
    pub fn sigma(&self, range: f64) -> f64 {
        match self.0 {
            BroadeningKind::Absolute(s) => s,
            BroadeningKind::Relative(f) => f * if range > 0.0 { range } else { 1.0 },
        }
    }
}

fn check_positive(name: &'static str, x: f64) -> Result<()> {
    if x.is_finite() && x > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParameter { name, value: x, reason: "must be finite and positive".into() })
    }
}

/// One probe's Gauss quadrature rule: nodes `θᵢ` (ascending) and weights `τᵢ`
/// (non-negative, summing to 1).
#[derive(Debug, Clone, PartialEq)]
pub struct QuadratureRule {
    /// Ritz values of the probe's Lanczos tridiagonal.
    pub nodes: Vec<f64>,
    /// Squared first components of its eigenvectors.
    pub weights: Vec<f64>,
}

/// The result of [`Slq::density`]: one quadrature rule per probe.
#[derive(Debug, Clone, PartialEq)]
pub struct SpectralDensity {
    /// One rule per probe.
    pub rules: Vec<QuadratureRule>,
    /// Dimension `n` of the operator.
    pub dim: usize,
    /// Hessian-vector products spent.
    pub hvps: usize,
}

impl SpectralDensity {
    /// Smallest and largest node over all probes.
    pub fn node_range(&self) -> (f64, f64) {
        let nodes = self.rules.iter().flat_map(|r| r.nodes.iter().copied());
        nodes.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)))
    }

    /// `σ` of `broadening` for these nodes.
    pub fn sigma(&self, broadening: Broadening) -> f64 {
        let (lo, hi) = self.node_range();
        broadening.sigma(hi - lo)
    }

    /// `points ≥ 2` equally spaced values of `t` covering every node and
    /// `6σ` beyond (the Gaussian tails cut off hold under 1e-9 of the mass).
    pub fn grid(&self, points: usize, broadening: Broadening) -> Vec<f64> {
        let (lo, hi) = self.node_range();
        let s = self.sigma(broadening);
        let (a, b) = (lo - 6.0 * s, hi + 6.0 * s);
        let points = points.max(2);
        (0..points).map(|i| a + (b - a) * i as f64 / (points - 1) as f64).collect()
    }

    /// The smoothed density `φ̂_σ(t)` at each `t` of `grid` (integrates to 1
    /// over `t`; multiply by [`dim`](Self::dim) for eigenvalues per unit).
    pub fn evaluate(&self, grid: &[f64], broadening: Broadening) -> Vec<f64> {
        let s = self.sigma(broadening);
        let norm = 1.0 / (s * (2.0 * std::f64::consts::PI).sqrt() * self.rules.len() as f64);
        grid.iter()
            .map(|&t| {
                let sum: f64 = self
                    .rules
                    .iter()
                    .flat_map(|r| r.nodes.iter().zip(&r.weights))
                    .map(|(&x, &w)| w * (-(t - x).powi(2) / (2.0 * s * s)).exp())
                    .sum();
                norm * sum
            })
            .collect()
    }

    /// The `k`-th moment `Σᵢ τᵢ θᵢᵏ` of each probe's rule: unbiased (up to the
    /// quadrature error, zero for `k ≤ 2m − 1`) for `tr(Hᵏ)/n`. Returns the
    /// mean over probes and its standard error (`None` for one probe).
    pub fn moment(&self, k: i32) -> (f64, Option<f64>) {
        let per: Vec<f64> =
            self.rules.iter().map(|r| r.nodes.iter().zip(&r.weights).map(|(x, w)| w * x.powi(k)).sum()).collect();
        mean_and_std_error(&per)
    }

    /// The fraction of the spectrum in `[lo, hi]` per probe's rule, averaged:
    /// estimates `#{i : λᵢ ∈ [lo, hi]} / n`, with its standard error.
    pub fn mass_between(&self, lo: f64, hi: f64) -> (f64, Option<f64>) {
        let per: Vec<f64> = self
            .rules
            .iter()
            .map(|r| r.nodes.iter().zip(&r.weights).filter(|(x, _)| (lo..=hi).contains(*x)).map(|(_, w)| w).sum())
            .collect();
        mean_and_std_error(&per)
    }
}

/// Stochastic Lanczos quadrature with `probes` Rademacher probes and `steps`
/// Lanczos steps each (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct Slq {
    probes: NonZeroUsize,
    steps: NonZeroUsize,
    reorth: Reorthogonalisation,
}

impl Slq {
    /// `probes ≥ 1` probes of `steps ≥ 1` Lanczos steps each, with full
    /// reorthogonalisation in f64 (see [`reorthogonalisation`](Self::reorthogonalisation)).
    ///
    /// # Errors
    /// [`Error::ZeroCount`] for a zero count.
    pub fn new(probes: usize, steps: usize) -> Result<Self> {
        Ok(Self {
            probes: NonZeroUsize::new(probes).ok_or(Error::ZeroCount { name: "probes" })?,
            steps: NonZeroUsize::new(steps).ok_or(Error::ZeroCount { name: "steps" })?,
            reorth: Reorthogonalisation::default(),
        })
    }

    /// Chooses the reorthogonalisation (and thereby the memory).
    pub fn reorthogonalisation(mut self, reorth: Reorthogonalisation) -> Self {
        self.reorth = reorth;
        self
    }

    /// Total products at most: `probes · steps`.
    pub fn budget(&self) -> usize {
        self.probes.get() * self.steps.get()
    }

    /// The density of `op`'s spectrum, probes drawn from `rng`. `on_probe` is
    /// called after each probe (for progress reports).
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`], [`Error::NonFinite`], and the operator's errors.
    pub fn density<O: HvpOperator>(
        &self,
        op: &O,
        rng: &mut ProbeRng,
        mut on_probe: impl FnMut(usize),
    ) -> Result<SpectralDensity> {
        if op.blocks().is_empty() {
            return Err(Error::EmptyBlockSet);
        }
        let n = crate::block::total_len(op.blocks());
        let mut rules = Vec::with_capacity(self.probes.get());
        let mut hvps = 0;
        for l in 0..self.probes.get() {
            let v = Rademacher.sample(rng, n);
            let run = lanczos_run(op, &v, self.steps.get(), self.reorth, |_, _, _| false)?;
            hvps += run.hvps;
            let (nodes, vectors) = tridiagonal_eigen(&run.alpha, &run.beta);
            let m = nodes.len();
            let weights = (0..m).map(|i| vectors[i].powi(2)).collect();
            rules.push(QuadratureRule { nodes, weights });
            on_probe(l + 1);
        }
        debug_assert!(rules.iter().all(|r| r.weights.len() == r.nodes.len()));
        Ok(SpectralDensity { rules, dim: n, hvps })
    }
}
