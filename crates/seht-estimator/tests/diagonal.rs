//! Hutchinson's diagonal estimator (Bekas, Kokiopoulou & Saad 2007) and XDiag
//! (Epperly, Tropp & Webber 2024) against dense matrices whose diagonal is
//! known: exact where the theory says so, unbiased entry by entry (5 standard
//! errors over seeds, the variance from theory where it is known), and their
//! per-entry standard errors against the spread of their errors over seeds.

mod common;

use common::{assert_error_estimate_calibrated, assert_within_5se, diagonal, random_symmetric, with_spectrum};
use seht_estimator::{
    Block, DenseOperator, DiagonalEstimate, Error, Gaussian, HutchinsonDiagonal, Rademacher, XDiag, probe_rng,
};

/// Per-entry means over `seeds` estimates, and the pooled squared errors and
/// squared reported standard errors (all entries, all seeds).
fn run(
    op: &DenseOperator,
    seeds: u64,
    est: impl Fn(&DenseOperator, u64) -> DiagonalEstimate,
) -> (Vec<Vec<f64>>, Vec<f64>, Vec<f64>) {
    let d = diagonal(op);
    let mut per_entry = vec![Vec::new(); d.len()];
    let (mut actual_sq, mut reported_sq) = (Vec::new(), Vec::new());
    for s in 0..seeds {
        let e = est(op, s);
        let se = e.std_error.as_ref().expect("several samples give standard errors");
        for j in 0..d.len() {
            per_entry[j].push(e.diagonal[j]);
            actual_sq.push((e.diagonal[j] - d[j]).powi(2));
            reported_sq.push(se[j].powi(2));
        }
    }
    (per_entry, actual_sq, reported_sq)
}

#[test]
fn hutchinson_diagonal_is_exact_on_a_diagonal_matrix() {
    let n = 12;
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        a[i * n + i] = 1.0 + i as f64 * 0.3 - if i % 3 == 0 { 4.0 } else { 0.0 };
    }
    let op = DenseOperator::new(n, a, vec![Block::new("w", 5), Block::new("b", 7)]).expect("matrix");
    let e = HutchinsonDiagonal::rademacher(3).expect("config").estimate(&op, &mut probe_rng(1)).expect("estimate");
    assert_eq!(e.hvps, 3);
    for (x, d) in e.diagonal.iter().zip(diagonal(&op)) {
        assert!((x - d).abs() < 1e-14, "{x} vs {d}");
    }
    assert!(e.std_error.as_ref().expect("3 probes").iter().all(|&s| s < 1e-14));
    assert_eq!(e.block(1).expect("block 1"), &e.diagonal[5..]);
    assert!((e.trace() - op.trace()).abs() < 1e-12);
    let single = HutchinsonDiagonal::rademacher(1).expect("config").estimate(&op, &mut probe_rng(1)).expect("estimate");
    assert_eq!(single.std_error, None);
}

#[test]
fn hutchinson_diagonal_is_unbiased_with_the_rademacher_variance() {
    // One sample of entry j is h_jj + Σ_{l≠j} h_jl σ_j σ_l: variance Σ_{l≠j} h_jl².
    let op = random_symmetric(15, 2);
    let n = op.dim();
    let est = HutchinsonDiagonal::rademacher(1).expect("config");
    let seeds = 4000;
    let mut sums = vec![0.0; n];
    for s in 0..seeds {
        let e = est.estimate(&op, &mut probe_rng(s)).expect("estimate");
        sums.iter_mut().zip(&e.diagonal).for_each(|(a, x)| *a += x);
    }
    for (j, sum) in sums.iter().enumerate() {
        let var: f64 = (0..n).filter(|&l| l != j).map(|l| op.entry(j, l).powi(2)).sum();
        assert_within_5se(&format!("entry {j}"), sum / seeds as f64, op.entry(j, j), var, seeds as usize);
    }
}

#[test]
fn hutchinson_diagonal_standard_errors_match_the_spread() {
    let op = random_symmetric(20, 3);
    let est = HutchinsonDiagonal::rademacher(16).expect("config");
    let (_, actual, reported) = run(&op, 300, |op, s| est.estimate(op, &mut probe_rng(s)).expect("estimate"));
    assert_error_estimate_calibrated("Hutchinson diagonal", &actual, &reported);
    // Gaussian probes are unbiased too (E[σσᵀ] = I), with more variance.
    let g =
        HutchinsonDiagonal::new(2000, Gaussian).expect("config").estimate(&op, &mut probe_rng(4)).expect("estimate");
    let se = g.std_error.expect("standard errors");
    for (j, d) in diagonal(&op).iter().enumerate() {
        assert!(((g.diagonal[j] - d) / se[j]).abs() < 5.0, "entry {j}: {} vs {d} (se {})", g.diagonal[j], se[j]);
    }
}

