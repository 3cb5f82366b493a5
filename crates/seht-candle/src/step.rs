//! The penalty in one call: `L + λ·tr̂(H)`'s gradient as a candle
//! [`GradStore`], ready for any `candle_nn::Optimizer`.
//!
//! A [`Penalty`] says which estimator, which λ, which parameters the Hessian
//! is taken over (weights only by default, as in the paper), and how the
//! penalty's gradient is formed ([`Gradient`]):
//!
//! | [`Gradient`] | cost | memory | result |
//! | --- | --- | --- | --- |
//! | `Exact` | one third-order pass over all probes | K probes' graphs | exact |
//! | `ExactPerProbe` | one third-order pass per probe | one probe's graph | exact (same numbers) |
//! | `FirstOrder` | 1 + 2K first-order passes | a plain step's | `O(ε²)` finite-difference error |
//!
//! The three paths draw the same layers, probes and scale from the same
//! generator state (the estimator's [`ProbePlan`](seht_estimator::ProbePlan)),
//! so with one seed they estimate the same quantity and the two exact ones
//! return the same gradient up to rounding (tested in f64 to 1e-10).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
pub use seht_estimator::Gradient;
use seht_estimator::{Estimator, Planned, ProbeRng, TraceEstimate};

use crate::accumulate::{penalised_gradients, penalty_only_gradients};
use crate::autodiff::{backward_no_graph, check_higher_order};
use crate::error::{Error, Result};
use crate::first_order::{FirstOrderProbes, default_relative_step, first_order_inner};
use crate::gauss_newton::gauss_newton_penalty;
use crate::params::{Param, ParamSet, Role, Selection};
use crate::penalty::{penalised_loss, trace_penalty};

/// Which curvature matrix's trace a [`Penalty`] takes.
#[derive(Debug, Clone, PartialEq)]
pub enum Curvature {
    /// The Hessian `H` of the loss, its trace estimated by a
    /// [`TraceEstimator`](seht_estimator::TraceEstimator) (SEHT-H, SEHT-D,
    /// Hutchinson, Hutch++): the paper's penalty.
    Hessian(Estimator),
    /// The generalised Gauss–Newton matrix `G` of a softmax cross-entropy
    /// (the Fisher information), `tr(G)` estimated from `draws` label draws
    /// from the model per step ([`crate::gauss_newton`]; Jastrzębski et al.
    /// 2021). Needs the logits and labels ([`Objective::classification`]).
    /// Not in the paper.
    GaussNewton {
        /// Label draws per step (each one backward pass and one sample).
        draws: std::num::NonZeroUsize,
    },
}

/// What the closure given to [`Penalty::gradients`] computes from the
/// variables' current values: a scalar loss, or a classifier's logits and
/// labels (whose mean softmax cross-entropy is the loss), or both. A
/// `Tensor` converts into the first, so a closure may return the loss alone.
#[derive(Debug, Clone)]
pub struct Objective {
    loss: Option<Tensor>,
    classification: Option<(Tensor, Tensor)>,
}

impl From<Tensor> for Objective {
    fn from(loss: Tensor) -> Self {
        Self { loss: Some(loss), classification: None }
    }
}

impl Objective {
    /// A classifier's logits `(N, C)` and labels `(N,)` (`u32`); the loss is
    /// their mean softmax cross-entropy (`candle_nn::loss::cross_entropy`).
    pub fn classification(logits: Tensor, labels: Tensor) -> Self {
        Self { loss: None, classification: Some((logits, labels)) }
    }

    /// The same, with another loss than the plain cross-entropy (one with
    /// extra terms, e.g. label smoothing): the Hessian penalty takes this
    /// loss's Hessian and the step its gradient; the Gauss–Newton penalty
    /// still takes `G` of the logits' cross-entropy.
    pub fn with_loss(mut self, loss: Tensor) -> Self {
        self.loss = Some(loss);
        self
    }

