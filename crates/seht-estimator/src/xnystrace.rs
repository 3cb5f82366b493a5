//! XNysTrace (Epperly, Tropp & Webber, "XTrace: Making the most of every
//! sample in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1),
//! 2024, §3, Algorithm "XNysTrace"): the exchangeable trace estimator for a
//! positive semi-definite `H` (a Gauss–Newton matrix), built on the Nyström
//! approximation, one product per test vector.
//!
//! **Formula.** Draw `m` test vectors `Ω` (`E[ωωᵀ] = I`), take `Y = HΩ`; the
//! Nyström approximation from `Ω₋ᵢ` (all test vectors but `ωᵢ`) is
//! `Ĥ₍ᵢ₎ = Y₋ᵢ(Ω₋ᵢᵀY₋ᵢ)⁻¹Y₋ᵢᵀ`, independent of `ωᵢ`, so each
//!
//! ```text
//! tᵢ = tr(Ĥ₍ᵢ₎) + ωᵢᵀ(H − Ĥ₍ᵢ₎)ωᵢ
//! ```
//!
//! is unbiased, and `tr̂(H) = (1/m)Σᵢ tᵢ` with the error estimate
//! `s(t₁ … tₘ)/√m`. With `G = ΩᵀY`, `G = LLᵀ` (Cholesky), `Y = QR`,
//! `B = RL⁻ᵀ` (so `Ĥ = QBBᵀQᵀ`) and `xᵢ = L⁻¹eᵢ`, the block-inverse formula
//! for `(G₋ᵢ,₋ᵢ)⁻¹` gives the closed form (the paper's efficient
//! implementation)
//!
//! ```text
//! tᵢ = ‖B‖_F² − ‖Bxᵢ‖²/‖xᵢ‖² + 1/‖xᵢ‖²,
//! ```
//!
//! the last term being the Schur complement `ωᵢᵀHωᵢ − G_{i,−i}G₋ᵢ,₋ᵢ⁻¹G_{−i,i}`.
//!
//! **Stability.** As in the paper's code, `H` is shifted to `H + νI` with
//! `ν = ε_mach·‖Y‖_F/√n` (`Y ← Y + νΩ`), which keeps `G` numerically positive
//! definite, and `ν·n` is subtracted from every `tᵢ` (`E[ωᵀω] = n`). Should the
//! Cholesky factorisation still fail, the shift is raised by 100× up to three
//! times before the operator is declared indefinite.
//!
//! **Cost.** `m` products (against XTrace's `2m`); `O(nm²)` host flops, two
//! `n × m` matrices. **Exactness:** if `rank(H) ≤ m − 1`, `Ĥ₍ᵢ₎ = H` and
//! the estimate is exact up to the shift's `O(ν)`.
//!
//! Like XTrace it returns a number, not a differentiable value, so it is no
//! [`TraceEstimator`](crate::TraceEstimator); the paper's "improved" test
//! vectors are not implemented.

use crate::cholesky::{cholesky, solve_lower, solve_lower_transposed};
use crate::error::{Error, Result};
use crate::estimate::{Target, TraceEstimate};
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::qr::{dot, thin_qr};
use crate::sample::{Sketch, sketch};

/// XNysTrace with `m ≥ 2` test vectors from `D`, for positive semi-definite
/// operators (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct XNysTrace<D = Rademacher> {
    test_vectors: usize,
    distribution: D,
}

impl XNysTrace<Rademacher> {
    /// XNysTrace with a budget of `hvps ≥ 2` products: `m = hvps` Rademacher
    /// test vectors.
    ///
    /// # Errors
    /// [`Error::TooSmall`] naming `"budget"` for fewer than 2 products.
    pub fn with_budget(hvps: usize) -> Result<Self> {
        if hvps < 2 {
            return Err(Error::TooSmall { name: "budget", min: 2, got: hvps });
        }
        Self::new(hvps, Rademacher)
    }
}

impl<D: ProbeDistribution> XNysTrace<D> {
    /// XNysTrace with `test_vectors ≥ 2` test vectors from `distribution`.
    ///
    /// # Errors
    /// [`Error::TooSmall`] naming `"test_vectors"` for fewer than 2.
    pub fn new(test_vectors: usize, distribution: D) -> Result<Self> {
        if test_vectors < 2 {
            return Err(Error::TooSmall { name: "test_vectors", min: 2, got: test_vectors });
        }
        Ok(Self { test_vectors, distribution })
    }

