//! The typed experiment config of `seht train`, read from TOML, without
//! candle: the trainer (`seht-train`) runs it, and the protocol and xtask
//! read and change it as typed values.
//!
//! Unknown fields are rejected,
//! and no field has a hidden default — except `[divergence]`, added later,
//! whose absence means "stop only at a non-finite loss", what every run did
//! before it existed: a config states every setting, and a copy of it is
//! written beside the results. Every invalid value is an [`Error::Config`]
//! naming its dotted field (and the file, when read from one).
//!
//! ```
//! let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/demo/baseline.toml"))?;
//! let cfg = seht_config::ExperimentConfig::from_toml_str(&text, "demo/baseline.toml".as_ref())?;
//! assert_eq!(cfg.regularizer, seht_config::Regularizer::Baseline);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod error;
mod legacy;

use std::path::Path;

use std::num::NonZeroU64;

pub use error::{Error, Result, config};
use seht_estimator::Distribution;
pub use seht_estimator::{Estimator, Gradient};
use serde::{Deserialize, Serialize};

/// The relative step of the first-order gradients when a config gives none:
/// `u^{1/4}` of f32, the dtype training uses
/// (`seht_candle::first_order::default_relative_step(DType::F32)`; a test of
/// `seht-train` checks that the two agree).
pub const DEFAULT_F32_RELATIVE_STEP: f64 = 2e-2;

/// Which recurrent cell (`"lstm"` or `"gru"`; `seht_models::RnnKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RnnKind {
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// One training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Run name (the run folder's name).
    pub name: String,
    /// Seed of everything random: initialisation, data order, augmentation,
    /// dropout masks, probes.
    pub seed: u64,
    /// Training epochs.
    pub epochs: usize,
    /// Data.
    pub data: DataConfig,
    /// Model.
    pub model: ModelConfig,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Learning-rate schedule.
    pub schedule: ScheduleConfig,
    /// The regularization method (the SEHT forms written before the single
    /// `seht` kind — `seht-h`, `seht-d`, `seht-first-order` — are read too,
    /// and converted: see the `legacy` module).
    #[serde(deserialize_with = "legacy::regularizer")]
    pub regularizer: Regularizer,
    /// Hessian trace of the final model (SEHT-H over the weights), measured
    /// on this many training batches with this many probes each; 0 to skip.
    pub final_trace: FinalTrace,
    /// When a run counts as diverged and stops (`[divergence]`; may be
    /// left out: see [`DivergenceConfig`]).
    #[serde(default)]
    pub divergence: DivergenceConfig,
    /// Per-layer weight norms and training-mode Hessian block traces after
    /// every epoch, in `log.jsonl` (`[monitor]`; may be left out: off).
    #[serde(default, skip_serializing_if = "MonitorConfig::is_off")]
    pub monitor: MonitorConfig,
}

/// `[monitor] batches = B, probes = K`: after every epoch, each weight
/// tensor's norm `‖w_l‖` and its diagonal Hessian block's trace `tr(H_ll)`
/// in training mode (the Hessian the penalty sees: BatchNorm on batch
/// statistics), by `K` joint Rademacher probes on each of `B` fixed training
/// batches of 32 (the same batches, probes and dropout masks every epoch, so
/// that epochs differ by the model only). Costs `B·K` Hessian-vector
/// products per epoch; BatchNorm's running statistics are restored after
/// it, and it draws from its own random stream (`Stream::Monitor`), so a
/// run trains the same with or without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    /// Training batches (0: off).
    pub batches: usize,
    /// Probes per batch (0: off).
    pub probes: usize,
}

impl MonitorConfig {
    /// Whether nothing is monitored.
    pub fn is_off(&self) -> bool {
        self.batches == 0 || self.probes == 0
    }
}

/// When a run stops as diverged, with status `diverged` in `metrics.json`
/// (epoch, step, cause), a last line in `log.jsonl`, and no final model.
/// A non-finite training loss or objective always stops it; this adds a
/// bound on the objective.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DivergenceConfig {
    /// Stop when a step's objective — its training loss plus the
    /// regularizer's term (`λ·tr̂(H)` of the step's trace estimate on steps
    /// that apply the SEHT penalty, `(λ_JR/2)·‖J‖²` for the Jacobian
    /// regularizer; the loss itself for every other method, SAM and ASAM
    /// included) — is larger than this in absolute value. Must be finite
    /// and > 0.
    ///
    /// Default: none (only a non-finite value stops a run). A healthy
    /// objective is a cross-entropy of order `ln(classes)` to `ln(vocabulary)`
    /// (2.3 for 10 classes, about 10 for a word-level vocabulary) plus `λ`
    /// times a trace of order 10²–10⁴ at most on the paper's models (and
    /// positive on the image models); the exact SEHT-H penalty on BatchNorm
    /// networks instead drives the estimate towards −∞ (a final trace of
    /// −215,000 at λ = 1e-3 in `docs/results/quick`), so the objective
    /// leaves every healthy range.
    /// No single number separates the two for every λ and model size, so
    /// the presets that run SEHT-H set it (`configs/presets.toml`: 100 on
    /// the CPU presets, 1e4 for `paper`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_objective: Option<f64>,
}

impl DivergenceConfig {
    /// Why a step with training loss `loss` and objective `objective`
    /// diverged, or `None` when it did not.
    pub fn check(&self, loss: f64, objective: f64) -> Option<String> {
        if !loss.is_finite() {
            return Some(format!("non-finite loss {loss}"));
        }
        if !objective.is_finite() {
            return Some(format!("non-finite objective {objective} (loss {loss:.6})"));
        }
        match self.max_abs_objective {
            Some(bound) if objective.abs() > bound => Some(format!(
                "objective {objective:.4e} (loss {loss:.4}) beyond the bound {bound:e} (divergence.max_abs_objective)"
            )),
            _ => None,
        }
    }
}

/// How the final model's Hessian trace is measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinalTrace {
    /// Training batches (0: skip the measurement).
    pub batches: usize,
    /// Rademacher probes per batch.
    pub probes: usize,
}

