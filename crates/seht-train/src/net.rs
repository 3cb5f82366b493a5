//! The network a config names (an image classifier or a language model),
//! joined to the data it runs on: one [`Run`] per kind of run, so that an
//! image network with a text loader cannot be written; and the fixed
//! training batches that `seht trace` and `seht analyze` measure on
//! ([`Run::for_each_batch`]).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use seht_candle::ParamSet;
use seht_data::{Augment, BatchConfig, EpochBatches};
use seht_models::{
    Gpt, GptConfig, ImageClassifier, Phase, ResNet, ResNetConfig, RnnLm, RnnLmConfig, RnnState, WideResNet,
    WideResNetConfig, seeded_varbuilder,
};

use crate::config::{ExperimentConfig, ModelConfig};
use crate::data::{ImageData, Task, TextData};
use crate::error::{Error, Result, config};
use crate::losses;
use crate::roles::Roles;

/// The data of a run with the network that fits it.
pub(crate) enum Run {
    /// Image classification: a ResNet or WRN on images.
    Images {
        /// Training, validation and test images.
        data: ImageData,
        /// The classifier.
        net: Box<dyn ImageClassifier>,
    },
    /// Word-level language modelling: an LSTM, GRU or GPT-style language
    /// model on a corpus.
    Text {
        /// The corpus in columns.
        data: TextData,
        /// The language model.
        lm: TextModel,
    },
}

/// A language model of the config: recurrent or transformer.
pub(crate) enum TextModel {
    /// An LSTM or GRU language model.
    Rnn(RnnLm),
    /// A GPT-style decoder.
    Gpt(Gpt),
}

/// What a language model carries from one BPTT window to the next: an
/// RNN's hidden state; nothing for a transformer, which reads each window
/// on its own from its first token (its context is at least the window).
pub(crate) enum TextState {
    /// The recurrent state.
    Rnn(RnnState),
    /// No state.
    None,
}

impl TextState {
    /// The same state cut from the graph (truncated backpropagation).
    pub(crate) fn detach(&self) -> Self {
        match self {
            TextState::Rnn(s) => TextState::Rnn(s.detach()),
            TextState::None => TextState::None,
        }
    }
}

impl TextModel {
    /// The state before the first window, for `batch` columns.
    pub(crate) fn zero_state(&self, batch: usize) -> Result<TextState> {
        Ok(match self {
            TextModel::Rnn(lm) => TextState::Rnn(lm.zero_state(batch)?),
            TextModel::Gpt(_) => TextState::None,
        })
    }

    /// Logits `(batch, seq, vocab)` for the window `tokens (batch, seq)`
    /// read from `state`, and the state after it (still on the graph).
    pub(crate) fn forward_t(&self, tokens: &Tensor, state: &TextState, phase: Phase) -> Result<(Tensor, TextState)> {
        match (self, state) {
            (TextModel::Rnn(lm), TextState::Rnn(s)) => {
                let (logits, s) = lm.forward_t(tokens, s, phase)?;
                Ok((logits, TextState::Rnn(s)))
            }
            (TextModel::Gpt(lm), TextState::None) => Ok((lm.forward_t(tokens, phase)?, TextState::None)),
            _ => Err(Error::Internal("a language model was handed another model's state")),
        }
    }

    /// The model's variables with their roles.
    fn roles(&self) -> &seht_models::Roles {
        match self {
            TextModel::Rnn(lm) => lm.roles(),
            TextModel::Gpt(lm) => lm.roles(),
        }
    }
}

impl Run {
    /// Builds the config's network for `task` (its input channels and
    /// classes, or its vocabulary), initialised from the run's seed, in
    /// `varmap`.
    ///
    /// # Errors
    /// A model kind that does not fit the data kind (refused first by
    /// [`ExperimentConfig::validate`]), a dropout set in the wrong place, and
    /// the model's own errors.
    pub(crate) fn new(cfg: &ExperimentConfig, task: Task, varmap: &VarMap, device: &Device) -> Result<Run> {
        let vb = seeded_varbuilder(varmap, cfg.seed, DType::F32, device);
        Ok(match task {
            Task::Images(data) => {
                let shape = (data.train.shape.0, data.train.num_classes);
                Run::Images { net: image_net(cfg, shape, vb)?, data }
            }
            Task::Text(data) => Run::Text { lm: language_model(cfg, data.vocab, vb)?, data },
        })
    }

    /// What was loaded, for outputs.
    pub(crate) fn description(&self) -> &str {
        match self {
            Run::Images { data, .. } => &data.description,
            Run::Text { data, .. } => &data.description,
        }
    }

    /// The network's variables in `varmap`, with roles.
    pub(crate) fn param_set(&self, varmap: &VarMap) -> Result<ParamSet> {
        Ok(match self {
            Run::Images { net, .. } => net.param_set(varmap)?,
            Run::Text { lm, .. } => lm.roles().param_set(varmap)?,
        })
    }
}

/// The model kind of `cfg` is not the one its data needs.
fn model_misfit(cfg: &ExperimentConfig) -> Error {
    config(
        "model.kind",
        format!("{:?}", cfg.model).split_whitespace().next().unwrap_or("?"),
        "does not fit the data kind (image data needs resnet or wrn, text needs rnn or gpt)",
    )
}

