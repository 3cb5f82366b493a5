//! Spectral analysis (Lanczos eigenpairs, stochastic Lanczos quadrature,
//! per-block traces) against explicit matrices whose spectrum is known.
//!
//! Deterministic tolerances where the method is exact in exact arithmetic
//! (converged Lanczos, Gauss quadrature of degree ≤ 2m − 1); statistical ones
//! (5 standard errors, the error derived from the estimator's variance) where
//! the estimate is random.

mod common;

use common::{dot, matvec, orthonormal};
use rand::Rng;
use seht_estimator::{
    BasisPrecision, Block, BlockProbing, BlockTraces, Broadening, DenseOperator, Error, Lanczos, ProbeDistribution,
    Rademacher, Reorthogonalisation, Slq, Which, probe_rng,
};

/// `U diag(λ) Uᵀ` (exactly symmetric), split into `blocks`, and `U`.
fn with_spectrum(eigs: &[f64], blocks: Vec<Block>, seed: u64) -> (DenseOperator, Vec<f64>) {
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
    (DenseOperator::new(n, a, blocks).expect("valid matrix"), u)
}

/// A Hessian-like spectrum: a bulk near zero of both signs, a few outliers,
/// two of them close together (30 and 29.5), one negative outlier.
fn hessian_like(n: usize) -> Vec<f64> {
    let mut eigs: Vec<f64> = (0..n - 6).map(|i| -0.5 + i as f64 / (n - 7) as f64).collect();
    eigs.extend([50.0, 30.0, 29.5, 20.0, 10.0, -8.0]);
    eigs
}

#[test]
fn lanczos_recovers_the_top_eigenpairs_to_1e_6() -> Result<(), Error> {
    let n = 150;
    let eigs = hessian_like(n);
    let (op, u) = with_spectrum(&eigs, vec![Block::new("a", 100), Block::new("b", 50)], 1);
    let res = Lanczos::new(5, n, 1e-10)?.eigenpairs(&op, &mut probe_rng(2))?;
    assert!(res.converged);
    assert!(res.steps < n, "stopped by the criterion, not by running out: {} steps", res.steps);
    assert_eq!(res.hvps, res.steps + 5);
    let expected = [50.0, 30.0, 29.5, 20.0, 10.0];
    for (pair, (&want, k)) in res.pairs.iter().zip(expected.iter().zip(n - 6..)) {
        assert!(((pair.value - want) / want).abs() < 1e-6, "{} vs {want}", pair.value);
        // The residual, recomputed here with the explicit matrix.
        let ay = matvec(&op, &pair.vector);
        let r = ay.iter().zip(&pair.vector).map(|(a, y)| (a - pair.value * y).powi(2)).sum::<f64>().sqrt();
        assert!((r - pair.residual).abs() < 1e-9 * 50.0);
        assert!(r < 1e-6 * 50.0, "residual {r}");
        assert!((dot(&pair.vector, &pair.vector) - 1.0).abs() < 1e-10);
        // The eigenvector itself (up to sign).
        let uk: Vec<f64> = (0..n).map(|i| u[i * n + k]).collect();
        assert!((dot(&uk, &pair.vector).abs() - 1.0).abs() < 1e-6);
    }
    Ok(())
}

/// Run to `m = n` steps, full reorthogonalisation gives every eigenvalue
/// once; the plain recurrence would repeat the outliers ("ghosts") and miss
/// part of the bulk.
#[test]
fn lanczos_run_to_n_steps_gives_the_whole_spectrum_without_ghosts() -> Result<(), Error> {
    let n = 120;
    let mut eigs = hessian_like(n);
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 20);
    let res = Lanczos::new(1, n, 1e-300)?.eigenpairs(&op, &mut probe_rng(21))?;
    eigs.sort_by(f64::total_cmp);
    assert_eq!(res.ritz_values.len(), n);
    for (x, e) in res.ritz_values.iter().zip(&eigs) {
        assert!((x - e).abs() < 1e-8 * 50.0, "{x} vs {e}");
    }
    Ok(())
}

#[test]
fn lanczos_finds_the_other_ends_of_the_spectrum() -> Result<(), Error> {
    let n = 120;
    let eigs = hessian_like(n);
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 3);
    let low = Lanczos::new(1, n, 1e-10)?.which(Which::Smallest).eigenpairs(&op, &mut probe_rng(4))?;
    assert!((low.pairs[0].value + 8.0).abs() < 8e-6);
    let mag = Lanczos::new(2, n, 1e-10)?.which(Which::LargestMagnitude).eigenpairs(&op, &mut probe_rng(5))?;
    assert!((mag.pairs[0].value - 50.0).abs() < 5e-5 && (mag.pairs[1].value - 30.0).abs() < 3e-5);
    Ok(())
}