    /// The scalar loss.
    fn loss(&self) -> candle_core::Result<Tensor> {
        match (&self.loss, &self.classification) {
            (Some(l), _) => Ok(l.clone()),
            (None, Some((z, y))) => candle_nn::loss::cross_entropy(z, y),
            (None, None) => Err(candle_core::Error::Msg("an objective with neither a loss nor logits".into())),
        }
    }
}

/// A curvature penalty `λ·tr̂(·)` of one training step: the trace of the
/// Hessian (the paper's SEHT) or of the Gauss–Newton matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Penalty {
    /// Whose trace, and how it is estimated.
    pub curvature: Curvature,
    /// λ, ≥ 0.
    pub lambda: f64,
    /// How the penalty's gradient is formed.
    pub gradient: Gradient,
    /// The parameters the Hessian is taken over ([`Selection::Weights`] unless
    /// changed with [`Penalty::over`]).
    pub selection: Selection,
}

/// What [`Penalty::gradients`] returns.
#[derive(Debug)]
pub struct PenalisedGrads {
    /// `∇(L + λ·tr̂(H))` for every trainable variable of the [`ParamSet`]
    /// (detached), keyed by the variables' tensors: hand it to
    /// `candle_nn::Optimizer::step`.
    pub grads: GradStore,
    /// The loss `L` at the unperturbed weights, without the penalty.
    pub loss: f64,
    /// The trace estimate. For [`Gradient::FirstOrder`] its samples are the
    /// central differences of `σᵀHσ` and `hvps` counts the products they stand
    /// for (two gradient passes each).
    pub estimate: TraceEstimate<f64>,
}

impl Penalty {
    /// A Hessian-trace penalty over the weights.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPenalty`] when λ is negative or not finite, or a
    /// first-order `relative_step` lies outside `(0, 1)`; and, for
    /// [`Gradient::FirstOrder`], the estimator's error when it has no probe
    /// plan (Hutch++).
    pub fn new(estimator: impl Into<Estimator>, lambda: f64, gradient: Gradient) -> Result<Self> {
        let estimator = estimator.into();
        check_settings(lambda, gradient)?;
        if let (Gradient::FirstOrder { .. }, Estimator::HutchPlusPlus(_)) = (&gradient, &estimator) {
            // Surface the estimator's own reason now rather than at the first step.
            estimator.plan(1, &mut seht_estimator::probe_rng(0))?;
        }
        Ok(Self { curvature: Curvature::Hessian(estimator), lambda, gradient, selection: Selection::Weights })
    }

    /// A Gauss–Newton-trace penalty over the weights, `tr(G)` from `draws`
    /// label draws per step ([`Curvature::GaussNewton`]). Both exact
    /// gradients take one draw at a time, by second-order autodiff.
    ///
    /// # Errors
    ///
    /// As [`Penalty::new`], and [`Error::InvalidPenalty`] for `draws = 0`.
    pub fn gauss_newton(draws: usize, lambda: f64, gradient: Gradient) -> Result<Self> {
        check_settings(lambda, gradient)?;
        let draws = std::num::NonZeroUsize::new(draws).ok_or(Error::InvalidPenalty {
            field: "draws",
            value: 0.0,
            reason: "must be at least 1",
        })?;
        Ok(Self { curvature: Curvature::GaussNewton { draws }, lambda, gradient, selection: Selection::Weights })
    }

    /// The same penalty over other parameters.
    pub fn over(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }

    /// The gradient of `L + λ·tr̂(H)` for every trainable variable of `params`.
    ///
    /// `loss` computes the loss from the variables' current values. The exact
    /// paths call it once; the first-order path calls it `1 + 2K` times
    /// (the unperturbed weights first, recording the activation pattern that
    /// the perturbed calls replay — [`crate::pattern`]), so it must compute
    /// the same function each time — the same batch, the same dropout masks —
    /// and the buffers it writes (BatchNorm running statistics, role
    /// [`Role::Buffer`]) are restored so that they move once. Whatever the
    /// closure records on its first call (logits, a recurrent state) belongs
    /// to the unperturbed weights. Probes (and SEHT-D's layer draw) come from
    /// `rng` only.
    ///
    /// Only the backward passes whose gradients are differentiated again keep
    /// their graph ([`backward_create_graph`](crate::backward_create_graph));
    /// the final pass and every first-order pass do not. Nothing global needs
    /// setting first; the exact paths run the self-check
    /// ([`check_higher_order`](crate::check_higher_order)) once per thread.
    ///
    /// # Errors
    ///
    /// [`Error::HigherOrderDisabled`] (exact paths, see above); the
    /// selection's errors ([`ParamSet::select`]); candle's; the estimator's.
    pub fn gradients<O: Into<Objective>>(
        &self,
        params: &ParamSet,
        mut objective: impl FnMut() -> candle_core::Result<O>,
        rng: &mut ProbeRng,
    ) -> Result<PenalisedGrads> {
        // The fields are public: check them again where they are used.
        check_settings(self.lambda, self.gradient)?;
        let weights = params.select(&self.selection)?;
        match &self.curvature {
            Curvature::Hessian(estimator) => {
                let mut loss = || objective().and_then(|o| o.into().loss());
                self.hessian_gradients(estimator, &weights, params, &mut loss, rng, true)
            }
            Curvature::GaussNewton { draws } => {
                let mut forward = || objective().map(Into::into);
                self.gauss_newton_gradients(draws.get(), &weights, params, &mut forward, rng)
            }
        }
    }

    /// The gradient of `λ·tr̂(H)` alone, `H` the Hessian of the function
    /// `loss` computes: [`Penalty::gradients`] without the loss's own
    /// gradient (left out, not subtracted, so no rounding is added). Its
    /// [`PenalisedGrads::loss`] is the value of that function. For a penalty
    /// on another function than the loss that is trained — the Hessian of
    /// the loss with BatchNorm's running statistics (evaluation mode, the
    /// model that is deployed), while the step trains on batch statistics.
    /// A variable the penalty does not reach has no entry in the store (its
    /// penalty gradient is zero).
    ///
    /// # Errors
    ///
    /// As [`Penalty::gradients`].
    pub fn penalty_gradients<O: Into<Objective>>(
        &self,
        params: &ParamSet,
        mut objective: impl FnMut() -> candle_core::Result<O>,
        rng: &mut ProbeRng,
    ) -> Result<PenalisedGrads> {
        check_settings(self.lambda, self.gradient)?;
        let weights = params.select(&self.selection)?;
        match &self.curvature {
            Curvature::Hessian(estimator) => {
                let mut loss = || objective().and_then(|o| o.into().loss());
                self.hessian_gradients(estimator, &weights, params, &mut loss, rng, false)
            }
            Curvature::GaussNewton { .. } => Err(Error::InvalidPenalty {
                field: "curvature",
                value: f64::NAN,
                reason: "Gauss–Newton has no penalty-only gradient: use Penalty::gradients",
            }),
        }
    }

    /// The Gauss–Newton path: `forward` gives logits and labels.
    fn gauss_newton_gradients(
        &self,
        draws: usize,
        weights: &[Param],
        params: &ParamSet,
        forward: &mut dyn FnMut() -> candle_core::Result<Objective>,
        rng: &mut ProbeRng,
    ) -> Result<PenalisedGrads> {
        let vars = params.trainable_vars();
        let buffers: Vec<Var> = params.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
        let mut logits = || -> candle_core::Result<(Tensor, Tensor, Option<Tensor>)> {
            let o = forward()?;
            let (z, y) = o.classification.ok_or_else(|| {
                candle_core::Error::Msg(
                    "the Gauss–Newton penalty needs the logits and labels: return Objective::classification(logits, labels)"
                        .into(),
                )
            })?;
            Ok((z, y, o.loss))
        };
        let r = gauss_newton_penalty(&vars, weights, &buffers, draws, self.lambda, self.gradient, rng, &mut logits)?;
        let grads = store(&vars, r.grads.into_iter().map(Some));
        Ok(PenalisedGrads { grads, loss: r.loss, estimate: r.estimate })
    }

