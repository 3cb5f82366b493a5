//! Blockwise spectral densities and JS₀ against explicit matrices whose
//! diagonal blocks have known spectra (Zhang et al. 2024's block
//! heterogeneity).

mod common;

use common::orthonormal;
use seht_estimator::{
    Block, Broadening, DenseOperator, DiagonalBlock, Error, HvpOperator, Slq, SpectrumScale, block_densities,
    heterogeneity, jensen_shannon, probe_rng,
};

/// A symmetric matrix whose diagonal blocks are `U_b diag(eigs_b) U_bᵀ` and
/// whose off-diagonal blocks are dense couplings of size `coupling`; the
/// spectrum of the whole matrix is none of the blocks'.
fn coupled(blocks: &[&[f64]], coupling: f64, seed: u64) -> DenseOperator {
    let n: usize = blocks.iter().map(|b| b.len()).sum();
    let mut a = vec![0.0; n * n];
    let mut off = 0;
    for (k, eigs) in blocks.iter().enumerate() {
        let m = eigs.len();
        let u = orthonormal(m, seed + k as u64);
        for i in 0..m {
            for j in 0..m {
                a[(off + i) * n + off + j] = (0..m).map(|l| u[i * m + l] * eigs[l] * u[j * m + l]).sum();
            }
        }
        off += m;
    }
    // Couplings between different blocks (symmetric), deterministic.
    let mut starts = vec![0];
    for b in blocks {
        starts.push(starts.last().copied().unwrap_or(0) + b.len());
    }
    let block_of = |i: usize| starts.iter().rposition(|&s| s <= i).unwrap_or(0);
    for i in 0..n {
        for j in 0..i {
            if block_of(i) != block_of(j) {
                let c = coupling * (((i * 7 + j * 3) % 5) as f64 - 2.0);
                a[i * n + j] = c;
                a[j * n + i] = c;
            }
        }
    }
    let names: Vec<Block> = blocks.iter().enumerate().map(|(k, b)| Block::new(format!("b{k}"), b.len())).collect();
    DenseOperator::new(n, a, names).expect("symmetric")
}

/// SLQ with as many steps as the block's dimension and full
/// reorthogonalisation finds the block's eigenvalues exactly: the diagonal
/// block's spectrum, not the coupled matrix's (which a product not read on
/// the block alone would give).
#[test]
fn a_diagonal_block_has_the_spectrum_of_that_block_alone() {
    let op = coupled(&[&[1.0, 2.0, 3.0], &[10.0, 20.0]], 0.7, 1);
    let slq = Slq::new(2, 3).expect("slq");
    let d = block_densities(&op, &[0, 1], &slq, &mut probe_rng(4), |_| {}).expect("densities");
    assert_eq!(d[0].name, "b0");
    for (bd, want) in d.iter().zip([&[1.0, 2.0, 3.0][..], &[10.0, 20.0][..]]) {
        for rule in &bd.density.rules {
            let mut nodes = rule.nodes.clone();
            nodes.sort_by(f64::total_cmp);
            assert_eq!(nodes.len(), want.len(), "{}: {nodes:?}", bd.name);
            for (x, w) in nodes.iter().zip(want) {
                assert!((x - w).abs() < 1e-9, "{}: nodes {nodes:?}, want {want:?}", bd.name);
            }
        }
        assert_eq!(bd.density.dim, want.len());
    }
    // One product of the whole operator per Lanczos step.
    assert!(d[0].density.hvps <= 2 * 3 && d[0].density.hvps >= 2 * 2);
    assert!(matches!(DiagonalBlock::new(&op, 2), Err(Error::DimensionMismatch { .. })));
    let block = DiagonalBlock::new(&op, 1).expect("block");
    assert_eq!(block.blocks().len(), 1);
    assert_eq!(block.blocks()[0].len, 2);
}

/// JS is 0 for equal distributions, `ln 2` for disjoint ones, symmetric and in
/// between otherwise.
#[test]
fn jensen_shannon_is_zero_for_equal_and_ln2_for_disjoint_distributions() {
    let p = [0.5, 0.5, 0.0, 0.0];
    let q = [0.0, 0.0, 0.25, 0.75];
    let r = [0.25, 0.25, 0.25, 0.25];
    assert_eq!(jensen_shannon(&p, &p), 0.0);
    assert!((jensen_shannon(&p, &q) - std::f64::consts::LN_2).abs() < 1e-12);
    let (pr, rp) = (jensen_shannon(&p, &r), jensen_shannon(&r, &p));
    assert!((pr - rp).abs() < 1e-15 && pr > 0.0 && pr < std::f64::consts::LN_2);
    // By hand: m = (3/8, 3/8, 1/8, 1/8); KL(p‖m) = ln(4/3), KL(r‖m) = ½ln(2/3) + ½ln 2.
    let by_hand = 0.5 * (4.0f64 / 3.0).ln() + 0.5 * (0.5 * (2.0f64 / 3.0).ln() + 0.5 * 2f64.ln());
    assert!((pr - by_hand).abs() < 1e-12, "{pr} vs {by_hand}");
}

