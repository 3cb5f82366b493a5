//! The schema of `analysis.json` ([`AnalysisReport`]): what was measured,
//! section by section, read back by `seht analyze-compare` and drawn by the
//! plots (`plot.rs`).

use serde::{Deserialize, Serialize};

use super::settings::{AnalysisSettings, ModelMode, ParamChoice};
use crate::estimators::{DiagonalSection, TotalTrace};

/// One layer's trace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerTrace {
    /// Parameter name.
    pub name: String,
    /// Entries.
    pub len: usize,
    /// Estimate of `tr(H_bb)`.
    pub trace: f64,
    /// Its standard error (`null` for one probe).
    pub std_error: Option<f64>,
}

/// The per-layer traces.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSection {
    /// Probes.
    pub probes: usize,
    /// `joint` or `separate`.
    pub probing: String,
    /// One entry per layer, in the model's (name-sorted) order.
    pub layers: Vec<LayerTrace>,
    /// `tr(H)`, the sum over layers.
    pub total: f64,
    /// Its standard error.
    pub total_std_error: Option<f64>,
    /// Hessian-vector products (of the mean loss) spent.
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// One eigenvalue with its residual.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EigenValue {
    /// The Ritz value.
    pub value: f64,
    /// `‖Hy − θy‖` (an eigenvalue of `H` lies within it).
    pub residual: f64,
    /// The recurrence's bound that decided convergence.
    pub residual_bound: f64,
}

/// The top eigenvalues.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EigenSection {
    /// Largest first.
    pub values: Vec<EigenValue>,
    /// Lanczos steps taken.
    pub steps: usize,
    /// Step limit.
    pub max_steps: usize,
    /// Relative tolerance.
    pub tolerance: f64,
    /// Whether all met the tolerance.
    pub converged: bool,
    /// Hessian-vector products spent.
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// The eigenvalue density.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DensitySection {
    /// Probes.
    pub probes: usize,
    /// Lanczos steps per probe.
    pub steps: usize,
    /// Broadening as a fraction of the node range.
    pub broadening: f64,
    /// The resulting `σ`.
    pub sigma: f64,
    /// Evaluation points `t`.
    pub grid: Vec<f64>,
    /// `φ̂_σ(t)` (integrates to 1).
    pub density: Vec<f64>,
    /// Quadrature nodes, one list per probe.
    pub nodes: Vec<Vec<f64>>,
    /// Quadrature weights, one list per probe.
    pub weights: Vec<Vec<f64>>,
    /// `tr(H)` from the first moment (`n · Σ τθ`), and its standard error.
    pub trace: (f64, Option<f64>),
    /// Fraction of the spectrum below zero, and its standard error.
    pub negative_mass: (f64, Option<f64>),
    /// Hessian-vector products spent.
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// One block's spectral density on the common grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSpectrum {
    /// Parameter name.
    pub name: String,
    /// Entries.
    pub len: usize,
    /// Its density with its Ritz values divided by the block's largest
    /// absolute one (on `[−1, 1]`), normalised to sum to 1 over the grid.
    pub density: Vec<f64>,
    /// `tr(H_bb)` from the first moment of its quadrature (`n · Σ τθ`).
    pub trace: f64,
    /// The block's largest absolute Ritz value (its scale).
    pub scale: f64,
}

/// `JS₀` under one way of putting the spectra on one axis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Js0 {
    /// The mean Jensen–Shannon divergence (nats, ≤ ln 2) over all pairs of blocks.
    pub js0: f64,
    /// The noise floor: the divergence between the halves of each block's
    /// probes, averaged (`null` for one probe).
    pub floor: Option<f64>,
    /// The most different pair and its divergence.
    pub max_pair: (String, String, f64),
    /// The common `σ`.
    pub sigma: f64,
}

/// Every block's own spectral density and their heterogeneity
/// (`seht_estimator::heterogeneity`; Zhang et al. 2024).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockSpectraSection {
    /// Probes per block.
    pub probes: usize,
    /// Lanczos steps per probe.
    pub steps: usize,
    /// Broadening as a fraction of the common range.
    pub broadening: f64,
    /// `JS₀` of the spectra as measured.
    pub as_measured: Js0,
    /// `JS₀` of their shapes (each block divided by its largest absolute
    /// eigenvalue), the densities below.
    pub shape: Js0,
    /// The common grid of the shapes, `[−1, 1]` and `6σ` beyond.
    pub grid: Vec<f64>,
    /// One entry per block, in the model's order.
    pub blocks: Vec<BlockSpectrum>,
    /// Hessian-vector products spent.
    pub hvps: usize,
    /// Wall time (s).
    pub seconds: f64,
}

/// What [`analyze_operator`](super::analyze_operator) computes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spectrum {
    /// Dimension of the operator.
    pub parameters: usize,
    /// Per-layer traces (Hutchinson, the default estimator).
    pub traces: Option<TraceSection>,
    /// The whole-model trace by another estimator (`--estimator`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TotalTrace>,
    /// The per-layer diagonal summary (`--diagonal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diagonal: Option<DiagonalSection>,
    /// Top eigenvalues.
    pub eigen: Option<EigenSection>,
    /// Density.
    pub density: Option<DensitySection>,
    /// Blockwise densities and `JS₀` (`--block-spectra`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_spectra: Option<BlockSpectraSection>,
}

/// `analysis.json`: where the Hessian came from, and its [`Spectrum`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisReport {
    /// The run folder or checkpoint analysed.
    pub source: String,
    /// Run name.
    pub name: String,
    /// Method label of the run.
    pub method: String,
    /// Model mode (never switched by the analysis).
    pub mode: ModelMode,
    /// Parameters the Hessian is over.
    pub params: ParamChoice,
    /// Training batches whose mean loss is differentiated.
    pub batches: usize,
    /// Their size (examples or sequences).
    pub batch_size: usize,
    /// What was computed and how.
    pub settings: AnalysisSettings,
    /// The results.
    pub spectrum: Spectrum,
    /// Hessian-vector products of the mean loss in all.
    pub hvps: usize,
    /// Per-batch products (`hvps · batches`): the cost in backward passes pairs.
    pub batch_hvps: usize,
    /// Wall time of the whole analysis (s): its products, not the loading of
    /// data and model nor the batches' forward and first backward passes.
    pub seconds: f64,
}
