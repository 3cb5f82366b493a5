//! Eigen-decomposition of a small dense symmetric matrix (the Lanczos
//! tridiagonal `T`, at most a few hundred rows), by the cyclic Jacobi method.
//!
//! **Method** (Jacobi 1846; Golub & Van Loan, *Matrix Computations*, 4th ed.,
//! §8.5.2): repeated plane rotations `A ← JᵀAJ`, each zeroing one
//! off-diagonal pair `a_pq` with `t = sign(θ)/(|θ| + √(θ²+1))`,
//! `θ = (a_qq − a_pp)/(2a_pq)`, `c = 1/√(1+t²)`, `s = t·c`, until the
//! off-diagonal mass is below round-off. Quadratic convergence; eigenvalues to
//! high relative accuracy (Demmel & Veselić 1992), which matters for the small
//! eigenvalues and tiny quadrature weights of stochastic Lanczos quadrature.
//! Cost `O(m³)` per sweep, a handful of sweeps: negligible next to one
//! Hessian-vector product for the sizes used here.

/// Eigenvalues (ascending) and eigenvectors of the symmetric tridiagonal matrix
/// with diagonal `alpha` (length `m`) and off-diagonal `beta` (length `m − 1`).
///
/// The eigenvectors are returned row-major `m × m`, column `i` belonging to
/// eigenvalue `i`: entry `(r, i)` is at `vectors[r * m + i]`.
pub(crate) fn tridiagonal_eigen(alpha: &[f64], beta: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let m = alpha.len();
    let mut a = vec![0.0; m * m];
    for i in 0..m {
        a[i * m + i] = alpha[i];
        if i + 1 < m {
            a[i * m + i + 1] = beta[i];
            a[(i + 1) * m + i] = beta[i];
        }
    }
    symmetric_eigen(m, a)
}

/// Eigenvalues (ascending) and eigenvectors (row-major, column `i` for
/// eigenvalue `i`) of the symmetric `m × m` matrix `a` (row-major).
pub(crate) fn symmetric_eigen(m: usize, mut a: Vec<f64>) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; m * m];
    for i in 0..m {
        v[i * m + i] = 1.0;
    }
    // Entries below this are zero for any eigenvalue of size ‖A‖_F·ε.
    let tiny = 1e-3 * f64::EPSILON * a.iter().map(|x| x * x).sum::<f64>().sqrt();
    for _sweep in 0..100 {
        let mut rotated = false;
        for p in 0..m {
            for q in p + 1..m {
                let apq = a[p * m + q];
                // Numerical Recipes' rule: an entry below the last bit of both
                // diagonal entries is zero (keeps the relative accuracy).
                let g = 100.0 * apq.abs();
                if apq.abs() <= tiny
                    || (a[p * m + p].abs() + g == a[p * m + p].abs() && a[q * m + q].abs() + g == a[q * m + q].abs())
                {
                    a[p * m + q] = 0.0;
                    a[q * m + p] = 0.0;
                    continue;
                }
                rotated = true;
                let theta = (a[q * m + q] - a[p * m + p]) / (2.0 * apq);
                let t = if theta.abs() > 1e150 {
                    0.5 / theta
                } else {
                    let sign = if theta >= 0.0 { 1.0 } else { -1.0 };
                    sign / (theta.abs() + (theta * theta + 1.0).sqrt())
                };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                // A ← A J (columns p, q), then A ← Jᵀ A (rows p, q), V ← V J.
                for k in 0..m {
                    let (akp, akq) = (a[k * m + p], a[k * m + q]);
                    a[k * m + p] = c * akp - s * akq;
                    a[k * m + q] = s * akp + c * akq;
                }
                for k in 0..m {
                    let (apk, aqk) = (a[p * m + k], a[q * m + k]);
                    a[p * m + k] = c * apk - s * aqk;
                    a[q * m + k] = s * apk + c * aqk;
                }
                for k in 0..m {
                    let (vkp, vkq) = (v[k * m + p], v[k * m + q]);
                    v[k * m + p] = c * vkp - s * vkq;
                    v[k * m + q] = s * vkp + c * vkq;
                }
                a[p * m + q] = 0.0;
                a[q * m + p] = 0.0;
            }
        }
        if !rotated {
            break;
        }
    }
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&i, &j| a[i * m + i].total_cmp(&a[j * m + j]));
    let values = order.iter().map(|&i| a[i * m + i]).collect();
    let mut vectors = vec![0.0; m * m];
    for (new, &old) in order.iter().enumerate() {
        for r in 0..m {
            vectors[r * m + new] = v[r * m + old];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tridiagonal Toeplitz matrix with diagonal `a` and off-diagonal `b`
    /// has eigenvalues `a + 2b·cos(kπ/(m+1))`, `k = 1..m` (a classical closed form).
    #[test]
    fn toeplitz_tridiagonal_has_its_closed_form_spectrum() {
        let m = 40;
        let (a, b) = (2.0, -1.0);
        let (values, vectors) = tridiagonal_eigen(&vec![a; m], &vec![b; m - 1]);
        let mut exact: Vec<f64> =
            (1..=m).map(|k| a + 2.0 * b * (k as f64 * std::f64::consts::PI / (m as f64 + 1.0)).cos()).collect();
        exact.sort_by(f64::total_cmp);
        for (x, e) in values.iter().zip(&exact) {
            assert!((x - e).abs() < 1e-13, "{x} vs {e}");
        }
        // T v = λ v for every pair, and V is orthonormal.
        for i in 0..m {
            for r in 0..m {
                let mut tv = a * vectors[r * m + i];
                if r > 0 {
                    tv += b * vectors[(r - 1) * m + i];
                }
                if r + 1 < m {
                    tv += b * vectors[(r + 1) * m + i];
                }
                assert!((tv - values[i] * vectors[r * m + i]).abs() < 1e-12);
            }
            for j in 0..m {
                let d: f64 = (0..m).map(|r| vectors[r * m + i] * vectors[r * m + j]).sum();
                assert!((d - if i == j { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
    }
}
