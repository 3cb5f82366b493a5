//! A regularizer translated once into what it does to training: the loss a
//! batch's logits give, how the forward pass treats its inputs, the data
//! augmentation it adds, what it changes in the model, and how the step's
//! gradient is formed. The rest of the crate reads these roles; only
//! [`Roles::of`] matches on the [`Regularizer`].

use candle_core::Tensor;
use seht_models::DropBlockConfig;

use crate::config::{GaussNewtonPenalty, PaperCodePenalty, Regularizer, SehtPenalty};
use crate::error::Result;
use crate::losses;
use crate::sam::Sharpness;

/// The loss of a batch's logits `(N, C)` and labels `(N,)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum LossTerm {
    /// Mean softmax cross-entropy.
    CrossEntropy,
    /// Label smoothing (Szegedy et al. 2016) with ε.
    LabelSmoothing(f64),
    /// The confidence penalty (Pereyra et al. 2017) with β.
    ConfidencePenalty(f64),
}

impl LossTerm {
    /// The loss (a scalar on the graph).
    pub(crate) fn of(self, logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
        match self {
            LossTerm::CrossEntropy => losses::cross_entropy(logits, labels),
            LossTerm::LabelSmoothing(epsilon) => losses::label_smoothing(logits, labels, epsilon),
            LossTerm::ConfidencePenalty(beta) => losses::confidence_penalty(logits, labels, beta),
        }
    }
}

/// How an image forward pass treats its inputs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum InputRule {
    /// As they come.
    Plain,
    /// Mixup (Zhang et al. 2018): pairs mixed with `λ ~ Beta(α, α)`.
    Mixup {
        /// α.
        alpha: f64,
    },
    /// The Jacobian regularizer (Hoffman et al. 2019): the inputs a variable,
    /// `(λ_JR/2)·‖J‖_F²` by `n_proj` projections added to the loss.
    Jacobian {
        /// Projections.
        n_proj: usize,
        /// λ_JR.
        lambda: f64,
    },
}

/// What the regularizer changes in the model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct ModelExtras {
    /// DropBlock after the ResNet's stages 3 and 4.
    pub drop_block: Option<DropBlockConfig>,
    /// Dropout before the classifier, with this probability.
    pub head_dropout: Option<f64>,
}

/// How the step's gradient is formed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GradientRule {
    /// The loss's gradient.
    Plain,
    /// With the SEHT penalty `λ·tr̂(H)` on the steps it is due.
    Seht(SehtPenalty),
    /// With the Gauss–Newton penalty `λ·tr̂(G)`.
    GaussNewton(GaussNewtonPenalty),
    /// The loss's gradient, and what the paper's code computes beside it.
    PaperCode(PaperCodePenalty),
    /// The gradient at a perturbed point (SAM, ASAM) with radius ρ.
    Sharpness {
        /// ρ.
        rho: f64,
        /// SAM or ASAM.
        method: Sharpness,
    },
}

/// The roles of a run's regularizer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Roles {
    /// The loss of a batch.
    pub loss: LossTerm,
    /// How image inputs are treated.
    pub input: InputRule,
    /// Cutout's square side (DeVries & Taylor 2017), an augmentation of the data.
    pub cutout: Option<usize>,
    /// The model's extras.
    pub model: ModelExtras,
    /// How the gradient is formed.
    pub gradient: GradientRule,
}

impl Roles {
    /// The one translation of a regularizer into its roles.
    pub(crate) fn of(reg: &Regularizer) -> Roles {
        let mut r = Roles {
            loss: LossTerm::CrossEntropy,
            input: InputRule::Plain,
            cutout: None,
            model: ModelExtras::default(),
            gradient: GradientRule::Plain,
        };
        match *reg {
            Regularizer::Baseline => {}
            Regularizer::LabelSmoothing { epsilon } => r.loss = LossTerm::LabelSmoothing(epsilon),
            Regularizer::ConfidencePenalty { beta } => r.loss = LossTerm::ConfidencePenalty(beta),
            Regularizer::Cutout { size } => r.cutout = Some(size),
            Regularizer::Mixup { alpha } => r.input = InputRule::Mixup { alpha },
            Regularizer::Jacobian { n_proj, lambda } => r.input = InputRule::Jacobian { n_proj, lambda },
            Regularizer::Dropblock { block_size, keep_prob } => {
                r.model.drop_block = Some(DropBlockConfig { block_size, keep_prob });
            }
            Regularizer::Dropout { p } => r.model.head_dropout = Some(p),
            Regularizer::Seht(ref p) => r.gradient = GradientRule::Seht(p.clone()),
            Regularizer::Sam { rho } => r.gradient = GradientRule::Sharpness { rho, method: Sharpness::Sam },
            Regularizer::Asam { rho, eta } => {
                r.gradient = GradientRule::Sharpness { rho, method: Sharpness::Asam { eta } };
            }
            Regularizer::GaussNewton(ref p) => r.gradient = GradientRule::GaussNewton(p.clone()),
            Regularizer::PaperCode(p) => r.gradient = GradientRule::PaperCode(p),
        }
        r
    }
}
