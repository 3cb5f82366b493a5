//! A GPT-style decoder-only language model (Radford et al. 2019, GPT-2;
//! the layout of Karpathy's nanoGPT): token and position embeddings,
//! `layers` pre-norm blocks
//!
//! ```text
//! x ← x + Dropout(W_o · Attention(LN₁(x)))        causal, `heads` heads
//! x ← x + Dropout(W₂ · GELU(W₁ · LN₂(x)))         hidden width 4·d_model
//! ```
//!
//! then a final layer norm and a linear head over the vocabulary (no bias;
//! optionally tied to the token embedding, Press & Wolf 2017). Dropout acts
//! on the summed embeddings, on the attention weights and on each block's
//! two residual branches. Every op is one of [`seht_candle::ops`]'
//! transformer blocks (exact softmax, layer norm, GELU (erf form), causal
//! mask), so Hessian-vector products and trace penalties through the model
//! are exact to third order (tests).
//!
//! Initialisation (GPT-2's): every linear weight and both embeddings
//! `N(0, init_std²)`, the two residual output projections of each block
//! `N(0, init_std² / (2·layers))`, biases 0, layer-norm `γ = 1`, `β = 0`.
//!
//! Parameter paths: `wte.weight`, `wpe.weight`,
//! `h.{l}.ln_1.{weight,bias}`, `h.{l}.attn.{q,k,v,proj}.{weight,bias}`,
//! `h.{l}.ln_2.{weight,bias}`, `h.{l}.mlp.{fc,proj}.{weight,bias}`,
//! `ln_f.{weight,bias}`, `lm_head.weight` (absent when tied). Query, key and
//! value are separate tensors (not GPT-2's fused `c_attn`) so that each is a
//! parameter block of its own.

use candle_core::{D, Tensor};
use candle_nn::{Init, Module, VarBuilder};
use seht_candle::{Role, ops};

use crate::error::{Result, invalid};
use crate::phase::{Phase, dropout};
use crate::roles::Roles;

/// Configuration of a [`Gpt`]. No field has a hidden default.
#[derive(Debug, Clone, PartialEq)]
pub struct GptConfig {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest sequence the model reads (rows of the position embedding).
    pub context: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Attention heads per block; must divide `d_model`.
    pub heads: usize,
    /// Number of blocks.
    pub layers: usize,
    /// Dropout probability at every dropout site (embeddings, attention
    /// weights, both residual branches).
    pub dropout: f64,
    /// Share the output head's weight with the token embedding.
    pub tie_weights: bool,
    /// Standard deviation of the initial weights (GPT-2: 0.02).
    pub init_std: f64,
    /// ε of every layer norm (PyTorch's default: 1e-5).
    pub layer_norm_eps: f64,
}

impl GptConfig {
    /// Checks every field.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] naming the first field out of range.
    pub fn validate(&self) -> Result<()> {
        if self.vocab_size < 2 {
            return Err(invalid("vocab_size", self.vocab_size, "must be at least 2"));
        }
        if self.context == 0 {
            return Err(invalid("context", self.context, "must be at least 1"));
        }
        if self.d_model == 0 {
            return Err(invalid("d_model", self.d_model, "must be at least 1"));
        }
        if self.heads == 0 || !self.d_model.is_multiple_of(self.heads) {
            return Err(invalid(
                "heads",
                format!("{} (d_model {})", self.heads, self.d_model),
                "must be at least 1 and divide d_model",
            ));
        }
        if self.layers == 0 {
            return Err(invalid("layers", self.layers, "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must lie in [0, 1)"));
        }
        if !(self.init_std > 0.0 && self.init_std.is_finite()) {
            return Err(invalid("init_std", self.init_std, "must be positive and finite"));
        }
        if !(self.layer_norm_eps > 0.0 && self.layer_norm_eps.is_finite()) {
            return Err(invalid("layer_norm_eps", self.layer_norm_eps, "must be positive and finite"));
        }
        Ok(())
    }

