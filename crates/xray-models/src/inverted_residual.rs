use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::conv_norm::{Conv, ConvKind, ConvNormAct};
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
            residual: stride == 1 && in_c == out_c,
        })
    }

    /// Applies the block.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = match &self.expand {
            Some(expand) => expand.forward(x)?,
            None => x.clone(),
        };
        let y = self.depthwise.forward(&hidden)?;
        // Linear bottleneck: the norm's scale folded into the weight, its shift one pass.
        let (scale, shift) = self.project_norm.scale_shift()?;
        let out_c = scale.dim(0)?;
        let weight = self
            .project
            .weight()
            .broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?;
        let y = self.project.forward_bias_act(&y, &weight, &shift, false)?;
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }
}