/// Blocks with the same spectrum (in different bases, coupled to each other)
/// have JS₀ at the noise floor of SLQ (the divergence between halves of one
/// block's probes), which shrinks with more probes; blocks whose spectra
/// differ in scale by 100× have JS₀ near ln 2; one block with a different
/// spectrum among three lies at two thirds of it.
#[test]
fn js0_separates_homogeneous_from_heterogeneous_blocks() {
    let eigs: Vec<f64> = (0..60).map(|i| 1.0 + (i as f64 / 59.0).powi(2) * 3.0).collect();
    let scaled: Vec<f64> = eigs.iter().map(|x| 100.0 * x).collect();
    let js0 = |blocks: &[&[f64]], probes: usize| {
        let op = coupled(blocks, 0.05, 7);
        let idx: Vec<usize> = (0..blocks.len()).collect();
        let slq = Slq::new(probes, 30).expect("slq");
        let d = block_densities(&op, &idx, &slq, &mut probe_rng(9), |_| {}).expect("densities");
        heterogeneity(&d, 4000, Broadening::relative(0.05).expect("σ"), SpectrumScale::AsMeasured).expect("JS₀")
    };
    let same = js0(&[&eigs, &eigs, &eigs], 8);
    let same_more = js0(&[&eigs, &eigs, &eigs], 32);
    let apart = js0(&[&eigs, &scaled], 8);
    let one_off = js0(&[&eigs, &eigs, &scaled], 8);
    let floor = same.floor.expect("a floor with 8 probes");
    eprintln!(
        "JS₀: same spectra {:.2e} (floor {floor:.2e}; 32 probes {:.2e}), 100× apart {:.4}, one of three apart {:.4}",
        same.js0, same_more.js0, apart.js0, one_off.js0
    );
    assert!(same.js0 < 3.0 * floor && same.js0 < 0.02, "{} vs floor {floor}", same.js0);
    assert!(same_more.js0 < same.js0, "{} vs {}", same_more.js0, same.js0);
    // Near ln 2: the broadening (5 % of the common range) lets the two
    // densities overlap a little.
    assert!(apart.js0 > 0.68 && apart.js0 <= std::f64::consts::LN_2, "{}", apart.js0);
    // Two of the three pairs are the "apart" pair, one is a "same" pair.
    let expected = (2.0 * apart.js0 + same.js0) / 3.0;
    assert!((one_off.js0 - expected).abs() < 0.01, "{} vs {expected}", one_off.js0);
    let slq = Slq::new(4, 12).expect("slq");
    assert_eq!(one_off.pairs.len(), 3);
    for p in &one_off.densities {
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }
    let one = block_densities(&coupled(&[&eigs], 0.0, 1), &[0], &slq, &mut probe_rng(1), |_| {}).expect("one");
    assert!(matches!(
        heterogeneity(&one, 100, Broadening::relative(0.01).expect("σ"), SpectrumScale::AsMeasured),
        Err(Error::TooSmall { .. })
    ));
}

/// Spectra of one shape at scales 100× apart: as measured they are far
/// apart (JS₀ near ln 2), divided by each block's largest eigenvalue they
/// coincide (JS₀ at the noise floor); a different shape stays apart.
#[test]
fn per_block_scaling_compares_shapes_only() {
    let eigs: Vec<f64> = (0..60).map(|i| 1.0 + (i as f64 / 59.0).powi(2) * 3.0).collect();
    let scaled: Vec<f64> = eigs.iter().map(|x| 100.0 * x).collect();
    let flat: Vec<f64> = (0..60).map(|i| 3.0 + i as f64 / 59.0).collect();
    let slq = Slq::new(8, 30).expect("slq");
    let js0 = |blocks: &[&[f64]], scale| {
        let op = coupled(blocks, 0.05, 7);
        let idx: Vec<usize> = (0..blocks.len()).collect();
        let d = block_densities(&op, &idx, &slq, &mut probe_rng(9), |_| {}).expect("densities");
        heterogeneity(&d, 4000, Broadening::relative(0.05).expect("σ"), scale).expect("JS₀")
    };
    let measured = js0(&[&eigs, &scaled], SpectrumScale::AsMeasured);
    let shape = js0(&[&eigs, &scaled], SpectrumScale::PerBlockMaximum);
    let other_shape = js0(&[&eigs, &flat], SpectrumScale::PerBlockMaximum);
    eprintln!(
        "as measured {:.4}, shape {:.2e} (floor {:?}), other shape {:.4}",
        measured.js0, shape.js0, shape.floor, other_shape.js0
    );
    assert!(measured.js0 > 0.68);
    assert!(shape.js0 < 3.0 * shape.floor.expect("floor") && shape.js0 < 0.02, "{}", shape.js0);
    assert!(other_shape.js0 > 10.0 * shape.js0, "{} vs {}", other_shape.js0, shape.js0);
    assert!(shape.grid[0] >= -1.0 - 0.7 && *shape.grid.last().expect("grid") <= 1.0 + 0.7);
}