    fn hessian_gradients(
        &self,
        estimator: &Estimator,
        weights: &[Param],
        params: &ParamSet,
        loss: &mut dyn FnMut() -> candle_core::Result<Tensor>,
        rng: &mut ProbeRng,
        with_loss: bool,
    ) -> Result<PenalisedGrads> {
        let vars = params.trainable_vars();
        if self.gradient.needs_higher_order() {
            check_higher_order()?;
        }
        match self.gradient {
            Gradient::Exact => {
                let l = loss()?;
                let value = scalar(&l)?;
                let (total, est) = if with_loss {
                    penalised_loss(&l, weights, estimator, self.lambda, rng)?
                } else {
                    let est = trace_penalty(&l, weights, estimator, rng)?;
                    (est.value.affine(self.lambda, 0.0)?, est)
                };
                let all = backward_no_graph(&total)?;
                let grads = store(&vars, vars.iter().map(|v| all.get(v.as_tensor()).map(Tensor::detach)));
                let mean = est.mean;
                let estimate = est.with_value(mean);
                Ok(PenalisedGrads { grads, loss: value, estimate })
            }
            Gradient::ExactPerProbe => {
                let l = loss()?;
                let value = scalar(&l)?;
                let r = if with_loss {
                    penalised_gradients(&l, weights, &vars, estimator, self.lambda, rng)?
                } else {
                    penalty_only_gradients(&l, weights, &vars, estimator, self.lambda, rng)?
                };
                Ok(PenalisedGrads { grads: store(&vars, r.grads.into_iter()), loss: value, estimate: r.estimate })
            }
            Gradient::FirstOrder { relative_step } => {
                let plan = estimator.plan(weights.len(), rng)?;
                let penalised: Vec<Param> = plan.blocks.iter().map(|&i| weights[i].clone()).collect();
                let estimate = |samples: Vec<f64>, hvps: usize| {
                    TraceEstimate::from_samples(samples, plan.target, plan.blocks.clone(), hvps)
                };
                let Some(first) = penalised.first() else {
                    // SEHT-D's draw selected no layer: a plain step, every sample 0.
                    let l = loss()?;
                    let value = scalar(&l)?;
                    let grads = if with_loss {
                        let all = backward_no_graph(&l)?;
                        store(&vars, vars.iter().map(|v| all.get(v.as_tensor()).map(Tensor::detach)))
                    } else {
                        GradStore::default()
                    };
                    return Ok(PenalisedGrads { grads, loss: value, estimate: estimate(vec![0.0; plan.probes], 0) });
                };
                let rel = relative_step.unwrap_or_else(|| default_relative_step(first.var.dtype()));
                let buffers: Vec<Var> = params.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
                let probes = FirstOrderProbes {
                    dist: &plan.distribution,
                    probes: plan.probes,
                    scale: plan.scale,
                    lambda: self.lambda,
                    relative_step: rel,
                };
                let r = first_order_inner(&vars, &penalised, &buffers, probes, rng, loss, with_loss)?;
                let hvps = r.steps.len();
                let grads = store(&vars, r.grads.into_iter().map(Some));
                Ok(PenalisedGrads { grads, loss: r.loss, estimate: estimate(r.samples, hvps) })
            }
        }
    }
}

/// λ and a first-order step, checked for either curvature.
fn check_settings(lambda: f64, gradient: Gradient) -> Result<()> {
    if !(lambda >= 0.0 && lambda.is_finite()) {
        return Err(Error::InvalidPenalty { field: "lambda", value: lambda, reason: "must be finite and ≥ 0" });
    }
    if let Gradient::FirstOrder { relative_step: Some(r) } = gradient
        && !(r > 0.0 && r < 1.0)
    {
        return Err(Error::InvalidPenalty { field: "relative_step", value: r, reason: "must lie in (0, 1)" });
    }
    Ok(())
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// A gradient store holding `grads[i]` for `vars[i]` (absent ones left out).
fn store(vars: &[Var], grads: impl Iterator<Item = Option<Tensor>>) -> GradStore {
    let mut out = GradStore::default();
    for (v, g) in vars.iter().zip(grads) {
        if let Some(g) = g {
            out.insert(v.as_tensor(), g);
        }
    }
    out
}