/// Which dataset, and how it is batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataConfig {
    /// CIFAR-10, CIFAR-100 or Fashion-MNIST.
    Image(ImageDataConfig),
    /// A word-level corpus (WikiText-2 layout or three named splits).
    Text(TextDataConfig),
}

/// Which image dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageDataset {
    /// `cifar-10-batches-bin/`
    Cifar10,
    /// `cifar-100-binary/` (fine labels)
    Cifar100,
    /// Fashion-MNIST IDX files.
    FashionMnist,
}

/// Image data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageDataConfig {
    /// The dataset.
    pub dataset: ImageDataset,
    /// Its folder, relative to the data directory (or absolute).
    pub dir: String,
    /// Training batch size.
    pub batch_size: usize,
    /// Training images used: 0 for all, else a seeded class-balanced subset of
    /// this many (rounded down to a multiple of the class count).
    pub train_subset: usize,
    /// Test images used: 0 for all, else the first this many.
    pub test_subset: usize,
    /// Training images held out as a validation set (for λ selection): 0 for none.
    pub validation: usize,
    /// Random crop padding (0: none).
    pub crop_padding: usize,
    /// Random horizontal flips.
    pub hflip: bool,
    /// Worker threads preparing batches.
    pub workers: usize,
}

/// Text data settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextDataConfig {
    /// The folder, relative to the data directory (or absolute).
    pub dir: String,
    /// File names of the train, valid and test splits.
    pub files: [String; 3],
    /// Training batch size (columns).
    pub batch_size: usize,
    /// Evaluation batch size.
    pub eval_batch_size: usize,
    /// BPTT window length.
    pub bptt: usize,
    /// Training tokens used: 0 for all, else the first this many.
    pub train_tokens: usize,
    /// Validation and test tokens used: 0 for all, else the first this many
    /// of each (for quick runs; the paper's protocol uses all).
    pub eval_tokens: usize,
}

/// The model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelConfig {
    /// ResNet for 32×32 (or 28×28) inputs.
    Resnet {
        /// Stage widths.
        widths: [usize; 4],
        /// Blocks per stage.
        blocks: [usize; 4],
    },
    /// Wide ResNet.
    Wrn {
        /// Depth (6n + 4).
        depth: usize,
        /// Widen factor.
        widen_factor: usize,
        /// Dropout between convolutions.
        dropout: f64,
    },
    /// Recurrent language model.
    Rnn {
        /// `lstm` or `gru`.
        cell: RnnKind,
        /// Embedding size.
        embedding: usize,
        /// Hidden size.
        hidden: usize,
        /// Layers.
        layers: usize,
        /// Dropout.
        dropout: f64,
        /// Tie decoder and embedding weights.
        tie_weights: bool,
        /// Uniform initialisation range.
        init_range: f64,
    },
    /// GPT-style decoder language model (`seht_models::Gpt`): pre-norm
    /// blocks of causal multi-head attention and a 4× GELU MLP.
    Gpt {
        /// Width of the residual stream.
        d_model: usize,
        /// Attention heads per block (must divide `d_model`).
        heads: usize,
        /// Blocks.
        layers: usize,
        /// Longest sequence (position embeddings); at least `data.bptt`.
        context: usize,
        /// Dropout on embeddings, attention weights and residual branches.
        dropout: f64,
        /// Tie the output head to the token embedding.
        tie_weights: bool,
        /// Standard deviation of the initial weights (GPT-2: 0.02).
        init_std: f64,
        /// ε of every layer norm (PyTorch: 1e-5).
        layer_norm_eps: f64,
    },
}

impl ModelConfig {
    /// The checks of a [`ModelConfig::Gpt`] reading windows of `bptt` tokens,
    /// each naming its field (nothing for the other models).
    fn validate_gpt(&self, bptt: usize) -> Result<()> {
        let ModelConfig::Gpt { d_model, heads, layers, context, dropout, init_std, layer_norm_eps, .. } = *self else {
            return Ok(());
        };
        for (f, v) in [("model.d_model", d_model), ("model.heads", heads), ("model.layers", layers)] {
            if v == 0 {
                return Err(config(f, v, "must be at least 1"));
            }
        }
        if !d_model.is_multiple_of(heads) {
            return Err(config("model.heads", heads, format!("must divide model.d_model = {d_model}")));
        }
        if context < bptt {
            return Err(config("model.context", context, format!("must be at least data.bptt = {bptt}")));
        }
        // The position embedding is `context × d_model`: a context beyond
        // any text a window holds only allocates (1e8 asked for 51 GB).
        const MAX_CONTEXT: usize = 1 << 16;
        if context > MAX_CONTEXT {
            return Err(config(
                "model.context",
                context,
                format!("must be at most {MAX_CONTEXT} (and at least data.bptt)"),
            ));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(config("model.dropout", dropout, "must lie in [0, 1)"));
        }
        for (f, v) in [("model.init_std", init_std), ("model.layer_norm_eps", layer_norm_eps)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(config(f, v, "must be finite and > 0"));
            }
        }
        Ok(())
    }
}

/// The optimiser, with PyTorch's semantics: SGD with momentum (an `[optim]`
/// table without `kind`, as every config written before AdamW existed, or
/// `kind = "sgd"`) or AdamW (`kind = "adamw"`, Loshchilov & Hutter 2019).
///
/// ```toml
/// [optim]            # SGD
/// lr = 0.1
/// momentum = 0.9
/// weight_decay = 5e-4
/// clip_grad_norm = 0.0
///
/// [optim]            # AdamW
/// kind = "adamw"
/// lr = 1e-3
/// beta1 = 0.9
/// beta2 = 0.95
/// eps = 1e-8
/// weight_decay = 0.1
/// clip_grad_norm = 1.0
/// ```
///
/// An SGD config is written back exactly as before (no `kind`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimConfig {
    /// Which optimiser, with its own settings.
    pub kind: OptimKind,
    /// Initial learning rate.
    pub lr: f64,
    /// Weight decay: SGD adds `weight_decay·w` to the gradient (L2); AdamW
    /// decays the weights directly, `w ← w − lr·weight_decay·w`.
    pub weight_decay: f64,
    /// Clip the gradient's global norm to this value (0: no clipping).
    pub clip_grad_norm: f64,
}

