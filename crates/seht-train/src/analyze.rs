//! `seht analyze`: the Hessian of a trained model — per-layer traces with
//! standard errors, the top eigenvalues with residuals, and the eigenvalue
//! density — written as JSON, a Markdown table and plots.
//!
//! The Hessian is that of the mean training loss over `batches` fixed
//! batches (no augmentation), over the chosen parameters (weights only by
//! default, as the paper's penalty), with the model in the mode the caller
//! chose: [`ModelMode::Eval`] (BatchNorm with its running statistics, no
//! dropout) or [`ModelMode::Train`] (BatchNorm with batch statistics,
//! dropout with fixed masks per batch). Nothing is switched behind the
//! caller's back, and nothing is written back to the model.
//!
//! The methods are those of `seht-estimator`: [`BlockTraces`] (Hutchinson
//! per layer), [`Lanczos`] (top-`k` eigenpairs) and [`Slq`] (stochastic
//! Lanczos quadrature); [`analyze_operator`] runs them on any
//! [`HvpOperator`], so a library user can analyse any loss. Instead of the
//! per-layer Hutchinson traces, a whole-model trace by Hutch++ or XTrace,
//! or by XNysTrace of the Gauss–Newton matrix `G` of the same batches
//! ([`GaussNewtonOperator`]; `--estimator`), and a per-layer summary of the
//! diagonal by Hutchinson's diagonal estimator or XDiag (`--diagonal`): see
//! [`crate::estimators`]. Everything else is of the Hessian.
//!
//! **Randomness.** Every draw derives from the analysis seed through
//! `seht_estimator::streams`: [`Stream::AnalysisTrace`] for the per-layer
//! trace probes, [`Stream::LanczosStart`] for the Lanczos start vector,
//! [`Stream::SlqProbes`] for the SLQ probes, [`Stream::Diagonal`] for the
//! diagonal estimator's (all under `step_key(seed, 0)`; the whole-model
//! trace estimators draw from [`Stream::AnalysisTrace`] too),
//! the data loader's own streams for the order of the training batches, and
//! in train mode the dropout streams of `step_key(seed, b)` for batch `b`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use seht_candle::{GaussNewtonOperator, GraphMode, HessianOperator, Selection};
use seht_estimator::{
    BasisPrecision, Block, BlockProbing, BlockTraces, BlockVec, Broadening, HutchPlusPlus, HutchinsonDiagonal,
    HvpOperator, Lanczos, ProbeRng, Reorthogonalisation, Slq, Stream, XDiag, XNysTrace, XTrace, total_len,
};
use seht_models::Phase;
use serde::{Deserialize, Serialize};

pub use crate::analyze_plot::density_comparison;
use crate::checkpoint;
use crate::config::ExperimentConfig;
use crate::data::load_task;
use crate::epoch::progress_bar;
use crate::error::{Error, Result, io};
use crate::estimators::{
    Curvature, DiagonalMethod, DiagonalRequest, DiagonalSection, TotalTrace, TraceMethod, check_diagonal_budget,
    check_trace_budget, estimate_diagonal, estimate_trace,
};
use crate::net::{Batches, Run};
pub use crate::progress::env::Env;

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
    fn selection(self) -> Selection {
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
    /// ([`Spectrum::traces`]); the others a whole-model trace with its own
    /// error estimate ([`Spectrum::trace`]) within `trace_probes` products.
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
        traces + eig + self.slq_probes * self.slq_steps + diagonal
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
        Ok(())
    }

    /// Checks the estimator choices as the command line gives them, naming
    /// the flag: each budget must be enough for its estimator.
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming `--estimator`, `--trace-probes` or
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

    fn precision(&self) -> BasisPrecision {
        if self.f32_basis { BasisPrecision::F32 } else { BasisPrecision::F64 }
    }

    /// Host memory of the largest Lanczos basis, in bytes, for dimension `n`.
    pub fn basis_bytes(&self, n: usize) -> usize {
        let per = if self.f32_basis { 4 } else { 8 };
        let m = if self.top_k > 0 { self.lanczos_steps } else { 0 };
        let m = m.max(if self.slq_probes > 0 { self.slq_steps } else { 0 });
        m.min(n) * n * per
    }
}

