//! A thin QR factorisation of a few long columns, and the leave-one-out
//! directions that the exchangeable estimators (XTrace, XDiag) are built on.
//!
//! **Factorisation.** Modified Gram–Schmidt applied twice ("twice is
//! enough", Giraud, Langou, Rozložník & van den Eshof 2005) to the columns
//! `y₁ … yₘ` of `Y ∈ ℝⁿˣᵐ`, in order: `Y = QR` with `Q ∈ ℝⁿˣʳ` orthonormal
//! and `R = QᵀY ∈ ℝʳˣᵐ`. A column whose part orthogonal to the earlier ones
//! is below `1e-10` of its own norm adds no column to `Q` (it is *dropped*,
//! and `r < m`); so `Q` spans exactly the numerical range of `Y`, also when
//! `Y` is rank-deficient (an operator of rank below the sketch size).
//! Restricted to the kept columns, `R` is upper triangular with a non-zero
//! diagonal.
//!
//! **Leave-one-out directions** (Epperly, Tropp & Webber, "XTrace: Making the
//! most of every sample in stochastic trace estimation", SIAM J. Matrix Anal.
//! Appl. 45(1), 2024, §2.1 and the efficient implementation of §2.2). Removing
//! column `i` shrinks `range(Y)` by at most one direction. In the coordinates
//! of `Q` that direction is the unit vector `sᵢ ∈ ℝʳ` orthogonal to every
//! other column of `R`:
//!
//! ```text
//! range(Y₋ᵢ) = Q·{x : sᵢᵀx = 0},    Q₍ᵢ₎Q₍ᵢ₎ᵀ = Q(I − sᵢsᵢᵀ)Qᵀ,
//! ```
//!
//! or nothing is lost (`sᵢ` absent) when column `i` lies in the span of the
//! others. With every column kept, `sᵢ ∝ R⁻ᵀeᵢ` (the normalised rows of `R⁻¹`,
//! as in the paper); a dropped column never loses anything; a kept column
//! loses `R_K⁻ᵀeᵢ` (`R_K`: `R` on the kept columns) unless some dropped column
//! depends on it.

/// Relative size below which a column's new direction is dropped.
const DROP: f64 = 1e-10;
/// Relative size above which a dropped column counts as depending on a kept one.
const DEPENDS: f64 = 1e-8;

/// `Y = QR` with dropped dependent columns (see the module documentation).
#[derive(Debug, Clone)]
pub(crate) struct ThinQr {
    /// The `r` orthonormal columns of `Q`, each of length `n`.
    pub q: Vec<Vec<f64>>,
    /// For each column of `Q`, the column of `Y` it was made from (ascending).
    pub kept: Vec<usize>,
    /// `R = QᵀY`, `r × m`, row-major.
    pub r: Vec<f64>,
    /// Number of columns `m` of `Y`.
    pub m: usize,
}

impl ThinQr {
    /// Number of columns of `Q`.
    pub fn rank(&self) -> usize {
        self.q.len()
    }

