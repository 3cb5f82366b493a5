//! Estimators against dense matrices whose trace is known exactly.
//!
//! Tolerances are derived from each estimator's variance: a mean over `N`
//! independent samples must lie within 5 standard errors of its expectation.

use rand::Rng;
use seht_estimator::{
    Block, DenseOperator, Distribution, Error, Estimator, Gaussian, HutchPlusPlus, Hutchinson, Planned,
    ProbeDistribution, Reading, SehtD, SehtH, Sparse, Target, TraceEstimator, probe_rng,
};

/// A random symmetric matrix with entries of both signs and a non-trivial
/// diagonal, split into blocks of the given sizes.
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

/// `U diag(λ) Uᵀ` with `U` a product of three Householder reflections.
fn with_spectrum(eigs: &[f64], seed: u64) -> DenseOperator {
    let n = eigs.len();
    let mut rng = probe_rng(seed);
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        u[i * n + i] = 1.0;
    }
    for _ in 0..3 {
        let h: Vec<f64> = Gaussian.sample(&mut rng, n);
        let hh: f64 = h.iter().map(|x| x * x).sum();
        // u ← (I − 2hhᵀ/‖h‖²) u
        for col in 0..n {
            let d: f64 = (0..n).map(|r| h[r] * u[r * n + col]).sum();
            for r in 0..n {
                u[r * n + col] -= 2.0 * h[r] * d / hh;
            }
        }
    }
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| u[i * n + k] * eigs[k] * u[j * n + k]).sum();
        }
    }
    // Symmetrise exactly against rounding.
    for i in 0..n {
        for j in 0..i {
            let m = 0.5 * (a[i * n + j] + a[j * n + i]);
            a[i * n + j] = m;
            a[j * n + i] = m;
        }
    }
    DenseOperator::single_block(n, a).expect("valid matrix")
}

/// Draws `n` single-probe samples of `est` with fresh seeds.
fn samples(est: &impl TraceEstimator, op: &DenseOperator, n: u64) -> Vec<f64> {
    (0..n).map(|s| est.estimate(op, &mut probe_rng(1000 + s)).expect("estimate").mean).collect()
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    (m, x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0))
}

fn assert_within_5se(label: &str, mean: f64, expected: f64, var: f64, n: usize) {
    let se = (var / n as f64).sqrt();
    let z = (mean - expected) / se;
    assert!(z.abs() < 5.0, "{label}: mean {mean:.5} vs expected {expected:.5}: {z:.2} standard errors (se {se:.2e})");
}

#[test]
fn seht_h_is_unbiased_with_rademacher_variance() {
    let op = random_symmetric(&[7, 13, 10], 1);
    let xs = samples(&Hutchinson::seht_h(1).expect("config"), &op, 20_000);
    let (m, v) = mean_var(&xs);
    let v_theory = 2.0 * (op.frobenius_sq() - op.diag_sq());
    assert_within_5se("SEHT-H mean", m, op.trace(), v_theory, xs.len());
    // The sample variance's standard error, from the sample fourth moment.
    let m4 = xs.iter().map(|x| (x - m).powi(4)).sum::<f64>() / xs.len() as f64;
    let se_var = ((m4 - v * v) / xs.len() as f64).sqrt();
    let z = (v - v_theory) / se_var;
    assert!(z.abs() < 5.0, "Rademacher variance {v:.3} vs 2(‖A‖²−Σa²)={v_theory:.3}: {z:.2} se");
}

#[test]
fn gaussian_hutchinson_is_unbiased_with_girard_variance() {
    let op = random_symmetric(&[30], 2);
    let est = Hutchinson::new(1, Gaussian).expect("config");
    let xs = samples(&est, &op, 20_000);
    let (m, v) = mean_var(&xs);
    let v_theory = 2.0 * op.frobenius_sq();
    assert_within_5se("Gaussian mean", m, op.trace(), v_theory, xs.len());
    assert!((v / v_theory - 1.0).abs() < 0.1, "Gaussian variance {v:.3} vs 2‖A‖²={v_theory:.3}");
}

#[test]
fn multi_probe_estimate_reports_its_standard_error() {
    let op = random_symmetric(&[20], 3);
    let k = 400;
    let est = Hutchinson::seht_h(k).expect("config").estimate(&op, &mut probe_rng(5)).expect("estimate");
    assert_eq!(est.samples.len(), k);
    assert_eq!(est.hvps, k);
    let (m, v) = mean_var(&est.samples);
    assert!((est.mean - m).abs() < 1e-12 && (est.value - m).abs() < 1e-12);
    let se = est.std_error.expect("K > 1 has a standard error");
    assert!((se - (v / k as f64).sqrt()).abs() < 1e-12);
    assert!(((est.mean - op.trace()) / se).abs() < 5.0, "mean {} trace {} se {se}", est.mean, op.trace());
    let single = Hutchinson::seht_h(1).expect("config").estimate(&op, &mut probe_rng(5)).expect("estimate");
    assert_eq!(single.std_error, None);
}