fn stream(seed: u64, stream: Stream) -> ProbeRng {
    stream.rng(seht_estimator::step_key(seed, 0))
}

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

/// What [`analyze_operator`] computes.
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

/// The curvature of the mean of several batch losses: `H = (1/B) Σ_b H_b`
/// for [`HessianOperator`]s (the default), `G = (1/B) Σ_b G_b` for
/// [`GaussNewtonOperator`]s.
///
/// Holds one operator (one backward graph) per batch, so memory grows with
/// `B`; each product costs `B` batch products. Each product advances `bar`
/// by one.
pub struct MeanHessian<O = HessianOperator> {
    ops: Vec<O>,
    bar: indicatif::ProgressBar,
}

impl<O> MeanHessian<O> {
    /// The mean of `ops` (at least one, all over the same parameters).
    ///
    /// # Errors
    /// [`Error::InvalidOption`] naming `--batches` for an empty list.
    pub fn new(ops: Vec<O>, bar: indicatif::ProgressBar) -> Result<Self> {
        if ops.is_empty() {
            return Err(Error::InvalidOption {
                option: "--batches",
                value: "0".into(),
                reason: "at least one batch is needed".into(),
            });
        }
        Ok(Self { ops, bar })
    }
}

impl<O> HvpOperator for MeanHessian<O>
where
    O: HvpOperator<Part = Tensor, Scalar = Tensor, Error = seht_candle::Error>,
{
    type Part = Tensor;
    type Scalar = f64;
    type Error = seht_candle::Error;

    fn blocks(&self) -> &[Block] {
        self.ops[0].blocks()
    }

    fn part_from_host(&self, block: usize, values: &[f64]) -> seht_candle::Result<Tensor> {
        self.ops[0].part_from_host(block, values)
    }

    fn part_to_host(&self, block: usize, part: &Tensor) -> seht_candle::Result<Vec<f64>> {
        self.ops[0].part_to_host(block, part)
    }

    fn hvp(&self, v: &BlockVec<Tensor>) -> seht_candle::Result<BlockVec<Tensor>> {
        let scale = 1.0 / self.ops.len() as f64;
        let mut acc: Option<Vec<Option<Tensor>>> = None;
        for op in &self.ops {
            let hv = op.hvp(v)?.into_parts();
            acc = Some(match acc {
                None => hv,
                Some(a) => a
                    .into_iter()
                    .zip(hv)
                    .map(|(x, y)| match (x, y) {
                        (Some(x), Some(y)) => Ok(Some((x + y)?)),
                        (x, None) => Ok(x),
                        (None, y) => Ok(y),
                    })
                    .collect::<candle_core::Result<_>>()?,
            });
        }
        let parts = acc.unwrap_or_default().into_iter().map(|p| p.map(|t| t.affine(scale, 0.0)).transpose());
        let out = BlockVec::from_parts(parts.collect::<candle_core::Result<_>>()?);
        self.bar.inc(1);
        Ok(out)
    }

    fn quadratic_form(&self, v: &BlockVec<Tensor>) -> seht_candle::Result<f64> {
        let mut sum = 0.0;
        for op in &self.ops {
            let q = op.quadratic_form(v)?;
            sum += op.scalar_value(&q)?;
        }
        self.bar.inc(1);
        Ok(sum / self.ops.len() as f64)
    }

    fn scalar_value(&self, s: &f64) -> seht_candle::Result<f64> {
        Ok(*s)
    }

    fn weighted_sum(&self, terms: &[(f64, f64)]) -> seht_candle::Result<f64> {
        Ok(terms.iter().map(|(c, s)| c * s).sum())
    }

    fn constant(&self, value: f64) -> seht_candle::Result<f64> {
        Ok(value)
    }
}

