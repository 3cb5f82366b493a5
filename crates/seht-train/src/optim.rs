//! SGD with momentum and weight decay, AdamW, both with PyTorch's
//! semantics, and gradient-norm clipping.

use candle_core::{Tensor, Var, backprop::GradStore};

use crate::config::OptimKind;
use crate::error::Result;

/// SGD: `g ← ∇ + wd·w`; `b ← μ·b + g`; `w ← w − lr·b` (`b` starts at 0, so the
/// first step uses `g`, as `torch.optim.SGD` with dampening 0).
pub struct Sgd {
    vars: Vec<Var>,
    momentum: f64,
    weight_decay: f64,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    /// An optimiser over `vars`.
    pub fn new(vars: Vec<Var>, momentum: f64, weight_decay: f64) -> Self {
        let n = vars.len();
        Self { vars, momentum, weight_decay, buffers: vec![None; n] }
    }

    /// One step with learning rate `lr` from `grads` (variables without a
    /// gradient still decay).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        let gs: Vec<Option<Tensor>> = self.vars.iter().map(|v| grads.get(v.as_tensor()).cloned()).collect();
        self.step_with(&gs, lr)
    }

    /// One step from gradients given in the order of the optimiser's variables.
    pub fn step_with(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        for ((var, buf), g) in self.vars.iter().zip(self.buffers.iter_mut()).zip(grads) {
            let w = var.as_tensor();
            let g = match g {
                Some(g) => g.detach(),
                None => w.zeros_like()?,
            };
            let g = if self.weight_decay > 0.0 { (g + w.detach().affine(self.weight_decay, 0.0)?)? } else { g };
            let d = if self.momentum > 0.0 {
                let b = match buf.take() {
                    Some(b) => (b.affine(self.momentum, 0.0)? + g)?,
                    None => g,
                };
                *buf = Some(b.clone());
                b
            } else {
                g
            };
            var.set(&(w.detach() - d.affine(lr, 0.0)?)?)?;
        }
        Ok(())
    }

    /// The momentum buffers (`None` before the first step), for checkpoints.
    pub fn buffers(&self) -> &[Option<Tensor>] {
        &self.buffers
    }

    /// Restores momentum buffers from a checkpoint.
    pub fn set_buffers(&mut self, buffers: Vec<Option<Tensor>>) {
        self.buffers = buffers;
    }
}

/// Scales the gradients of `vars` in place so that their global L2 norm is at
/// most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> Result<f64> {
    let mut sq = 0.0;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), g.detach().affine(scale, 0.0)?);
            }
        }
    }
    Ok(norm)
}

/// AdamW (Loshchilov & Hutter 2019) with `torch.optim.AdamW`'s semantics
/// (`amsgrad = false`): for each variable with a gradient `g`, its own step
/// count `t ← t + 1`, then
///
/// ```text
/// w ← w − lr·wd·w                          (decoupled weight decay)
/// m ← β₁·m + (1 − β₁)·g,   v ← β₂·v + (1 − β₂)·g²
/// w ← w − lr · (m / (1 − β₁ᵗ)) / (√(v / (1 − β₂ᵗ)) + eps)
/// ```
///
/// with `m`, `v` starting at 0. A variable without a gradient is left as
/// it is (no decay, no step), as in PyTorch.
pub struct AdamW {
    vars: Vec<Var>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Per variable: `(t, m, v)`, `None` before its first step.
    state: Vec<Option<(u64, Tensor, Tensor)>>,
}

impl AdamW {
    /// An optimiser over `vars`.
    pub fn new(vars: Vec<Var>, (beta1, beta2, eps): (f64, f64, f64), weight_decay: f64) -> Self {
        let n = vars.len();
        Self { vars, beta1, beta2, eps, weight_decay, state: vec![None; n] }
    }

