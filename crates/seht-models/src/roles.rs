//! The parameters a model creates, each with its role, and the layer helpers
//! that record them.

use candle_nn::{Conv2dConfig, Linear, VarBuilder, VarMap};
use seht_candle::ops::{BatchNorm, Conv2d};
use seht_candle::{ParamSet, Role};

use crate::error::{Error, Result};

/// Every variable a model created, by full `VarBuilder` path, with its role.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    entries: Vec<(String, Role)>,
}

fn path(vb: &VarBuilder, name: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") }
}

impl Roles {
    /// Records `name` under `vb`'s prefix with `role`.
    pub fn add(&mut self, vb: &VarBuilder, name: &str, role: Role) {
        self.entries.push((path(vb, name), role));
    }

    /// The recorded `(path, role)` pairs, in creation order.
    pub fn entries(&self) -> &[(String, Role)] {
        &self.entries
    }

    /// The role of a path.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, r)| *r)
    }

    /// The model's variables in `varmap`, each with its recorded role. Fails if
    /// the `VarMap` holds a variable the model did not declare, or lacks one it did.
    pub fn param_set(&self, varmap: &VarMap) -> Result<ParamSet> {
        {
            let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
            if let Some(name) = data.keys().find(|n| self.role_of(n).is_none()) {
                return Err(Error::UndeclaredVariable(name.clone()));
            }
            if let Some((name, _)) = self.entries.iter().find(|(n, _)| !data.contains_key(n)) {
                return Err(Error::MissingVariable(name.clone()));
            }
        }
        Ok(ParamSet::from_varmap_with(varmap, |n| self.role_of(n).unwrap_or(Role::Weight)))
    }
}

/// A `k×k` convolution without bias (ResNet and WRN use none).
pub(crate) fn conv(
    c_in: usize,
    c_out: usize,
    k: usize,
    stride: usize,
    padding: usize,
    vb: VarBuilder,
    roles: &mut Roles,
) -> Result<Conv2d> {
    let cfg = Conv2dConfig { padding, stride, ..Default::default() };
    // candle_nn's initialisation and names; seht_candle's convolution op
    // (lean, fast CPU kernels, every derivative order).
    let c = candle_nn::conv2d_no_bias(c_in, c_out, k, cfg, vb.clone())?;
    roles.add(&vb, "weight", Role::Weight);
    Ok(Conv2d::new(c.weight().clone(), padding, stride))
}

/// BatchNorm (ε = 1e-5, momentum 0.1, affine), as in PyTorch; the lean-graph
/// [`seht_candle::ops::BatchNorm`].
pub(crate) fn batch_norm(c: usize, vb: VarBuilder, roles: &mut Roles) -> Result<BatchNorm> {
    let bn = BatchNorm::new(c, vb.clone()).map_err(candle_core::Error::wrap)?;
    roles.add(&vb, "weight", Role::NormWeight);
    roles.add(&vb, "bias", Role::NormBias);
    roles.add(&vb, "running_mean", Role::Buffer);
    roles.add(&vb, "running_var", Role::Buffer);
    Ok(bn)
}

/// A linear layer with bias.
pub(crate) fn linear(d_in: usize, d_out: usize, vb: VarBuilder, roles: &mut Roles) -> Result<Linear> {
    let l = candle_nn::linear(d_in, d_out, vb.clone())?;
    roles.add(&vb, "weight", Role::Weight);
    roles.add(&vb, "bias", Role::Bias);
    Ok(l)
}
