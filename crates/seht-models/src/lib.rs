//! The paper's backbones on candle, at their real sizes, with small presets:
//! ResNet-18 for 32×32 inputs, WRN-28-10, and 2-layer LSTM and GRU word-level
//! language models; and a GPT-style decoder language model ([`Gpt`]). Every
//! model is built with `new(&cfg, vb)`, names its parameters through
//! `VarBuilder` paths, records each parameter's role
//! ([`Roles`]) so a penalty can take "weights only" without string matching,
//! and is checked to third order by finite differences (tests).
//!
//! Forward passes take a [`Phase`]: training (BatchNorm batch statistics,
//! dropout with masks from a seed) or evaluation.

mod classifier;
mod error;
mod gpt;
mod init;
mod phase;
mod resnet;
mod rnn_lm;
mod roles;
mod wrn;

pub use classifier::ImageClassifier;
pub use error::{Error, Result};
pub use gpt::{Gpt, GptConfig};
pub use init::seeded_varbuilder;
pub use phase::{Phase, drop_block, dropout};
pub use resnet::{DropBlockConfig, ResNet, ResNetConfig};
pub use rnn_lm::{RnnKind, RnnLm, RnnLmConfig, RnnState};
pub use roles::Roles;
pub use wrn::{WideResNet, WideResNetConfig};
