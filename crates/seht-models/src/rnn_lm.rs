//! Word-level recurrent language models (the setting of Zaremba et al. 2014
//! and of PyTorch's `word_language_model` example): embedding → L stacked
//! LSTM or GRU layers → linear decoder over the vocabulary, with dropout on
//! the embeddings, between layers and on the output, all weights initialised
//! uniformly in `[−r, r]` (r = 0.1), biases at zero, and optional weight tying
//! (Press & Wolf 2017; needs `embedding == hidden`).
//!
//! The hidden state is carried across BPTT windows by the caller and detached
//! between them with [`RnnState::detach`].
//!
//! Parameter paths: `encoder.weight`, `rnn.{l}.weight_ih_l0|weight_hh_l0|bias_ih_l0|bias_hh_l0`,
//! `decoder.weight` (absent when tied), `decoder.bias`.

use candle_core::{D, IndexOp, Tensor};
use candle_nn::rnn::{GRU, GRUConfig, GRUState, LSTM, LSTMConfig, LSTMState, RNN};
use candle_nn::{Init, Module, VarBuilder};
use seht_candle::Role;

use crate::error::{Result, invalid};
use crate::phase::{Phase, dropout};
use crate::roles::Roles;

/// Which recurrent cell (with the `serde` feature: `"lstm"` or `"gru"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum RnnKind {
    /// Long short-term memory.
    Lstm,
    /// Gated recurrent unit.
    Gru,
}

/// Configuration of an [`RnnLm`]. No field has a hidden default.
#[derive(Debug, Clone, PartialEq)]
pub struct RnnLmConfig {
    /// The recurrent cell.
    pub kind: RnnKind,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Embedding size.
    pub embedding: usize,
    /// Hidden size of every layer.
    pub hidden: usize,
    /// Number of stacked layers.
    pub layers: usize,
    /// Dropout on embeddings, between layers and on the output.
    pub dropout: f64,
    /// Share the decoder's weight with the embedding.
    pub tie_weights: bool,
    /// Weights are drawn from `U(−init_range, init_range)`.
    pub init_range: f64,
}

impl RnnLmConfig {
    /// The paper's LSTM: 2 layers, 512 embedding and hidden, dropout 0.5.
    pub fn paper_lstm(vocab_size: usize) -> Self {
        Self {
            kind: RnnKind::Lstm,
            vocab_size,
            embedding: 512,
            hidden: 512,
            layers: 2,
            dropout: 0.5,
            tie_weights: false,
            init_range: 0.1,
        }
    }

