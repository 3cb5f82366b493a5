//! XDiag (Epperly, Tropp & Webber, "XTrace: Making the most of every sample
//! in stochastic trace estimation", SIAM J. Matrix Anal. Appl. 45(1), 2024,
//! §4, "XDiag"): the exchangeable diagonal estimator, XTrace's construction
//! applied to Hutchinson's diagonal estimator (Bekas, Kokiopoulou & Saad 2007).
//!
//! **Formula.** With `Ω`, `Y = HΩ`, `Q₍ᵢ₎` (a basis of `range(Y₋ᵢ)`) as in
//! XTrace, `diag(H) = diag(Q₍ᵢ₎Q₍ᵢ₎ᵀH) + diag((I − Q₍ᵢ₎Q₍ᵢ₎ᵀ)H)`; the first part is
//! computed, the second estimated with the probe `ωᵢ` that `Q₍ᵢ₎` does not
//! depend on (`E[ω ⊙ Aω] = diag(A)` for `E[ωωᵀ] = I`):
//!
//! ```text
//! dᵢ = diag(Q₍ᵢ₎Q₍ᵢ₎ᵀH) + ωᵢ ⊙ (I − Q₍ᵢ₎Q₍ᵢ₎ᵀ)Hωᵢ,      diaĝ_X(H) = (1/m) Σᵢ dᵢ.
//! ```
//!
//! With `Y = QR`, `Z = HQ`, the leave-one-out direction `sᵢ`
//! (`Q₍ᵢ₎Q₍ᵢ₎ᵀ = Q(I − sᵢsᵢᵀ)Qᵀ`, see `qr.rs`) and `rᵢ = Qᵀyᵢ`, using
//! `QᵀH = Zᵀ` (`H` symmetric) and `(I − QQᵀ)yᵢ = 0`:
//!
//! ```text
//! dᵢ = diag(QZᵀ) − (Qsᵢ) ⊙ (Zsᵢ) + (sᵢᵀrᵢ)·ωᵢ ⊙ (Qsᵢ)
//! ```
//!
//! (without the last two terms where removing `yᵢ` loses no direction).
//!
//! **Error estimate.** Per entry, the standard error `s/√m` of the `m`
//! exchangeable samples `dᵢ` — XTrace's error estimate (the paper's eq. 2.5)
//! applied entry by entry. The paper gives no error estimate for XDiag; this
//! one is checked against the empirical spread in the tests.
//!
//! **Cost.** At most `2m` products ([`XDiag::with_budget`] takes the total),
//! `O(nm²)` host flops, three `n × m` matrices. **Exactness:** if
//! `rank(H) ≤ m − 1` the estimate is exact.

use crate::error::{Error, Result};
use crate::estimate::{DiagonalEstimate, EntryStats};
use crate::operator::HvpOperator;
use crate::probe::{ProbeDistribution, ProbeRng, Rademacher};
use crate::qr::{dot, leave_one_out_directions, thin_qr};
use crate::sample::{Sketch, hvp_flat, sketch};

/// XDiag with `m ≥ 2` test vectors from `D` (see the module documentation).
#[derive(Debug, Clone, PartialEq)]
pub struct XDiag<D = Rademacher> {
    test_vectors: usize,
    distribution: D,
}

impl XDiag<Rademacher> {
    /// XDiag within a budget of `hvps ≥ 4` products: `m = ⌊hvps/2⌋`
    /// Rademacher test vectors (the paper's split).
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

impl<D: ProbeDistribution> XDiag<D> {
    /// XDiag with `test_vectors ≥ 2` test vectors from `distribution`.
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

    /// Estimates `diag(H)` over all blocks of `op`, with per-entry standard
    /// errors; spends `m + rank(Y)` products.
    ///
    /// # Errors
    /// [`Error::EmptyBlockSet`] for an operator without entries,
    /// [`Error::NonFinite`] if a product or the estimate is not finite, and
    /// the operator's errors.
    pub fn estimate<O: HvpOperator>(&self, op: &O, rng: &mut ProbeRng) -> Result<DiagonalEstimate> {
        let blocks = op.blocks();
        let n = crate::block::total_len(blocks);
        if n == 0 {
            return Err(Error::EmptyBlockSet);
        }
        let m = self.test_vectors;
        let Sketch { omegas, ys } = sketch(op, m, &self.distribution, rng)?;
        let qr = thin_qr(ys);
        let rank = qr.rank();
        let mut zs = Vec::with_capacity(rank);
        for q in &qr.q {
            zs.push(hvp_flat(op, q)?);
        }
        // diag(QZᵀ), the part every sample shares.
        let mut base = vec![0.0; n];
        for (q, z) in qr.q.iter().zip(&zs) {
            base.iter_mut().zip(q.iter().zip(z)).for_each(|(b, (qj, zj))| *b += qj * zj);
        }
        let dirs = leave_one_out_directions(&qr);
        // Statistics of the varying part dᵢ − diag(QZᵀ) (the same spread, less cancellation).
        let mut stats = EntryStats::new(n);
        let mut delta = vec![0.0; n];
        let mut qs = vec![0.0; n];
        let mut zsv = vec![0.0; n];
        for (i, omega) in omegas.iter().enumerate() {
            match &dirs[i] {
                Some(s) => {
                    qs.iter_mut().for_each(|x| *x = 0.0);
                    zsv.iter_mut().for_each(|x| *x = 0.0);
                    for k in 0..rank {
                        qs.iter_mut().zip(&qr.q[k]).for_each(|(x, q)| *x += s[k] * q);
                        zsv.iter_mut().zip(&zs[k]).for_each(|(x, z)| *x += s[k] * z);
                    }
                    let alpha = dot(s, &qr.r_col(i));
                    for j in 0..n {
                        delta[j] = qs[j] * (alpha * omega[j] - zsv[j]);
                    }
                }
                None => delta.iter_mut().for_each(|x| *x = 0.0),
            }
            stats.push(&delta);
        }
        let (mut diagonal, std_error) = stats.finish();
        diagonal.iter_mut().zip(&base).for_each(|(d, b)| *d += b);
        if diagonal.iter().chain(std_error.iter().flatten()).any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { context: "XDiag estimate".into() });
        }
        Ok(DiagonalEstimate { diagonal, std_error, blocks: blocks.to_vec(), hvps: m + rank })
    }
}