/// Runs the analyses `settings` asks for on any operator: per-block traces,
/// top eigenpairs, density, in that order, each timed and its products counted.
/// Every one is of `op` (recorded as the Hessian), the whole-model trace too,
/// whatever its estimator: [`analyze`] runs XNysTrace on the Gauss–Newton
/// matrix instead.
///
/// # Errors
/// Invalid settings ([`seht_estimator::Error`]) and the operator's errors.
pub fn analyze_operator<O: HvpOperator>(op: &O, settings: &AnalysisSettings) -> seht_estimator::Result<Spectrum> {
    settings.validate()?;
    let n = total_len(op.blocks());
    let trace = if settings.trace_probes > 0 && !settings.estimator.is_hutchinson() {
        Some(estimate_trace(
            op,
            settings.estimator,
            Curvature::Hessian,
            settings.trace_probes,
            &mut stream(settings.seed, Stream::AnalysisTrace),
        )?)
    } else {
        None
    };
    let traces = if settings.trace_probes > 0 && settings.estimator.is_hutchinson() {
        let t0 = Instant::now();
        let est = BlockTraces::rademacher(settings.trace_probes, settings.probing)?.estimate(
            op,
            &mut stream(settings.seed, Stream::AnalysisTrace),
            || {},
        )?;
        Some(TraceSection {
            probes: settings.trace_probes,
            probing: match settings.probing {
                BlockProbing::Joint => "joint".into(),
                BlockProbing::Separate => "separate".into(),
            },
            layers: est
                .blocks
                .iter()
                .map(|b| LayerTrace { name: b.name.clone(), len: b.len, trace: b.mean, std_error: b.std_error })
                .collect(),
            total: est.total.0,
            total_std_error: est.total.1,
            hvps: est.hvps,
            seconds: t0.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let eigen = if settings.top_k > 0 {
        let t0 = Instant::now();
        let res = Lanczos::new(settings.top_k, settings.lanczos_steps, settings.tolerance)?
            .precision(settings.precision())
            .eigenpairs(op, &mut stream(settings.seed, Stream::LanczosStart))?;
        Some(EigenSection {
            values: res
                .pairs
                .iter()
                .map(|p| EigenValue { value: p.value, residual: p.residual, residual_bound: p.residual_bound })
                .collect(),
            steps: res.steps,
            max_steps: settings.lanczos_steps,
            tolerance: settings.tolerance,
            converged: res.converged,
            hvps: res.hvps,
            seconds: t0.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let density = if settings.slq_probes > 0 {
        let t0 = Instant::now();
        let broadening = Broadening::relative(settings.broadening)?;
        let d = Slq::new(settings.slq_probes, settings.slq_steps)?
            .reorthogonalisation(Reorthogonalisation::Full(settings.precision()))
            .density(op, &mut stream(settings.seed, Stream::SlqProbes), |_| {})?;
        let grid = d.grid(1000, broadening);
        let density = d.evaluate(&grid, broadening);
        let (m1, se) = d.moment(1);
        let (lo, _) = d.node_range();
        Some(DensitySection {
            probes: settings.slq_probes,
            steps: settings.slq_steps,
            broadening: settings.broadening,
            sigma: d.sigma(broadening),
            grid,
            density,
            nodes: d.rules.iter().map(|r| r.nodes.clone()).collect(),
            weights: d.rules.iter().map(|r| r.weights.clone()).collect(),
            trace: (n as f64 * m1, se.map(|s| n as f64 * s)),
            negative_mass: d.mass_between(lo.min(0.0) - 1.0, -f64::MIN_POSITIVE),
            hvps: d.hvps,
            seconds: t0.elapsed().as_secs_f64(),
        })
    } else {
        None
    };
    let diagonal = match settings.diagonal {
        Some(d) => Some(estimate_diagonal(op, d.estimator, d.hvps, &mut stream(settings.seed, Stream::Diagonal))?),
        None => None,
    };
    Ok(Spectrum { parameters: n, traces, trace, diagonal, eigen, density })
}

/// Where the model to analyse comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A run folder written by `seht train` (its `config.toml` and checkpoint).
    Run(PathBuf),
    /// A config and a safetensors file of its model's variables (named as the
    /// model names them, with or without the `model.` prefix of our checkpoints).
    Checkpoint {
        /// The experiment config (TOML) that built the model.
        config: PathBuf,
        /// The safetensors file.
        tensors: PathBuf,
    },
}

/// How to build the Hessian of a model.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Eval or train mode: always the caller's choice.
    pub mode: ModelMode,
    /// Parameters.
    pub params: ParamChoice,
    /// Training batches.
    pub batches: usize,
    /// Batch size (images; `None`: the config's).
    pub batch_size: Option<usize>,
    /// What to compute.
    pub settings: AnalysisSettings,
}

fn load_model(
    source: &ModelSource,
    device: &Device,
) -> Result<(ExperimentConfig, HashMap<String, Tensor>, PathBuf, String)> {
    match source {
        ModelSource::Run(dir) => {
            let cfg = ExperimentConfig::from_file(&dir.join("config.toml"))?;
            let ckpt_dir = dir.join("checkpoint");
            let Some((_, tensors)) = checkpoint::load(&ckpt_dir, &cfg, device)? else {
                return Err(Error::Io {
                    path: ckpt_dir.join("state.json"),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no checkpoint in this run folder: train the run first (`seht train --config <its config.toml>`), or copy its checkpoint/ folder with it",
                    ),
                });
            };
            Ok((cfg, tensors, ckpt_dir, dir.display().to_string()))
        }
        ModelSource::Checkpoint { config: c, tensors: t } => {
            let cfg = ExperimentConfig::from_file(c)?;
            if !t.is_file() {
                return Err(Error::Io {
                    path: t.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such safetensors file"),
                });
            }
            let tensors = candle_core::safetensors::load(t, device).map_err(|e| Error::TensorMismatch {
                path: t.clone(),
                message: format!("not a readable safetensors file ({e}); give the tensor file of a checkpoint"),
            })?;
            Ok((cfg, tensors, t.clone(), t.display().to_string()))
        }
    }
}

/// Sets every variable of `varmap` from `tensors` (`model.<name>` or `<name>`),
/// checking shapes; the error names the file and the variable.
fn set_variables(varmap: &VarMap, tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    for (name, var) in varmap.data().lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let t = tensors.get(&format!("model.{name}")).or_else(|| tensors.get(name)).ok_or_else(|| {
            Error::TensorMismatch {
                path: path.to_path_buf(),
                message: format!("no tensor for variable {name} (as `model.{name}` or `{name}`) of the config's model"),
            }
        })?;
        if t.shape() != var.shape() {
            return Err(Error::TensorMismatch {
                path: path.to_path_buf(),
                message: format!("variable {name} has shape {:?}, the config's model {:?}", t.shape(), var.shape()),
            });
        }
        var.set(&t.to_dtype(var.dtype())?)?;
    }
    Ok(())
}

/// One `(logits, loss)` per batch, as the mode asks (text: logits flattened
/// to one row per token), and the batch size.
fn batch_losses(run: &Run, aopts: &AnalyzeOptions, device: &Device) -> Result<(Vec<(Tensor, Tensor)>, usize)> {
    let phase = |b: usize| match aopts.mode {
        ModelMode::Eval => Phase::Eval,
        ModelMode::Train => Phase::Train { seed: seht_estimator::step_key(aopts.settings.seed, b as u64) },
    };
    let batch_size = match run {
        Run::Images { data, .. } => aopts.batch_size.unwrap_or(data.config.batch_size),
        Run::Text { data, .. } => data.train.batch(),
    };
    let plan = Batches { count: aopts.batches, size: batch_size, full_only: true, seed: aopts.settings.seed };
    let mut out = Vec::with_capacity(aopts.batches);
    let used = run.for_each_batch(plan, phase, device, |logits, loss| {
        out.push((logits.clone(), loss.clone()));
        Ok(())
    })?;
    if used < aopts.batches {
        return Err(Error::InvalidOption {
            option: "--batches",
            value: aopts.batches.to_string(),
            reason: match run {
                Run::Images { .. } => format!("the training set has only {used} full batches of {batch_size}"),
                Run::Text { .. } => format!("the training text has only {used} windows"),
            },
        });
    }
    Ok((out, batch_size))
}

/// Analyses the model of `source` on its training data (`env.data_dir`,
/// `env.device`; a progress bar when `env.progress` is bars).
///
/// # Errors
/// Unreadable run folders, checkpoints or configs (naming the file), a model
/// that does not match its tensors, too few batches, invalid settings, and
/// failures of the products.
pub fn analyze(source: &ModelSource, env: &Env, aopts: &AnalyzeOptions) -> Result<AnalysisReport> {
    aopts.settings.check_hessian_options()?;
    aopts.settings.validate()?;
    let ModelHessian { operator: op, logits, params, config: cfg, label, batch_size, bar } =
        model_hessian(source, env, aopts)?;
    let t0 = Instant::now();
    // XNysTrace needs a positive semi-definite operator: it runs on G of the
    // same batches, everything else on H.
    let on_g = aopts.settings.trace_probes > 0 && aopts.settings.estimator.curvature() == Curvature::GaussNewton;
    let mut on_h = aopts.settings.clone();
    if on_g {
        on_h.trace_probes = 0;
    }
    let mut spectrum = analyze_operator(&op, &on_h)?;
    if on_g {
        let ops = logits.iter().map(|z| GaussNewtonOperator::new(z, &params)).collect::<seht_candle::Result<_>>()?;
        let g = MeanHessian::new(ops, bar.clone())?;
        spectrum.trace = Some(estimate_trace(
            &g,
            aopts.settings.estimator,
            Curvature::GaussNewton,
            aopts.settings.trace_probes,
            &mut stream(aopts.settings.seed, Stream::AnalysisTrace),
        )?);
    }
    bar.finish_and_clear();
    let hvps = spectrum.traces.as_ref().map_or(0, |t| t.hvps)
        + spectrum.trace.as_ref().map_or(0, |t| t.hvps)
        + spectrum.diagonal.as_ref().map_or(0, |d| d.hvps)
        + spectrum.eigen.as_ref().map_or(0, |e| e.hvps)
        + spectrum.density.as_ref().map_or(0, |d| d.hvps);
    Ok(AnalysisReport {
        source: label,
        name: cfg.name.clone(),
        method: cfg.regularizer.label(),
        mode: aopts.mode,
        params: aopts.params,
        batches: aopts.batches,
        batch_size,
        settings: aopts.settings.clone(),
        spectrum,
        hvps,
        batch_hvps: hvps * aopts.batches,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The Hessian [`analyze`] works on, for a caller that runs its own methods
/// on it (and the batches' logits, for a Gauss–Newton matrix of the same batches).
pub struct ModelHessian {
    /// `H = (1/B) Σ_b H_b` over the chosen parameters, products detached.
    pub operator: MeanHessian,
    /// Each batch's logits `(N, C)` on the autodiff graph (text: one row per token).
    pub logits: Vec<Tensor>,
    /// The parameters `H` is over, in block order.
    pub params: Vec<seht_candle::Param>,
    /// The experiment config that built the model.
    pub config: ExperimentConfig,
    /// The run folder or checkpoint it came from.
    pub label: String,
    /// Images (or sequences) per batch.
    pub batch_size: usize,
    /// The progress bar the operator advances (hidden unless `env.progress` is bars).
    pub bar: indicatif::ProgressBar,
}

/// Loads the model of `source` and builds the Hessian of its mean training
/// loss over `aopts.batches` batches, in `aopts.mode`, over `aopts.params`
/// (the part of [`analyze`] before any product; `aopts.settings` sizes the
/// progress bar and gives the seed of the batch order and dropout masks).
///
/// # Errors
/// As [`analyze`], before its products.
pub fn model_hessian(source: &ModelSource, env: &Env, aopts: &AnalyzeOptions) -> Result<ModelHessian> {
    let (cfg, tensors, path, label) = load_model(source, &env.device)?;
    let task = load_task(&cfg, env)?;
    let varmap = VarMap::new();
    let run = Run::new(&cfg, task, &varmap, &env.device)?;
    let params = run.param_set(&varmap)?;
    set_variables(&varmap, &tensors, &path)?;
    let selected = params.select(&aopts.params.selection())?;
    let (batches, batch_size) = batch_losses(&run, aopts, &env.device)?;
    let ops = batches
        .iter()
        .map(|(_, l)| HessianOperator::with_mode(l, &selected, GraphMode::Detached))
        .collect::<seht_candle::Result<Vec<_>>>()?;
    let budget = aopts.settings.budget(selected.len());
    let bar = progress_bar((env.progress == crate::Progress::Bars).then(|| format!("analyze {}", cfg.name)), budget);
    let operator = MeanHessian::new(ops, bar.clone())?;
    let logits = batches.into_iter().map(|(z, _)| z).collect();
    Ok(ModelHessian { operator, logits, params: selected, config: cfg, label, batch_size, bar })
}

/// The files [`write_report`] wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Every file, in writing order.
    pub files: Vec<PathBuf>,
}

/// Writes `analysis.json`, `analysis.md` and the plots (`density.{svg,png}`,
/// `layer_traces.{svg,png}`) into `out`.
///
/// # Errors
/// Unwritable files (naming them) and plotting failures.
pub fn write_report(report: &AnalysisReport, out: &Path) -> Result<Written> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut files = Vec::new();
    let json_path = out.join("analysis.json");
    let json =
        serde_json::to_vec_pretty(report).map_err(|e| Error::Io { path: json_path.clone(), source: e.into() })?;
    checkpoint::write_atomic(&json_path, &json)?;
    files.push(json_path);
    let md_path = out.join("analysis.md");
    checkpoint::write_atomic(&md_path, markdown(report).as_bytes())?;
    files.push(md_path);
    files.extend(crate::analyze_plot::plots(report, out)?);
    Ok(Written { files })
}

fn pm(x: f64, se: Option<f64>) -> String {
    match se {
        Some(s) => format!("{x:.4e} ± {s:.1e}"),
        None => format!("{x:.4e}"),
    }
}

/// The Markdown summary: settings, costs, top eigenvalues, per-layer traces.
pub fn markdown(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut md = format!(
        "# Hessian analysis of `{}` ({})\n\nSource: `{}`. Model in **{}** mode; Hessian of the mean training loss over {} batch(es) of {}, over the {} ({} parameters). Seed {}.\n\n",
        r.name,
        r.method,
        r.source,
        match r.mode {
            ModelMode::Eval => "eval",
            ModelMode::Train => "train",
        },
        r.batches,
        r.batch_size,
        match r.params {
            ParamChoice::Weights => "weights",
            ParamChoice::WeightsAndNormScales => "weights and BatchNorm scales",
            ParamChoice::Trainable => "trainable parameters",
        },
        s.parameters,
        r.settings.seed,
    );
    md.push_str("| analysis | settings | Hessian-vector products | batch products | seconds |\n| --- | --- | ---: | ---: | ---: |\n");
    if let Some(t) = &s.traces {
        md.push_str(&format!(
            "| per-layer traces (Hutchinson) | {} probes, {} | {} | {} | {:.1} |\n",
            t.probes,
            t.probing,
            t.hvps,
            t.hvps * r.batches,
            t.seconds
        ));
    }
    if let Some(t) = &s.trace {
        md.push_str(&format!(
            "| trace ({}{}) | budget {} | {} | {} | {:.1} |\n",
            t.estimator.name(),
            if t.matrix.is_hessian() { "" } else { ", Gauss–Newton matrix G" },
            t.budget,
            t.hvps,
            t.hvps * r.batches,
            t.seconds
        ));
    }
    if let Some(d) = &s.diagonal {
        md.push_str(&format!(
            "| per-layer diagonal ({}) | budget {} | {} | {} | {:.1} |\n",
            d.estimator.name(),
            d.budget,
            d.hvps,
            d.hvps * r.batches,
            d.seconds
        ));
    }
    if let Some(e) = &s.eigen {
        md.push_str(&format!(
            "| top-{} eigenvalues (Lanczos) | ≤ {} steps, tolerance {:.0e} | {} | {} | {:.1} |\n",
            e.values.len(),
            e.max_steps,
            e.tolerance,
            e.hvps,
            e.hvps * r.batches,
            e.seconds
        ));
    }
    if let Some(d) = &s.density {
        md.push_str(&format!(
            "| density (SLQ) | {} probes × {} steps, σ = {:.3e} | {} | {} | {:.1} |\n",
            d.probes,
            d.steps,
            d.sigma,
            d.hvps,
            d.hvps * r.batches,
            d.seconds
        ));
    }
    md.push_str(&format!("| all | | {} | {} | {:.1} |\n\n", r.hvps, r.batch_hvps, r.seconds));
    if let Some(e) = &s.eigen {
        md.push_str(&format!(
            "## Top eigenvalues\n\n{} after {} Lanczos steps.\n\n| # | eigenvalue | residual ‖Hv − λv‖ |\n| ---: | ---: | ---: |\n",
            if e.converged { "Converged" } else { "**Not converged**" },
            e.steps
        ));
        for (i, v) in e.values.iter().enumerate() {
            md.push_str(&format!("| {} | {:.6e} | {:.1e} |\n", i + 1, v.value, v.residual));
        }
        md.push('\n');
    }
    if let Some(d) = &s.density {
        md.push_str(&format!(
            "## Density\n\nTrace from the density's first moment: {}. Fraction of negative eigenvalues: {}. Plot: `density.svg`.\n\n",
            pm(d.trace.0, d.trace.1),
            pm(d.negative_mass.0, d.negative_mass.1),
        ));
    }
    if let Some(t) = &s.trace {
        md.push_str(&format!(
            "## Trace ({})\n\n{}{} = {} ({}; {} {}-vector products).\n\n",
            t.estimator.name(),
            if t.matrix.is_hessian() {
                ""
            } else {
                "Of the generalised Gauss–Newton matrix G = (1/N) Σ_n J_nᵀ(diag p_n − p_n p_nᵀ)J_n of the same batches \
                 (positive semi-definite, as XNysTrace needs), not of the Hessian: "
            },
            t.matrix.trace_symbol(),
            pm(t.trace, t.std_error),
            if t.std_error.is_some() {
                "± the estimator's own error estimate"
            } else {
                "Hutch++ reports no error of its own"
            },
            t.hvps,
            if t.matrix.is_hessian() { "Hessian" } else { "Gauss–Newton matrix" }
        ));
    }
    if let Some(d) = &s.diagonal {
        md.push_str(&format!(
            "## Per-layer Hessian diagonal ({})\n\nSum of the estimated diagonal: {:.4e} ({} Hessian-vector products). Per layer: the mean, smallest and largest estimated entry, the root-mean-square standard error of one entry, and a bound on the standard error of the mean (the mean of the entries' standard errors). The extremes of noisy entries lie further out than the true ones.\n\n| layer | parameters | mean | min | max | s.e. of an entry | s.e. of the mean ≤ |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
            d.estimator.name(),
            d.trace,
            d.hvps
        ));
        let opt = |x: Option<f64>| x.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "–".into());
        for l in &d.layers {
            md.push_str(&format!(
                "| `{}` | {} | {:.4e} | {:.3e} | {:.3e} | {} | {} |\n",
                l.name,
                l.len,
                l.mean,
                l.min,
                l.max,
                opt(l.entry_std_error),
                opt(l.mean_std_error_bound)
            ));
        }
        md.push('\n');
    }
    if let Some(t) = &s.traces {
        md.push_str(&format!(
            "## Per-layer traces\n\nTotal: {} (standard error over {} probes). Plot: `layer_traces.svg`.\n\n| layer | parameters | trace | standard error | trace / parameter |\n| --- | ---: | ---: | ---: | ---: |\n",
            pm(t.total, t.total_std_error),
            t.probes
        ));
        for l in &t.layers {
            md.push_str(&format!(
                "| `{}` | {} | {:.4e} | {} | {:.3e} |\n",
                l.name,
                l.len,
                l.trace,
                l.std_error.map(|e| format!("{e:.1e}")).unwrap_or_else(|| "–".into()),
                l.trace / l.len as f64
            ));
        }
    }
    md
}

/// The one-line cost summary printed by `seht analyze`.
pub fn cost_line(r: &AnalysisReport) -> String {
    let s = &r.spectrum;
    let mut parts = Vec::new();
    if let Some(t) = &s.traces {
        parts.push(format!("traces {} HVPs {:.1} s", t.hvps, t.seconds));
    }
    if let Some(t) = &s.trace {
        let of = if t.matrix.is_hessian() { "" } else { " of G" };
        parts.push(format!("trace ({}{of}) {} HVPs {:.1} s", t.estimator.name(), t.hvps, t.seconds));
    }
    if let Some(d) = &s.diagonal {
        parts.push(format!("diagonal ({}) {} HVPs {:.1} s", d.estimator.name(), d.hvps, d.seconds));
    }
    if let Some(e) = &s.eigen {
        parts.push(format!("top-{} eigenvalues {} HVPs {:.1} s", e.values.len(), e.hvps, e.seconds));
    }
    if let Some(d) = &s.density {
        parts.push(format!("density {} HVPs {:.1} s", d.hvps, d.seconds));
    }
    format!(
        "cost: {} — {} HVPs of the mean loss over {} batch(es) = {} batch HVPs, {:.1} s",
        parts.join(", "),
        r.hvps,
        r.batches,
        r.batch_hvps,
        r.seconds
    )
}

/// A table comparing several analyses (one row each): top eigenvalue with
/// its residual, `tr(H)` with its standard error, and the fraction of
/// negative eigenvalues.
pub fn comparison_markdown(reports: &[AnalysisReport]) -> String {
    let mut md = String::from(
        "| run | method | mode | top eigenvalue (residual) | tr(H) ± s.e. | negative fraction | HVPs |\n| --- | --- | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in reports {
        let s = &r.spectrum;
        let top = s
            .eigen
            .as_ref()
            .and_then(|e| {
                e.values
                    .first()
                    .map(|v| format!("{:.4e} ({:.0e}){}", v.value, v.residual, if e.converged { "" } else { "*" }))
            })
            .unwrap_or_else(|| "–".into());
        let trace = s
            .traces
            .as_ref()
            .map(|t| pm(t.total, t.total_std_error))
            .or_else(|| {
                s.trace.as_ref().map(|t| match t.matrix {
                    Curvature::Hessian => format!("{} ({})", pm(t.trace, t.std_error), t.estimator.name()),
                    Curvature::GaussNewton => format!("tr(G) {} ({})", pm(t.trace, t.std_error), t.estimator.name()),
                })
            })
            .unwrap_or_else(|| "–".into());
        let neg = s.density.as_ref().map(|d| pm(d.negative_mass.0, d.negative_mass.1)).unwrap_or_else(|| "–".into());
        md.push_str(&format!(
            "| `{}` | {} | {} | {top} | {trace} | {neg} | {} |\n",
            r.name,
            r.method,
            match r.mode {
                ModelMode::Eval => "eval",
                ModelMode::Train => "train",
            },
            r.hvps
        ));
    }
    md.push_str("\n`*`: Lanczos did not reach its tolerance; the residual bounds the error.\n");
    md
}
