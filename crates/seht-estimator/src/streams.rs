//! Random streams: every consumer of randomness in a training run draws
//! from its own stream, derived from `(seed, index, consumer)` by one
//! function, so that no two consumers can be correlated.
//!
//! A stream is a ChaCha8 generator ([`ProbeRng`]) whose 256-bit key is
//! expanded from [`step_key`]`(seed, index)` (SplitMix64 of the run's seed and
//! the step or epoch) and whose 64-bit stream number is the consumer's
//! [`Stream::id`]. ChaCha's streams of one key are independent keystreams
//! (Bernstein 2008, "ChaCha, a variant of Salsa20": the stream number is part
//! of the block counter input), so two consumers of the same step never share
//! a draw; different steps have different keys.
//!
//! Before this module, the training loop drew trace probes from stream 0 of
//! the step's key, and dropout site 0 (a language model's embedding, a WRN's
//! first block) drew its mask from the same stream 0 of the same key: one
//! probe entry was then a function of one dropout decision.
//!
//! | consumer | key index | stream |
//! | --- | --- | --- |
//! | trace probes and SEHT-D's layer draw | step | [`Stream::Probes`] |
//! | dropout mask of site `i` | step | [`Stream::Dropout`] |
//! | DropBlock mask of site `i` | step | [`Stream::DropBlock`] |
//! | Mixup's pairing and mixing weight | step | [`Stream::Mixup`] |
//! | Jacobian penalty's random projections | step | [`Stream::JacobianProjection`] |
//! | labels sampled from the model (Gauss–Newton/Fisher penalties) | step | [`Stream::LabelSampling`] |
//! | data order | epoch | [`Stream::DataOrder`] |
//! | augmentation of the image at position `p` | epoch | [`Stream::Augmentation`] |
//! | class-balanced subset | (the subset's own seed, used as the key) | [`Stream::Subset`] |
//! | validation split held out of the training set | 0 | [`Stream::ValidationSplit`] |
//! | final-model trace probes and batch order | `u64::MAX` (never a step) | [`Stream::FinalTrace`], the loader's own |
//! | analysis: per-layer trace probes | 0 | [`Stream::AnalysisTrace`] |
//! | analysis: Lanczos start vector | 0 | [`Stream::LanczosStart`] |
//! | analysis: stochastic Lanczos quadrature probes | 0 | [`Stream::SlqProbes`] |
//! | analysis and `seht trace`: diagonal-estimator probes | 0 (analysis), `u64::MAX` (trace) | [`Stream::Diagonal`] |
//! | analysis: SLQ probes of the blockwise spectra (JS₀) | 0 | [`Stream::BlockSpectra`] |
//! | per-epoch layer monitor: probes, and its batches' dropout | `u64::MAX − 1` (never a step) | [`Stream::Monitor`], [`Stream::Dropout`] |
//! | initial weights of variable `name` | (the run's seed itself) | a hash of `name` (`seht_models::seeded_varbuilder`) |

use rand::SeedableRng;

use crate::probe::ProbeRng;

/// The key of index `index` (a step, an epoch) of a run seeded with `seed`:
/// SplitMix64 (Steele, Lea & Flood 2014) of `seed + φ·(index + 1)`, a
/// bijection of the sum, so distinct indices of one seed get distinct keys.
pub fn step_key(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(index.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A consumer of randomness (see the module docs for the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Trace probes and SEHT-D's layer draw.
    Probes,
    /// Dropout mask of one dropout site of a model.
    Dropout {
        /// The site (a number unique within the model).
        site: u32,
    },
    /// DropBlock mask of one site.
    DropBlock {
        /// The site.
        site: u32,
    },
    /// Mixup's permutation and mixing weight.
    Mixup,
    /// The Jacobian penalty's random projections.
    JacobianProjection,
    /// Labels sampled from the model's predictive distribution.
    LabelSampling,
    /// An epoch's data order.
    DataOrder,
    /// Augmentation of one image of an epoch.
    Augmentation {
        /// Position of the image in the epoch's order.
        position: u32,
    },
    /// A class-balanced subset of a dataset.
    Subset,
    /// The validation split held out of a training set.
    ValidationSplit,
    /// Probes of the final model's trace measurement.
    FinalTrace,
    /// Per-layer trace probes of a curvature analysis.
    AnalysisTrace,
    /// The Lanczos start vector of a curvature analysis.
    LanczosStart,
    /// The probes of stochastic Lanczos quadrature.
    SlqProbes,
    /// The per-epoch layer monitor's probes (`seht-train`'s `[monitor]`).
    Monitor,
    /// The probes of a diagonal estimator (Hutchinson's diagonal, XDiag) in a
    /// curvature analysis or a trace measurement.
    Diagonal,
    /// The SLQ probes of the blockwise spectra of a curvature analysis
    /// (`seht_estimator::block_densities`, JS₀).
    BlockSpectra,
}

impl Stream {
    /// The 64-bit ChaCha stream number: a tag in the top 16 bits, the site or
    /// position in the low 32.
    pub fn id(self) -> u64 {
        let (tag, sub): (u64, u32) = match self {
            Stream::Probes => (1, 0),
            Stream::Dropout { site } => (2, site),
            Stream::DropBlock { site } => (3, site),
            Stream::Mixup => (4, 0),
            Stream::JacobianProjection => (5, 0),
            Stream::LabelSampling => (6, 0),
            Stream::DataOrder => (7, 0),
            Stream::Augmentation { position } => (8, position),
            Stream::Subset => (9, 0),
            Stream::FinalTrace => (10, 0),
            Stream::AnalysisTrace => (11, 0),
            Stream::LanczosStart => (12, 0),
            Stream::SlqProbes => (13, 0),
            Stream::ValidationSplit => (14, 0),
            Stream::Monitor => (15, 0),
            Stream::Diagonal => (16, 0),
            Stream::BlockSpectra => (17, 0),
        };
        tag << 48 | sub as u64
    }

    /// The generator of this consumer under `key` (usually
    /// [`step_key`]`(seed, step)`).
    pub fn rng(self, key: u64) -> ProbeRng {
        let mut rng = ProbeRng::seed_from_u64(key);
        rng.set_stream(self.id());
        rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn consumers_of_one_key_draw_different_numbers() {
        let all = [
            Stream::Probes,
            Stream::Dropout { site: 0 },
            Stream::Dropout { site: 1 },
            Stream::DropBlock { site: 0 },
            Stream::Mixup,
            Stream::JacobianProjection,
            Stream::LabelSampling,
            Stream::DataOrder,
            Stream::Augmentation { position: 0 },
            Stream::Subset,
            Stream::ValidationSplit,
            Stream::FinalTrace,
            Stream::AnalysisTrace,
            Stream::LanczosStart,
            Stream::SlqProbes,
            Stream::Monitor,
            Stream::Diagonal,
            Stream::BlockSpectra,
        ];
        let firsts: Vec<u64> = all.iter().map(|s| s.rng(step_key(7, 3)).random()).collect();
        for i in 0..firsts.len() {
            for j in i + 1..firsts.len() {
                assert_ne!(firsts[i], firsts[j], "{:?} and {:?}", all[i], all[j]);
            }
        }
    }
}