    /// Number of test vectors `m` (and of Hessian-vector products).
    pub fn test_vectors(&self) -> usize {
        self.test_vectors
    }

    /// Estimates `tr(H)` over all blocks of a positive semi-definite `op`.
    ///
    /// The returned [`TraceEstimate`] has `samples = [t₁ … tₘ]` (exchangeable,
    /// not independent), `mean` = the estimate, `std_error` = its error
    /// estimate `s/√m`, and `hvps = m`.
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`] for an operator without entries;
    /// [`Error::InvalidParameter`] naming `"test_vectors"` when `m` exceeds
    /// the operator's dimension (the sketch `ΩᵀHΩ` is then singular);
    /// [`Error::DependentTestVectors`] when the drawn test vectors are
    /// linearly dependent; [`Error::NotPositiveSemidefinite`] when `ΩᵀHΩ` has
    /// a negative direction; [`Error::NonFinite`]; the operator's errors.
    pub fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<f64>> {
        const NAME: &str = "XNysTrace";
        let blocks = op.blocks();
        let n = crate::block::total_len(blocks);
        if n == 0 {
            return Err(Error::EmptyBlockSet);
        }
        let m = self.test_vectors;
        if m > n {
            return Err(Error::InvalidParameter {
                name: "test_vectors",
                value: m as f64,
                reason: format!("XNysTrace needs at most as many test vectors as the operator's dimension {n}"),
            });
        }
        let Sketch { omegas, ys } = sketch(op, m, &self.distribution, rng)?;
        let y_norm = ys.iter().map(|y| dot(y, y)).sum::<f64>().sqrt();
        let mut nu = f64::EPSILON * y_norm / (n as f64).sqrt();
        let mut factored = None;
        for _ in 0..4 {
            let shifted: Vec<Vec<f64>> =
                ys.iter().zip(&omegas).map(|(y, w)| y.iter().zip(w).map(|(a, b)| a + nu * b).collect()).collect();
            // G = Ωᵀ(Y + νΩ), symmetrised.
            let mut g = vec![0.0; m * m];
            for i in 0..m {
                for j in 0..=i {
                    let v = 0.5 * (dot(&omegas[i], &shifted[j]) + dot(&omegas[j], &shifted[i]));
                    g[i * m + j] = v;
                    g[j * m + i] = v;
                }
            }
            if let Some(l) = cholesky(m, &g) {
                factored = Some((shifted, l, nu));
                break;
            }
            nu = if nu > 0.0 { 100.0 * nu } else { f64::EPSILON };
        }
        let Some((shifted, l, nu)) = factored else {
            if thin_qr(omegas).rank() < m {
                return Err(Error::DependentTestVectors { estimator: NAME, count: m });
            }
            return Err(Error::NotPositiveSemidefinite { estimator: NAME });
        };
        let qr = thin_qr(shifted);
        let rank = qr.rank();
        // ‖B‖_F² with B = R L⁻ᵀ: row k of B is (L⁻¹ R_kᵀ)ᵀ.
        let b_norm_sq: f64 = (0..rank)
            .map(|k| {
                let row = solve_lower(m, &l, &qr.r[k * m..(k + 1) * m]);
                dot(&row, &row)
            })
            .sum();
        let mut samples = Vec::with_capacity(m);
        let mut e = vec![0.0; m];
        for i in 0..m {
            e[i] = 1.0;
            let x = solve_lower(m, &l, &e);
            e[i] = 0.0;
            let xx = dot(&x, &x);
            // B xᵢ = R L⁻ᵀ xᵢ.
            let z = solve_lower_transposed(m, &l, &x);
            let bx_sq: f64 = (0..rank)
                .map(|k| {
                    let v = dot(&qr.r[k * m..(k + 1) * m], &z);
                    v * v
                })
                .sum();
            samples.push(b_norm_sq - bx_sq / xx + 1.0 / xx - nu * n as f64);
        }
        if samples.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { context: "XNysTrace estimates".into() });
        }
        Ok(TraceEstimate::from_samples(samples, Target::FullTrace, (0..blocks.len()).collect(), m))
    }
}