/// Which optimiser an [`OptimConfig`] runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimKind {
    /// SGD with momentum (`torch.optim.SGD`, dampening 0).
    Sgd {
        /// Momentum (0 for plain SGD).
        momentum: f64,
    },
    /// AdamW (`torch.optim.AdamW`, `amsgrad = false`).
    AdamW {
        /// Decay of the first-moment average.
        beta1: f64,
        /// Decay of the second-moment average.
        beta2: f64,
        /// Added to the denominator `√v̂ + eps`.
        eps: f64,
    },
}

/// `[optim]` without `kind` (or `kind = "sgd"`): SGD's fields, in the order
/// every config has them.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SgdToml {
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    clip_grad_norm: f64,
}

/// `[optim]` with `kind = "adamw"`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdamWToml {
    kind: String,
    lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    clip_grad_norm: f64,
}

impl Serialize for OptimConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let Self { kind, lr, weight_decay, clip_grad_norm } = *self;
        match kind {
            OptimKind::Sgd { momentum } => SgdToml { lr, momentum, weight_decay, clip_grad_norm }.serialize(s),
            OptimKind::AdamW { beta1, beta2, eps } => {
                AdamWToml { kind: "adamw".into(), lr, beta1, beta2, eps, weight_decay, clip_grad_norm }.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for OptimConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut table = toml::Table::deserialize(d)?;
        let kind = match table.get("kind") {
            None => "sgd".to_string(),
            Some(toml::Value::String(k)) => k.clone(),
            Some(other) => return Err(D::Error::custom(format!("optim.kind = {other}: must be \"sgd\" or \"adamw\""))),
        };
        let named = |e: toml::de::Error| D::Error::custom(format!("optim (kind = \"{kind}\"): {}", e.message()));
        match kind.as_str() {
            "sgd" => {
                table.remove("kind");
                let o: SgdToml = toml::Value::Table(table).try_into().map_err(named)?;
                Ok(Self {
                    kind: OptimKind::Sgd { momentum: o.momentum },
                    lr: o.lr,
                    weight_decay: o.weight_decay,
                    clip_grad_norm: o.clip_grad_norm,
                })
            }
            "adamw" => {
                let o: AdamWToml = toml::Value::Table(table).try_into().map_err(named)?;
                Ok(Self {
                    kind: OptimKind::AdamW { beta1: o.beta1, beta2: o.beta2, eps: o.eps },
                    lr: o.lr,
                    weight_decay: o.weight_decay,
                    clip_grad_norm: o.clip_grad_norm,
                })
            }
            other => Err(D::Error::custom(format!("optim.kind = \"{other}\": must be \"sgd\" or \"adamw\""))),
        }
    }
}

/// Learning-rate schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ScheduleConfig {
    /// Constant.
    Constant,
    /// Cosine annealing from `lr` to 0 over the run (per epoch).
    Cosine,
    /// Multiply by `gamma` at each milestone epoch.
    MultiStep {
        /// Epochs at which to decay.
        milestones: Vec<usize>,
        /// Factor.
        gamma: f64,
    },
    /// Multiply by `factor` when the validation loss did not improve.
    Plateau {
        /// Factor (the paper divides by 4: 0.25).
        factor: f64,
    },
}

/// The regularization method: one typed variant per method of the paper's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Regularizer {
    /// Weight decay only (set in `optim`).
    Baseline,
    /// Label smoothing (Szegedy et al. 2016): targets `(1−ε)·onehot + ε/K`.
    LabelSmoothing {
        /// ε.
        epsilon: f64,
    },
    /// Confidence penalty (Pereyra et al. 2017): `L − β·H(p)`.
    ConfidencePenalty {
        /// β.
        beta: f64,
    },
    /// Cutout (DeVries & Taylor 2017).
    Cutout {
        /// Side of the square.
        size: usize,
    },
    /// Mixup (Zhang et al. 2018) with `λ ~ Beta(α, α)`.
    Mixup {
        /// α.
        alpha: f64,
    },
    /// Jacobian regularization (Hoffman et al. 2019):
    /// `L + (λ_JR/2)·‖J‖_F²`, `‖J‖_F²` by `n_proj` random projections.
    Jacobian {
        /// Projections.
        n_proj: usize,
        /// λ_JR.
        lambda: f64,
    },
    /// DropBlock (Ghiasi et al. 2018) after ResNet stages 3 and 4.
    Dropblock {
        /// Block size.
        block_size: usize,
        /// Keep probability.
        keep_prob: f64,
    },
    /// Dropout before the classifier.
    Dropout {
        /// Drop probability.
        p: f64,
    },
    /// SEHT: `L + λ·tr̂(H)`, with any estimator and any way of forming the
    /// penalty's gradient (the paper's SEHT-H and SEHT-D, exact or first-order).
    Seht(SehtPenalty),
    /// SAM (Foret et al. 2021): the gradient at `w + ρ·g/‖g‖`, every
    /// trainable variable perturbed (`seht_train::sam`). Not in the paper.
    Sam {
        /// ρ, the neighbourhood radius (the authors' CIFAR value: 0.05).
        rho: f64,
    },
    /// ASAM (Kwon et al. 2021): the gradient at `w + ρ·T²g/‖Tg‖`,
    /// `T = diag(|w| + η)` (`seht_train::sam`). Not in the paper.
    Asam {
        /// ρ (the authors' CIFAR value with SGD: 2.0).
        rho: f64,
        /// η (the authors': 0.01).
        eta: f64,
    },
    /// The Gauss–Newton trace penalty `L + λ·tr̂(G)` over the weights, `G`
    /// the generalised Gauss–Newton matrix of the cross-entropy (the Fisher
    /// information), estimated from labels drawn from the model
    /// (`seht_candle::gauss_newton`, `seht_candle::Penalty::gauss_newton`). Not in the paper.
    GaussNewton(GaussNewtonPenalty),
    /// What the paper's released code computes and adds to its loss: a
    /// detached `λ·1ᵀH1` that sends no gradient (see [`PaperCodePenalty`]).
    PaperCode(PaperCodePenalty),
}