#[test]
fn xdiag_is_exact_when_the_rank_is_below_the_test_vectors() {
    let (n, rank) = (40, 5);
    let eigs: Vec<f64> = (0..n).map(|i| if i < rank { [3.0, -2.0, 1.5, -1.0, 0.5][i] } else { 0.0 }).collect();
    let op = with_spectrum(&eigs, &[16, 24], 5);
    let xd = XDiag::new(rank + 1, Rademacher).expect("config");
    for seed in 0..5 {
        let e = xd.estimate(&op, &mut probe_rng(seed)).expect("estimate");
        assert_eq!(e.hvps, rank + 1 + rank);
        for (j, (x, d)) in e.diagonal.iter().zip(diagonal(&op)).enumerate() {
            assert!((x - d).abs() < 1e-10, "entry {j}: {x} vs {d}");
        }
        assert!(e.std_error.as_ref().expect("standard errors").iter().all(|&s| s < 1e-10));
        assert_eq!(e.block(0).map(<[f64]>::len), Some(16));
    }
}

#[test]
fn xdiag_is_unbiased_entry_by_entry() {
    let op = random_symmetric(16, 6);
    let xd = XDiag::with_budget(8).expect("config");
    assert_eq!(xd.test_vectors(), 4);
    let (per_entry, _, _) = run(&op, 4000, |op, s| xd.estimate(op, &mut probe_rng(s)).expect("estimate"));
    for (j, xs) in per_entry.iter().enumerate() {
        let (m, v) = common::mean_var(xs);
        assert_within_5se(&format!("XDiag entry {j}"), m, op.entry(j, j), v, xs.len());
    }
}

#[test]
fn xdiag_standard_errors_match_the_spread() {
    for (label, eigs) in [
        ("flat spectrum", (0..50).map(|i| 1.0 + (i % 5) as f64 / 5.0).collect::<Vec<_>>()),
        ("λ = i⁻²", (1..=50).map(|i| 1.0 / (i as f64).powi(2)).collect::<Vec<_>>()),
    ] {
        let op = with_spectrum(&eigs, &[], 7);
        let xd = XDiag::with_budget(20).expect("config");
        let (_, actual, reported) = run(&op, 300, |op, s| xd.estimate(op, &mut probe_rng(s)).expect("estimate"));
        assert_error_estimate_calibrated(&format!("XDiag, {label}"), &actual, &reported);
    }
}

#[test]
fn xdiag_beats_hutchinson_diagonal_at_the_same_budget_on_a_decaying_spectrum() {
    let op = with_spectrum(&(1..=60).map(|i| 1.0 / (i as f64).powi(2)).collect::<Vec<_>>(), &[], 8);
    let budget = 20;
    let xd = XDiag::with_budget(budget).expect("config");
    let hd = HutchinsonDiagonal::rademacher(budget).expect("config");
    let (_, ex, _) = run(&op, 200, |op, s| xd.estimate(op, &mut probe_rng(s)).expect("estimate"));
    let (_, eh, _) = run(&op, 200, |op, s| hd.estimate(op, &mut probe_rng(1000 + s)).expect("estimate"));
    let rms = |e: &[f64]| (e.iter().sum::<f64>() / e.len() as f64).sqrt();
    assert!(rms(&ex) < rms(&eh), "XDiag RMS error {:.3e} vs Hutchinson's {:.3e}", rms(&ex), rms(&eh));
}

#[test]
fn invalid_configurations_are_typed_errors() {
    assert!(matches!(HutchinsonDiagonal::rademacher(0), Err(Error::ZeroCount { name: "probes" })));
    assert!(matches!(XDiag::with_budget(2), Err(Error::TooSmall { name: "budget", min: 4, got: 2 })));
    assert!(matches!(XDiag::new(1, Rademacher), Err(Error::TooSmall { name: "test_vectors", min: 2, got: 1 })));
    let empty = DenseOperator::new(0, vec![], vec![]).expect("empty matrix is a valid matrix");
    let mut rng = probe_rng(0);
    assert!(matches!(
        HutchinsonDiagonal::rademacher(1).expect("config").estimate(&empty, &mut rng),
        Err(Error::EmptyBlockSet)
    ));
    assert!(matches!(XDiag::with_budget(4).expect("config").estimate(&empty, &mut rng), Err(Error::EmptyBlockSet)));
}

#[test]
fn xdiag_equals_its_definition() {
    let op = random_symmetric(20, 9);
    let m = 5;
    for seed in 0..3 {
        let fast = XDiag::new(m, Rademacher).expect("config").estimate(&op, &mut probe_rng(seed)).expect("estimate");
        let naive = common::naive_xdiag(&op, m, seed);
        for j in 0..op.dim() {
            let samples: Vec<f64> = naive.iter().map(|d| d[j]).collect();
            let (mean, var) = common::mean_var(&samples);
            assert!((fast.diagonal[j] - mean).abs() < 1e-10, "entry {j}: {} vs definition {mean}", fast.diagonal[j]);
            let se = fast.std_error.as_ref().expect("standard errors")[j];
            assert!((se - (var / m as f64).sqrt()).abs() < 1e-10, "entry {j}: se {se} vs {}", (var / m as f64).sqrt());
        }
    }
}
