//! Every pair of randomness consumers that can meet in one training step is
//! statistically independent (`seht_estimator::streams`).
//!
//! For 20,000 step keys, each consumer makes its first real decisions —
//! probe signs, SEHT-D's layer selection, dropout and DropBlock drops,
//! Mixup's λ and pairing, Jacobian projection signs, sampled labels,
//! augmentation and data-order draws — and every pair of binary outcomes of
//! two different consumers goes through a 2×2 χ² test of independence. The
//! test is deterministic (fixed keys). With the streams of the code before
//! `seht_estimator::streams` (probes on stream 0 of the step's key, dropout
//! site `i` on stream `i` of the same key) it fails: SEHT-H's probe sign 31
//! is dropout site 0's first decision (χ² = 20,000, one outcome determines
//! the other), and SEHT-D's layer draw and dropout's second element share a
//! word.

use candle_core::{DType, Device, Tensor};
use rand::Rng;
use seht_estimator::{ProbeDistribution, Rademacher, Reading, SehtD, Stream, step_key};
use seht_models::{Phase, drop_block, dropout};
use seht_train::losses::MixupDraw;

const N: u64 = 20_000;

/// χ² of the 2×2 contingency table of two binary samples.
fn chi_square(a: &[bool], b: &[bool]) -> f64 {
    let mut n = [[0f64; 2]; 2];
    for (&x, &y) in a.iter().zip(b) {
        n[x as usize][y as usize] += 1.0;
    }
    let total = a.len() as f64;
    let mut chi = 0.0;
    for i in 0..2 {
        for j in 0..2 {
            let expected = (n[i][0] + n[i][1]) * (n[0][j] + n[1][j]) / total;
            if expected > 0.0 {
                chi += (n[i][j] - expected).powi(2) / expected;
            }
        }
    }
    chi
}

fn mask_drops(t: &Tensor, n: usize) -> Vec<bool> {
    let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_dtype(DType::F32)).and_then(|t| t.to_vec1()).expect("mask");
    v[..n].iter().map(|&x| x == 0.0).collect()
}

#[test]
fn consumers_meeting_in_one_step_are_independent() {
    let ones = Tensor::ones((1, 1, 4, 4), DType::F32, &Device::Cpu).expect("ones");
    let sd = SehtD::new(1, 0.05, Reading::Unbiased).expect("SEHT-D");
    // Per consumer, several binary outcomes of its first draws: the
    // generators hand out 32-bit words, and one decision may use any bit of
    // any early word (a probe sign is one bit; a dropout decision compares a
    // whole word), so a shared stream shows up only in some pairs.
    let mut consumers: Vec<(&str, Vec<Vec<bool>>)> = Vec::new();
    for step in 0..N {
        let key = step_key(42, step);
        let phase = Phase::Train { seed: key };
        let mut outcomes: Vec<(&str, Vec<bool>)> = Vec::new();
        // SEHT-D draws its layers, then its probes, from the probe stream.
        let mut probes = Stream::Probes.rng(key);
        let mut sd_draw: Vec<bool> = (0..4).map(|l| sd.draw_blocks(4, &mut probes).contains(&l)).collect();
        sd_draw.extend(Rademacher.sample(&mut probes, 4).iter().map(|&x| x > 0.0));
        // SEHT-H (a run uses one or the other): its first 64 probe signs,
        // the bits of the generator's first two words.
        sd_draw.extend(Rademacher.sample(&mut Stream::Probes.rng(key), 64).iter().map(|&x| x > 0.0));
        outcomes.push(("probes (SEHT-D layer draw and signs; SEHT-H signs)", sd_draw));
        outcomes.push(("dropout site 0", mask_drops(&dropout(&ones, 0.5, phase, 0).expect("dropout"), 8)));
        outcomes.push(("dropout site 1", mask_drops(&dropout(&ones, 0.5, phase, 1).expect("dropout"), 4)));
        outcomes.push(("DropBlock site 0", mask_drops(&drop_block(&ones, 1, 0.5, phase, 0).expect("drop block"), 4)));
        let mix = MixupDraw::draw(4, 1.0, &mut Stream::Mixup.rng(key)).expect("mixup");
        outcomes.push(("Mixup", vec![mix.lambda > 0.5, mix.perm[0] % 2 == 0, mix.perm[1] % 2 == 0]));
        let mut jac = Stream::JacobianProjection.rng(key);
        outcomes.push((
            "Jacobian projection",
            (0..4).map(|_| jac.sample::<f64, _>(rand_distr::StandardNormal) > 0.0).collect(),
        ));
        let mut labels = Stream::LabelSampling.rng(key);
        outcomes.push(("sampled labels", (0..4).map(|_| labels.random_range(0..10u32) % 2 == 1).collect()));
        // The data streams are keyed by epoch: epoch `step` shares the key.
        let mut aug = Stream::Augmentation { position: 0 }.rng(key);
        outcomes.push(("augmentation", (0..4).map(|_| aug.random::<bool>()).collect()));
        let mut order = Stream::DataOrder.rng(key);
        outcomes.push(("data order", (0..4).map(|_| order.random::<bool>()).collect()));
        if consumers.is_empty() {
            consumers = outcomes.iter().map(|(name, v)| (*name, vec![Vec::new(); v.len()])).collect();
        }
        for ((_, slots), (_, values)) in consumers.iter_mut().zip(outcomes) {
            for (slot, v) in slots.iter_mut().zip(values) {
                slot.push(v);
            }
        }
    }
    let (mut worst, mut pairs) = ((0.0, String::new()), 0);
    for (a, (name_a, outs_a)) in consumers.iter().enumerate() {
        for (i, x) in outs_a.iter().enumerate() {
            let rate = x.iter().filter(|&&v| v).count() as f64 / N as f64;
            assert!(rate > 0.01 && rate < 0.99, "{name_a} #{i}: rate {rate} — the outcome barely varies");
        }
        for (name_b, outs_b) in &consumers[a + 1..] {
            for (i, x) in outs_a.iter().enumerate() {
                for (j, y) in outs_b.iter().enumerate() {
                    let chi = chi_square(x, y);
                    pairs += 1;
                    if chi > worst.0 {
                        worst = (chi, format!("{name_a} #{i} / {name_b} #{j}"));
                    }
                }
            }
        }
    }
    eprintln!("{pairs} pairs; largest χ² {:.2} ({})", worst.0, worst.1);
    // χ²(1) > 35 has probability 3e-9: over a few thousand pairs a chance
    // failure has probability below 1e-5. A shared stream gives χ² ≈ N.
    assert!(worst.0 < 35.0, "independence rejected: χ² = {:.1} for {}", worst.0, worst.1);
}