    /// The number of trainable parameters, in closed form: with `V` the
    /// vocabulary, `T` the context and `d` the width,
    /// `V·d + T·d + layers·(12d² + 13d) + 2d`, plus `V·d` for an untied head.
    pub fn parameter_count(&self) -> usize {
        let (v, t, d) = (self.vocab_size, self.context, self.d_model);
        // Per block: q, k, v, proj (d² + d each), two layer norms (2d each),
        // fc (4d² + 4d), proj (4d² + d).
        let block = 4 * (d * d + d) + 4 * d + (4 * d * d + 4 * d) + (4 * d * d + d);
        let head = if self.tie_weights { 0 } else { v * d };
        v * d + t * d + self.layers * block + 2 * d + head
    }
}

/// A linear map `x Wᵀ + b` on `(…, d_in)`, weight `(d_out, d_in)`.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    fn new(d_in: usize, d_out: usize, std: f64, bias: bool, vb: VarBuilder, roles: &mut Roles) -> Result<Self> {
        let weight = vb.get_with_hints((d_out, d_in), "weight", Init::Randn { mean: 0.0, stdev: std })?;
        roles.add(&vb, "weight", Role::Weight);
        let bias = if bias {
            roles.add(&vb, "bias", Role::Bias);
            Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Rows of `xs` flattened to one matrix product, then the shape restored.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims();
        let d_in = dims[dims.len() - 1];
        let mut out_dims = dims.to_vec();
        out_dims[dims.len() - 1] = self.weight.dim(0)?;
        let ys = xs.reshape(((), d_in))?.matmul(&self.weight.t()?)?;
        let ys = match &self.bias {
            Some(b) => ys.broadcast_add(b)?,
            None => ys,
        };
        Ok(ys.reshape(out_dims)?)
    }
}

/// Layer norm with learned `γ` (ones) and `β` (zeros).
#[derive(Debug, Clone)]
struct LayerNorm {
    gamma: Tensor,
    beta: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn new(d: usize, eps: f64, vb: VarBuilder, roles: &mut Roles) -> Result<Self> {
        let gamma = vb.get_with_hints(d, "weight", Init::Const(1.0))?;
        let beta = vb.get_with_hints(d, "bias", Init::Const(0.0))?;
        roles.add(&vb, "weight", Role::NormWeight);
        roles.add(&vb, "bias", Role::NormBias);
        Ok(Self { gamma, beta, eps })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(ops::layer_norm(xs, &self.gamma, &self.beta, self.eps)?)
    }
}

/// One pre-norm block.
#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    fc: Linear,
    mlp_proj: Linear,
}

impl Block {
    fn new(cfg: &GptConfig, vb: VarBuilder, roles: &mut Roles) -> Result<Self> {
        let d = cfg.d_model;
        let (std, resid_std) = (cfg.init_std, cfg.init_std / (2.0 * cfg.layers as f64).sqrt());
        let (va, vm) = (vb.pp("attn"), vb.pp("mlp"));
        Ok(Self {
            ln_1: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("ln_1"), roles)?,
            q: Linear::new(d, d, std, true, va.pp("q"), roles)?,
            k: Linear::new(d, d, std, true, va.pp("k"), roles)?,
            v: Linear::new(d, d, std, true, va.pp("v"), roles)?,
            attn_proj: Linear::new(d, d, resid_std, true, va.pp("proj"), roles)?,
            ln_2: LayerNorm::new(d, cfg.layer_norm_eps, vb.pp("ln_2"), roles)?,
            fc: Linear::new(d, 4 * d, std, true, vm.pp("fc"), roles)?,
            mlp_proj: Linear::new(4 * d, d, resid_std, true, vm.pp("proj"), roles)?,
        })
    }

    /// `xs (b, t, d)` → `(b, t, d)`; dropout sites `site`, `site + 1`, `site + 2`.
    fn forward(&self, xs: &Tensor, cfg: &GptConfig, phase: Phase, site: u32) -> Result<Tensor> {
        let h = self.ln_1.forward(xs)?;
        let heads = |l: &Linear| -> Result<Tensor> { Ok(ops::split_heads(&l.forward(&h)?, cfg.heads)?) };
        let (q, k, v) = (heads(&self.q)?, heads(&self.k)?, heads(&self.v)?);
        let dk = (cfg.d_model / cfg.heads) as f64;
        let scores = (q.matmul(&k.t()?.contiguous()?)? / dk.sqrt())?;
        let weights = ops::softmax_last_dim(&ops::causal_mask(&scores)?)?;
        let weights = dropout(&weights, cfg.dropout, phase, site)?;
        let attn = self.attn_proj.forward(&ops::merge_heads(&weights.matmul(&v)?)?)?;
        let xs = (xs + dropout(&attn, cfg.dropout, phase, site + 1)?)?;
        let m = self.mlp_proj.forward(&ops::gelu(&self.fc.forward(&self.ln_2.forward(&xs)?)?)?)?;
        Ok((xs + dropout(&m, cfg.dropout, phase, site + 2)?)?)
    }
}

