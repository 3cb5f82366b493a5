//! Learning-rate schedules.

use serde::{Deserialize, Serialize};

use crate::config::ScheduleConfig;

/// A schedule with its state (only the plateau schedule has any).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    base: f64,
    epochs: usize,
    cfg: ScheduleConfig,
    /// Plateau state: current learning rate and best validation loss.
    plateau_lr: f64,
    best: Option<f64>,
}

impl LrSchedule {
    /// A schedule from `base` over `epochs`.
    pub fn new(cfg: ScheduleConfig, base: f64, epochs: usize) -> Self {
        Self { base, epochs, cfg, plateau_lr: base, best: None }
    }

    /// The learning rate of epoch `epoch` (0-based).
    ///
    /// Cosine: `lr·(1 + cos(π·e/E))/2`; multi-step: `lr·γ^(number of milestones ≤ e)`.
    pub fn lr(&self, epoch: usize) -> f64 {
        match &self.cfg {
            ScheduleConfig::Constant => self.base,
            ScheduleConfig::Cosine => {
                self.base * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / self.epochs as f64).cos())
            }
            ScheduleConfig::MultiStep { milestones, gamma } => {
                self.base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
            }
            ScheduleConfig::Plateau { .. } => self.plateau_lr,
        }
    }

    /// Reports the validation loss at the end of an epoch (plateau schedule:
    /// multiply the rate by the factor when it did not improve).
    pub fn observe(&mut self, val_loss: f64) {
        if let ScheduleConfig::Plateau { factor } = self.cfg {
            match self.best {
                Some(b) if val_loss >= b => self.plateau_lr *= factor,
                _ => self.best = Some(val_loss),
            }
        }
    }
}