    /// The paper's GRU: 2 layers, 512 embedding and hidden, dropout 0.3.
    pub fn paper_gru(vocab_size: usize) -> Self {
        Self { kind: RnnKind::Gru, dropout: 0.3, ..Self::paper_lstm(vocab_size) }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 2 {
            return Err(invalid("vocab_size", self.vocab_size, "must be at least 2"));
        }
        if self.embedding == 0 || self.hidden == 0 {
            return Err(invalid(
                "embedding/hidden",
                format!("{}/{}", self.embedding, self.hidden),
                "must be at least 1",
            ));
        }
        if self.layers == 0 {
            return Err(invalid("layers", self.layers, "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must lie in [0, 1)"));
        }
        if self.tie_weights && self.embedding != self.hidden {
            return Err(invalid(
                "tie_weights",
                format!("embedding {} ≠ hidden {}", self.embedding, self.hidden),
                "tied weights need embedding == hidden",
            ));
        }
        if self.init_range <= 0.0 || !self.init_range.is_finite() {
            return Err(invalid("init_range", self.init_range, "must be positive and finite"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
enum Layers {
    Lstm(Vec<LSTM>),
    Gru(Vec<GRU>),
}

/// The recurrent state of every layer.
#[derive(Debug, Clone)]
pub enum RnnState {
    /// LSTM `(h, c)` per layer.
    Lstm(Vec<LSTMState>),
    /// GRU `h` per layer.
    Gru(Vec<GRUState>),
}

impl RnnState {
    /// The same state cut from the graph: gradients stop at the window boundary
    /// (truncated backpropagation through time).
    pub fn detach(&self) -> Self {
        match self {
            RnnState::Lstm(s) => {
                RnnState::Lstm(s.iter().map(|s| LSTMState::new(s.h().detach(), s.c().detach())).collect())
            }
            RnnState::Gru(s) => RnnState::Gru(s.iter().map(|s| GRUState { h: s.h().detach() }).collect()),
        }
    }

    /// The hidden state `h` of each layer, `(batch, hidden)`.
    pub fn hidden(&self) -> Vec<&Tensor> {
        match self {
            RnnState::Lstm(s) => s.iter().map(|s| s.h()).collect(),
            RnnState::Gru(s) => s.iter().map(|s| s.h()).collect(),
        }
    }
}

/// A word-level RNN language model; see the module docs.
#[derive(Debug, Clone)]
pub struct RnnLm {
    cfg: RnnLmConfig,
    encoder: Tensor,
    layers: Layers,
    decoder_w: Tensor,
    decoder_b: Tensor,
    roles: Roles,
}

impl RnnLm {
    /// Builds the model, creating its variables through `vb`.
    pub fn new(cfg: &RnnLmConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut roles = Roles::default();
        let uniform = Init::Uniform { lo: -cfg.init_range, up: cfg.init_range };
        let zero = Init::Const(0.0);
        let ve = vb.pp("encoder");
        let encoder = ve.get_with_hints((cfg.vocab_size, cfg.embedding), "weight", uniform)?;
        roles.add(&ve, "weight", Role::Weight);
        let vr = vb.pp("rnn");
        let layers = match cfg.kind {
            RnnKind::Lstm => Layers::Lstm(
                (0..cfg.layers)
                    .map(|l| {
                        let d_in = if l == 0 { cfg.embedding } else { cfg.hidden };
                        let c = LSTMConfig {
                            w_ih_init: uniform,
                            w_hh_init: uniform,
                            b_ih_init: Some(zero),
                            b_hh_init: Some(zero),
                            ..Default::default()
                        };
                        let vl = vr.pp(l.to_string());
                        record_rnn(&vl, &mut roles);
                        candle_nn::lstm(d_in, cfg.hidden, c, vl)
                    })
                    .collect::<candle_core::Result<_>>()?,
            ),
            RnnKind::Gru => Layers::Gru(
                (0..cfg.layers)
                    .map(|l| {
                        let d_in = if l == 0 { cfg.embedding } else { cfg.hidden };
                        let c = GRUConfig {
                            w_ih_init: uniform,
                            w_hh_init: uniform,
                            b_ih_init: Some(zero),
                            b_hh_init: Some(zero),
                        };
                        let vl = vr.pp(l.to_string());
                        record_rnn(&vl, &mut roles);
                        candle_nn::gru(d_in, cfg.hidden, c, vl)
                    })
                    .collect::<candle_core::Result<_>>()?,
            ),
        };
        let vd = vb.pp("decoder");
        let decoder_w = if cfg.tie_weights {
            encoder.clone()
        } else {
            roles.add(&vd, "weight", Role::Weight);
            vd.get_with_hints((cfg.vocab_size, cfg.hidden), "weight", uniform)?
        };
        let decoder_b = vd.get_with_hints(cfg.vocab_size, "bias", zero)?;
        roles.add(&vd, "bias", Role::Bias);
        Ok(Self { cfg: cfg.clone(), encoder, layers, decoder_w, decoder_b, roles })
    }

    /// The configuration.
    pub fn config(&self) -> &RnnLmConfig {
        &self.cfg
    }

    /// An all-zero state for `batch` sequences.
    pub fn zero_state(&self, batch: usize) -> Result<RnnState> {
        Ok(match &self.layers {
            Layers::Lstm(ls) => {
                RnnState::Lstm(ls.iter().map(|l| l.zero_state(batch)).collect::<candle_core::Result<_>>()?)
            }
            Layers::Gru(ls) => {
                RnnState::Gru(ls.iter().map(|l| l.zero_state(batch)).collect::<candle_core::Result<_>>()?)
            }
        })
    }

    /// Logits `(batch, seq, vocab)` for token ids `(batch, seq)`, starting from
    /// `state`; returns the state after the last step (still on the graph).
    pub fn forward_t(&self, tokens: &Tensor, state: &RnnState, phase: Phase) -> Result<(Tensor, RnnState)> {
        let (batch, seq) = tokens.dims2()?;
        let emb = candle_nn::Embedding::new(self.encoder.clone(), self.cfg.embedding).forward(tokens)?; // (batch, seq, emb)
        let mut h = dropout(&emb, self.cfg.dropout, phase, 0)?;
        let new_state = match (&self.layers, state) {
            (Layers::Lstm(ls), RnnState::Lstm(ss)) => {
                RnnState::Lstm(self.run_layers(ls, ss, &mut h, seq, phase, |s: &LSTMState| s.h().clone())?)
            }
            (Layers::Gru(ls), RnnState::Gru(ss)) => {
                RnnState::Gru(self.run_layers(ls, ss, &mut h, seq, phase, |s: &GRUState| s.h().clone())?)
            }
            _ => return Err(invalid("state", "wrong cell type", "an LSTM needs an LSTM state and a GRU a GRU state")),
        };
        let logits = h
            .reshape((batch * seq, self.cfg.hidden))?
            .matmul(&self.decoder_w.t()?)?
            .broadcast_add(&self.decoder_b)?
            .reshape((batch, seq, self.cfg.vocab_size))?;
        Ok((logits, new_state))
    }

    /// Runs the stacked layers over `seq` steps of `h` (replaced by the last
    /// layer's outputs, with dropout between layers and after the last).
    #[allow(clippy::too_many_arguments)]
    fn run_layers<R: RNN>(
        &self,
        layers: &[R],
        states: &[R::State],
        h: &mut Tensor,
        seq: usize,
        phase: Phase,
        hidden: impl Fn(&R::State) -> Tensor,
    ) -> Result<Vec<R::State>>
    where
        R::State: Clone,
    {
        let mut out_states = Vec::with_capacity(layers.len());
        for (l, (layer, s0)) in layers.iter().zip(states).enumerate() {
            let mut s = s0.clone();
            let mut hs = Vec::with_capacity(seq);
            for t in 0..seq {
                s = layer.step(&h.i((.., t, ..))?.contiguous()?, &s)?;
                hs.push(hidden(&s));
            }
            *h = dropout(&Tensor::stack(&hs, 1)?, self.cfg.dropout, phase, 1 + l as u32)?;
            out_states.push(s);
        }
        Ok(out_states)
    }

    /// Mean cross-entropy of `logits (batch, seq, vocab)` against `targets (batch, seq)`.
    pub fn loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let v = logits.dim(D::Minus1)?;
        Ok(seht_candle::ops::cross_entropy(&logits.reshape(((), v))?, &targets.flatten_all()?)?)
    }

    /// Every variable the model created, with its role.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }
}

fn record_rnn(vb: &VarBuilder, roles: &mut Roles) {
    roles.add(vb, "weight_ih_l0", Role::Weight);
    roles.add(vb, "weight_hh_l0", Role::Weight);
    roles.add(vb, "bias_ih_l0", Role::Bias);
    roles.add(vb, "bias_hh_l0", Role::Bias);
}
