//! Probe distributions and validated probabilities.
//!
//! A Hutchinson-type estimator draws probe vectors `σ` with `E[σσᵀ] = c·I`
//! (possibly restricted to a subset of entries); then `E[σᵀAσ] = c·tr(A)`.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::error::{Error, Result};

/// The random-number generator of all probes: ChaCha8, seeded explicitly.
///
/// ChaCha8 is specified bit for bit, so a seed gives the same probes on every
/// platform and every version of this crate (unlike `rand::rngs::StdRng`,
/// whose algorithm may change between `rand` releases).
pub type ProbeRng = rand_chacha::ChaCha8Rng;

/// A [`ProbeRng`] from a seed.
pub fn probe_rng(seed: u64) -> ProbeRng {
    ProbeRng::seed_from_u64(seed)
}

/// A probability in `(0, 1]`, e.g. SEHT-D's layer-selection probability `p1`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "f64", into = "f64"))]
pub struct Probability(f64);

impl TryFrom<f64> for Probability {
    type Error = Error;
    fn try_from(p: f64) -> Result<Self> {
        Self::new("p", p)
    }
}

impl From<Probability> for f64 {
    fn from(p: Probability) -> f64 {
        p.0
    }
}

impl TryFrom<f64> for HalfProbability {
    type Error = Error;
    fn try_from(p: f64) -> Result<Self> {
        Self::new("p", p)
    }
}

impl From<HalfProbability> for f64 {
    fn from(p: HalfProbability) -> f64 {
        p.0
    }
}

impl From<Rademacher> for Distribution {
    fn from(_: Rademacher) -> Self {
        Distribution::Rademacher
    }
}

impl From<Gaussian> for Distribution {
    fn from(_: Gaussian) -> Self {
        Distribution::Gaussian
    }
}

impl From<Sparse> for Distribution {
    fn from(s: Sparse) -> Self {
        Distribution::Sparse(s)
    }
}

impl Probability {
    /// Validates `p ∈ (0, 1]`; `name` names the parameter in the error.
    pub fn new(name: &'static str, p: f64) -> Result<Self> {
        if p > 0.0 && p <= 1.0 {
            Ok(Self(p))
        } else {
            Err(Error::InvalidProbability { name, value: p, range: "(0, 1]" })
        }
    }

    /// Probability one: always select.
    pub const ONE: Self = Self(1.0);

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A probability in `(0, 1/2]`: the `p` of the paper's `Q(p)`, where each sign
/// has probability `p`, so an entry is non-zero with probability `2p`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "f64", into = "f64"))]
pub struct HalfProbability(f64);

impl HalfProbability {
    /// Validates `p ∈ (0, 1/2]`; `name` names the parameter in the error.
    pub fn new(name: &'static str, p: f64) -> Result<Self> {
        if p > 0.0 && p <= 0.5 {
            Ok(Self(p))
        } else {
            Err(Error::InvalidProbability { name, value: p, range: "(0, 1/2]" })
        }
    }

    /// The value.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A distribution of probe entries: i.i.d., mean zero, with known second moment.
pub trait ProbeDistribution {
    /// Fills `out` with i.i.d. draws.
    fn fill(&self, rng: &mut ProbeRng, out: &mut [f64]);

    /// `E[σᵢ²]`, so that `E[σσᵀ] = second_moment()·I`.
    fn second_moment(&self) -> f64;

    /// A vector of `n` draws.
    fn sample(&self, rng: &mut ProbeRng, n: usize) -> Vec<f64> {
        let mut v = vec![0.0; n];
        self.fill(rng, &mut v);
        v
    }
}

/// Rademacher entries: ±1 with probability 1/2 each (Hutchinson, SEHT-H).
///
/// For symmetric `A`: `Var[σᵀAσ] = 2(‖A‖_F² − Σᵢ aᵢᵢ²)`, the smallest variance
/// of any i.i.d. probe (Hutchinson 1990).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rademacher;

impl ProbeDistribution for Rademacher {
    fn fill(&self, rng: &mut ProbeRng, out: &mut [f64]) {
        // 64 signs per draw of the generator.
        for chunk in out.chunks_mut(64) {
            let bits: u64 = rng.random();
            for (j, x) in chunk.iter_mut().enumerate() {
                *x = if (bits >> j) & 1 == 1 { 1.0 } else { -1.0 };
            }
        }
    }

    fn second_moment(&self) -> f64 {
        1.0
    }
}

/// Standard normal entries (Girard's estimator). `Var[σᵀAσ] = 2‖A‖_F²`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gaussian;

impl ProbeDistribution for Gaussian {
    fn fill(&self, rng: &mut ProbeRng, out: &mut [f64]) {
        for x in out.iter_mut() {
            *x = rng.sample(StandardNormal);
        }
    }

    fn second_moment(&self) -> f64 {
        1.0
    }
}

/// The paper's sparse distribution `Q(p)` (section 4.2):
/// `Pr(x = +1) = Pr(x = −1) = p`, `Pr(x = 0) = 1 − 2p`.
///
/// `E[σσᵀ] = 2p·I`; given the positions of the zeros, `E[σσᵀ | zeros] = Ĩ`,
/// the 0/1 diagonal of the selected entries (eq. 13). `Q(1/2)` is Rademacher.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Sparse {
    p: HalfProbability,
}

impl Sparse {
    /// `Q(p)`, with `p ∈ (0, 1/2]` checked.
    pub fn new(p: f64) -> Result<Self> {
        Ok(Self { p: HalfProbability::new("p", p)? })
    }

    /// `Q(p)` from an already validated `p`.
    pub fn from_probability(p: HalfProbability) -> Self {
        Self { p }
    }

    /// The `p` of `Q(p)`.
    pub fn p(&self) -> HalfProbability {
        self.p
    }
}

impl ProbeDistribution for Sparse {
    fn fill(&self, rng: &mut ProbeRng, out: &mut [f64]) {
        let p = self.p.get();
        for x in out.iter_mut() {
            let u: f64 = rng.random();
            *x = if u < p {
                1.0
            } else if u < 2.0 * p {
                -1.0
            } else {
                0.0
            };
        }
    }

    fn second_moment(&self) -> f64 {
        2.0 * self.p.get()
    }
}

/// Any of the distributions above, chosen at run time (e.g. from a config file)
/// but still typed: an invalid `p` cannot be represented. With the `serde`
/// feature: `"rademacher"`, `"gaussian"`, `{ sparse = { p = 0.05 } }`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum Distribution {
    /// See [`Rademacher`].
    Rademacher,
    /// See [`Gaussian`].
    Gaussian,
    /// See [`Sparse`].
    Sparse(Sparse),
}

impl ProbeDistribution for Distribution {
    fn fill(&self, rng: &mut ProbeRng, out: &mut [f64]) {
        match self {
            Distribution::Rademacher => Rademacher.fill(rng, out),
            Distribution::Gaussian => Gaussian.fill(rng, out),
            Distribution::Sparse(s) => s.fill(rng, out),
        }
    }

    fn second_moment(&self) -> f64 {
        match self {
            Distribution::Rademacher => Rademacher.second_moment(),
            Distribution::Gaussian => Gaussian.second_moment(),
            Distribution::Sparse(s) => s.second_moment(),
        }
    }
}
