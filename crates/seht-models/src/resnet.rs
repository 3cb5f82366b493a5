//! ResNet for 32×32 inputs (the CIFAR variant of He et al. 2016, as in the
//! widely used `kuangliu/pytorch-cifar` ResNet-18): a 3×3 stem with no
//! pooling, four stages of BasicBlocks (64-128-256-512 channels, strides
//! 1-2-2-2), BatchNorm, global average pooling and a linear head. With
//! `[2, 2, 2, 2]` blocks, 3 input channels and 10 classes it has 11,173,962
//! trainable parameters.
//!
//! Parameter paths follow that implementation: `conv1`, `bn1`,
//! `layer{1..4}.{i}.conv1|bn1|conv2|bn2`, `layer{s}.{i}.shortcut.0|1` (1×1
//! convolution and BatchNorm where the shape changes), `linear`.

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use seht_candle::ops;
use seht_candle::ops::BatchNorm;
use seht_candle::ops::Conv2d;

use crate::error::{Result, invalid};
use crate::phase::{Phase, drop_block, dropout};
use crate::roles::{Roles, batch_norm, conv, linear};

/// Configuration of a [`ResNet`]. No field has a hidden default.
#[derive(Debug, Clone, PartialEq)]
pub struct ResNetConfig {
    /// Input channels (3 for CIFAR, 1 for Fashion-MNIST).
    pub in_channels: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Channels of the four stages (the stem has `widths[0]`).
    pub widths: [usize; 4],
    /// BasicBlocks per stage.
    pub blocks: [usize; 4],
    /// DropBlock after stages 3 and 4 (as in Ghiasi et al.'s ResNet
    /// experiments), or none.
    pub drop_block: Option<DropBlockConfig>,
    /// Dropout before the linear head (0 for none).
    pub head_dropout: f64,
}

/// DropBlock's two parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropBlockConfig {
    /// Side of the dropped squares.
    pub block_size: usize,
    /// Fraction of units kept.
    pub keep_prob: f64,
}

impl ResNetConfig {
    /// ResNet-18: widths 64-128-256-512, two blocks per stage.
    pub fn resnet18(in_channels: usize, num_classes: usize) -> Self {
        Self {
            in_channels,
            num_classes,
            widths: [64, 128, 256, 512],
            blocks: [2, 2, 2, 2],
            drop_block: None,
            head_dropout: 0.0,
        }
    }

    /// ResNet-18's shape at a reduced width: widths `w, 2w, 4w, 8w`.
    pub fn narrow(in_channels: usize, num_classes: usize, w: usize, blocks: [usize; 4]) -> Self {
        Self { in_channels, num_classes, widths: [w, 2 * w, 4 * w, 8 * w], blocks, drop_block: None, head_dropout: 0.0 }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0 {
            return Err(invalid("in_channels", self.in_channels, "must be at least 1"));
        }
        if self.num_classes < 2 {
            return Err(invalid("num_classes", self.num_classes, "must be at least 2"));
        }
        if self.widths.contains(&0) {
            return Err(invalid("widths", format!("{:?}", self.widths), "every stage needs at least one channel"));
        }
        if self.blocks.contains(&0) {
            return Err(invalid("blocks", format!("{:?}", self.blocks), "every stage needs at least one block"));
        }
        if let Some(d) = self.drop_block {
            if d.block_size == 0 {
                return Err(invalid("drop_block.block_size", d.block_size, "must be at least 1"));
            }
            if !(d.keep_prob > 0.0 && d.keep_prob <= 1.0) {
                return Err(invalid("drop_block.keep_prob", d.keep_prob, "must lie in (0, 1]"));
            }
        }
        if !(0.0..1.0).contains(&self.head_dropout) {
            return Err(invalid("head_dropout", self.head_dropout, "must lie in [0, 1)"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct BasicBlock {
    conv1: Conv2d,
    bn1: BatchNorm,
    conv2: Conv2d,
    bn2: BatchNorm,
    shortcut: Option<(Conv2d, BatchNorm)>,
}

impl BasicBlock {
    fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder, roles: &mut Roles) -> Result<Self> {
        let shortcut = if stride != 1 || c_in != c_out {
            let vs = vb.pp("shortcut");
            Some((conv(c_in, c_out, 1, stride, 0, vs.pp("0"), roles)?, batch_norm(c_out, vs.pp("1"), roles)?))
        } else {
            None
        };
        Ok(Self {
            conv1: conv(c_in, c_out, 3, stride, 1, vb.pp("conv1"), roles)?,
            bn1: batch_norm(c_out, vb.pp("bn1"), roles)?,
            conv2: conv(c_out, c_out, 3, 1, 1, vb.pp("conv2"), roles)?,
            bn2: batch_norm(c_out, vb.pp("bn2"), roles)?,
            shortcut,
        })
    }

    fn forward(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let h = ops::relu(&self.bn1.forward_t(&self.conv1.forward(xs)?, train)?)?;
        let h = self.bn2.forward_t(&self.conv2.forward(&h)?, train)?;
        let skip = match &self.shortcut {
            Some((c, bn)) => bn.forward_t(&c.forward(xs)?, train)?,
            None => xs.clone(),
        };
        Ok(ops::relu(&(h + skip)?)?)
    }
}

/// ResNet for 32×32 inputs; see the module docs.
#[derive(Debug, Clone)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    stages: Vec<Vec<BasicBlock>>,
    linear: Linear,
    drop_block: Option<DropBlockConfig>,
    head_dropout: f64,
    roles: Roles,
}

impl ResNet {
    /// Builds the network, creating its variables through `vb`.
    pub fn new(cfg: &ResNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let mut roles = Roles::default();
        let conv1 = conv(cfg.in_channels, cfg.widths[0], 3, 1, 1, vb.pp("conv1"), &mut roles)?;
        let bn1 = batch_norm(cfg.widths[0], vb.pp("bn1"), &mut roles)?;
        let mut stages = Vec::with_capacity(4);
        let mut c_in = cfg.widths[0];
        for (s, (&width, &n)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
            let stride = if s == 0 { 1 } else { 2 };
            let vs = vb.pp(format!("layer{}", s + 1));
            let mut blocks = Vec::with_capacity(n);
            for i in 0..n {
                blocks.push(BasicBlock::new(
                    c_in,
                    width,
                    if i == 0 { stride } else { 1 },
                    vs.pp(i.to_string()),
                    &mut roles,
                )?);
                c_in = width;
            }
            stages.push(blocks);
        }
        let linear = linear(c_in, cfg.num_classes, vb.pp("linear"), &mut roles)?;
        Ok(Self { conv1, bn1, stages, linear, drop_block: cfg.drop_block, head_dropout: cfg.head_dropout, roles })
    }

    /// Logits `(n, classes)` for images `(n, c, h, w)`.
    pub fn forward_t(&self, xs: &Tensor, phase: Phase) -> Result<Tensor> {
        let train = phase.is_train();
        let mut h = ops::relu(&self.bn1.forward_t(&self.conv1.forward(xs)?, train)?)?;
        for (s, stage) in self.stages.iter().enumerate() {
            for block in stage {
                h = block.forward(&h, train)?;
            }
            if let (Some(d), true) = (self.drop_block, s >= 2) {
                h = drop_block(&h, d.block_size, d.keep_prob, phase, s as u32)?;
            }
        }
        let h = dropout(&ops::global_avg_pool(&h)?, self.head_dropout, phase, 100)?;
        Ok(self.linear.forward(&h)?)
    }

    /// Every variable the model created, with its role.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }
}
