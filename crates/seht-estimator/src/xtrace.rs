//! XTrace (Epperly, Tropp & Webber, "XTrace: Making the most of every sample
//! in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024,
//! §2, Algorithm "XTrace"): an exchangeable Hutch++ that uses every product
//! both for the low-rank part and for the residual, and reports its own error.
//!
//! **Formula.** Draw `m` test vectors `Ω = [ω₁ … ωₘ]` (`E[ωωᵀ] = I`), take
//! `Y = HΩ`, and for each `i` let `Q₍ᵢ₎` be an orthonormal basis of
//! `range(Y₋ᵢ)` (`Y` without column `i`), `Pᵢ = I − Q₍ᵢ₎Q₍ᵢ₎ᵀ`. Each
//!
//! ```text
//! tᵢ = tr(Q₍ᵢ₎ᵀHQ₍ᵢ₎) + ωᵢᵀ Pᵢ H Pᵢ ωᵢ
//! ```
//!
//! is a Hutch++ estimate whose basis is independent of its probe `ωᵢ`, so
//! unbiased, and
//!
//! ```text
//! tr̂_X(H) = (1/m) Σᵢ tᵢ,      err̂ = s(t₁ … tₘ)/√m      (the paper's eq. 2.5)
//! ```
//!
//! where `s` is the sample standard deviation. All `m` bases come from one
//! QR factorisation `Y = QR` and one more block of products `Z = HQ` (the
//! paper's efficient implementation, §2.2): with `H_Q = QᵀZ`, `W = QᵀΩ` and
//! the leave-one-out direction `sᵢ` of column `i` (`Q₍ᵢ₎Q₍ᵢ₎ᵀ = Q(I − sᵢsᵢᵀ)Qᵀ`,
//! see `qr.rs`), and `cᵢ = wᵢ − sᵢ(sᵢᵀwᵢ)`, `rᵢ = Qᵀyᵢ` (column `i` of `R`),
//!
//! ```text
//! tᵢ = tr(H_Q) − sᵢᵀH_Qsᵢ + ωᵢᵀyᵢ − 2cᵢᵀrᵢ + cᵢᵀH_Qcᵢ,
//! ```
//!
//! which is the formula above expanded with `Pᵢωᵢ = ωᵢ − Qcᵢ` and, `H` being
//! symmetric, `ZᵀΩ = QᵀY = R`.
//!
//! **Cost.** `m` products for `Y` and `rank(Y) ≤ m` for `Z`: at most `2m`
//! ([`XTrace::with_budget`] takes the total). On the host `O(nm²)` flops and
//! three `n × m` matrices (`Ω`, `Q`, `Z`).
//!
//! **Exactness.** If `rank(H) ≤ m − 1`, every `Y₋ᵢ` spans `range(H)` (for
//! test vectors in general position), `Pᵢ H = 0`, and the estimate is exact
//! with a zero error estimate.
//!
//! **Not a [`TraceEstimator`](crate::TraceEstimator).** The estimate is a
//! non-linear function of the products (the bases are built from them), so it
//! is returned as a number, not as a weighted sum of the operator's scalars
//! that an autodiff backend could differentiate; XTrace measures curvature,
//! it is not a training penalty. The paper's "improved" normalisation of the
//! test vectors (§2.3) is not implemented: the test vectors are i.i.d. draws
//! from `D` (Rademacher by default).

use crate::error::{Error, Result};
use crate::estimate::{Target, TraceEstimate};
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::qr::{dot, leave_one_out_directions, thin_qr};
use crate::sample::{Sketch, hvp_flat, sketch};

/// XTrace with `m ≥ 2` test vectors from `D` (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct XTrace<D = Rademacher> {
    test_vectors: usize,
    distribution: D,
}

