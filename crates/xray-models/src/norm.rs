use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

/// BatchNorm that always uses its stored statistics (eval mode), with a learnable affine part.
///
/// The shared ImageNet MobileNetV2 weights have their BatchNorm folded into the convolutions
/// (mean 0, variance 1 - 1e-5, weight 1): re-normalising with batch statistics in training would
/// discard what the fold encoded. Keras keeps a pretrained base's BatchNorm in inference mode for
/// the same reason. Weight and bias stay trainable so fine-tuned blocks can adapt.
#[derive(Debug, Clone)]
pub struct FrozenBatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f64,
}

impl FrozenBatchNorm {
    /// Loads `weight`, `bias`, `running_mean`, `running_var` (torchvision names) from `vb`.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(FrozenBatchNorm {
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.0))?,
            running_mean: vb.get_with_hints(channels, "running_mean", Init::Const(0.0))?,
            running_var: vb.get_with_hints(channels, "running_var", Init::Const(1.0))?,
            eps: 1e-5,
        })
    }

    /// The per-channel `(scale, shift)` with `norm(x) = x * scale + shift`, both `(C,)`;
    /// differentiable in the affine weight and bias.
    pub fn scale_shift(&self) -> Result<(Tensor, Tensor)> {
        let scale = (&self.weight / (&self.running_var + self.eps)?.sqrt()?)?;
        let shift = (&self.bias - (&self.running_mean * &scale)?)?;
        Ok((scale, shift))
    }

    /// `weight`, `bias`, `running_mean` and `running_var`, in that order.
    pub(crate) fn parameters(&self) -> [&Tensor; 4] {
        [
            &self.weight,
            &self.bias,
            &self.running_mean,
            &self.running_var,
        ]
    }

    /// The epsilon added to the variance.
    pub(crate) fn eps(&self) -> f64 {
        self.eps
    }

    /// `(x - mean) / sqrt(var + eps) * weight + bias`, per channel of an `(N, C, H, W)` input.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (scale, shift) = self.scale_shift()?;
        let c = scale.dim(0)?;
        x.broadcast_mul(&scale.reshape((1, c, 1, 1))?)?
            .broadcast_add(&shift.reshape((1, c, 1, 1))?)
    }
}