#[test]
fn sparse_hutchinson_rescaled_by_second_moment_is_unbiased() {
    let op = random_symmetric(&[25], 4);
    let est = Hutchinson::new(1, Distribution::Sparse(Sparse::new(0.1).expect("p"))).expect("config");
    let xs = samples(&est, &op, 20_000);
    let (m, v) = mean_var(&xs);
    assert_within_5se("Q(0.1) Hutchinson", m, op.trace(), v, xs.len());
}

#[test]
fn seht_d_partial_sum_is_the_selected_diagonal_given_the_selection() {
    // On a diagonal matrix σᵀAσ = Σ_{σᵢ≠0} aᵢᵢ for every draw: replaying the
    // estimator's draws, each sample must equal the selected diagonal exactly.
    let sizes = [4usize, 6, 5];
    let n: usize = sizes.iter().sum();
    let diag: Vec<f64> = (0..n).map(|i| 1.0 + i as f64 * 0.37).collect();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        a[i * n + i] = diag[i];
    }
    let blocks: Vec<Block> = sizes.iter().enumerate().map(|(i, &l)| Block::new(format!("b{i}"), l)).collect();
    let op = DenseOperator::new(n, a, blocks).expect("matrix");
    let est = SehtD::new(3, 0.3, Reading::PartialSum).expect("config");
    let mut checked = 0;
    for seed in 0..200 {
        let got = est.estimate(&op, &mut probe_rng(seed)).expect("estimate");
        // Replay: the layer draw, then Q(p2) per selected block, per probe.
        let mut rng = probe_rng(seed);
        let selected = est.draw_blocks(sizes.len(), &mut rng);
        assert_eq!(got.blocks, selected);
        for &sample in &got.samples {
            let mut expected = 0.0;
            for &b in &selected {
                let sigma = Sparse::from_probability(est.p2()).sample(&mut rng, sizes[b]);
                let off = op.offset(b);
                expected +=
                    sigma.iter().enumerate().filter(|(_, s)| **s != 0.0).map(|(i, _)| diag[off + i]).sum::<f64>();
            }
            assert!((sample - expected).abs() < 1e-12, "seed {seed}: sample {sample} vs selected diagonal {expected}");
            checked += 1;
        }
    }
    assert_eq!(checked, 600);
}

#[test]
fn seht_d_partial_sum_expectation_given_blocks_is_2p_times_their_trace() {
    let op = random_symmetric(&[8, 12, 10], 6);
    let p = 0.2;
    let est = SehtD::new(1, p, Reading::PartialSum).expect("config");
    let selected = vec![0, 2];
    let xs: Vec<f64> = (0..20_000)
        .map(|s| est.estimate_on_blocks(&op, selected.clone(), &mut probe_rng(s)).expect("estimate").mean)
        .collect();
    let (m, v) = mean_var(&xs);
    let expected = 2.0 * p * (op.block_trace(0) + op.block_trace(2));
    assert_within_5se("SEHT-D partial sum | blocks {0,2}", m, expected, v, xs.len());
}

#[test]
fn seht_d_unbiased_reading_estimates_the_full_trace() {
    let op = random_symmetric(&[8, 12, 10, 6], 7);
    let est = SehtD::new(1, 0.25, Reading::Unbiased).expect("config");
    assert_eq!(est.target(), Target::FullTrace);
    let xs = samples(&est, &op, 40_000);
    let (m, v) = mean_var(&xs);
    assert_within_5se("SEHT-D unbiased", m, op.trace(), v, xs.len());
    // And the partial-sum reading of the same draws is p1·2p2 times smaller.
    let partial = SehtD::new(1, 0.25, Reading::PartialSum).expect("config");
    let ys = samples(&partial, &op, 40_000);
    for (x, y) in xs.iter().zip(&ys) {
        assert!((x * 0.25 * 0.5 - y).abs() < 1e-9 * (1.0 + y.abs()));
    }
}

#[test]
fn seht_d_with_no_block_selected_costs_nothing_and_returns_zero() {
    let op = random_symmetric(&[5, 5], 8);
    let est = SehtD::new(4, 0.01, Reading::Unbiased).expect("config");
    let mut saw_empty = false;
    for s in 0..50 {
        let e = est.estimate(&op, &mut probe_rng(s)).expect("estimate");
        if e.blocks.is_empty() {
            saw_empty = true;
            assert_eq!(e.hvps, 0);
            assert_eq!(e.value, 0.0);
            assert!(e.samples.iter().all(|&x| x == 0.0));
        }
    }
    assert!(saw_empty, "with p1 = 0.01 most draws select no block");
}

