//! Matrices with a known trace, diagonal and spectrum, and the statistics the
//! tests of the exchangeable and diagonal estimators share.

#![allow(dead_code)]

use rand::Rng;
use seht_estimator::{Block, DenseOperator, Gaussian, ProbeDistribution, probe_rng};

/// An orthonormal `n × n` matrix (row-major, columns orthonormal) from
/// Gram–Schmidt (twice) of a seeded Gaussian matrix: a Haar-like random basis.
pub fn orthonormal(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = probe_rng(seed);
    let mut cols: Vec<Vec<f64>> = Vec::with_capacity(n);
    while cols.len() < n {
        let mut c = Gaussian.sample(&mut rng, n);
        for _ in 0..2 {
            for q in &cols {
                let a: f64 = q.iter().zip(&c).map(|(x, y)| x * y).sum();
                c.iter_mut().zip(q).for_each(|(x, qi)| *x -= a * qi);
            }
        }
        let norm = c.iter().map(|x| x * x).sum::<f64>().sqrt();
        c.iter_mut().for_each(|x| *x /= norm);
        cols.push(c);
    }
    let mut u = vec![0.0; n * n];
    for (j, c) in cols.iter().enumerate() {
        for i in 0..n {
            u[i * n + j] = c[i];
        }
    }
    u
}

/// `U diag(λ) Uᵀ` (exactly symmetric) with a random orthonormal `U`, split
/// into blocks of the given sizes (one block `"all"` if `sizes` is empty).
pub fn with_spectrum(eigs: &[f64], sizes: &[usize], seed: u64) -> DenseOperator {
    let n = eigs.len();
    let u = orthonormal(n, seed);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let x: f64 = (0..n).map(|k| u[i * n + k] * eigs[k] * u[j * n + k]).sum();
            a[i * n + j] = x;
            a[j * n + i] = x;
        }
    }
    let blocks = if sizes.is_empty() {
        vec![Block::new("all", n)]
    } else {
        sizes.iter().enumerate().map(|(i, &len)| Block::new(format!("b{i}"), len)).collect()
    };
    DenseOperator::new(n, a, blocks).expect("valid matrix")
}

/// A random symmetric matrix with entries of both signs (indefinite) and a
/// non-trivial diagonal.
pub fn random_symmetric(n: usize, seed: u64) -> DenseOperator {
    let mut rng = probe_rng(seed);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let x: f64 = rng.random_range(-1.0..1.0) + if i == j { 0.5 } else { 0.0 };
            a[i * n + j] = x;
            a[j * n + i] = x;
        }
    }
    DenseOperator::single_block(n, a).expect("valid matrix")
}

/// The exact diagonal of `op`.
pub fn diagonal(op: &DenseOperator) -> Vec<f64> {
    (0..op.dim()).map(|i| op.entry(i, i)).collect()
}

/// Sample mean and (unbiased) sample variance.
pub fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (m, x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0))
}

/// Asserts that a mean of `n` samples of variance `var` lies within five
/// standard errors of `expected`.
pub fn assert_within_5se(label: &str, mean: f64, expected: f64, var: f64, n: usize) {
    let se = (var / n as f64).sqrt();
    let z = (mean - expected) / se;
    assert!(z.abs() < 5.0, "{label}: mean {mean:.6} vs expected {expected:.6}: {z:.2} standard errors (se {se:.2e})");
}

/// Asserts that an estimator's reported error (the root mean square of its
/// reported standard errors over seeds) is within a factor of 2 of the root
/// mean square of its actual errors.
pub fn assert_error_estimate_calibrated(label: &str, actual_sq: &[f64], reported_sq: &[f64]) {
    let rms_actual = (actual_sq.iter().sum::<f64>() / actual_sq.len() as f64).sqrt();
    let rms_reported = (reported_sq.iter().sum::<f64>() / reported_sq.len() as f64).sqrt();
    let ratio = rms_reported / rms_actual;
    eprintln!("{label}: reported {rms_reported:.3e}, actual RMS {rms_actual:.3e}, ratio {ratio:.2}");
    assert!(
        (0.5..=2.0).contains(&ratio),
        "{label}: reported error {rms_reported:.3e} vs actual RMS error {rms_actual:.3e} (ratio {ratio:.2}, allowed 0.5–2)"
    );
}

/// The test vectors the exchangeable estimators draw from `probe_rng(seed)`:
/// `m` Rademacher vectors of length `n`, in order.
pub fn rademacher_test_vectors(n: usize, m: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = probe_rng(seed);
    (0..m).map(|_| seht_estimator::Rademacher.sample(&mut rng, n)).collect()
}

pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub fn matvec(op: &DenseOperator, x: &[f64]) -> Vec<f64> {
    let n = op.dim();
    (0..n).map(|i| (0..n).map(|j| op.entry(i, j) * x[j]).sum()).collect()
}

/// An orthonormal basis of the span of `cols` (Gram–Schmidt twice, dropping
/// dependent columns), written out independently of the crate's.
pub fn basis(cols: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::new();
    for c in cols {
        let norm0 = dot(c, c).sqrt();
        let mut c = c.clone();
        for _ in 0..2 {
            for q in &out {
                let a = dot(q, &c);
                c.iter_mut().zip(q).for_each(|(x, qi)| *x -= a * qi);
            }
        }
        let norm = dot(&c, &c).sqrt();
        if norm > 1e-10 * norm0 {
            c.iter_mut().for_each(|x| *x /= norm);
            out.push(c);
        }
    }
    out
}

