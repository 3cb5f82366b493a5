//! What `seht analyze` computes and how much it spends ([`AnalysisSettings`]),
//! the model's mode while the Hessian is taken, and the parameters it is over.

use seht_candle::Selection;
use seht_estimator::{
    BasisPrecision, BlockProbing, BlockTraces, Broadening, HutchPlusPlus, HutchinsonDiagonal, Lanczos, ProbeRng, Slq,
    Stream, XDiag, XNysTrace, XTrace,
};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::estimators::{DiagonalMethod, DiagonalRequest, TraceMethod, check_diagonal_budget, check_trace_budget};

/// The state of BatchNorm and dropout while the Hessian is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelMode {
    /// BatchNorm with its running statistics, dropout off: the model as it
    /// is evaluated (PyHessian's choice, made silently there).
    Eval,
    /// BatchNorm with the batch's statistics, dropout with masks fixed per
    /// batch: the function the optimiser (and the SEHT penalty) saw.
    Train,
}

/// Which parameters the Hessian is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamChoice {
    /// Weights only (the paper's choice; biases and normalisation excluded).
    Weights,
    /// Weights and BatchNorm scales γ.
    WeightsAndNormScales,
    /// Every trainable parameter.
    Trainable,
}

impl ParamChoice {
    pub(super) fn selection(self) -> Selection {
        match self {
            ParamChoice::Weights => Selection::Weights,
            ParamChoice::WeightsAndNormScales => Selection::WeightsAndNormScales,
            ParamChoice::Trainable => Selection::Trainable,
        }
    }
}

/// What to compute, and how much to spend on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSettings {
    /// Hutchinson probes for the per-layer traces, or the budget of products
    /// of the whole-model trace estimator (0: skip).
    pub trace_probes: usize,
    /// The trace estimator: Hutchinson (the default) gives per-layer traces
    /// ([`Spectrum::traces`](super::Spectrum::traces)); the others a whole-model trace with its own
    /// error estimate ([`Spectrum::trace`](super::Spectrum::trace)) within `trace_probes` products.
    #[serde(default, skip_serializing_if = "TraceMethod::is_hutchinson")]
    pub estimator: TraceMethod,
    /// A per-layer summary of the estimated diagonal, if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagonal: Option<DiagonalRequest>,
    /// Joint (one product per probe) or separate (one per probe and layer).
    #[serde(with = "probing_serde")]
    pub probing: BlockProbing,
    /// Top eigenpairs wanted (0: skip).
    pub top_k: usize,
    /// At most this many Lanczos steps for them.
    pub lanczos_steps: usize,
    /// Relative residual at which the eigenpairs count as converged.
    pub tolerance: f64,
    /// SLQ probes for the density (0: skip).
    pub slq_probes: usize,
    /// Lanczos steps per SLQ probe.
    pub slq_steps: usize,
    /// Gaussian broadening of the density, as a fraction of the range of the
    /// quadrature nodes.
    pub broadening: f64,
    /// Store Lanczos bases in f32 (half the memory, ~1e-7 accuracy).
    pub f32_basis: bool,
    /// Seed of every random draw of the analysis.
    pub seed: u64,
    /// Each block's (parameter tensor's) own spectral density and their
    /// heterogeneity `JS₀` (`--block-spectra`), if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_spectra: Option<BlockSpectraRequest>,
}

/// `--block-spectra PROBES,STEPS`: SLQ on every diagonal block `H_bb` with
/// this many probes of this many Lanczos steps each (the broadening is
/// [`AnalysisSettings::broadening`]); see `seht_estimator::heterogeneity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpectraRequest {
    /// Probes per block (at least 2 give the noise floor).
    pub probes: usize,
    /// Lanczos steps per probe.
    pub steps: usize,
}

mod probing_serde {
    use seht_estimator::BlockProbing;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &BlockProbing, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            BlockProbing::Joint => "joint",
            BlockProbing::Separate => "separate",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BlockProbing, D::Error> {
        match String::deserialize(d)?.as_str() {
            "joint" => Ok(BlockProbing::Joint),
            "separate" => Ok(BlockProbing::Separate),
            other => Err(serde::de::Error::custom(format!("probing `{other}`: expected joint or separate"))),
        }
    }
}