    /// One step with learning rate `lr` from `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (var, state) in self.vars.iter().zip(self.state.iter_mut()) {
            let Some(g) = grads.get(var.as_tensor()) else { continue };
            let (g, w) = (g.detach(), var.as_tensor().detach());
            let (t, m, v) = match state.take() {
                Some((t, m, v)) => (t + 1, m, v),
                None => (1, w.zeros_like()?, w.zeros_like()?),
            };
            let w = if self.weight_decay > 0.0 { w.affine(1.0 - lr * self.weight_decay, 0.0)? } else { w };
            let m = (m.affine(self.beta1, 0.0)? + g.affine(1.0 - self.beta1, 0.0)?)?;
            let v = (v.affine(self.beta2, 0.0)? + g.sqr()?.affine(1.0 - self.beta2, 0.0)?)?;
            let (c1, c2) = (1.0 - self.beta1.powf(t as f64), 1.0 - self.beta2.powf(t as f64));
            let denom = v.affine(1.0 / c2, 0.0)?.sqrt()?.affine(1.0, self.eps)?;
            var.set(&(w - m.div(&denom)?.affine(lr / c1, 0.0)?)?)?;
            *state = Some((t, m, v));
        }
        Ok(())
    }
}

/// The optimiser a config names.
pub enum Optimizer {
    /// SGD with momentum.
    Sgd(Sgd),
    /// AdamW.
    AdamW(AdamW),
}

impl Optimizer {
    /// The optimiser of `cfg` over `vars`.
    pub fn new(vars: Vec<Var>, cfg: &crate::config::OptimConfig) -> Self {
        match cfg.kind {
            OptimKind::Sgd { momentum } => Optimizer::Sgd(Sgd::new(vars, momentum, cfg.weight_decay)),
            OptimKind::AdamW { beta1, beta2, eps } => {
                Optimizer::AdamW(AdamW::new(vars, (beta1, beta2, eps), cfg.weight_decay))
            }
        }
    }

    /// One step with learning rate `lr` from `grads`.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => o.step(grads, lr),
            Optimizer::AdamW(o) => o.step(grads, lr),
        }
    }

    /// The optimiser's state as named tensors, for checkpoints: SGD's
    /// momentum buffers `momentum.<i>` (the names checkpoints always had);
    /// AdamW's `adamw.m.<i>`, `adamw.v.<i>` and step count `adamw.t.<i>` (a
    /// scalar f64), for the variables that have taken a step.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        match self {
            Optimizer::Sgd(o) => {
                for (i, b) in o.buffers().iter().enumerate() {
                    if let Some(b) = b {
                        out.push((format!("momentum.{i}"), b.detach()));
                    }
                }
            }
            Optimizer::AdamW(o) => {
                for (i, s) in o.state.iter().enumerate() {
                    if let Some((t, m, v)) = s {
                        out.push((format!("adamw.m.{i}"), m.detach()));
                        out.push((format!("adamw.v.{i}"), v.detach()));
                        out.push((format!("adamw.t.{i}"), Tensor::new(*t as f64, m.device())?));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Restores the state written by [`Optimizer::state_tensors`]: `get(key,
    /// like)` returns the checkpoint's tensor `key`, checked to have the
    /// shape and dtype of `like` (or `None` when absent).
    pub fn restore_state(
        &mut self,
        mut get: impl FnMut(&str, Option<&Tensor>) -> Result<Option<Tensor>>,
    ) -> Result<()> {
        match self {
            Optimizer::Sgd(o) => {
                let buffers = (0..o.vars.len())
                    .map(|i| get(&format!("momentum.{i}"), Some(o.vars[i].as_tensor())))
                    .collect::<Result<_>>()?;
                o.set_buffers(buffers);
            }
            Optimizer::AdamW(o) => {
                for i in 0..o.vars.len() {
                    let like = o.vars[i].as_tensor().clone();
                    let m = get(&format!("adamw.m.{i}"), Some(&like))?;
                    let v = get(&format!("adamw.v.{i}"), Some(&like))?;
                    let t = get(&format!("adamw.t.{i}"), None)?;
                    o.state[i] = match (m, v, t) {
                        (Some(m), Some(v), Some(t)) => {
                            Some((t.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()? as u64, m, v))
                        }
                        _ => None,
                    };
                }
            }
        }
        Ok(())
    }
}
