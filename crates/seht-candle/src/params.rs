//! Parameters by name and role, and which of them a penalty covers.
//!
//! A `candle_nn::VarMap` holds every `Var` a model created, including the
//! BatchNorm running statistics, which are state and not trainable
//! parameters. A [`ParamSet`] records each variable with its [`Role`], so that
//! the penalty can select "weights only" and an optimizer can be handed the
//! trainable variables without the buffers.

use candle_core::Var;
use candle_nn::VarMap;

use crate::error::{Error, Result};

/// What a parameter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A weight matrix or kernel: linear, convolution, embedding, recurrent.
    Weight,
    /// An additive bias.
    Bias,
    /// A normalisation layer's scale (BatchNorm/LayerNorm `weight`, γ).
    NormWeight,
    /// A normalisation layer's shift (BatchNorm/LayerNorm `bias`, β).
    NormBias,
    /// State that is not trained (BatchNorm running mean and variance).
    Buffer,
}

impl Role {
    /// A guess from a candle-nn parameter path, for models that do not record
    /// roles themselves. Rules, in order: a last segment `running_mean` /
    /// `running_var` / `num_batches_tracked` is a [`Buffer`](Role::Buffer);
    /// a path with a segment containing `bn`, `norm` or `ln` is a
    /// normalisation parameter ([`NormWeight`](Role::NormWeight) or
    /// [`NormBias`](Role::NormBias) by its last segment); a last segment
    /// starting with `bias` is a [`Bias`](Role::Bias); anything else is a
    /// [`Weight`](Role::Weight). Prefer explicit roles where the model can
    /// give them.
    pub fn guess_from_name(name: &str) -> Role {
        let segments: Vec<&str> = name.split('.').collect();
        let last = segments.last().copied().unwrap_or("");
        if matches!(last, "running_mean" | "running_var" | "num_batches_tracked") {
            return Role::Buffer;
        }
        let is_bias = last.starts_with("bias");
        let is_norm = segments[..segments.len().saturating_sub(1)]
            .iter()
            .any(|s| s.contains("bn") || s.contains("norm") || *s == "ln" || s.starts_with("ln_"));
        match (is_norm, is_bias) {
            (true, true) => Role::NormBias,
            (true, false) => Role::NormWeight,
            (false, true) => Role::Bias,
            (false, false) => Role::Weight,
        }
    }
}

/// A named parameter with its role.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable name (the `VarBuilder` path, e.g. `layer1.0.conv1.weight`).
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Its role.
    pub role: Role,
}

/// Which parameters a Hessian (and so a penalty) is taken over.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection {
    /// Weights only ([`Role::Weight`]): the paper's choice ("biases are
    /// ignored"). The default.
    #[default]
    Weights,
    /// Weights and normalisation scales (BatchNorm γ): a documented option,
    /// since γ rescales the curvature of everything after it.
    WeightsAndNormScales,
    /// Every trainable parameter (everything but buffers).
    Trainable,
    /// Exactly these parameters, by name.
    Names(Vec<String>),
}

/// A model's parameters, each with its role, in a stable (name-sorted) order.
#[derive(Debug, Clone, Default)]
pub struct ParamSet {
    params: Vec<Param>,
}

impl ParamSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a parameter.
    pub fn push(&mut self, name: impl Into<String>, var: Var, role: Role) {
        self.params.push(Param { name: name.into(), var, role });
        self.params.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// All variables of a `VarMap`, with roles from `role_of(name)`.
    pub fn from_varmap_with(varmap: &VarMap, role_of: impl Fn(&str) -> Role) -> Self {
        let data = varmap.data().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut params: Vec<Param> = data
            .iter()
            .map(|(name, var)| Param { name: name.clone(), var: var.clone(), role: role_of(name) })
            .collect();
        params.sort_by(|a, b| a.name.cmp(&b.name));
        Self { params }
    }

    /// All variables of a `VarMap`, with roles from [`Role::guess_from_name`].
    pub fn from_varmap(varmap: &VarMap) -> Self {
        Self::from_varmap_with(varmap, Role::guess_from_name)
    }

    /// All parameters, buffers included.
    pub fn all(&self) -> &[Param] {
        &self.params
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The parameters with a given role.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Param> {
        self.params.iter().filter(move |p| p.role == role)
    }

    /// The trainable variables (buffers excluded), for an optimizer.
    pub fn trainable_vars(&self) -> Vec<Var> {
        self.params.iter().filter(|p| p.role != Role::Buffer).map(|p| p.var.clone()).collect()
    }

    /// Number of trainable scalars (buffers excluded).
    pub fn num_trainable(&self) -> usize {
        self.params.iter().filter(|p| p.role != Role::Buffer).map(|p| p.var.elem_count()).sum()
    }

    /// The parameters a Hessian is taken over. Buffers are never selected;
    /// naming one, or an unknown name, is an error, and so is an empty result.
    pub fn select(&self, selection: &Selection) -> Result<Vec<Param>> {
        let picked: Vec<Param> = match selection {
            Selection::Weights => self.with_role(Role::Weight).cloned().collect(),
            Selection::WeightsAndNormScales => {
                self.params.iter().filter(|p| matches!(p.role, Role::Weight | Role::NormWeight)).cloned().collect()
            }
            Selection::Trainable => self.params.iter().filter(|p| p.role != Role::Buffer).cloned().collect(),
            Selection::Names(names) => {
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    let p = self.get(n).ok_or_else(|| Error::UnknownParameter(n.clone()))?;
                    if p.role == Role::Buffer {
                        return Err(Error::BufferSelected(n.clone()));
                    }
                    out.push(p.clone());
                }
                out
            }
        };
        if picked.is_empty() {
            return Err(Error::NoParameters(format!("{selection:?} matched none of {} parameters", self.params.len())));
        }
        Ok(picked)
    }
}
