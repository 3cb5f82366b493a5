//! The small CNN of the examples: three 3×3 convolutions (32, 64, 128
//! channels) with BatchNorm and ReLU, 2×2 max pooling after the first two,
//! global average pooling and a linear head. 32×32 inputs.

use candle_core::{Module, ModuleT, Result, Tensor};
use candle_nn::{BatchNorm, Conv2d, Conv2dConfig, Linear, VarBuilder};
use seht_candle::ops;

pub struct SmallCnn {
    convs: Vec<(Conv2d, BatchNorm)>,
    fc: Linear,
}

impl SmallCnn {
    pub fn new(in_channels: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        let cfg = Conv2dConfig { padding: 1, ..Default::default() };
        let mut convs = Vec::new();
        let mut c_in = in_channels;
        for (i, c_out) in [32usize, 64, 128].into_iter().enumerate() {
            let conv = candle_nn::conv2d_no_bias(c_in, c_out, 3, cfg, vb.pp(format!("conv{i}")))?;
            let bn = candle_nn::batch_norm(c_out, 1e-5, vb.pp(format!("bn{i}")))?;
            convs.push((conv, bn));
            c_in = c_out;
        }
        Ok(Self { convs, fc: candle_nn::linear(c_in, classes, vb.pp("fc"))? })
    }

    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = xs.clone();
        for (i, (conv, bn)) in self.convs.iter().enumerate() {
            h = ops::relu(&bn.forward_t(&conv.forward(&h)?, train)?).map_err(candle_core::Error::wrap)?;
            if i < 2 {
                h = ops::max_pool2d(&h, 2).map_err(candle_core::Error::wrap)?;
            }
        }
        self.fc.forward(&ops::global_avg_pool(&h).map_err(candle_core::Error::wrap)?)
    }
}
