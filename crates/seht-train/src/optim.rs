//! SGD with momentum and weight decay, PyTorch semantics, and gradient-norm
//! clipping.

use candle_core::{Tensor, Var, backprop::GradStore};

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