#[test]
fn lanczos_with_an_f32_basis_is_accurate_to_single_precision() -> Result<(), Error> {
    let n = 150;
    let eigs = hessian_like(n);
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 6);
    let res = Lanczos::new(3, n, 1e-6)?.precision(BasisPrecision::F32).eigenpairs(&op, &mut probe_rng(7))?;
    for (pair, want) in res.pairs.iter().zip([50.0, 30.0, 29.5]) {
        assert!(((pair.value - want) / want).abs() < 1e-5, "{} vs {want}", pair.value);
    }
    assert_eq!(Lanczos::new(3, 40, 1e-6)?.precision(BasisPrecision::F32).basis_bytes(1000), 40 * 1000 * 4);
    Ok(())
}

#[test]
fn lanczos_reports_when_it_has_not_converged() -> Result<(), Error> {
    let n = 100;
    let eigs: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 / n as f64).collect();
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 8);
    let res = Lanczos::new(1, 3, 1e-12)?.eigenpairs(&op, &mut probe_rng(9))?;
    assert!(!res.converged);
    assert_eq!(res.steps, 3);
    // The residual reported is still an honest bound on the error.
    let err = (res.pairs[0].value - 1.99).abs();
    assert!(err <= res.pairs[0].residual + 1e-12, "error {err} above residual {}", res.pairs[0].residual);
    Ok(())
}

#[test]
fn lanczos_rejects_bad_parameters() -> Result<(), Error> {
    assert!(matches!(Lanczos::new(0, 10, 1e-6), Err(Error::ZeroCount { .. })));
    assert!(matches!(Lanczos::new(5, 4, 1e-6), Err(Error::InvalidParameter { name: "max_steps", .. })));
    assert!(matches!(Lanczos::new(1, 4, f64::NAN), Err(Error::InvalidParameter { name: "tolerance", .. })));
    assert!(matches!(Lanczos::new(1, 4, 0.0), Err(Error::InvalidParameter { name: "tolerance", .. })));
    assert!(matches!(Broadening::absolute(-1.0), Err(Error::InvalidParameter { .. })));
    assert!(matches!(Broadening::relative(f64::INFINITY), Err(Error::InvalidParameter { .. })));
    assert!(matches!(Slq::new(0, 10), Err(Error::ZeroCount { .. })));
    Ok(())
}

/// Each probe's rule is the Gauss quadrature of its measure: `Σ τ θᵏ =
/// vᵀAᵏv/‖v‖²` for every `k ≤ 2m − 1`, and the weights sum to one.
#[test]
fn slq_rules_are_exact_gauss_quadratures() -> Result<(), Error> {
    let n = 80;
    let eigs: Vec<f64> = (0..n).map(|i| -1.2 + 2.6 * (i as f64 / (n - 1) as f64).powi(3)).collect();
    let (op, _) = with_spectrum(&eigs, vec![Block::new("a", 30), Block::new("b", 50)], 10);
    let m = 8;
    let rng = probe_rng(11);
    let v = Rademacher.sample(&mut rng.clone(), n);
    let d = Slq::new(1, m)?.density(&op, &mut rng.clone(), |_| {})?;
    assert_eq!(d.hvps, m);
    let rule = &d.rules[0];
    assert_eq!(rule.nodes.len(), m);
    let mut akv = v.clone();
    for k in 0..2 * m as i32 {
        let exact = dot(&v, &akv) / n as f64;
        let quad: f64 = rule.nodes.iter().zip(&rule.weights).map(|(x, w)| w * x.powi(k)).sum();
        assert!((quad - exact).abs() < 1e-10 * 1.4f64.powi(k), "moment {k}: {quad} vs {exact}");
        akv = matvec(&op, &akv);
    }
    assert!(rule.weights.iter().all(|&w| w >= 0.0));
    Ok(())
}

/// With `m = n` and full reorthogonalisation every node is an eigenvalue.
#[test]
fn slq_with_n_steps_finds_every_eigenvalue() -> Result<(), Error> {
    let n = 30;
    let eigs: Vec<f64> = (0..n).map(|i| (i as f64 - 10.0) * 0.37).collect();
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 12);
    let d = Slq::new(1, n)?.density(&op, &mut probe_rng(13), |_| {})?;
    for (x, e) in d.rules[0].nodes.iter().zip(&eigs) {
        assert!((x - e).abs() < 1e-9, "{x} vs {e}");
    }
    Ok(())
}