fn dropout_elsewhere(model: &str) -> Error {
    config("regularizer.kind", "dropout", format!("a {model}'s dropout is set in model.dropout"))
}

/// The config's ResNet or WRN for `in_channels` and `classes`.
fn image_net(
    cfg: &ExperimentConfig,
    (in_channels, classes): (usize, usize),
    vb: candle_nn::VarBuilder,
) -> Result<Box<dyn ImageClassifier>> {
    Ok(match &cfg.model {
        ModelConfig::Resnet { widths, blocks } => {
            let extras = Roles::of(&cfg.regularizer).model;
            let (drop_block, head_dropout) = (extras.drop_block, extras.head_dropout.unwrap_or(0.0));
            let rc = ResNetConfig {
                in_channels,
                num_classes: classes,
                widths: *widths,
                blocks: *blocks,
                drop_block,
                head_dropout,
            };
            Box::new(ResNet::new(&rc, vb)?)
        }
        ModelConfig::Wrn { depth, widen_factor, dropout } => {
            if Roles::of(&cfg.regularizer).model.head_dropout.is_some() {
                return Err(dropout_elsewhere("WRN"));
            }
            let wc = WideResNetConfig {
                depth: *depth,
                widen_factor: *widen_factor,
                dropout: *dropout,
                in_channels,
                num_classes: classes,
            };
            Box::new(WideResNet::new(&wc, vb)?)
        }
        ModelConfig::Rnn { .. } | ModelConfig::Gpt { .. } => return Err(model_misfit(cfg)),
    })
}

/// The config's language model over `vocab` words.
fn language_model(cfg: &ExperimentConfig, vocab: usize, vb: candle_nn::VarBuilder) -> Result<TextModel> {
    if Roles::of(&cfg.regularizer).model.head_dropout.is_some() {
        return Err(dropout_elsewhere("language model"));
    }
    if let ModelConfig::Gpt { d_model, heads, layers, context, dropout, tie_weights, init_std, layer_norm_eps } =
        cfg.model
    {
        let gc = GptConfig {
            vocab_size: vocab,
            context,
            d_model,
            heads,
            layers,
            dropout,
            tie_weights,
            init_std,
            layer_norm_eps,
        };
        return Ok(TextModel::Gpt(Gpt::new(&gc, vb)?));
    }
    let ModelConfig::Rnn { cell, embedding, hidden, layers, dropout, tie_weights, init_range } = &cfg.model else {
        return Err(model_misfit(cfg));
    };
    let lc = RnnLmConfig {
        kind: match cell {
            crate::config::RnnKind::Lstm => seht_models::RnnKind::Lstm,
            crate::config::RnnKind::Gru => seht_models::RnnKind::Gru,
        },
        vocab_size: vocab,
        embedding: *embedding,
        hidden: *hidden,
        layers: *layers,
        dropout: *dropout,
        tie_weights: *tie_weights,
        init_range: *init_range,
    };
    Ok(TextModel::Rnn(RnnLm::new(&lc, vb)?))
}

/// Which training batches a measurement runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batches {
    /// At most this many.
    pub count: usize,
    /// Images per batch (text: the corpus's columns, whatever this says).
    pub size: usize,
    /// Only full batches of `size` (images).
    pub full_only: bool,
    /// Seed of the loader's streams: the order of the images.
    pub seed: u64,
}

impl Run {
    /// Calls `f(logits (N, C), mean cross-entropy)` on the first
    /// `batches.count` training batches, batch `b` in phase `phase(b)`:
    /// images in the order of `batches.seed`, without augmentation; text the
    /// first windows, each from a zero state, its logits flattened to one
    /// row per token. Returns the batches measured: fewer than asked when
    /// the training set holds fewer.
    pub(crate) fn for_each_batch(
        &self,
        batches: Batches,
        phase: impl Fn(usize) -> Phase,
        device: &Device,
        mut f: impl FnMut(&Tensor, &Tensor) -> Result<()>,
    ) -> Result<usize> {
        match self {
            Run::Images { data, net } => {
                let bc = BatchConfig {
                    batch_size: batches.size,
                    shuffle: true,
                    drop_last: batches.full_only,
                    augment: Augment::NONE,
                    seed: batches.seed,
                    workers: 1,
                    prefetch: 1,
                };
                let mut it = EpochBatches::new(data.train.clone(), bc, 0, 0)?;
                for b in 0..batches.count {
                    let Some((xs, ys)) = it.next_batch(device)? else { return Ok(b) };
                    let logits = net.logits(&xs, phase(b))?;
                    f(&logits, &losses::cross_entropy(&logits, &ys)?)?;
                }
                Ok(batches.count)
            }
            Run::Text { data, lm } => {
                let windows = batches.count.min(data.train.num_windows(data.bptt));
                for k in 0..windows {
                    let (x, y) = data.train.window(k, data.bptt, device)?;
                    let (logits, _) = lm.forward_t(&x, &lm.zero_state(data.train.batch())?, phase(k))?;
                    f(&logits.flatten_to(1)?, &RnnLm::loss(&logits, &y)?)?;
                }
                Ok(windows)
            }
        }
    }
}
