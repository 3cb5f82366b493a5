//! XTrace and XNysTrace (Epperly, Tropp & Webber 2024) against dense matrices
//! whose trace is known: exact where the theory says so (rank below the number
//! of test vectors), unbiased by a 5-standard-error test over seeds, and their
//! own error estimate against the spread of their errors over seeds.

mod common;

use common::{assert_error_estimate_calibrated, assert_within_5se, mean_var, random_symmetric, with_spectrum};
use seht_estimator::{
    DenseOperator, Error, Gaussian, HutchPlusPlus, Rademacher, TraceEstimate, TraceEstimator, XNysTrace, XTrace,
    probe_rng,
};

/// Eigenvalues `λ₁ … λ_r` in `[1, 3]` of both signs (if `signed`), then zeros.
fn low_rank_spectrum(n: usize, rank: usize, signed: bool) -> Vec<f64> {
    (0..n)
        .map(|i| match i < rank {
            true if signed && i % 2 == 1 => -(1.0 + 2.0 * i as f64 / rank as f64),
            true => 1.0 + 2.0 * i as f64 / rank as f64,
            false => 0.0,
        })
        .collect()
}

fn polynomial_spectrum(n: usize) -> Vec<f64> {
    (1..=n).map(|i| 1.0 / (i as f64).powi(2)).collect()
}

fn run(
    op: &DenseOperator,
    seeds: u64,
    est: impl Fn(&DenseOperator, u64) -> TraceEstimate<f64>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let tr = op.trace();
    let mut means = Vec::new();
    let (mut actual_sq, mut reported_sq) = (Vec::new(), Vec::new());
    for s in 0..seeds {
        let e = est(op, s);
        means.push(e.mean);
        actual_sq.push((e.mean - tr).powi(2));
        reported_sq.push(e.std_error.expect("m ≥ 2 test vectors give an error estimate").powi(2));
    }
    (means, actual_sq, reported_sq)
}

#[test]
fn xtrace_is_exact_when_the_rank_is_below_the_test_vectors() {
    // rank(H) = m − 1: every leave-one-out basis spans range(H).
    for (n, rank, sizes) in [(40, 5, vec![15, 25]), (30, 3, vec![])] {
        let op = with_spectrum(&low_rank_spectrum(n, rank, true), &sizes, 3);
        let xt = XTrace::new(rank + 1, Rademacher).expect("config");
        for seed in 0..5 {
            let e = xt.estimate(&op, &mut probe_rng(seed)).expect("estimate");
            assert!((e.mean - op.trace()).abs() < 1e-10, "XTrace {} vs exact {}", e.mean, op.trace());
            assert!(e.std_error.expect("error estimate") < 1e-10, "exact, so no spread: {:?}", e.std_error);
            // m products for Y, rank(Y) = rank(H) for Z.
            assert_eq!(e.hvps, rank + 1 + rank);
            assert_eq!(e.samples.len(), rank + 1);
        }
    }
}

#[test]
fn xtrace_is_unbiased_on_an_indefinite_matrix() {
    let op = random_symmetric(30, 1);
    let xt = XTrace::with_budget(8).expect("config");
    assert_eq!(xt.test_vectors(), 4);
    let (means, _, _) = run(&op, 4000, |op, s| xt.estimate(op, &mut probe_rng(s)).expect("estimate"));
    let (m, v) = mean_var(&means);
    assert_within_5se("XTrace mean", m, op.trace(), v, means.len());
}

#[test]
fn xtrace_error_estimate_matches_its_spread() {
    for (label, eigs) in [
        ("flat spectrum", (0..60).map(|i| 1.0 + (i % 7) as f64 / 7.0).collect::<Vec<_>>()),
        ("λ = i⁻²", polynomial_spectrum(60)),
    ] {
        let op = with_spectrum(&eigs, &[], 5);
        let xt = XTrace::with_budget(20).expect("config");
        let (_, actual, reported) = run(&op, 400, |op, s| xt.estimate(op, &mut probe_rng(s)).expect("estimate"));
        assert_error_estimate_calibrated(&format!("XTrace, {label}"), &actual, &reported);
    }
}