/// `x − QQᵀx`.
fn project_out(q: &[Vec<f64>], x: &[f64]) -> Vec<f64> {
    let mut x = x.to_vec();
    for qi in q {
        let a = dot(qi, &x);
        x.iter_mut().zip(qi).for_each(|(v, qv)| *v -= a * qv);
    }
    x
}

/// XTrace's samples from the definition: for each `i` a basis of `HΩ₋ᵢ`, then
/// `tr(Q₍ᵢ₎ᵀHQ₍ᵢ₎) + ωᵢᵀPᵢHPᵢωᵢ` (`m` bases, `O(m²)` products: a reference only).
pub fn naive_xtrace(op: &DenseOperator, m: usize, seed: u64) -> Vec<f64> {
    let omegas = rademacher_test_vectors(op.dim(), m, seed);
    let ys: Vec<Vec<f64>> = omegas.iter().map(|w| matvec(op, w)).collect();
    (0..m)
        .map(|i| {
            let others: Vec<Vec<f64>> = (0..m).filter(|&j| j != i).map(|j| ys[j].clone()).collect();
            let q = basis(&others);
            let top: f64 = q.iter().map(|qk| dot(qk, &matvec(op, qk))).sum();
            let pw = project_out(&q, &omegas[i]);
            top + dot(&pw, &matvec(op, &pw))
        })
        .collect()
}

/// XDiag's samples from the definition: `diag(Q₍ᵢ₎Q₍ᵢ₎ᵀH) + ωᵢ ⊙ (I − Q₍ᵢ₎Q₍ᵢ₎ᵀ)Hωᵢ`.
pub fn naive_xdiag(op: &DenseOperator, m: usize, seed: u64) -> Vec<Vec<f64>> {
    let n = op.dim();
    let omegas = rademacher_test_vectors(n, m, seed);
    let ys: Vec<Vec<f64>> = omegas.iter().map(|w| matvec(op, w)).collect();
    (0..m)
        .map(|i| {
            let others: Vec<Vec<f64>> = (0..m).filter(|&j| j != i).map(|j| ys[j].clone()).collect();
            let q = basis(&others);
            let hq: Vec<Vec<f64>> = q.iter().map(|qk| matvec(op, qk)).collect();
            let resid = project_out(&q, &ys[i]);
            (0..n)
                .map(|j| q.iter().zip(&hq).map(|(qk, hk)| qk[j] * hk[j]).sum::<f64>() + omegas[i][j] * resid[j])
                .collect()
        })
        .collect()
}

/// Solves `a x = b` (`a` row-major `k × k`) by Gaussian elimination with
/// partial pivoting.
fn solve(k: usize, mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
    for col in 0..k {
        let p = (col..k).max_by(|&x, &y| a[x * k + col].abs().total_cmp(&a[y * k + col].abs())).expect("rows");
        for j in 0..k {
            a.swap(col * k + j, p * k + j);
        }
        b.swap(col, p);
        for r in col + 1..k {
            let f = a[r * k + col] / a[col * k + col];
            for j in col..k {
                a[r * k + j] -= f * a[col * k + j];
            }
            b[r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; k];
    for r in (0..k).rev() {
        let s: f64 = (r + 1..k).map(|j| a[r * k + j] * x[j]).sum();
        x[r] = (b[r] - s) / a[r * k + r];
    }
    x
}

/// XNysTrace's samples from the definition: `tr(Ĥ₍ᵢ₎) + ωᵢᵀ(H − Ĥ₍ᵢ₎)ωᵢ` with
/// the Nyström approximation `Ĥ₍ᵢ₎ = Y₋ᵢ(Ω₋ᵢᵀY₋ᵢ)⁻¹Y₋ᵢᵀ`, without any shift.
pub fn naive_xnystrace(op: &DenseOperator, m: usize, seed: u64) -> Vec<f64> {
    let omegas = rademacher_test_vectors(op.dim(), m, seed);
    let ys: Vec<Vec<f64>> = omegas.iter().map(|w| matvec(op, w)).collect();
    (0..m)
        .map(|i| {
            let idx: Vec<usize> = (0..m).filter(|&j| j != i).collect();
            let k = idx.len();
            let g: Vec<f64> = idx
                .iter()
                .flat_map(|&a| idx.iter().map(move |&b| (a, b)))
                .map(|(a, b)| dot(&omegas[a], &ys[b]))
                .collect();
            // tr(Ĥ) = tr(G⁻¹ Y₋ᵢᵀY₋ᵢ): column c of G⁻¹(Y₋ᵢᵀY₋ᵢ), diagonal entry c.
            let trace_hat: f64 =
                (0..k).map(|c| solve(k, g.clone(), idx.iter().map(|&a| dot(&ys[a], &ys[idx[c]])).collect())[c]).sum();
            // ωᵢᵀĤωᵢ = uᵀG⁻¹u with u = Y₋ᵢᵀωᵢ.
            let u: Vec<f64> = idx.iter().map(|&a| dot(&ys[a], &omegas[i])).collect();
            let quad = dot(&u, &solve(k, g, u.clone()));
            trace_hat + dot(&omegas[i], &ys[i]) - quad
        })
        .collect()
}