/// The Gauss–Newton trace penalty: `{ kind = "gauss-newton", lambda, draws,
/// gradient = { kind = "exact-per-probe" } }` (also read as `{ kind =
/// "double-backprop" }`) or `gradient = { kind = "first-order",
/// relative_step = … }`; trained through the same `seht_candle::Penalty` as
/// the SEHT penalty (`Penalty::gauss_newton`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GaussNewtonPenalty {
    /// λ.
    pub lambda: f64,
    /// Label draws per step (each one backward pass and one sample of
    /// `tr(G)`; default 1, as Jastrzębski et al. 2021).
    #[serde(default = "one")]
    pub draws: usize,
    /// How the penalty's gradient is formed (both exact variants take one
    /// label draw at a time, by second-order autodiff).
    pub gradient: Gradient,
}

fn one() -> usize {
    1
}

impl GaussNewtonPenalty {
    /// A short name for tables.
    pub fn label(&self) -> String {
        let path = match self.gradient {
            Gradient::Exact | Gradient::ExactPerProbe => "",
            Gradient::FirstOrder { .. } => " first-order",
        };
        format!("Gauss–Newton{path} draws={} λ={}", self.draws, self.lambda)
    }
}

/// The SEHT regularizer: `{ kind = "seht", estimator = { … }, lambda, every,
/// rescale, gradient = { … } }`, the estimator and gradient in the forms of
/// `seht_estimator::Estimator` and `seht_candle::Gradient`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SehtPenalty {
    /// The trace estimator (SEHT-H: `{ kind = "hutchinson", probes = K,
    /// distribution = "rademacher" }`; SEHT-D: `{ kind = "seht-d", probes = K,
    /// p1 = p, p2 = p, reading = "partial-sum" }`).
    pub estimator: Estimator,
    /// λ.
    pub lambda: f64,
    /// Apply the penalty every `every`-th step only (1: every step).
    pub every: NonZeroU64,
    /// When `every > 1`, multiply λ by `every` on the steps that apply it, so
    /// that the expected penalty per step is unchanged.
    pub rescale: bool,
    /// How the penalty's gradient is formed (`{ kind = "exact-per-probe" }`,
    /// `{ kind = "exact" }`, `{ kind = "first-order" }`).
    pub gradient: Gradient,
    /// Which function's Hessian is penalised (`phase = "train"`, the default
    /// and the paper's, or `"eval"`; see [`PenaltyPhase`]).
    #[serde(default, skip_serializing_if = "PenaltyPhase::is_train")]
    pub phase: PenaltyPhase,
}

/// The phase of the forward pass whose Hessian a SEHT penalty takes.
///
/// `train` (the paper's): the step's own loss, BatchNorm on the batch's
/// statistics. Its trace is unbounded below on BatchNorm networks (the
/// batch statistics couple the examples; training-mode traces are negative
/// already at initialisation, `findings.md` §5), and the exact SEHT-H
/// penalty drives it towards −∞ until the network dies
/// (`docs/results/divergence`).
///
/// `eval`: the loss of the same batch with BatchNorm's running statistics
/// (and no dropout) — the curvature of the model that is deployed, which is
/// what the final `tr(H)` of every run measures. The step still trains on
/// the training-mode loss; the penalty's gradient is added to it
/// (`seht_candle::Penalty::penalty_gradients`), and the running
/// statistics are not moved by the extra pass. With fixed statistics a
/// network of convolutions, linear layers, BatchNorm, ReLU, max- and
/// average-pooling is, within one activation pattern, linear in each
/// single weight, so `∂²z/∂w_i² = 0`, every diagonal entry of `H` equals
/// the Gauss–Newton matrix's, and `tr(H) = tr(G) ≥ 0`: the penalty is
/// bounded below and a Rademacher SEHT-H estimate of it is an unbiased
/// estimate of `tr(G)` (tested in `tests/eval_phase.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PenaltyPhase {
    /// The training-mode loss (batch statistics).
    #[default]
    Train,
    /// The evaluation-mode loss (running statistics, no dropout).
    Eval,
}

impl PenaltyPhase {
    /// Whether this is the default, [`PenaltyPhase::Train`].
    pub fn is_train(&self) -> bool {
        *self == PenaltyPhase::Train
    }
}

/// What the paper's released code adds to its loss
/// (`seht_candle::paper_code`): `{ kind = "paper-code", lambda, probes,
/// every }`. Every `every` steps it computes `1ᵀH1` over the logits and
/// every tensor named `weight` (weights and BatchNorm scales) by double
/// backprop, `probes` times; the code adds `λ` times the value to its loss
/// as a constant, so the step's gradient is the baseline's, and so are its
/// weights (bit for bit, tested), at the cost of the extra passes. The value
/// is logged as the epoch's `trace_mean` (it is `1ᵀH1`, not a trace); the
/// step's objective, which `[divergence]` checks, is the loss alone, since
/// nothing is trained on the constant.
/// Follows `run.py` at commit `682d18e` with `prob = 1`; its Gaussian noise
/// on the constant (`add_noise`) changes nothing that is trained and is
/// not modelled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperCodePenalty {
    /// λ (the code's `lambda_JR`).
    pub lambda: f64,
    /// Products per evaluation (the code's `Hiter`, default 5).
    pub probes: std::num::NonZeroUsize,
    /// Evaluated every `every` steps (the code's `hess_interval`, default 10).
    pub every: NonZeroU64,
}

impl SehtPenalty {
    /// λ at optimiser step `step` (counted from 0 over the run), or `None`
    /// when this step is not one of every `every`-th. λ is multiplied by
    /// `every` when `rescale` is set.
    pub fn lambda_at_step(&self, step: u64) -> Option<f64> {
        let every = self.every.get();
        if !step.is_multiple_of(every) {
            return None;
        }
        Some(if self.rescale { self.lambda * every as f64 } else { self.lambda })
    }

