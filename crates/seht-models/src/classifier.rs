//! What a training loop needs from an image classifier, whatever its
//! architecture: logits in a phase, and its parameters with their roles.

use candle_core::Tensor;
use candle_nn::VarMap;
use seht_candle::ParamSet;

use crate::error::Result;
use crate::phase::Phase;
use crate::resnet::ResNet;
use crate::wrn::WideResNet;

/// An image classifier: `(n, c, h, w)` images to `(n, classes)` logits.
pub trait ImageClassifier {
    /// Logits `(n, classes)` for images `(n, c, h, w)`; training or evaluation
    /// behaviour (BatchNorm statistics, dropout masks) from `phase`.
    ///
    /// # Errors
    ///
    /// Shape mismatches and candle's errors.
    fn logits(&self, xs: &Tensor, phase: Phase) -> Result<Tensor>;

    /// The model's variables in the `varmap` it was built in, with roles.
    ///
    /// # Errors
    ///
    /// When the `VarMap` holds variables the model did not create, or lacks one.
    fn param_set(&self, varmap: &VarMap) -> Result<ParamSet>;
}

impl ImageClassifier for ResNet {
    fn logits(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        self.forward_t(xs, phase)
    }

    fn param_set(&self, varmap: &VarMap) -> Result<ParamSet> {
        self.roles().param_set(varmap)
    }
}

impl ImageClassifier for WideResNet {
    fn logits(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        self.forward_t(xs, phase)
    }

    fn param_set(&self, varmap: &VarMap) -> Result<ParamSet> {
        self.roles().param_set(varmap)
    }
}
