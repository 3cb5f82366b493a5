//! One optimiser step: the forward pass a task supplies, the curvature
//! penalty when it is due (`seht_candle::Penalty`: the SEHT penalty on the
//! Hessian, or the Gauss–Newton penalty), SAM/ASAM, clipping, SGD.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use seht_candle::{Curvature, Objective, ParamSet, Penalty, Role, Selection};
use seht_estimator::{Stream, step_key};
use seht_models::Phase;

use crate::config::{ExperimentConfig, PaperCodePenalty, PenaltyPhase};
use crate::error::{Error, Result};
use crate::optim::{Optimizer, clip_grad_norm};
use crate::roles::{GradientRule, Roles};
use crate::sam::{Sharpness, sam_gradients};

/// What a task's forward pass gives the step.
pub(crate) struct Forward {
    /// What is differentiated: the loss plus any regularizer term.
    pub objective: Tensor,
    /// The loss reported in the logs (without regularizer terms).
    pub loss: f64,
    /// Correct top-1 predictions (images; 0 for text).
    pub correct: usize,
    /// Examples those were counted over (0 for text).
    pub count: usize,
    /// The logits `(N, C)` on the graph (text: one row per token), for the
    /// Gauss–Newton penalty.
    pub logits: Tensor,
    /// The labels `(N,)` of those rows.
    pub labels: Tensor,
}

impl Forward {
    /// The scalar `loss` as an `f64`.
    pub(crate) fn value(loss: &Tensor) -> Result<f64> {
        Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
    }
}

/// What one step did.
pub(crate) struct StepOutcome {
    /// The forward pass of the unperturbed weights.
    pub forward: Forward,
    /// The trace estimate, on steps that applied the penalty (`tr̂(H)` for
    /// SEHT, `tr̂(G)` for the Gauss–Newton penalty).
    pub trace: Option<f64>,
    /// The value whose gradient the step took: the forward pass's objective
    /// (the loss plus any regularizer term), plus `λ·tr̂(H)` with the step's
    /// λ and estimate on steps that applied the penalty.
    pub objective: f64,
}

/// What a step's gradient rule produced: the gradients, the forward pass of
/// the unperturbed weights, the trace estimate (when one was made) and the
/// objective whose gradient was taken.
type Taken = (GradStore, Forward, Option<f64>, f64);

/// The forward pass a step is given: the step's objective in a phase.
type ForwardFn<'a> = &'a mut dyn FnMut(Phase) -> Result<Forward>;

/// The optimiser and the gradient rule of a run.
pub(crate) struct Stepper {
    /// The config's optimiser (SGD or AdamW) over the trainable variables.
    pub optimizer: Optimizer,
    params: ParamSet,
    /// The regularizer's roles (the gradient rule here; the epoch reads the
    /// loss, input rule and augmentation).
    roles: Roles,
    clip: f64,
    seed: u64,
}

impl Stepper {
    /// The run's optimiser over `params`' trainable variables and its
    /// regularizer's roles.
    pub(crate) fn new(cfg: &ExperimentConfig, params: ParamSet) -> Self {
        let o = cfg.optim;
        Self {
            optimizer: Optimizer::new(params.trainable_vars(), &o),
            params,
            roles: Roles::of(&cfg.regularizer),
            clip: o.clip_grad_norm,
            seed: cfg.seed,
        }
    }

    /// The parameters (weights, buffers, …).
    pub(crate) fn params(&self) -> &ParamSet {
        &self.params
    }

    /// The regularizer's roles.
    pub(crate) fn roles(&self) -> &Roles {
        &self.roles
    }

    /// Optimiser step number `step` of the run with learning rate `lr`.
    ///
    /// `forward` computes the step's objective in the phase it is given,
    /// `Phase::Train { seed: key }` with `key = step_key(seed, step)`: the
    /// dropout masks, and any draw of its own (Mixup, Jacobian projections),
    /// come from their own streams of that key (`seht_estimator::streams`),
    /// so repeated calls repeat them. With the first-order penalty it is
    /// called `1 + 2K` times, the unperturbed weights first; that first
    /// result is returned. The probes and SEHT-D's layer draw come from
    /// [`Stream::Probes`] of the key, the Gauss–Newton penalty's sampled
    /// labels from [`Stream::LabelSampling`].
    pub(crate) fn step(&mut self, step: u64, lr: f64, forward: ForwardFn) -> Result<StepOutcome> {
        let key = step_key(self.seed, step);
        let (mut grads, forward, trace, objective) = match &self.roles.gradient {
            GradientRule::Seht(p) => match p.lambda_at_step(step) {
                Some(lambda) => {
                    let penalty = Penalty::new(p.estimator.clone(), lambda, p.gradient)?;
                    match p.phase {
                        PenaltyPhase::Eval => self.eval_penalised(&penalty, key, forward)?,
                        PenaltyPhase::Train => self.penalised(&penalty, key, Stream::Probes, forward)?,
                    }
                }
                None => plain(key, forward)?,
            },
            GradientRule::GaussNewton(gn) => {
                let penalty = Penalty::gauss_newton(gn.draws, gn.lambda, gn.gradient)?;
                self.penalised(&penalty, key, Stream::LabelSampling, forward)?
            }
            GradientRule::Sharpness { rho, method } => self.sharpness(*rho, *method, key, forward)?,
            GradientRule::PaperCode(pc) => self.paper_code(*pc, step, key, forward)?,
            GradientRule::Plain => plain(key, forward)?,
        };
        clip_grad_norm(&mut grads, &self.params.trainable_vars(), self.clip)?;
        self.optimizer.step(&grads, lr)?;
        Ok(StepOutcome { forward, trace, objective })
    }