    /// What making the penalty (`seht_candle::Penalty::new`) would refuse,
    /// as the same message: a first-order step outside `(0, 1)`, or an
    /// estimator without a probe plan (Hutch++) on the first-order path.
    fn check_penalty(&self) -> Result<()> {
        if let Gradient::FirstOrder { relative_step } = self.gradient {
            if let Some(r) = relative_step
                && !(r > 0.0 && r < 1.0)
            {
                return Err(config("regularizer.gradient.relative_step", r, "must lie in (0, 1)"));
            }
            if let Estimator::HutchPlusPlus(_) = self.estimator {
                use seht_estimator::Planned;
                self.estimator
                    .plan(1, &mut seht_estimator::probe_rng(0))
                    .map_err(|e| config("regularizer.estimator", self.label(), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// A short name: the estimator with its settings, λ, the period and the gradient path.
    pub fn label(&self) -> String {
        let est = match &self.estimator {
            Estimator::Hutchinson(h) if *h.distribution() == Distribution::Rademacher => {
                format!("SEHT-H K={}", h.probes())
            }
            Estimator::Hutchinson(h) => format!("Hutchinson {:?} K={}", h.distribution(), h.probes()),
            Estimator::SehtD(d) if d.p1().get() == d.p2().get() => {
                format!("SEHT-D K={} p={} {:?}", d.probes(), d.p1().get(), d.reading())
            }
            Estimator::SehtD(d) => {
                format!("SEHT-D K={} p1={} p2={} {:?}", d.probes(), d.p1().get(), d.p2().get(), d.reading())
            }
            Estimator::HutchPlusPlus(h) => format!("Hutch++ budget {}", h.budget()),
        };
        let path = match self.gradient {
            Gradient::Exact => " exact",
            Gradient::ExactPerProbe => "",
            Gradient::FirstOrder { .. } => " first-order",
        };
        let phase = match self.phase {
            PenaltyPhase::Train => "",
            PenaltyPhase::Eval => " eval-mode",
        };
        format!("{est}{path}{phase} λ={} every {}", self.lambda, self.every)
    }
}

/// The one setting of a regularizer that a λ grid varies and validation
/// selects: `lambda` (the penalties), `rho` (SAM, ASAM) or `epsilon`
/// (label smoothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strength {
    /// `regularizer.lambda`.
    Lambda,
    /// `regularizer.rho`.
    Rho,
    /// `regularizer.epsilon`.
    Epsilon,
}

impl Strength {
    /// The field's name in a config (`lambda`, `rho`, `epsilon`).
    pub fn field(self) -> &'static str {
        match self {
            Strength::Lambda => "lambda",
            Strength::Rho => "rho",
            Strength::Epsilon => "epsilon",
        }
    }

    /// Its symbol in tables and messages (λ, ρ, ε).
    pub fn symbol(self) -> &'static str {
        match self {
            Strength::Lambda => "λ",
            Strength::Rho => "ρ",
            Strength::Epsilon => "ε",
        }
    }
}

impl Regularizer {
    /// Which setting a grid varies and its value; `None` for a method that
    /// has none (baseline, cutout, mixup, …).
    pub fn strength(&self) -> Option<(Strength, f64)> {
        match *self {
            Regularizer::Seht(ref p) => Some((Strength::Lambda, p.lambda)),
            Regularizer::GaussNewton(ref p) => Some((Strength::Lambda, p.lambda)),
            Regularizer::PaperCode(p) => Some((Strength::Lambda, p.lambda)),
            Regularizer::Jacobian { lambda, .. } => Some((Strength::Lambda, lambda)),
            Regularizer::Sam { rho } | Regularizer::Asam { rho, .. } => Some((Strength::Rho, rho)),
            Regularizer::LabelSmoothing { epsilon } => Some((Strength::Epsilon, epsilon)),
            _ => None,
        }
    }

    /// Sets the setting [`Regularizer::strength`] names to `value` and
    /// returns which it was; `None` (and nothing changed) for a method
    /// without one. The value is checked by [`ExperimentConfig::validate`].
    pub fn set_strength(&mut self, value: f64) -> Option<Strength> {
        let (which, slot) = match self {
            Regularizer::Seht(p) => (Strength::Lambda, &mut p.lambda),
            Regularizer::GaussNewton(p) => (Strength::Lambda, &mut p.lambda),
            Regularizer::PaperCode(p) => (Strength::Lambda, &mut p.lambda),
            Regularizer::Jacobian { lambda, .. } => (Strength::Lambda, lambda),
            Regularizer::Sam { rho } | Regularizer::Asam { rho, .. } => (Strength::Rho, rho),
            Regularizer::LabelSmoothing { epsilon } => (Strength::Epsilon, epsilon),
            _ => return None,
        };
        *slot = value;
        Some(which)
    }
}

impl Regularizer {
    /// A short name for tables.
    pub fn label(&self) -> String {
        match self {
            Regularizer::Baseline => "baseline".into(),
            Regularizer::LabelSmoothing { epsilon } => format!("label smoothing ε={epsilon}"),
            Regularizer::ConfidencePenalty { beta } => format!("confidence penalty β={beta}"),
            Regularizer::Cutout { size } => format!("cutout {size}"),
            Regularizer::Mixup { alpha } => format!("mixup α={alpha}"),
            Regularizer::Jacobian { n_proj, lambda } => format!("jacobian n_proj={n_proj} λ={lambda}"),
            Regularizer::Dropblock { block_size, keep_prob } => format!("dropblock {block_size}/{keep_prob}"),
            Regularizer::Dropout { p } => format!("dropout {p}"),
            Regularizer::Seht(p) => p.label(),
            Regularizer::Sam { rho } => format!("SAM ρ={rho}"),
            Regularizer::Asam { rho, eta } => format!("ASAM ρ={rho} η={eta}"),
            Regularizer::GaussNewton(p) => p.label(),
            Regularizer::PaperCode(p) => {
                format!("paper code (1ᵀH1, no gradient) K={} λ={} every {}", p.probes, p.lambda, p.every)
            }
        }
    }

    fn validate(&self, text: bool) -> Result<()> {
        let unit = |f: &str, v: f64, lo_open: bool| -> Result<()> {
            let ok = if lo_open { v > 0.0 && v < 1.0 } else { (0.0..1.0).contains(&v) };
            if ok { Ok(()) } else { Err(config(format!("regularizer.{f}"), v, "must lie in (0, 1)")) }
        };
        let nonneg = |f: &str, v: f64| -> Result<()> {
            if v >= 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(config(format!("regularizer.{f}"), v, "must be finite and ≥ 0"))
            }
        };
        let positive = |f: &str, v: usize| -> Result<()> {
            if v >= 1 { Ok(()) } else { Err(config(format!("regularizer.{f}"), v, "must be at least 1")) }
        };
        let positive_real = |f: &str, v: f64| -> Result<()> {
            if v > 0.0 && v.is_finite() {
                Ok(())
            } else {
                Err(config(format!("regularizer.{f}"), v, "must be finite and > 0"))
            }
        };
        let image_only = |name: &str| -> Result<()> {
            if text { Err(config("regularizer.kind", name, "applies to image classification only")) } else { Ok(()) }
        };
        match *self {
            Regularizer::Baseline => Ok(()),
            Regularizer::LabelSmoothing { epsilon } => unit("epsilon", epsilon, true),
            Regularizer::ConfidencePenalty { beta } => nonneg("beta", beta),
            Regularizer::Cutout { size } => {
                image_only("cutout")?;
                positive("size", size)
            }
            Regularizer::Mixup { alpha } => {
                image_only("mixup")?;
                if alpha > 0.0 && alpha.is_finite() {
                    Ok(())
                } else {
                    Err(config("regularizer.alpha", alpha, "must be > 0"))
                }
            }
            Regularizer::Jacobian { n_proj, lambda } => {
                image_only("jacobian")?;
                positive("n_proj", n_proj)?;
                nonneg("lambda", lambda)
            }
            Regularizer::Dropblock { block_size, keep_prob } => {
                image_only("dropblock")?;
                positive("block_size", block_size)?;
                if keep_prob > 0.0 && keep_prob <= 1.0 {
                    Ok(())
                } else {
                    Err(config("regularizer.keep_prob", keep_prob, "must lie in (0, 1]"))
                }
            }
            Regularizer::Dropout { p } => unit("p", p, false),
            Regularizer::Seht(ref p) => {
                nonneg("lambda", p.lambda)?;
                p.check_penalty()?;
                match p.gradient {
                    Gradient::FirstOrder { relative_step: Some(r) } => check_relative_step(r, true),
                    _ => Ok(()),
                }
            }
            // Image only: the language model's recurrent state would be
            // carried on from the perturbed (second) pass.
            Regularizer::Sam { rho } => {
                image_only("sam")?;
                positive_real("rho", rho)
            }
            Regularizer::Asam { rho, eta } => {
                image_only("asam")?;
                positive_real("rho", rho)?;
                nonneg("eta", eta)
            }
            Regularizer::GaussNewton(ref p) => {
                nonneg("lambda", p.lambda)?;
                positive("draws", p.draws)?;
                match p.gradient {
                    // The library takes it as `exact-per-probe` (the draws go
                    // one at a time either way); a config names one form.
                    Gradient::Exact => Err(config(
                        "regularizer.gradient.kind",
                        "exact",
                        "the Gauss–Newton penalty takes its label draws one at a time: write \"exact-per-probe\" (or \"first-order\")",
                    )),
                    Gradient::FirstOrder { relative_step: Some(r) } if !(r > 0.0 && r < 1.0) => {
                        Err(config("regularizer.gradient.relative_step", r, "must lie in (0, 1)"))
                    }
                    Gradient::FirstOrder { relative_step: Some(r) } => check_relative_step(r, false),
                    _ => Ok(()),
                }
            }
            Regularizer::PaperCode(p) => nonneg("lambda", p.lambda),
        }
    }
}

/// The first non-finite float under `v`, as a config error naming its key path.
fn reject_non_finite(v: &toml::Value, path: String) -> Result<()> {
    match v {
        toml::Value::Float(x) if !x.is_finite() => Err(config(path, x, "must be finite")),
        toml::Value::Table(t) => {
            for (k, v) in t {
                reject_non_finite(v, if path.is_empty() { k.clone() } else { format!("{path}.{k}") })?;
            }
            Ok(())
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                reject_non_finite(v, format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A regularizer's `every` or `probes` below 1, as a config error naming it.
/// Their types (`NonZeroU64`, `NonZeroUsize`) refuse 0 as well, but the
/// regularizer is read through JSON values (for its older forms), where
/// serde's message loses the field's name.
fn reject_zero_counts(raw: &toml::Value) -> Result<()> {
    let Some(reg) = raw.get("regularizer") else { return Ok(()) };
    for field in ["every", "probes"] {
        if let Some(&toml::Value::Integer(v)) = reg.get(field)
            && v < 1
        {
            return Err(config(format!("regularizer.{field}"), v, "must be at least 1"));
        }
    }
    Ok(())
}

/// The smallest first-order relative step `ε_rel` whose rounding error the
/// training dtype (f32) resolves. The error model of
/// `seht_candle::first_order`: a difference of gradients computed in a
/// dtype of unit roundoff `u` has a rounding error of about `u/ε_rel` for a
/// first difference (the Gauss–Newton gradient, a Hessian-vector product)
/// and `u/ε_rel²` for a second difference (the SEHT gradient), relative to
/// the value. A step is refused where that term exceeds 0.1, a 10% error:
/// `ε_rel < sqrt(10·u)` ≈ 1.1e-3 (second difference) and `ε_rel < 10·u` ≈
/// 1.2e-6 (first difference), with `u` = f32's machine epsilon 1.19e-7. The
/// model matches what was measured for the SEHT gradient in f32 (issue 38):
/// `ε_rel = 1e-4` gives `u/ε_rel²` ≈ 12, relative errors of 8–11 were seen.
fn smallest_resolved_step(second_difference: bool) -> f64 {
    let u = f64::from(f32::EPSILON);
    if second_difference { (10.0 * u).sqrt() } else { 10.0 * u }
}

/// A first-order `relative_step` too small for f32, as a config error with
/// the reason and the values that work.
fn check_relative_step(relative_step: f64, second_difference: bool) -> Result<()> {
    let least = smallest_resolved_step(second_difference);
    if relative_step >= least {
        return Ok(());
    }
    let (what, term, why) = match second_difference {
        true => ("second difference", "u/ε²", " (u^(1/4), which balances rounding and the O(ε²) truncation)"),
        false => ("first difference", "u/ε", ""),
    };
    let u = f64::from(f32::EPSILON);
    let error = if second_difference { u / relative_step.powi(2) } else { u / relative_step };
    let default = DEFAULT_F32_RELATIVE_STEP;
    Err(config(
        "regularizer.gradient.relative_step",
        relative_step,
        format!(
            "too small for the f32 weights training uses: the gradient is a {what} of f32 gradients, whose relative rounding error {term} (u = {u:.2e}) is about {error:.2} at this step; use at least {least:.1e}, or leave relative_step out for the default {default:e}{why}"
        ),
    ))
}

impl ExperimentConfig {
    /// Whether `other` describes the same run as `self`: every field equal
    /// except `monitor` (what is logged, not what is trained) and
    /// `divergence`, the stopping rule, which a user may add, loosen or
    /// tighten on an existing run folder (a checkpoint written without a
    /// bound resumes under one; a run recorded as diverged stays diverged
    /// until its folder is removed).
    pub fn same_run(&self, other: &ExperimentConfig) -> bool {
        let mut a = self.clone();
        a.divergence = other.divergence;
        a.monitor = other.monitor;
        &a == other
    }

    /// Parses TOML; the error names the field (and line) at fault.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self> {
        // TOML has `nan` and `inf`; the regularizer is read through JSON
        // values (for its older forms), where they would become null: an
        // optional field would silently take its default. No setting may be
        // non-finite, so they are refused here, by name.
        if let Ok(raw) = toml::from_str::<toml::Value>(text) {
            reject_non_finite(&raw, String::new()).map_err(|e| e.in_config_file(path))?;
            reject_zero_counts(&raw).map_err(|e| e.in_config_file(path))?;
        }
        let cfg: Self = toml::from_str(text)
            .map_err(|e| Error::ConfigParse { path: path.to_path_buf(), message: e.to_string() })?;
        cfg.validate().map_err(|e| e.in_config_file(path))?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file. A missing file, or one that is not
    /// UTF-8 text, is [`Error::ConfigParse`] naming it and what to give.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ConfigParse {
                    path: path.to_path_buf(),
                    message:
                        "no such file; give the path of an experiment config (TOML), e.g. one of configs/<table>/*.toml"
                            .into(),
                });
            }
            Err(source) => return Err(Error::Io { path: path.to_path_buf(), source }),
        };
        let text = String::from_utf8(bytes).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            message: format!("not UTF-8 text ({e}); a config is a TOML file: restore it from a copy"),
        })?;
        Self::from_toml_str(&text, path)
    }

    /// The config as TOML (what is written beside the results).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# could not serialise the config: {e}\n"))
    }

    /// Checks every value before any training starts.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.name.contains(['/', '\\']) {
            return Err(config("name", &self.name, "must be non-empty and contain no path separator"));
        }
        if self.epochs == 0 {
            return Err(config("epochs", 0, "must be at least 1"));
        }
        let text = matches!(self.data, DataConfig::Text(_));
        match (&self.data, &self.model) {
            (DataConfig::Text(_), ModelConfig::Rnn { .. } | ModelConfig::Gpt { .. })
            | (DataConfig::Image(_), ModelConfig::Resnet { .. } | ModelConfig::Wrn { .. }) => {}
            _ => {
                return Err(config(
                    "model.kind",
                    format!("{:?}", self.model).split_whitespace().next().unwrap_or("?"),
                    "does not fit the data kind (image data needs resnet or wrn, text needs rnn or gpt)",
                ));
            }
        }
        if let DataConfig::Text(d) = &self.data {
            self.model.validate_gpt(d.bptt)?;
        }
        match &self.data {
            DataConfig::Image(d) => {
                if d.batch_size == 0 {
                    return Err(config("data.batch_size", 0, "must be at least 1"));
                }
                if d.workers == 0 {
                    return Err(config("data.workers", 0, "must be at least 1"));
                }
            }
            DataConfig::Text(d) => {
                for (f, v) in [
                    ("data.batch_size", d.batch_size),
                    ("data.eval_batch_size", d.eval_batch_size),
                    ("data.bptt", d.bptt),
                ] {
                    if v == 0 {
                        return Err(config(f, 0, "must be at least 1"));
                    }
                }
            }
        }
        let o = self.optim;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return Err(config("optim.lr", o.lr, "must be > 0"));
        }
        match o.kind {
            OptimKind::Sgd { momentum } => {
                if !(0.0..1.0).contains(&momentum) {
                    return Err(config("optim.momentum", momentum, "must lie in [0, 1)"));
                }
            }
            OptimKind::AdamW { beta1, beta2, eps } => {
                for (f, b) in [("optim.beta1", beta1), ("optim.beta2", beta2)] {
                    if !(0.0..1.0).contains(&b) {
                        return Err(config(f, b, "must lie in [0, 1)"));
                    }
                }
                if !(eps > 0.0 && eps.is_finite()) {
                    return Err(config("optim.eps", eps, "must be finite and > 0"));
                }
            }
        }
        for (f, v) in [("optim.weight_decay", o.weight_decay), ("optim.clip_grad_norm", o.clip_grad_norm)] {
            if v < 0.0 {
                return Err(config(f, v, "must be ≥ 0"));
            }
        }
        match &self.schedule {
            ScheduleConfig::MultiStep { gamma, .. } | ScheduleConfig::Plateau { factor: gamma }
                if !(*gamma > 0.0 && *gamma <= 1.0) =>
            {
                return Err(config("schedule.gamma/factor", gamma, "must lie in (0, 1]"));
            }
            _ => {}
        }
        if let Some(b) = self.divergence.max_abs_objective
            && !(b > 0.0 && b.is_finite())
        {
            return Err(config("divergence.max_abs_objective", b, "must be finite and > 0"));
        }
        if matches!(self.regularizer, Regularizer::Dropblock { .. })
            && !matches!(self.model, ModelConfig::Resnet { .. })
        {
            return Err(config("regularizer.kind", "dropblock", "is implemented for the ResNet only"));
        }
        self.regularizer.validate(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_text() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/demo/baseline.toml")).expect("demo")
    }

    fn parse(text: &str) -> Result<ExperimentConfig> {
        ExperimentConfig::from_toml_str(text, "test.toml".as_ref())
    }

    fn with_optim(optim: &str) -> String {
        let text = demo_text();
        let start = text.find("[optim]").expect("[optim]");
        let end = start + text[start..].find("\n[").expect("next table");
        format!("{}{optim}\n{}", &text[..start], &text[end + 1..])
    }

    /// An `[optim]` table without `kind` is SGD, read and written exactly
    /// as before AdamW existed (every shipped config reads so).
    #[test]
    fn optim_without_kind_is_sgd_and_is_written_back_unchanged() {
        let cfg = parse(&demo_text()).expect("demo");
        assert!(matches!(cfg.optim.kind, OptimKind::Sgd { .. }));
        let written = cfg.to_toml();
        let optim = &written[written.find("[optim]").expect("[optim]")..];
        let optim = &optim[..optim[1..].find("\n[").expect("next") + 1];
        assert_eq!(
            optim.lines().map(|l| l.split(' ').next().unwrap_or("")).collect::<Vec<_>>(),
            ["[optim]", "lr", "momentum", "weight_decay", "clip_grad_norm"]
        );
        assert_eq!(parse(&written).expect("written"), cfg);
        let explicit =
            with_optim("[optim]\nkind = \"sgd\"\nlr = 0.1\nmomentum = 0.9\nweight_decay = 0.0\nclip_grad_norm = 0.0\n");
        assert_eq!(parse(&explicit).expect("kind = sgd").optim.kind, OptimKind::Sgd { momentum: 0.9 });
    }

    #[test]
    fn adamw_is_read_checked_and_round_trips() {
        let adamw = "[optim]\nkind = \"adamw\"\nlr = 1e-3\nbeta1 = 0.9\nbeta2 = 0.95\neps = 1e-8\nweight_decay = 0.1\nclip_grad_norm = 1.0\n";
        let cfg = parse(&with_optim(adamw)).expect("adamw");
        assert_eq!(
            cfg.optim,
            OptimConfig {
                kind: OptimKind::AdamW { beta1: 0.9, beta2: 0.95, eps: 1e-8 },
                lr: 1e-3,
                weight_decay: 0.1,
                clip_grad_norm: 1.0
            }
        );
        assert_eq!(parse(&cfg.to_toml()).expect("TOML"), cfg);
        let json = serde_json::to_string(&cfg).expect("json");
        assert_eq!(serde_json::from_str::<ExperimentConfig>(&json).expect("from json"), cfg, "checkpoint state");
        for (bad, field) in [
            (adamw.replace("beta1 = 0.9\n", ""), "beta1"),
            (adamw.replace("eps = 1e-8", "eps = 1e-8\nmomentum = 0.9"), "momentum"),
            (adamw.replace("\"adamw\"", "\"adam\""), "optim.kind"),
            (adamw.replace("beta2 = 0.95", "beta2 = 1.0"), "optim.beta2"),
            (adamw.replace("eps = 1e-8", "eps = 0.0"), "optim.eps"),
        ] {
            let err = parse(&with_optim(&bad)).expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn gpt_fits_text_data_and_names_its_fields() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/transformer/baseline.toml"))
                .expect("transformer config");
        let cfg = parse(&text).expect("transformer");
        assert!(matches!(cfg.model, ModelConfig::Gpt { .. }));
        for (from, to, field) in [
            ("heads = 2", "heads = 3", "model.heads"),
            ("context = 32", "context = 4", "model.context"),
            ("context = 32", "context = 100000000", "model.context"),
            ("dropout = 0.1", "dropout = 1.0", "model.dropout"),
            ("weight_decay = 0.1", "weight_decay = -0.1", "`optim.weight_decay` = -0.1"),
            ("init_std = 0.02", "init_std = 0.0", "model.init_std"),
            ("kind = \"text\"", "kind = \"image\"", "data"),
        ] {
            assert!(text.contains(from), "{from}");
            let err = parse(&text.replacen(from, to, 1)).expect_err(field).to_string();
            assert!(err.contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn the_strength_a_grid_varies_is_read_and_set_by_type() {
        let mut sam = Regularizer::Sam { rho: 0.05 };
        assert_eq!(sam.strength(), Some((Strength::Rho, 0.05)));
        assert_eq!(sam.set_strength(0.1), Some(Strength::Rho));
        assert_eq!(sam, Regularizer::Sam { rho: 0.1 });
        let mut ls = Regularizer::LabelSmoothing { epsilon: 0.1 };
        assert_eq!(ls.set_strength(0.03), Some(Strength::Epsilon));
        assert_eq!(ls.strength(), Some((Strength::Epsilon, 0.03)));
        let mut gn =
            Regularizer::GaussNewton(GaussNewtonPenalty { lambda: 1.0, draws: 1, gradient: Gradient::ExactPerProbe });
        assert_eq!(gn.set_strength(1e-3), Some(Strength::Lambda));
        assert_eq!(gn.strength(), Some((Strength::Lambda, 1e-3)));
        let mut mixup = Regularizer::Mixup { alpha: 1.0 };
        assert_eq!(mixup.set_strength(0.5), None);
        assert_eq!(mixup, Regularizer::Mixup { alpha: 1.0 }, "nothing changed");
        assert_eq!(Regularizer::Baseline.strength(), None);
    }
}