    /// Column `j` of `R` (length `r`).
    pub fn r_col(&self, j: usize) -> Vec<f64> {
        (0..self.rank()).map(|k| self.r[k * self.m + j]).collect()
    }
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Factorises the columns `cols` (each of the same length `n`); the columns
/// are overwritten (they become the columns of `Q` or are discarded).
pub(crate) fn thin_qr(cols: Vec<Vec<f64>>) -> ThinQr {
    let m = cols.len();
    let mut q: Vec<Vec<f64>> = Vec::with_capacity(m);
    let mut kept = Vec::with_capacity(m);
    // Coefficients per input column, over the basis built so far.
    let mut coef: Vec<Vec<f64>> = Vec::with_capacity(m);
    for (j, mut c) in cols.into_iter().enumerate() {
        let norm0 = dot(&c, &c).sqrt();
        let mut a = vec![0.0; q.len()];
        if norm0 > 0.0 && norm0.is_finite() {
            for _ in 0..2 {
                for (k, qk) in q.iter().enumerate() {
                    let ak = dot(qk, &c);
                    a[k] += ak;
                    c.iter_mut().zip(qk).for_each(|(x, qi)| *x -= ak * qi);
                }
            }
            let norm = dot(&c, &c).sqrt();
            if norm > DROP * norm0 {
                c.iter_mut().for_each(|x| *x /= norm);
                a.push(norm);
                q.push(c);
                kept.push(j);
            }
        }
        coef.push(a);
    }
    let rank = q.len();
    let mut r = vec![0.0; rank * m];
    for (j, a) in coef.iter().enumerate() {
        for (k, &x) in a.iter().enumerate() {
            r[k * m + j] = x;
        }
    }
    ThinQr { q, kept, r, m }
}

/// The leave-one-out direction `sᵢ` (unit, in `Q`'s coordinates) of every
/// column `i` of `Y`, or `None` where removing column `i` loses no direction
/// (see the module documentation).
pub(crate) fn leave_one_out_directions(qr: &ThinQr) -> Vec<Option<Vec<f64>>> {
    let (rank, m) = (qr.rank(), qr.m);
    // R_K: R on the kept columns, rank × rank, upper triangular.
    let rk = |row: usize, col: usize| qr.r[row * m + qr.kept[col]];
    // Which kept columns (by position) some dropped column depends on.
    let mut involved = vec![false; rank];
    let mut is_kept = vec![false; m];
    for &j in &qr.kept {
        is_kept[j] = true;
    }
    for d in (0..m).filter(|&d| !is_kept[d]) {
        let rd = qr.r_col(d);
        let norm_d = dot(&rd, &rd).sqrt();
        // e = R_K⁻¹ r_d by back substitution: r_d = Σₚ eₚ·(kept column p).
        let mut e = rd;
        for p in (0..rank).rev() {
            e[p] /= rk(p, p);
            for row in 0..p {
                e[row] -= rk(row, p) * e[p];
            }
        }
        for p in 0..rank {
            let col = qr.r_col(qr.kept[p]);
            if e[p].abs() * dot(&col, &col).sqrt() > DEPENDS * norm_d {
                involved[p] = true;
            }
        }
    }
    let mut out = vec![None; m];
    for p in (0..rank).filter(|&p| !involved[p]) {
        // s ∝ R_K⁻ᵀ e_p by forward substitution (R_Kᵀ is lower triangular).
        let mut s = vec![0.0; rank];
        for row in p..rank {
            let rhs = if row == p { 1.0 } else { 0.0 };
            let acc: f64 = (p..row).map(|k| rk(k, row) * s[k]).sum();
            s[row] = (rhs - acc) / rk(row, row);
        }
        let norm = dot(&s, &s).sqrt();
        if norm > 0.0 && norm.is_finite() {
            s.iter_mut().for_each(|x| *x /= norm);
            out[qr.kept[p]] = Some(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::{Gaussian, ProbeDistribution, probe_rng};

    fn reconstruct(qr: &ThinQr, n: usize) -> Vec<Vec<f64>> {
        (0..qr.m)
            .map(|j| (0..n).map(|t| (0..qr.rank()).map(|k| qr.q[k][t] * qr.r[k * qr.m + j]).sum()).collect())
            .collect()
    }

    #[test]
    fn full_rank_columns_factor_exactly_and_lose_one_direction_each() {
        let (n, m) = (30, 6);
        let mut rng = probe_rng(1);
        let y: Vec<Vec<f64>> = (0..m).map(|_| Gaussian.sample(&mut rng, n)).collect();
        let qr = thin_qr(y.clone());
        assert_eq!(qr.kept, (0..m).collect::<Vec<_>>());
        for (a, b) in reconstruct(&qr, n).iter().flatten().zip(y.iter().flatten()) {
            assert!((a - b).abs() < 1e-12);
        }
        for i in 0..m {
            for j in 0..m {
                let d = dot(&qr.q[i], &qr.q[j]);
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-13);
            }
        }
        let s = leave_one_out_directions(&qr);
        for (i, si) in s.iter().enumerate() {
            let si = si.as_ref().expect("a full-rank Y loses a direction with each column");
            assert!((dot(si, si) - 1.0).abs() < 1e-12);
            for j in 0..m {
                let overlap = dot(si, &qr.r_col(j));
                if j == i {
                    assert!(overlap.abs() > 1e-3, "s_{i} must see column {i}");
                } else {
                    assert!(overlap.abs() < 1e-12, "s_{i} against column {j}: {overlap}");
                }
            }
        }
    }

    #[test]
    fn dependent_columns_are_dropped_and_lose_nothing() {
        // Y = [a, b, a + 2b, c]: the third column is dropped; removing a, b or
        // the third loses nothing, removing c loses c's direction.
        let n = 12;
        let mut rng = probe_rng(2);
        let a = Gaussian.sample(&mut rng, n);
        let b = Gaussian.sample(&mut rng, n);
        let c = Gaussian.sample(&mut rng, n);
        let ab: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x + 2.0 * y).collect();
        let y = vec![a, b, ab, c];
        let qr = thin_qr(y.clone());
        assert_eq!(qr.kept, vec![0, 1, 3]);
        for (u, v) in reconstruct(&qr, n).iter().flatten().zip(y.iter().flatten()) {
            assert!((u - v).abs() < 1e-12);
        }
        let s = leave_one_out_directions(&qr);
        assert!(s[0].is_none() && s[1].is_none() && s[2].is_none());
        let s3 = s[3].as_ref().expect("c is independent of the rest");
        for j in 0..3 {
            assert!(dot(s3, &qr.r_col(j)).abs() < 1e-12);
        }
    }

    #[test]
    fn zero_columns_are_dropped() {
        let qr = thin_qr(vec![vec![0.0; 5], vec![1.0, 0.0, 0.0, 0.0, 0.0]]);
        assert_eq!(qr.kept, vec![1]);
        let s = leave_one_out_directions(&qr);
        assert!(s[0].is_none());
        assert_eq!(s[1].as_deref(), Some(&[1.0][..]));
    }
}
