//! The network a config names: an image classifier or a language model.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use seht_candle::ParamSet;
use seht_models::{
    DropBlockConfig, ImageClassifier, ResNet, ResNetConfig, RnnLm, RnnLmConfig, WideResNet, WideResNetConfig,
    seeded_varbuilder,
};

use crate::config::{ExperimentConfig, ModelConfig, Regularizer};
use crate::error::{Result, config};

/// The network of a run.
pub(crate) enum Net {
    /// ResNet or WRN.
    Image(Box<dyn ImageClassifier>),
    /// LSTM or GRU language model.
    Text(RnnLm),
}

impl Net {
    /// The network's variables in `varmap`, with roles.
    pub(crate) fn param_set(&self, varmap: &VarMap) -> Result<ParamSet> {
        Ok(match self {
            Net::Image(m) => m.param_set(varmap)?,
            Net::Text(m) => m.roles().param_set(varmap)?,
        })
    }
}

/// Builds the config's model for `in_channels` and `classes` (the vocabulary
/// for text), initialised from the run's seed.
pub(crate) fn build_net(
    cfg: &ExperimentConfig,
    (in_channels, classes): (usize, usize),
    varmap: &VarMap,
    device: &Device,
) -> Result<Net> {
    let vb = seeded_varbuilder(varmap, cfg.seed, DType::F32, device);
    let dropout_elsewhere =
        |model: &str| config("regularizer.kind", "dropout", format!("a {model}'s dropout is set in model.dropout"));
    Ok(match &cfg.model {
        ModelConfig::Resnet { widths, blocks } => {
            let (drop_block, head_dropout) = match cfg.regularizer {
                Regularizer::Dropblock { block_size, keep_prob } => {
                    (Some(DropBlockConfig { block_size, keep_prob }), 0.0)
                }
                Regularizer::Dropout { p } => (None, p),
                _ => (None, 0.0),
            };
            let rc = ResNetConfig {
                in_channels,
                num_classes: classes,
                widths: *widths,
                blocks: *blocks,
                drop_block,
                head_dropout,
            };
            Net::Image(Box::new(ResNet::new(&rc, vb)?))
        }
        ModelConfig::Wrn { depth, widen_factor, dropout } => {
            if let Regularizer::Dropout { .. } = cfg.regularizer {
                return Err(dropout_elsewhere("WRN"));
            }
            let wc = WideResNetConfig {
                depth: *depth,
                widen_factor: *widen_factor,
                dropout: *dropout,
                in_channels,
                num_classes: classes,
            };
            Net::Image(Box::new(WideResNet::new(&wc, vb)?))
        }
        ModelConfig::Rnn { cell, embedding, hidden, layers, dropout, tie_weights, init_range } => {
            if let Regularizer::Dropout { .. } = cfg.regularizer {
                return Err(dropout_elsewhere("language model"));
            }
            let lc = RnnLmConfig {
                kind: match cell {
                    crate::config::RnnKind::Lstm => seht_models::RnnKind::Lstm,
                    crate::config::RnnKind::Gru => seht_models::RnnKind::Gru,
                },
                vocab_size: classes,
                embedding: *embedding,
                hidden: *hidden,
                layers: *layers,
                dropout: *dropout,
                tie_weights: *tie_weights,
                init_range: *init_range,
            };
            Net::Text(RnnLm::new(&lc, vb)?)
        }
    })
}