    /// A curvature penalty on the step's own loss (the training-mode
    /// Hessian, or the Gauss–Newton matrix), its draws from `stream` of the
    /// step's key. The unperturbed pass is the first call (the first-order
    /// path records its activation pattern there).
    fn penalised(&self, penalty: &Penalty, key: u64, stream: Stream, forward: ForwardFn) -> Result<Taken> {
        let phase = Phase::Train { seed: key };
        let gauss_newton = matches!(penalty.curvature, Curvature::GaussNewton { .. });
        let mut first = None;
        let objective = || {
            let f = forward(phase).map_err(candle_core::Error::wrap)?;
            let out = match gauss_newton {
                true => Objective::classification(f.logits.clone(), f.labels.clone()),
                false => Objective::from(f.objective.clone()),
            };
            first.get_or_insert(f);
            Ok(out)
        };
        let r = penalty.gradients(&self.params, objective, &mut stream.rng(key))?;
        let f = first.ok_or(Error::Internal("the penalty returned without a forward pass"))?;
        let objective = r.loss + penalty.lambda * r.estimate.mean;
        Ok((r.grads, f, Some(r.estimate.mean), objective))
    }

    /// The Hessian of the evaluation-mode loss: the step trains on the
    /// training-mode loss (its pass moves the running statistics), and the
    /// penalty's gradient comes from a second pass in evaluation mode, which
    /// moves nothing.
    fn eval_penalised(&self, penalty: &Penalty, key: u64, forward: ForwardFn) -> Result<Taken> {
        let f = forward(Phase::Train { seed: key })?;
        let value = Forward::value(&f.objective)?;
        let mut grads = seht_candle::backward_no_graph(&f.objective)?;
        let objective = || forward(Phase::Eval).map(|e| e.objective).map_err(candle_core::Error::wrap);
        let r = penalty.penalty_gradients(&self.params, objective, &mut Stream::Probes.rng(key))?;
        for v in self.params.trainable_vars() {
            if let Some(pg) = r.grads.get(v.as_tensor()) {
                let sum = match grads.get(v.as_tensor()) {
                    Some(g) => (g + pg)?,
                    None => pg.clone(),
                };
                grads.insert(v.as_tensor(), sum);
            }
        }
        Ok((grads, f, Some(r.estimate.mean), value + penalty.lambda * r.estimate.mean))
    }

    /// SAM/ASAM: both passes get the same phase, so the same dropout masks
    /// and the same Mixup/projection draws (their streams of the step's key).
    fn sharpness(&self, rho: f64, method: Sharpness, key: u64, forward: ForwardFn) -> Result<Taken> {
        let buffers: Vec<Var> = self.params.with_role(Role::Buffer).map(|p| p.var.clone()).collect();
        let mut objective = || {
            let mut f = forward(Phase::Train { seed: key })?;
            let objective = f.objective.clone();
            f.objective = objective.detach(); // the graph goes with the first pass
            Ok((objective, f))
        };
        let r = sam_gradients(&self.params.trainable_vars(), &buffers, rho, method, &mut objective)?;
        let value = Forward::value(&r.first.objective)?;
        Ok((r.grads, r.first, None, value))
    }

    /// What the paper's code does: the value, at its cost, and the
    /// baseline's gradient (the value is a constant to it).
    fn paper_code(&self, pc: PaperCodePenalty, step: u64, key: u64, forward: ForwardFn) -> Result<Taken> {
        let f = forward(Phase::Train { seed: key })?;
        let trace = if step.is_multiple_of(pc.every.get()) {
            let tensors = self.params.select(&Selection::WeightsAndNormScales)?;
            let loss_of = |z: &Tensor| crate::losses::cross_entropy(z, &f.labels).map_err(candle_core::Error::wrap);
            Some(seht_candle::paper_code::paper_code_value(&f.logits, &loss_of, &tensors, pc.probes.get())?.value)
        } else {
            None
        };
        // The code adds λ·value as a constant: nothing is trained on it, so
        // the step's objective (what the divergence check reads) is the
        // loss, and the value goes to the log as the step's `trace` (it is
        // `1ᵀH1`, not a trace).
        let value = Forward::value(&f.objective)?;
        Ok((seht_candle::backward_no_graph(&f.objective)?, f, trace, value))
    }
}

/// The loss's own gradient.
fn plain(key: u64, forward: ForwardFn) -> Result<Taken> {
    let f = forward(Phase::Train { seed: key })?;
    let value = Forward::value(&f.objective)?;
    Ok((seht_candle::backward_no_graph(&f.objective)?, f, None, value))
}
