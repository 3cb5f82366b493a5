//! Wide Residual Network WRN-d-k (Zagoruyko & Komodakis, "Wide Residual
//! Networks", BMVC 2016), the CIFAR architecture of the authors' code and of
//! the common PyTorch port `xternalz/WideResNet-pytorch`: a 3×3 stem with 16
//! channels, three groups of `(d−4)/6` pre-activation blocks with
//! `16k, 32k, 64k` channels (strides 1, 2, 2), dropout between the two
//! convolutions of a block, a final BatchNorm-ReLU, global average pooling and
//! a linear head. WRN-28-10 for 10 classes has 36,479,194 trainable parameters.
//!
//! Block (pre-activation): `o = relu(bn1(x))`; `o = conv1(o)`;
//! `o = conv2(dropout(relu(bn2(o))))`; the shortcut is `x` itself when the
//! shape is unchanged, else a 1×1 convolution of `relu(bn1(x))`.
//! Parameter paths: `conv1`, `block{1..3}.layer.{i}.bn1|conv1|bn2|conv2|convShortcut`,
//! `bn1`, `fc`.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use seht_candle::ops;
use seht_candle::ops::BatchNorm;
use seht_candle::ops::Conv2d;

use crate::error::{Result, invalid};
use crate::phase::{Phase, dropout};
use crate::roles::{Roles, batch_norm, conv, linear};

/// Configuration of a [`WideResNet`]. No field has a hidden default.
#[derive(Debug, Clone, PartialEq)]
pub struct WideResNetConfig {
    /// Depth `d`; `(d − 4)` must be a multiple of 6.
    pub depth: usize,
    /// Widen factor `k`.
    pub widen_factor: usize,
    /// Dropout probability between the convolutions of a block.
    pub dropout: f64,
    /// Input channels.
    pub in_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
}

impl WideResNetConfig {
    /// WRN-28-10 with the given dropout (the paper uses 0.3 on CIFAR-100).
    pub fn wrn_28_10(in_channels: usize, num_classes: usize, dropout: f64) -> Self {
        Self { depth: 28, widen_factor: 10, dropout, in_channels, num_classes }
    }

    /// Blocks per group, `(d − 4)/6`.
    pub fn blocks_per_group(&self) -> usize {
        (self.depth.saturating_sub(4)) / 6
    }

    /// Channels of the stem and the three groups.
    pub fn widths(&self) -> [usize; 4] {
        let k = self.widen_factor;
        [16, 16 * k, 32 * k, 64 * k]
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.depth < 10 || (self.depth - 4) % 6 != 0 {
            return Err(invalid("depth", self.depth, "must be 6n + 4 with n ≥ 1 (e.g. 10, 16, 22, 28, 40)"));
        }
        if self.widen_factor == 0 {
            return Err(invalid("widen_factor", self.widen_factor, "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid("dropout", self.dropout, "must lie in [0, 1)"));
        }
        if self.in_channels == 0 {
            return Err(invalid("in_channels", self.in_channels, "must be at least 1"));
        }
        if self.num_classes < 2 {
            return Err(invalid("num_classes", self.num_classes, "must be at least 2"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct WideBlock {
    bn1: BatchNorm,
    conv1: Conv2d,
    bn2: BatchNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    dropout: f64,
    site: u32,
}

impl WideBlock {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        dropout: f64,
        site: u32,
        vb: VarBuilder,
        roles: &mut Roles,
    ) -> Result<Self> {
        Ok(Self {
            bn1: batch_norm(c_in, vb.pp("bn1"), roles)?,
            conv1: conv(c_in, c_out, 3, stride, 1, vb.pp("conv1"), roles)?,
            bn2: batch_norm(c_out, vb.pp("bn2"), roles)?,
            conv2: conv(c_out, c_out, 3, 1, 1, vb.pp("conv2"), roles)?,
            shortcut: if c_in != c_out || stride != 1 {
                Some(conv(c_in, c_out, 1, stride, 0, vb.pp("convShortcut"), roles)?)
            } else {
                None
            },
            dropout,
            site,
        })
    }

    fn forward(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        let train = phase.is_train();
        let act = ops::relu(&self.bn1.forward_t(xs, train)?)?;
        let h = self.conv1.forward(&act)?;
        let h = ops::relu(&self.bn2.forward_t(&h, train)?)?;
        let h = self.conv2.forward(&dropout(&h, self.dropout, phase, self.site)?)?;
        let skip = match &self.shortcut {
            Some(c) => c.forward(&act)?,
            None => xs.clone(),
        };
        Ok((h + skip)?)
    }
}

/// Wide ResNet; see the module docs.
#[derive(Debug, Clone)]
pub struct WideResNet {
    conv1: Conv2d,
    blocks: Vec<WideBlock>,
    bn1: BatchNorm,
    fc: Linear,
    roles: Roles,
}

impl WideResNet {
    /// Builds the network, creating its variables through `vb`.
    pub fn new(cfg: &WideResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut roles = Roles::default();
        let w = cfg.widths();
        let conv1 = conv(cfg.in_channels, w[0], 3, 1, 1, vb.pp("conv1"), &mut roles)?;
        let mut blocks = Vec::new();
        let mut c_in = w[0];
        for g in 0..3 {
            let stride = if g == 0 { 1 } else { 2 };
            let vg = vb.pp(format!("block{}", g + 1)).pp("layer");
            for i in 0..cfg.blocks_per_group() {
                let site = blocks.len() as u32;
                let s = if i == 0 { stride } else { 1 };
                blocks.push(WideBlock::new(c_in, w[g + 1], s, cfg.dropout, site, vg.pp(i.to_string()), &mut roles)?);
                c_in = w[g + 1];
            }
        }
        let bn1 = batch_norm(c_in, vb.pp("bn1"), &mut roles)?;
        let fc = linear(c_in, cfg.num_classes, vb.pp("fc"), &mut roles)?;
        Ok(Self { conv1, blocks, bn1, fc, roles })
    }

    /// Logits `(n, classes)` for images `(n, c, h, w)`.
    pub fn forward_t(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        let mut h = self.conv1.forward(xs)?;
        for b in &self.blocks {
            h = b.forward(&h, phase)?;
        }
        let h = ops::relu(&self.bn1.forward_t(&h, phase.is_train())?)?;
        Ok(self.fc.forward(&ops::global_avg_pool(&h)?)?)
    }

    /// Every variable the model created, with its role.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }
}