impl AnalysisSettings {
    /// Hessian-vector products at most (traces + Lanczos steps and residuals + SLQ).
    pub fn budget(&self, blocks: usize) -> usize {
        let traces = match (self.estimator, self.probing) {
            (TraceMethod::Hutchinson, BlockProbing::Joint) => self.trace_probes,
            (TraceMethod::Hutchinson, BlockProbing::Separate) => self.trace_probes * blocks,
            _ => self.trace_probes,
        };
        let eig = if self.top_k > 0 { self.lanczos_steps + self.top_k } else { 0 };
        let diagonal = self.diagonal.map_or(0, |d| d.hvps);
        let block_spectra = self.block_spectra.map_or(0, |b| b.probes * b.steps * blocks);
        traces + eig + self.slq_probes * self.slq_steps + diagonal + block_spectra
    }

    /// Checks every setting before any product is spent.
    ///
    /// # Errors
    /// The estimators' own errors, naming the parameter (`tolerance`,
    /// `max_steps`, `broadening fraction`, …).
    pub fn validate(&self) -> seht_estimator::Result<()> {
        if self.trace_probes > 0 {
            match self.estimator {
                TraceMethod::Hutchinson => BlockTraces::rademacher(self.trace_probes, self.probing).map(|_| ())?,
                TraceMethod::HutchPlusPlus => HutchPlusPlus::with_budget(self.trace_probes).map(|_| ())?,
                TraceMethod::XTrace => XTrace::with_budget(self.trace_probes).map(|_| ())?,
                TraceMethod::XNysTrace => XNysTrace::with_budget(self.trace_probes).map(|_| ())?,
            }
        }
        if let Some(d) = self.diagonal {
            match d.estimator {
                DiagonalMethod::Hutchinson => HutchinsonDiagonal::rademacher(d.hvps).map(|_| ())?,
                DiagonalMethod::Xdiag => XDiag::with_budget(d.hvps).map(|_| ())?,
            }
        }
        if self.top_k > 0 {
            Lanczos::new(self.top_k, self.lanczos_steps, self.tolerance)?;
        }
        if self.slq_probes > 0 {
            Slq::new(self.slq_probes, self.slq_steps)?;
            Broadening::relative(self.broadening)?;
        }
        if let Some(b) = self.block_spectra {
            Slq::new(b.probes, b.steps)?;
            Broadening::relative(self.broadening)?;
        }
        Ok(())
    }

    /// Checks the estimator choices as the command line gives them, naming
    /// the flag: each budget must be enough for its estimator.
    ///
    /// # Errors
    /// [`Error::InvalidOption`](crate::Error::InvalidOption) naming `--estimator`, `--trace-probes` or
    /// `--diagonal-hvps`.
    pub fn check_hessian_options(&self) -> Result<()> {
        if self.trace_probes > 0 {
            check_trace_budget(self.estimator, self.trace_probes, "--trace-probes")?;
        }
        if let Some(d) = self.diagonal {
            check_diagonal_budget(d.estimator, d.hvps, "--diagonal-hvps")?;
        }
        Ok(())
    }

    pub(super) fn precision(&self) -> BasisPrecision {
        if self.f32_basis { BasisPrecision::F32 } else { BasisPrecision::F64 }
    }

    /// Host memory of the largest Lanczos basis, in bytes, for dimension `n`.
    pub fn basis_bytes(&self, n: usize) -> usize {
        let per = if self.f32_basis { 4 } else { 8 };
        let m = if self.top_k > 0 { self.lanczos_steps } else { 0 };
        let m = m.max(if self.slq_probes > 0 { self.slq_steps } else { 0 });
        let m = m.max(self.block_spectra.map_or(0, |b| b.steps));
        m.min(n) * n * per
    }
}

/// The generator of `stream` under the analysis seed `seed`.
pub(super) fn stream(seed: u64, stream: Stream) -> ProbeRng {
    stream.rng(seht_estimator::step_key(seed, 0))
}
