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
//!
//! The cells are PyTorch's (`torch.nn.LSTM`, `torch.nn.GRU`: gate order
//! i, f, g, o and r, z, n; weights `(gates·hidden, d_in)`), computed as
//! candle_nn's `LSTM::step`/`GRU::step` compute them, with two changes that
//! make the same arithmetic cheaper to differentiate (issue 33): the input
//! projections `x·W_ihᵀ + b_ih` of all steps are one matrix product, and the
//! recurrent product uses `W_hhᵀ` made contiguous once per window, so the
//! per-step weight gradients accumulate as contiguous matrices and are
//! transposed back once (candle_nn's step adds every step's transposed
//! gradient into the weight's gradient with a strided add).

use candle_core::{D, IndexOp, Tensor};
use candle_nn::rnn::{GRUState, LSTMState};
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

/// One recurrent layer's variables; `gates` is 4 (LSTM) or 3 (GRU).
#[derive(Debug, Clone)]
struct Recurrent {
    kind: RnnKind,
    /// `(gates·hidden, d_in)`.
    w_ih: Tensor,
    /// `(gates·hidden, hidden)`.
    w_hh: Tensor,
    /// `(gates·hidden)`.
    b_ih: Tensor,
    /// `(gates·hidden)`.
    b_hh: Tensor,
}

impl Recurrent {
    /// Creates the variables in candle_nn's (and PyTorch's) order and names,
    /// so initial values and checkpoints are those of `candle_nn::lstm`/`gru`.
    fn new(kind: RnnKind, d_in: usize, hidden: usize, w_init: Init, vb: &VarBuilder) -> Result<Self> {
        let g = match kind {
            RnnKind::Lstm => 4,
            RnnKind::Gru => 3,
        } * hidden;
        let zero = Init::Const(0.0);
        Ok(Self {
            kind,
            w_ih: vb.get_with_hints((g, d_in), "weight_ih_l0", w_init)?,
            w_hh: vb.get_with_hints((g, hidden), "weight_hh_l0", w_init)?,
            b_ih: vb.get_with_hints(g, "bias_ih_l0", zero)?,
            b_hh: vb.get_with_hints(g, "bias_hh_l0", zero)?,
        })
    }

    /// Runs the layer over `x (batch, seq, d_in)` from `state`; returns the
    /// outputs `(batch, seq, hidden)` and the state after the last step.
    fn run(&self, x: &Tensor, state: &LayerState) -> candle_core::Result<(Tensor, LayerState)> {
        let (batch, seq, d_in) = x.dims3()?;
        // Input projections of every step at once: (batch, seq, gates·hidden).
        let xp = x.reshape((batch * seq, d_in))?.matmul(&self.w_ih.t()?)?.broadcast_add(&self.b_ih)?.reshape((
            batch,
            seq,
            (),
        ))?;
        let w_hh_t = self.w_hh.t()?.contiguous()?;
        let mut outs = Vec::with_capacity(seq);
        let mut st = state.clone();
        for t in 0..seq {
            let xp_t = xp.i((.., t, ..))?;
            let hp = st.h.matmul(&w_hh_t)?.broadcast_add(&self.b_hh)?;
            st = match self.kind {
                RnnKind::Lstm => {
                    let chunks = (xp_t + hp)?.chunk(4, 1)?;
                    let in_gate = candle_nn::ops::sigmoid(&chunks[0])?;
                    let forget_gate = candle_nn::ops::sigmoid(&chunks[1])?;
                    let cell_gate = chunks[2].tanh()?;
                    let out_gate = candle_nn::ops::sigmoid(&chunks[3])?;
                    let Some(c) = &st.c else { candle_core::bail!("an LSTM layer needs a cell state") };
                    let next_c = ((forget_gate * c)? + (in_gate * cell_gate)?)?;
                    let next_h = (out_gate * next_c.tanh()?)?;
                    LayerState { h: next_h, c: Some(next_c) }
                }
                RnnKind::Gru => {
                    let ci = xp_t.chunk(3, 1)?;
                    let ch = hp.chunk(3, 1)?;
                    let r = candle_nn::ops::sigmoid(&(&ci[0] + &ch[0])?)?;
                    let z = candle_nn::ops::sigmoid(&(&ci[1] + &ch[1])?)?;
                    let n = (&ci[2] + (r * &ch[2])?)?.tanh();
                    let next_h = ((&z * &st.h)? - ((&z - 1.)? * n)?)?;
                    LayerState { h: next_h, c: None }
                }
            };
            outs.push(st.h.clone());
        }
        Ok((Tensor::stack(&outs, 1)?, st))
    }
}

