//! Cholesky factorisation of a small dense symmetric positive-definite matrix
//! and the triangular solves that go with it (the `m × m` core of XNysTrace).
//!
//! **Method** (Golub & Van Loan, *Matrix Computations*, 4th ed., Algorithm
//! 4.2.1): `G = LLᵀ` column by column, `l_jj = √(g_jj − Σ_{k<j} l_jk²)`,
//! `l_ij = (g_ij − Σ_{k<j} l_ik l_jk)/l_jj`; it fails exactly when a pivot is
//! not positive, i.e. when `G` is not (numerically) positive definite.

/// The lower-triangular Cholesky factor `L` (row-major `m × m`) of the
/// symmetric matrix `g` (row-major; only its lower triangle is read), or
/// `None` when a pivot is not positive and finite.
pub(crate) fn cholesky(m: usize, g: &[f64]) -> Option<Vec<f64>> {
    let mut l = vec![0.0; m * m];
    for j in 0..m {
        let d = g[j * m + j] - (0..j).map(|k| l[j * m + k] * l[j * m + k]).sum::<f64>();
        if !(d > 0.0 && d.is_finite()) {
            return None;
        }
        let ljj = d.sqrt();
        l[j * m + j] = ljj;
        for i in j + 1..m {
            let s = g[i * m + j] - (0..j).map(|k| l[i * m + k] * l[j * m + k]).sum::<f64>();
            l[i * m + j] = s / ljj;
        }
    }
    Some(l)
}

/// `x = L⁻¹b` for lower-triangular `L` (row-major `m × m`), by forward substitution.
pub(crate) fn solve_lower(m: usize, l: &[f64], b: &[f64]) -> Vec<f64> {
    let mut x = b.to_vec();
    for i in 0..m {
        let s: f64 = (0..i).map(|k| l[i * m + k] * x[k]).sum();
        x[i] = (x[i] - s) / l[i * m + i];
    }
    x
}

/// `x = L⁻ᵀb` for lower-triangular `L` (row-major `m × m`), by back substitution.
pub(crate) fn solve_lower_transposed(m: usize, l: &[f64], b: &[f64]) -> Vec<f64> {
    let mut x = b.to_vec();
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| l[k * m + i] * x[k]).sum();
        x[i] = (x[i] - s) / l[i * m + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factor_and_solves_reproduce_a_known_system() {
        // G = LLᵀ with a known L; then G x = b is solved by the two substitutions.
        let m = 4;
        let l0 = [2.0, 0.0, 0.0, 0.0, 0.5, 1.5, 0.0, 0.0, -1.0, 0.25, 3.0, 0.0, 0.1, -0.7, 0.4, 1.2];
        let mut g = vec![0.0; m * m];
        for i in 0..m {
            for j in 0..m {
                g[i * m + j] = (0..m).map(|k| l0[i * m + k] * l0[j * m + k]).sum();
            }
        }
        let l = cholesky(m, &g).expect("positive definite");
        for (a, b) in l.iter().zip(&l0) {
            assert!((a - b).abs() < 1e-14, "{a} vs {b}");
        }
        let x0 = [1.0, -2.0, 0.5, 3.0];
        let b: Vec<f64> = (0..m).map(|i| (0..m).map(|j| g[i * m + j] * x0[j]).sum()).collect();
        let x = solve_lower_transposed(m, &l, &solve_lower(m, &l, &b));
        for (a, e) in x.iter().zip(&x0) {
            assert!((a - e).abs() < 1e-12, "{a} vs {e}");
        }
    }

    #[test]
    fn an_indefinite_or_singular_matrix_has_no_factor() {
        assert!(cholesky(2, &[1.0, 2.0, 2.0, 1.0]).is_none());
        assert!(cholesky(2, &[1.0, 1.0, 1.0, 1.0]).is_none());
        assert!(cholesky(1, &[f64::NAN]).is_none());
    }
}
