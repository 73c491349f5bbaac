use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use xray_ops::{inverted_residual, InvertedResidualWeights};

use crate::conv_norm::{fold, Conv, ConvKind, ConvNormAct};
use crate::FrozenBatchNorm;

/// MobileNetV2's inverted residual: 1x1 expansion (absent when `expand_ratio == 1`), 3x3
/// depthwise, linear 1x1 projection, and a skip connection when shapes allow.
/// Tensor names follow torchvision (`conv.0`, `conv.1`, ...).
#[derive(Debug, Clone)]
pub struct InvertedResidual {
    expand: Option<ConvNormAct>,
    depthwise: ConvNormAct,
    project: Conv,
    project_norm: FrozenBatchNorm,
    stride: usize,
    residual: bool,
}

impl InvertedResidual {
    /// Builds the block under `vb` (torchvision's `features.<i>`).
    pub fn new(
        in_c: usize,
        out_c: usize,
        stride: usize,
        expand_ratio: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let hidden = in_c * expand_ratio;
        let vb = vb.pp("conv");
        let mut index = 0;
        let mut next = || {
            index += 1;
            index - 1
        };
        let expand = if expand_ratio == 1 {
            None
        } else {
            Some(ConvNormAct::new(
                in_c,
                hidden,
                1,
                1,
                ConvKind::Dense,
                vb.pp(next()),
            )?)
        };
        let depthwise = ConvNormAct::new(
            hidden,
            hidden,
            3,
            stride,
            ConvKind::Depthwise,
            vb.pp(next()),
        )?;
        let project = Conv::new(hidden, out_c, 1, 1, ConvKind::Dense, vb.pp(next()))?;
        let project_norm = FrozenBatchNorm::new(out_c, vb.pp(next()))?;
        Ok(InvertedResidual {
            expand,
            depthwise,
            project,
            project_norm,
            stride,
            residual: stride == 1 && in_c == out_c,
        })
    }

    /// Applies the block: on CPU one op with its own backward ([`xray_ops::inverted_residual`]),
    /// every BatchNorm folded into its convolution.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let expand = self.expand.as_ref().map(ConvNormAct::folded).transpose()?;
        let depthwise = self.depthwise.folded()?;
        let project = fold(&self.project, &self.project_norm)?;
        let block = InvertedResidualWeights {
            expand: expand.as_ref().map(|(w, b)| (w, b)),
            depthwise: (&depthwise.0, &depthwise.1),
            project: (&project.0, &project.1),
            stride: self.stride,
            residual: self.residual,
        };
        inverted_residual(x, &block)
    }
}
