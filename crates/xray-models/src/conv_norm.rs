use candle_core::{DType, Result, Tensor};
use candle_nn::{init::DEFAULT_KAIMING_NORMAL, VarBuilder};

use xray_ops::{
    bias_relu6, dense_conv2d, depthwise_conv2d, depthwise_conv2d_bias_act, pointwise_conv2d,
    pointwise_conv2d_bias_act,
};

use crate::FrozenBatchNorm;

/// How a convolution mixes channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// Every output channel sees every input channel.
    Dense,
    /// One filter per channel (`groups == channels`), computed by [`depthwise_conv2d`].
    Depthwise,
}

/// A bias-free convolution: dense, 1x1 (as a matrix product) or depthwise.
#[derive(Debug, Clone)]
pub struct Conv {
    weight: Tensor,
    kind: ConvKind,
    stride: usize,
    padding: usize,
}

impl Conv {
    /// A `kernel` x `kernel` convolution with "same" padding, weight named `weight` in `vb`.
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        kind: ConvKind,
        vb: VarBuilder,
    ) -> Result<Self> {
        let fan_in = if kind == ConvKind::Depthwise { 1 } else { in_c };
        let weight = vb.get_with_hints(
            (out_c, fan_in, kernel, kernel),
            "weight",
            DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Conv {
            weight,
            kind,
            stride,
            padding: (kernel - 1) / 2,
        })
    }

    /// Applies the convolution to an `(N, C, H, W)` input.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(x, &self.weight)
    }

    /// The weight, `(O, I, K, K)`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// `bias_relu6(self.forward_with(x, weight), bias, relu6)`, with the bias and activation
    /// applied inside the depthwise and 1x1 convolutions, while each output is in cache.
    pub fn forward_bias_act(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        relu6: bool,
    ) -> Result<Tensor> {
        match self.kind {
            ConvKind::Depthwise => {
                depthwise_conv2d_bias_act(x, weight, bias, (self.stride, self.padding), relu6)
            }
            ConvKind::Dense if weight.dim(2)? == 1 && self.stride == 1 => {
                pointwise_conv2d_bias_act(x, weight, bias, relu6)
            }
            ConvKind::Dense => bias_relu6(&self.forward_with(x, weight)?, bias, relu6),
        }
    }

    /// Applies this convolution's geometry with another weight of the same shape (e.g. one with
    /// a BatchNorm scale folded in).
    pub fn forward_with(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let k = weight.dim(2)?;
        match self.kind {
            ConvKind::Depthwise => depthwise_conv2d(x, weight, self.stride, self.padding),
            ConvKind::Dense if k == 1 && self.stride == 1 => pointwise_conv2d(x, weight),
            ConvKind::Dense => dense_conv2d(x, weight, self.stride, self.padding),
        }
    }
}

/// Convolution, frozen-statistics BatchNorm and optionally ReLU6: torchvision's
/// `Conv2dNormActivation` (`<prefix>.0.weight`, `<prefix>.1.*`).
#[derive(Debug, Clone)]
pub struct ConvNormAct {
    conv: Conv,
    norm: FrozenBatchNorm,
    relu6: bool,
}

impl ConvNormAct {
    /// Convolution + BatchNorm + ReLU6 under `vb` (`0` is the convolution, `1` the norm).
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        kind: ConvKind,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(ConvNormAct {
            conv: Conv::new(in_c, out_c, kernel, stride, kind, vb.pp(0))?,
            norm: FrozenBatchNorm::new(out_c, vb.pp(1))?,
            relu6: true,
        })
    }

    /// Applies convolution, norm and activation. The norm's scale is folded into the
    /// convolution weight (a weight-sized product instead of an activation-sized one) and its
    /// shift and the ReLU6 are applied to the convolution's output in the same op
    /// ([`Conv::forward_bias_act`]); mathematically the same as `relu6(norm(conv(x)))`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, shift) = self.folded()?;
        self.conv.forward_bias_act(x, &weight, &shift, self.relu6)
    }

    /// The convolution weight with the norm's scale multiplied in, and the norm's shift: the
    /// weight and bias of the equivalent biased convolution.
    pub fn folded(&self) -> Result<(Tensor, Tensor)> {
        fold(&self.conv, &self.norm)
    }
}

/// `conv`'s weight times `norm`'s per-channel scale, and `norm`'s shift.
pub(crate) fn fold(conv: &Conv, norm: &FrozenBatchNorm) -> Result<(Tensor, Tensor)> {
    if let Some(folded) = fold_untracked(conv.weight(), norm)? {
        return Ok(folded);
    }
    let (scale, shift) = norm.scale_shift()?;
    let out_c = scale.dim(0)?;
    let weight = conv
        .weight()
        .broadcast_mul(&scale.reshape((out_c, 1, 1, 1))?)?;
    Ok((weight, shift))
}

/// [`fold`] in one pass of plain f32 arithmetic, the same operations in the same order, for
/// weights that autograd does not track (inference, frozen stages): at batch 1 the dozen
/// small candle ops per folded layer cost more than its convolution. `None` where the weights
/// are tracked or not f32 on the CPU.
fn fold_untracked(weight: &Tensor, norm: &FrozenBatchNorm) -> Result<Option<(Tensor, Tensor)>> {
    let parts = norm.parameters();
    let plain = |t: &Tensor| !t.track_op() && t.device().is_cpu() && t.dtype() == DType::F32;
    if !plain(weight) || !parts.iter().all(|t| plain(t)) || weight.rank() == 0 {
        return Ok(None);
    }
    if parts.iter().any(|t| t.dims() != [weight.dims()[0]]) {
        // Mis-shaped norm: the tracked path below reports it.
        return Ok(None);
    }
    let [gamma, beta, mean, var] = parts.map(|t| t.to_vec1::<f32>());
    let (gamma, beta, mean, var) = (gamma?, beta?, mean?, var?);
    let eps = norm.eps() as f32;
    let scale: Vec<f32> = gamma
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let shift: Vec<f32> = beta
        .iter()
        .zip(mean.iter().zip(&scale))
        .map(|(b, (m, s))| b - m * s)
        .collect();
    let mut folded = weight.flatten_all()?.to_vec1::<f32>()?;
    let per_channel = folded.len() / scale.len().max(1);
    folded
        .chunks_mut(per_channel.max(1))
        .zip(&scale)
        .for_each(|(w, s)| w.iter_mut().for_each(|w| *w *= s));
    let channels = scale.len();
    Ok(Some((
        Tensor::from_vec(folded, weight.shape(), weight.device())?,
        Tensor::from_vec(shift, channels, weight.device())?,
    )))
}