/// A GPT-style decoder language model; see the module docs.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    head: Tensor,
    roles: Roles,
}

impl Gpt {
    /// Builds the model, creating its variables through `vb`.
    ///
    /// # Errors
    /// An invalid config ([`GptConfig::validate`]); candle's.
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut roles = Roles::default();
        let normal = Init::Randn { mean: 0.0, stdev: cfg.init_std };
        let (vte, vpe) = (vb.pp("wte"), vb.pp("wpe"));
        let wte = vte.get_with_hints((cfg.vocab_size, cfg.d_model), "weight", normal)?;
        roles.add(&vte, "weight", Role::Weight);
        let wpe = vpe.get_with_hints((cfg.context, cfg.d_model), "weight", normal)?;
        roles.add(&vpe, "weight", Role::Weight);
        let vh = vb.pp("h");
        let blocks =
            (0..cfg.layers).map(|l| Block::new(cfg, vh.pp(l.to_string()), &mut roles)).collect::<Result<_>>()?;
        let ln_f = LayerNorm::new(cfg.d_model, cfg.layer_norm_eps, vb.pp("ln_f"), &mut roles)?;
        let head = if cfg.tie_weights {
            wte.clone()
        } else {
            Linear::new(cfg.d_model, cfg.vocab_size, cfg.init_std, false, vb.pp("lm_head"), &mut roles)?.weight
        };
        Ok(Self { cfg: cfg.clone(), wte, wpe, blocks, ln_f, head, roles })
    }

    /// The configuration.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// Logits `(batch, seq, vocab)` for token ids `(batch, seq)`; position
    /// `i`'s logits depend on tokens `0..=i` only.
    ///
    /// # Errors
    /// [`crate::Error::InvalidConfig`] (field `context`) for a sequence
    /// longer than the context; candle's, e.g. for a token id outside the
    /// vocabulary.
    pub fn forward_t(&self, tokens: &Tensor, phase: Phase) -> Result<Tensor> {
        let (batch, seq) = tokens.dims2()?;
        if seq > self.cfg.context {
            return Err(invalid(
                "context",
                format!("{} (sequence of {seq})", self.cfg.context),
                "the sequence is longer than the context",
            ));
        }
        let d = self.cfg.d_model;
        let tok = candle_nn::Embedding::new(self.wte.clone(), d).forward(tokens)?; // (b, t, d)
        let pos = self.wpe.narrow(0, 0, seq)?; // (t, d)
        let mut xs = dropout(&tok.broadcast_add(&pos)?, self.cfg.dropout, phase, 0)?;
        for (l, block) in self.blocks.iter().enumerate() {
            xs = block.forward(&xs, &self.cfg, phase, 1 + 3 * l as u32)?;
        }
        let xs = self.ln_f.forward(&xs)?;
        Ok(xs.reshape((batch * seq, d))?.matmul(&self.head.t()?)?.reshape((batch, seq, self.cfg.vocab_size))?)
    }

    /// Mean cross-entropy of `logits (batch, seq, vocab)` against `targets
    /// (batch, seq)` (the same as [`crate::RnnLm::loss`]).
    ///
    /// # Errors
    /// candle's, for shapes that do not fit.
    pub fn loss(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
        let v = logits.dim(D::Minus1)?;
        Ok(seht_candle::ops::cross_entropy(&logits.reshape(((), v))?, &targets.flatten_all()?)?)
    }

    /// Every variable the model created, with its role.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }
}
