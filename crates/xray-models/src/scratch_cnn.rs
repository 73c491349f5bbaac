use candle_core::{Result, Tensor};
use candle_nn::{linear, Linear, Module, ModuleT, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::conv_norm::{Conv, ConvKind};
use crate::ModelError;
use xray_ops::{max_pool_2x2, BatchNormRelu};

/// A small CNN trained from scratch on gray films: per stage a 3x3 convolution, BatchNorm
/// (batch statistics in training), ReLU and 2x2 max-pooling; then global average pooling,
/// dropout and one logit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScratchCnnConfig {
    /// Input channels (1 for gray).
    pub in_channels: usize,
    /// Output channels of each stage.
    pub channels: Vec<usize>,
    /// Dropout before the classifier in training.
    pub dropout: f32,
}

impl Default for ScratchCnnConfig {
    fn default() -> Self {
        ScratchCnnConfig {
            in_channels: 1,
            channels: vec![16, 32, 64, 128],
            dropout: 0.3,
        }
    }
}

#[derive(Debug, Clone)]
struct ConvBlock {
    conv: Conv,
    norm: BatchNormRelu,
}

/// The from-scratch CNN. Tensor names: `features.<i>.conv.weight`, `features.<i>.bn.*`, `head.*`.
#[derive(Debug, Clone)]
pub struct ScratchCnn {
    blocks: Vec<ConvBlock>,
    head: Linear,
    dropout: f32,
}

impl ScratchCnn {
    /// Builds the network under `vb`.
    pub fn new(config: &ScratchCnnConfig, vb: VarBuilder) -> std::result::Result<Self, ModelError> {
        if config.in_channels == 0 {
            return Err(ModelError::InvalidConfig {
                parameter: "in_channels",
                reason: "must be at least 1".into(),
            });
        }
        if config.channels.is_empty() {
            return Err(ModelError::InvalidConfig {
                parameter: "channels",
                reason: "needs at least one stage".into(),
            });
        }
        let mut in_c = config.in_channels;
        let mut blocks = Vec::with_capacity(config.channels.len());
        for (i, &out_c) in config.channels.iter().enumerate() {
            let vb = vb.pp("features").pp(i);
            blocks.push(ConvBlock {
                conv: Conv::new(in_c, out_c, 3, 1, ConvKind::Dense, vb.pp("conv"))?,
                norm: BatchNormRelu::new(out_c, vb.pp("bn"))?,
            });
            in_c = out_c;
        }
        Ok(ScratchCnn {
            blocks,
            head: linear(in_c, 1, vb.pp("head"))?,
            dropout: config.dropout,
        })
    }
}

impl ScratchCnn {
    /// Evaluation-mode activation of the last convolutional block after its ReLU and before its
    /// pooling, `(N, C, H/2^(k-1), W/2^(k-1))`: the layer Grad-CAM explains.
    pub fn last_block_activation(&self, x: &Tensor) -> Result<Tensor> {
        self.blocks_before_last_pool(x, false)
    }

    /// Every block (conv, BatchNorm in train or eval mode, ReLU), pooling after all but the last.
    fn blocks_before_last_pool(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            if i > 0 {
                x = max_pool_2x2(&x)?;
            }
            x = block.norm.forward_t(&block.conv.forward(&x)?, train)?;
        }
        Ok(x)
    }

    /// Evaluation-mode pooled features `(N, C)`: the last block pooled and averaged, what the
    /// head reads.
    pub fn pooled_features(&self, x: &Tensor) -> Result<Tensor> {
        self.features(x, false)
    }

    /// The last block pooled and averaged, `(N, C)`. Each block's BatchNorm, ReLU and the
    /// pooling after it run as one op: the same values as
    /// `pool_last_block(blocks_before_last_pool(..))`, without the full-size activations.
    fn features(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut pooled = x.clone();
        for block in &self.blocks {
            pooled = block
                .norm
                .forward_pooled_t(&block.conv.forward(&pooled)?, train)?;
        }
        pooled.mean((2, 3))
    }

    /// The one-logit head.
    pub fn head(&self) -> &Linear {
        &self.head
    }

    /// Logits `(N, 1)` from [`last_block_activation`](Self::last_block_activation): the rest of
    /// the evaluation-mode network (pooling, averaging, head).
    pub fn head_from_last_block(&self, activation: &Tensor) -> Result<Tensor> {
        self.head.forward(&pool_last_block(activation)?)
    }
}

/// The last block's pooling and global average: its activation to the features the head reads.
fn pool_last_block(activation: &Tensor) -> Result<Tensor> {
    max_pool_2x2(activation)?.mean((2, 3))
}

impl ModuleT for ScratchCnn {
    /// Logits `(N, 1)`.
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut features = self.features(x, train)?;
        if train && self.dropout > 0.0 {
            features = candle_nn::ops::dropout(&features, self.dropout)?;
        }
        self.head.forward(&features)
    }
}