impl XTrace<Rademacher> {
    /// XTrace within a budget of `hvps ≥ 4` Hessian-vector products:
    /// `m = ⌊hvps/2⌋` Rademacher test vectors (curvlinops' and the paper's split).
    ///
    /// # Errors
    /// [`Error::TooSmall`] naming `"budget"` for fewer than 4 products.
    pub fn with_budget(hvps: usize) -> Result<Self> {
        if hvps < 4 {
            return Err(Error::TooSmall { name: "budget", min: 4, got: hvps });
        }
        Self::new(hvps / 2, Rademacher)
    }
}

impl<D: ProbeDistribution> XTrace<D> {
    /// XTrace with `test_vectors ≥ 2` test vectors from `distribution`.
    ///
    /// # Errors
    /// [`Error::TooSmall`] naming `"test_vectors"` for fewer than 2.
    pub fn new(test_vectors: usize, distribution: D) -> Result<Self> {
        if test_vectors < 2 {
            return Err(Error::TooSmall { name: "test_vectors", min: 2, got: test_vectors });
        }
        Ok(Self { test_vectors, distribution })
    }

    /// Number of test vectors `m`.
    pub fn test_vectors(&self) -> usize {
        self.test_vectors
    }

    /// The most Hessian-vector products an estimate spends: `2m`.
    pub fn budget(&self) -> usize {
        2 * self.test_vectors
    }

    /// Estimates `tr(H)` over all blocks of `op`.
    ///
    /// The returned [`TraceEstimate`] has `samples = [t₁ … tₘ]` (exchangeable,
    /// not independent), `mean` = XTrace's estimate, `std_error` = its error
    /// estimate `s/√m`, and `hvps` = `m + rank(Y)`.
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`] for an operator without entries,
    /// [`Error::NonFinite`] if a product or the estimate is not finite, and
    /// the operator's errors.
    pub fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<TraceEstimate<f64>> {
        let blocks = op.blocks();
        if crate::block::total_len(blocks) == 0 {
            return Err(Error::EmptyBlockSet);
        }
        let m = self.test_vectors;
        let Sketch { omegas, ys } = sketch(op, m, &self.distribution, rng)?;
        let omega_y: Vec<f64> = omegas.iter().zip(&ys).map(|(w, y)| dot(w, y)).collect();
        let qr = thin_qr(ys);
        let rank = qr.rank();
        let mut zs = Vec::with_capacity(rank);
        for q in &qr.q {
            zs.push(hvp_flat(op, q)?);
        }
        let hvps = m + rank;
        // H_Q = QᵀZ (symmetrised) and W = QᵀΩ.
        let mut hq = vec![0.0; rank * rank];
        for k in 0..rank {
            for l in 0..=k {
                let v = 0.5 * (dot(&qr.q[k], &zs[l]) + dot(&qr.q[l], &zs[k]));
                hq[k * rank + l] = v;
                hq[l * rank + k] = v;
            }
        }
        let quad = |x: &[f64]| -> f64 { (0..rank).map(|k| x[k] * dot(&hq[k * rank..(k + 1) * rank], x)).sum() };
        let trace_hq: f64 = (0..rank).map(|k| hq[k * rank + k]).sum();
        let dirs = leave_one_out_directions(&qr);
        let mut samples = Vec::with_capacity(m);
        for (i, omega) in omegas.iter().enumerate() {
            let w: Vec<f64> = qr.q.iter().map(|q| dot(q, omega)).collect();
            let r_i = qr.r_col(i);
            let (c, s_h_s) = match &dirs[i] {
                Some(s) => {
                    let sw = dot(s, &w);
                    let c: Vec<f64> = w.iter().zip(s).map(|(wk, sk)| wk - sw * sk).collect();
                    (c, quad(s))
                }
                None => (w, 0.0),
            };
            samples.push(trace_hq - s_h_s + omega_y[i] - 2.0 * dot(&c, &r_i) + quad(&c));
        }
        if samples.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { context: "XTrace estimates".into() });
        }
        Ok(TraceEstimate::from_samples(samples, Target::FullTrace, (0..blocks.len()).collect(), hvps))
    }
}