#[test]
fn hutch_plus_plus_is_unbiased_and_beats_hutchinson_on_a_decaying_spectrum() {
    let n = 60;
    let eigs: Vec<f64> = (1..=n).map(|i| 1.0 / (i as f64).powi(2)).collect();
    let op = with_spectrum(&eigs, 9);
    let tr: f64 = eigs.iter().sum();
    assert!((op.trace() - tr).abs() < 1e-10);
    let budget = 24;
    let hpp = HutchPlusPlus::with_budget(budget).expect("config");
    assert_eq!(hpp.budget(), budget);
    let hutch = Hutchinson::seht_h(budget).expect("config");
    let trials = 300;
    let (mut err_hpp, mut err_h, mut sum_hpp) = (0.0, 0.0, 0.0);
    let mut hpp_vals = Vec::new();
    for s in 0..trials {
        let a = hpp.estimate(&op, &mut probe_rng(s)).expect("estimate");
        let b = hutch.estimate(&op, &mut probe_rng(10_000 + s)).expect("estimate");
        assert_eq!(a.hvps, budget);
        assert_eq!(b.hvps, budget);
        err_hpp += (a.mean - tr).powi(2);
        err_h += (b.mean - tr).powi(2);
        sum_hpp += a.mean;
        hpp_vals.push(a.mean);
    }
    let (rmse_hpp, rmse_h) = ((err_hpp / trials as f64).sqrt(), (err_h / trials as f64).sqrt());
    assert!(
        rmse_hpp < 0.5 * rmse_h,
        "Hutch++ RMSE {rmse_hpp:.2e} should beat Hutchinson's {rmse_h:.2e} at {budget} products"
    );
    let (_, v) = mean_var(&hpp_vals);
    assert_within_5se("Hutch++ mean", sum_hpp / trials as f64, tr, v, trials as usize);
}

#[test]
fn same_seed_same_estimate() {
    let op = random_symmetric(&[10, 10], 10);
    let est = SehtD::new(3, 0.3, Reading::Unbiased).expect("config");
    let a = est.estimate(&op, &mut probe_rng(42)).expect("estimate");
    let b = est.estimate(&op, &mut probe_rng(42)).expect("estimate");
    assert_eq!(a.samples, b.samples);
    let c = est.estimate(&op, &mut probe_rng(43)).expect("estimate");
    assert_ne!(a.samples, c.samples);
}

#[test]
fn invalid_configurations_are_typed_errors() {
    for p in [0.0, -0.1, 0.51, 1.0, f64::NAN] {
        match SehtD::new(1, p, Reading::PartialSum) {
            Err(Error::InvalidProbability { name: "p", range: "(0, 1/2]", .. }) => {}
            other => panic!("p = {p}: expected InvalidProbability for p, got {other:?}"),
        }
        assert!(matches!(Sparse::new(p), Err(Error::InvalidProbability { .. })));
    }
    assert!(matches!(
        SehtD::with_layer_probability(1, 1.5, 0.1, Reading::Unbiased),
        Err(Error::InvalidProbability { name: "p1", .. })
    ));
    assert!(SehtD::with_layer_probability(1, 1.0, 0.5, Reading::Unbiased).is_ok());
    assert!(matches!(Hutchinson::seht_h(0), Err(Error::ZeroCount { name: "probes" })));
    assert!(matches!(SehtD::new(0, 0.1, Reading::Unbiased), Err(Error::ZeroCount { name: "probes" })));
    assert!(matches!(HutchPlusPlus::with_budget(2), Err(Error::HutchPlusPlusBudget(2))));
    assert!(matches!(HutchPlusPlus::new(0, 3), Err(Error::ZeroCount { name: "sketch" })));

    let empty = DenseOperator::new(0, vec![], vec![]).expect("empty matrix is a valid matrix");
    let mut rng = probe_rng(0);
    assert!(matches!(Hutchinson::seht_h(1).expect("config").estimate(&empty, &mut rng), Err(Error::EmptyBlockSet)));
    assert!(matches!(
        SehtD::new(1, 0.1, Reading::Unbiased).expect("config").estimate(&empty, &mut rng),
        Err(Error::EmptyBlockSet)
    ));
    assert!(matches!(
        HutchPlusPlus::with_budget(3).expect("config").estimate(&empty, &mut rng),
        Err(Error::EmptyBlockSet)
    ));

    let err = SehtD::new(1, 0.7, Reading::PartialSum).expect_err("invalid");
    assert_eq!(err.to_string(), "p = 0.7 is outside (0, 1/2]");
}