#[test]
fn xtrace_beats_hutch_plus_plus_at_the_same_budget_on_a_decaying_spectrum() {
    let op = with_spectrum(&polynomial_spectrum(80), &[], 6);
    let budget = 24;
    let xt = XTrace::with_budget(budget).expect("config");
    let hpp = HutchPlusPlus::with_budget(budget).expect("config");
    let (_, err_x, _) = run(&op, 300, |op, s| {
        let e = xt.estimate(op, &mut probe_rng(s)).expect("estimate");
        assert!(e.hvps <= budget);
        e
    });
    let (_, err_h, _) = run(&op, 300, |op, s| hpp.estimate(op, &mut probe_rng(10_000 + s)).expect("estimate"));
    let rmse = |e: &[f64]| (e.iter().sum::<f64>() / e.len() as f64).sqrt();
    let (x, h) = (rmse(&err_x), rmse(&err_h));
    assert!(x < h, "XTrace RMSE {x:.3e} should beat Hutch++'s {h:.3e} at {budget} products");
}

#[test]
fn xnystrace_is_exact_when_the_rank_is_below_the_test_vectors() {
    for (n, rank) in [(40, 5), (30, 2)] {
        let op = with_spectrum(&low_rank_spectrum(n, rank, false), &[10, n - 10], 4);
        let xn = XNysTrace::new(rank + 1, Rademacher).expect("config");
        for seed in 0..5 {
            let e = xn.estimate(&op, &mut probe_rng(seed)).expect("estimate");
            assert!((e.mean - op.trace()).abs() < 1e-10 * op.trace(), "XNysTrace {} vs exact {}", e.mean, op.trace());
            assert!(e.std_error.expect("error estimate") < 1e-10 * op.trace());
            assert_eq!(e.hvps, rank + 1);
        }
    }
}

#[test]
fn xnystrace_is_unbiased_on_a_positive_semidefinite_matrix() {
    let eigs: Vec<f64> = (0..30).map(|i| 0.2 + 0.9f64.powi(i)).collect();
    let op = with_spectrum(&eigs, &[], 7);
    let xn = XNysTrace::with_budget(4).expect("config");
    let (means, _, _) = run(&op, 4000, |op, s| xn.estimate(op, &mut probe_rng(s)).expect("estimate"));
    let (m, v) = mean_var(&means);
    assert_within_5se("XNysTrace mean", m, op.trace(), v, means.len());
}

#[test]
fn xnystrace_error_estimate_matches_its_spread() {
    for (label, eigs) in [
        ("flat spectrum", (0..60).map(|i| 1.0 + (i % 7) as f64 / 7.0).collect::<Vec<_>>()),
        ("λ = i⁻²", polynomial_spectrum(60)),
    ] {
        let op = with_spectrum(&eigs, &[], 8);
        let xn = XNysTrace::with_budget(12).expect("config");
        let (_, actual, reported) = run(&op, 400, |op, s| xn.estimate(op, &mut probe_rng(s)).expect("estimate"));
        assert_error_estimate_calibrated(&format!("XNysTrace, {label}"), &actual, &reported);
    }
}

