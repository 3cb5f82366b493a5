//! The cost model of the SEHT-D step and the statistics of paired timings
//! (`cargo xtask bench-peer` times candle and PyTorch in interleaved pairs).
//!
//! A SEHT-D step with layer probability `p` over `L` weight tensors selects
//! at least one tensor with probability `q = 1 − (1 − p)^L`; when it selects
//! none it is a plain step. Its expected time is `q·t(exact-d) + (1 − q)·t(plain)`.
//! A ratio that survives a noisy machine is the median of per-pair ratios:
//! load that hits both processes of a pair cancels in the ratio.

/// SEHT-D's layer probability in the benchmarks' `exact-d` step (both tools).
pub const P_LAYER: f64 = 0.05;

/// `q = 1 − (1 − p)^L` with `p` = [`P_LAYER`]: the probability that a SEHT-D
/// draw selects any of `l` weight tensors.
pub fn select_probability(l: usize) -> f64 {
    1.0 - (1.0 - P_LAYER).powi(l as i32)
}

/// The expected time of a SEHT-D step over `l` weight tensors:
/// `q·t(exact-d) + (1 − q)·t(plain)`, in the unit of the times given.
pub fn expected_seht_d(exact_d: f64, plain: f64, l: usize) -> f64 {
    let q = select_probability(l);
    q * exact_d + (1.0 - q) * plain
}

/// The median of `xs` (the mean of the middle two for an even count).
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(xs[n / 2]),
        _ => Some((xs[n / 2 - 1] + xs[n / 2]) / 2.0),
    }
}

/// The time ratio candle / torch of each pair in which both processes
/// measured a time (`candle[k]` and `torch[k]` ran as pair k); pairs with a
/// failed process, or a torch time that is not positive, give none.
pub fn pair_ratios(candle: &[Option<f64>], torch: &[Option<f64>]) -> Vec<f64> {
    candle
        .iter()
        .zip(torch)
        .filter_map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
            _ => None,
        })
        .collect()
}

/// The median of a sample with its smallest and largest value and its size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// The smallest value.
    pub min: f64,
    /// The largest value.
    pub max: f64,
    /// The sample's size.
    pub n: usize,
}

/// `xs`'s median, range and size (`None` when empty).
pub fn spread(xs: &[f64]) -> Option<Spread> {
    let median = median(xs.to_vec())?;
    let min = xs.iter().copied().fold(f64::INFINITY, f64::min);
    let max = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Spread { median, min, max, n: xs.len() })
}

/// The probability that the range of `n` independent draws from a
/// continuous distribution contains its median: `1 − 2^(1−n)` (all `n` on
/// one side of the median has probability `2·2^−n`); the sign test's
/// interval. 0.9375 for 5 pairs, 0.984 for 7.
pub fn range_coverage(n: usize) -> f64 {
    if n == 0 { 0.0 } else { 1.0 - 0.5f64.powi(n as i32 - 1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_seht_d_cost_weighs_the_selecting_step_by_its_probability() {
        // L = 3: q = 1 − 0.95³ = 0.142625.
        assert!((select_probability(3) - 0.142_625).abs() < 1e-12);
        assert!((expected_seht_d(10.0, 1.0, 3) - (0.142_625 * 10.0 + 0.857_375)).abs() < 1e-12);
        // Many layers: almost every draw selects some.
        assert!(expected_seht_d(10.0, 1.0, 200) > 9.99);
    }

    #[test]
    fn median_of_pair_ratios_survives_noise_that_means_and_medians_of_each_side_do_not() {
        // True ratio 2. Pairs 2 and 4 ran while the machine was loaded
        // (both sides 3× slower); candle's process of pair 3 was hit alone.
        let torch = [1.0, 3.0, 1.0, 3.0, 1.0];
        let candle = [2.0, 6.0, 30.0, 6.0, 2.0];
        let some = |xs: &[f64]| xs.iter().map(|x| Some(*x)).collect::<Vec<_>>();
        let ratios = pair_ratios(&some(&candle), &some(&torch));
        assert_eq!(ratios, vec![2.0, 2.0, 30.0, 2.0, 2.0]);
        assert_eq!(spread(&ratios), Some(Spread { median: 2.0, min: 2.0, max: 30.0, n: 5 }));
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean(&candle) / mean(&torch) - 46.0 / 9.0).abs() < 1e-12, "ratio of means 5.1×");
        let (mc, mt) = (median(candle.to_vec()), median(torch.to_vec()));
        assert_eq!(mc.zip(mt).map(|(c, t)| c / t), Some(6.0), "ratio of each side's median 6×");
    }

    #[test]
    fn pairs_with_a_failed_process_give_no_ratio_and_medians_take_the_middle() {
        let ratios = pair_ratios(&[Some(2.0), None, Some(3.0), Some(1.0)], &[Some(1.0), Some(1.0), None, Some(0.5)]);
        assert_eq!(ratios, vec![2.0, 2.0]);
        assert_eq!(pair_ratios(&[Some(1.0)], &[Some(0.0)]), Vec::<f64>::new());
        assert_eq!(spread(&[]), None);
        assert_eq!(spread(&[3.0, 1.5, 4.0, 2.0]), Some(Spread { median: 2.5, min: 1.5, max: 4.0, n: 4 }));
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn the_range_of_n_pairs_holds_the_median_with_probability_one_minus_two_to_one_minus_n() {
        for (n, p) in [(0, 0.0), (1, 0.0), (2, 0.5), (5, 0.9375), (7, 0.984_375)] {
            assert!((range_coverage(n) - p).abs() < 1e-12, "n = {n}: {}", range_coverage(n));
        }
    }
}