#[test]
fn dense_operator_rejects_bad_shapes_and_asymmetry() {
    assert!(matches!(DenseOperator::single_block(2, vec![1.0; 3]), Err(Error::DimensionMismatch { .. })));
    assert!(matches!(
        DenseOperator::single_block(2, vec![1.0, 2.0, 3.0, 1.0]),
        Err(Error::NotSymmetric { row: 1, col: 0 })
    ));
    assert!(matches!(
        DenseOperator::new(2, vec![1.0, 0.0, 0.0, 1.0], vec![Block::new("a", 3)]),
        Err(Error::DimensionMismatch { .. })
    ));
}

#[test]
fn a_plan_is_what_the_estimate_draws() {
    // The same generator state gives the plan's layer draw and the estimate's.
    let a: Vec<f64> = (0..36).map(|i| if i % 7 == 0 { 1.0 + (i / 7) as f64 } else { 0.0 }).collect();
    let blocks = (0..6).map(|i| Block::new(format!("b{i}"), 1)).collect();
    let op = DenseOperator::new(6, a, blocks).expect("op");
    let est = SehtD::new(3, 0.3, Reading::Unbiased).expect("cfg");
    let plan = est.plan(6, &mut probe_rng(4)).expect("plan");
    let e = est.estimate(&op, &mut probe_rng(4)).expect("estimate");
    assert_eq!(plan.blocks, e.blocks);
    assert_eq!(plan.scale, 1.0 / (0.3 * 0.6));
    assert_eq!(plan.probes, 3);
    let dynamic = Estimator::from(est).plan(6, &mut probe_rng(4)).expect("plan");
    assert_eq!(dynamic.blocks, plan.blocks);
    assert_eq!(dynamic.distribution, Distribution::Sparse(Sparse::new(0.3).expect("p")));
    let h = Estimator::from(SehtH::seht_h(2).expect("cfg")).plan(6, &mut probe_rng(0)).expect("plan");
    assert_eq!((h.blocks.len(), h.scale, h.distribution), (6, 1.0, Distribution::Rademacher));
    assert!(matches!(
        Estimator::from(HutchPlusPlus::with_budget(3).expect("cfg")).plan(6, &mut probe_rng(0)),
        Err(seht_estimator::Error::NoProbePlan { .. })
    ));
}

#[cfg(feature = "serde")]
#[test]
fn estimators_read_from_toml_are_validated() {
    #[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
    struct Cfg {
        estimator: Estimator,
    }
    let read = |s: &str| toml::from_str::<Cfg>(s).map(|c| c.estimator);
    let d = read(r#"estimator = { kind = "seht-d", probes = 2, p1 = 0.1, p2 = 0.05, reading = "partial-sum" }"#)
        .expect("seht-d");
    assert_eq!(d, Estimator::SehtD(SehtD::with_layer_probability(2, 0.1, 0.05, Reading::PartialSum).expect("cfg")));
    let h = read(r#"estimator = { kind = "hutchinson", probes = 1, distribution = "rademacher" }"#).expect("h");
    assert_eq!(h, Estimator::from(SehtH::seht_h(1).expect("cfg")));
    let s = read(r#"estimator = { kind = "hutchinson", probes = 1, distribution = { sparse = { p = 0.25 } } }"#)
        .expect("sparse");
    assert_eq!(
        s,
        Estimator::Hutchinson(Hutchinson::new(1, Distribution::Sparse(Sparse::new(0.25).expect("p"))).expect("c"))
    );
    // Round trip.
    let text = toml::to_string(&Cfg { estimator: d.clone() }).expect("write");
    assert_eq!(read(&text).expect("reread"), d);
    // Out-of-range values and unknown fields are refused, naming what is wrong.
    let bad = read(r#"estimator = { kind = "seht-d", probes = 2, p1 = 0.1, p2 = 0.7, reading = "unbiased" }"#);
    assert!(bad.as_ref().is_err_and(|e| e.to_string().contains("p2 = 0.7")), "{bad:?}");
    let zero = read(r#"estimator = { kind = "hutchinson", probes = 0, distribution = "gaussian" }"#);
    assert!(zero.is_err(), "{zero:?}");
    let unknown =
        read(r#"estimator = { kind = "seht-d", probes = 2, p = 0.1, p1 = 0.1, p2 = 0.1, reading = "unbiased" }"#);
    assert!(unknown.is_err(), "{unknown:?}");
}