/// A bulk of 280 eigenvalues in [0, 1] and a cluster of 20 at 10: the
/// density's mass in each part and its moments match, within 5 standard
/// errors; the broadened density integrates to one and keeps the mean.
#[test]
fn slq_density_recovers_a_known_spectrum() -> Result<(), Error> {
    let n = 300;
    let mut eigs: Vec<f64> = (0..280).map(|i| i as f64 / 279.0).collect();
    eigs.extend(std::iter::repeat_n(10.0, 20));
    let (op, _) = with_spectrum(&eigs, vec![Block::new("all", n)], 14);
    for reorth in [Reorthogonalisation::Full(BasisPrecision::F64), Reorthogonalisation::None] {
        let d = Slq::new(40, 30)?.reorthogonalisation(reorth).density(&op, &mut probe_rng(15), |_| {})?;
        assert_eq!(d.hvps, 40 * 30);
        for rule in &d.rules {
            assert!((rule.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let within = |(est, se): (f64, Option<f64>), exact: f64, what: &str| {
            let se = se.expect("several probes");
            assert!((est - exact).abs() < 5.0 * se + 1e-12, "{what} ({reorth:?}): {est} ± {se} vs {exact}");
        };
        within(d.mass_between(9.0, 11.0), 20.0 / n as f64, "outlier mass");
        within(d.mass_between(-0.5, 1.5), 280.0 / n as f64, "bulk mass");
        for k in 1..=3 {
            let exact = eigs.iter().map(|x| x.powi(k)).sum::<f64>() / n as f64;
            within(d.moment(k), exact, &format!("moment {k}"));
        }
        let b = Broadening::absolute(0.05)?;
        let grid = d.grid(4000, b);
        let phi = d.evaluate(&grid, b);
        let h = grid[1] - grid[0];
        let mass: f64 = h * (phi.iter().sum::<f64>() - 0.5 * (phi[0] + phi[phi.len() - 1]));
        let mean: f64 = h * grid.iter().zip(&phi).map(|(t, p)| t * p).sum::<f64>();
        assert!((mass - 1.0).abs() < 1e-6, "mass {mass}");
        assert!((mean - d.moment(1).0).abs() < 1e-6, "mean {mean}");
    }
    Ok(())
}

/// A random symmetric matrix with a non-trivial diagonal.
fn random_symmetric(sizes: &[usize], seed: u64) -> DenseOperator {
    let n: usize = sizes.iter().sum();
    let mut rng = probe_rng(seed);
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let x: f64 = rng.random_range(-1.0..1.0) + if i == j { 0.5 } else { 0.0 };
            a[i * n + j] = x;
            a[j * n + i] = x;
        }
    }
    let blocks = sizes.iter().enumerate().map(|(i, &len)| Block::new(format!("b{i}"), len)).collect();
    DenseOperator::new(n, a, blocks).expect("valid matrix")
}

/// Each block's trace within 5 standard errors of the exact `tr(A_bb)`, the
/// standard error taken from the variance formula of the module
/// documentation, and the sample variance agreeing with that formula.
#[test]
fn block_traces_match_the_exact_diagonal_blocks() -> Result<(), Error> {
    let sizes = [5, 12, 30];
    let op = random_symmetric(&sizes, 16);
    let n = op.dim();
    let k = 2000;
    for probing in [BlockProbing::Joint, BlockProbing::Separate] {
        let est = BlockTraces::rademacher(k, probing)?.estimate(&op, &mut probe_rng(17), || {})?;
        assert_eq!(est.hvps, BlockTraces::rademacher(k, probing)?.budget(sizes.len()));
        for (b, bt) in est.blocks.iter().enumerate() {
            let (o, len) = (op.offset(b), sizes[b]);
            let rows = o..o + len;
            let diag_sq: f64 = rows.clone().map(|i| op.entry(i, i).powi(2)).sum();
            let in_block: f64 =
                rows.clone().flat_map(|i| rows.clone().map(move |j| (i, j))).map(|(i, j)| op.entry(i, j).powi(2)).sum();
            let var = match probing {
                BlockProbing::Joint => {
                    let all_cols: f64 = rows
                        .clone()
                        .flat_map(|i| (0..n).map(move |j| (i, j)))
                        .map(|(i, j)| op.entry(i, j).powi(2))
                        .sum();
                    all_cols + in_block - 2.0 * diag_sq
                }
                BlockProbing::Separate => 2.0 * (in_block - diag_sq),
            };
            let se = (var / k as f64).sqrt();
            let exact = op.block_trace(b);
            assert!((bt.mean - exact).abs() < 5.0 * se, "{probing:?} block {b}: {} vs {exact} (se {se})", bt.mean);
            let sample_se = bt.std_error.expect("several probes");
            assert!((0.8..1.25).contains(&(sample_se / se)), "{probing:?} block {b}: se {sample_se} vs {se}");
            assert_eq!(bt.samples.len(), k);
        }
        let sum: f64 = est.blocks.iter().map(|b| b.mean).sum();
        assert!((sum - est.total.0).abs() < 1e-9);
        assert!((est.total.0 - op.trace()).abs() < 5.0 * est.total.1.expect("several probes"));
    }
    Ok(())
}