#[test]
fn xnystrace_refuses_an_indefinite_operator_and_dependent_test_vectors() {
    let neg = with_spectrum(&(0..20).map(|i| -1.0 - i as f64).collect::<Vec<_>>(), &[], 9);
    match XNysTrace::with_budget(4).expect("config").estimate(&neg, &mut probe_rng(0)) {
        Err(Error::NotPositiveSemidefinite { estimator: "XNysTrace" }) => {}
        other => panic!("expected NotPositiveSemidefinite, got {other:?}"),
    }
    // In two dimensions two Rademacher vectors are dependent half the time.
    let id = DenseOperator::single_block(2, vec![1.0, 0.0, 0.0, 1.0]).expect("matrix");
    let xn = XNysTrace::with_budget(2).expect("config");
    let mut dependent = 0;
    for seed in 0..20 {
        match xn.estimate(&id, &mut probe_rng(seed)) {
            Ok(e) => assert!(e.mean.is_finite() && e.hvps == 2),
            Err(Error::DependentTestVectors { estimator: "XNysTrace", count: 2 }) => dependent += 1,
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    assert!(dependent > 0, "some of 20 draws of two ±1 vectors in ℝ² are dependent");
    // Gaussian test vectors are never dependent.
    for seed in 0..20 {
        XNysTrace::new(2, Gaussian).expect("config").estimate(&id, &mut probe_rng(seed)).expect("estimate");
    }
    assert!(matches!(
        XNysTrace::new(3, Rademacher).expect("config").estimate(&id, &mut probe_rng(0)),
        Err(Error::InvalidParameter { name: "test_vectors", .. })
    ));
}

#[test]
fn invalid_configurations_are_typed_errors() {
    assert!(matches!(XTrace::with_budget(3), Err(Error::TooSmall { name: "budget", min: 4, got: 3 })));
    assert!(matches!(XTrace::new(1, Rademacher), Err(Error::TooSmall { name: "test_vectors", min: 2, got: 1 })));
    assert!(matches!(XNysTrace::with_budget(1), Err(Error::TooSmall { name: "budget", min: 2, got: 1 })));
    assert!(matches!(XNysTrace::new(0, Rademacher), Err(Error::TooSmall { name: "test_vectors", .. })));
    assert_eq!(XTrace::with_budget(3).expect_err("too small").to_string(), "budget must be at least 4, got 3");
    let empty = DenseOperator::new(0, vec![], vec![]).expect("empty matrix is a valid matrix");
    let mut rng = probe_rng(0);
    assert!(matches!(XTrace::with_budget(4).expect("config").estimate(&empty, &mut rng), Err(Error::EmptyBlockSet)));
    assert!(matches!(XNysTrace::with_budget(4).expect("config").estimate(&empty, &mut rng), Err(Error::EmptyBlockSet)));
}

#[test]
fn same_seed_same_estimate() {
    let op = random_symmetric(20, 10);
    let xt = XTrace::with_budget(10).expect("config");
    let a = xt.estimate(&op, &mut probe_rng(42)).expect("estimate");
    let b = xt.estimate(&op, &mut probe_rng(42)).expect("estimate");
    assert_eq!(a.samples, b.samples);
    let c = xt.estimate(&op, &mut probe_rng(43)).expect("estimate");
    assert_ne!(a.samples, c.samples);
}

#[test]
fn xtrace_and_xnystrace_equal_their_definitions() {
    // The efficient formulas (one QR, one Cholesky) against the definitions
    // (a basis or a Nyström approximation per left-out test vector).
    let op = random_symmetric(25, 11);
    for seed in 0..3 {
        let fast = XTrace::new(6, Rademacher).expect("config").estimate(&op, &mut probe_rng(seed)).expect("estimate");
        for (a, b) in fast.samples.iter().zip(common::naive_xtrace(&op, 6, seed)) {
            assert!((a - b).abs() < 1e-10, "XTrace sample {a} vs definition {b}");
        }
    }
    let psd = with_spectrum(&(0..25).map(|i| 0.5 + 0.06 * i as f64).collect::<Vec<_>>(), &[], 12);
    for seed in 0..3 {
        let fast =
            XNysTrace::new(6, Rademacher).expect("config").estimate(&psd, &mut probe_rng(seed)).expect("estimate");
        for (a, b) in fast.samples.iter().zip(common::naive_xnystrace(&psd, 6, seed)) {
            assert!((a - b).abs() < 1e-10 * psd.trace(), "XNysTrace sample {a} vs definition {b}");
        }
    }
}