/// The state of one layer inside [`Recurrent::run`].
#[derive(Debug, Clone)]
struct LayerState {
    h: Tensor,
    c: Option<Tensor>,
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
    layers: Vec<Recurrent>,
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
        let layers = (0..cfg.layers)
            .map(|l| {
                let d_in = if l == 0 { cfg.embedding } else { cfg.hidden };
                let vl = vr.pp(l.to_string());
                record_rnn(&vl, &mut roles);
                Recurrent::new(cfg.kind, d_in, cfg.hidden, uniform, &vl)
            })
            .collect::<Result<Vec<_>>>()?;
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
        let zeros = || Tensor::zeros((batch, self.cfg.hidden), self.encoder.dtype(), self.encoder.device());
        Ok(match self.cfg.kind {
            RnnKind::Lstm => RnnState::Lstm(
                self.layers.iter().map(|_| Ok(LSTMState::new(zeros()?, zeros()?))).collect::<Result<_>>()?,
            ),
            RnnKind::Gru => {
                RnnState::Gru(self.layers.iter().map(|_| Ok(GRUState { h: zeros()? })).collect::<Result<_>>()?)
            }
        })
    }

    /// Logits `(batch, seq, vocab)` for token ids `(batch, seq)`, starting from
    /// `state`; returns the state after the last step (still on the graph).
    pub fn forward_t(&self, tokens: &Tensor, state: &RnnState, phase: Phase) -> Result<(Tensor, RnnState)> {
        let (batch, seq) = tokens.dims2()?;
        let emb = candle_nn::Embedding::new(self.encoder.clone(), self.cfg.embedding).forward(tokens)?; // (batch, seq, emb)
        let mut h = dropout(&emb, self.cfg.dropout, phase, 0)?;
        let states: Vec<LayerState> = match (self.cfg.kind, state) {
            (RnnKind::Lstm, RnnState::Lstm(ss)) => {
                ss.iter().map(|s| LayerState { h: s.h().clone(), c: Some(s.c().clone()) }).collect()
            }
            (RnnKind::Gru, RnnState::Gru(ss)) => ss.iter().map(|s| LayerState { h: s.h().clone(), c: None }).collect(),
            _ => return Err(invalid("state", "wrong cell type", "an LSTM needs an LSTM state and a GRU a GRU state")),
        };
        if states.len() != self.layers.len() {
            let got = format!("{} layers for a model of {}", states.len(), self.layers.len());
            return Err(invalid("state", got, "needs one state per layer (see RnnLm::zero_state)"));
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for (l, (layer, s0)) in self.layers.iter().zip(&states).enumerate() {
            let (y, s) = layer.run(&h, s0)?;
            h = dropout(&y, self.cfg.dropout, phase, 1 + l as u32)?;
            out.push(s);
        }
        let new_state = match self.cfg.kind {
            RnnKind::Lstm => RnnState::Lstm(
                out.into_iter()
                    .map(|s| match s.c {
                        Some(c) => Ok(LSTMState::new(s.h, c)),
                        None => Err(invalid("state", "no cell state", "an LSTM layer returns one")),
                    })
                    .collect::<Result<_>>()?,
            ),
            RnnKind::Gru => RnnState::Gru(out.into_iter().map(|s| GRUState { h: s.h }).collect()),
        };
        let logits = h
            .reshape((batch * seq, self.cfg.hidden))?
            .matmul(&self.decoder_w.t()?)?
            .broadcast_add(&self.decoder_b)?
            .reshape((batch, seq, self.cfg.vocab_size))?;
        Ok((logits, new_state))
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
