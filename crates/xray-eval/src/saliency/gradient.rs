use candle_core::{DType, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use super::{single_image, ExplainedClass, SaliencyMap};
use crate::EvalError;

/// Gradients of `sign * logit` for every image of a batch `(B, C, H, W)` (images do not interact
/// in evaluation mode, so one backward pass of the sum gives each image's own gradient), and the
/// logits.
pub(crate) fn batch_gradients<F>(
    logit_fn: &F,
    inputs: &Tensor,
    sign: f64,
) -> Result<(Tensor, Vec<f32>), EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let x = Var::from_tensor(&inputs.detach())?;
    let logits = logit_fn(x.as_tensor())?.flatten_all()?;
    let grads = (logits.sum_all()? * sign)?.backward()?;
    let grad = grads
        .get(x.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("the logit does not depend on the input".into()))?
        .clone();
    Ok((grad, logits.to_dtype(DType::F32)?.to_vec1()?))
}

/// Vanilla gradient saliency (Simonyan et al., 2014): `|d logit / d pixel|`, the maximum over
/// input channels, for one image `(1, C, H, W)`. `logit_fn` maps the input to `(1,)` logits in
/// evaluation mode. The magnitude is the same for either class.
pub fn vanilla_gradient<F>(logit_fn: F, input: &Tensor) -> Result<SaliencyMap, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (_, h, w) = single_image(input)?;
    let (grad, logits) = batch_gradients(&logit_fn, input, 1.0)?;
    let map = grad.abs()?.max(1)?.squeeze(0)?.to_dtype(DType::F32)?;
    Ok(SaliencyMap {
        width: w as u32,
        height: h as u32,
        values: map.flatten_all()?.to_vec1()?,
        logit: logits[0],
    })
}

/// SmoothGrad settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SmoothGradConfig {
    /// Noisy copies averaged.
    pub samples: usize,
    /// Noise standard deviation as a fraction of the input's range (max - min); Smilkov et al.
    /// found 10-20% works best.
    pub noise_fraction: f64,
    /// Seed of the noise.
    pub seed: u64,
    /// Copies per forward pass.
    pub batch: usize,
}

impl Default for SmoothGradConfig {
    fn default() -> Self {
        SmoothGradConfig {
            samples: 16,
            noise_fraction: 0.15,
            seed: 0,
            batch: 16,
        }
    }
}

/// SmoothGrad (Smilkov et al., 2017): the vanilla gradient map averaged over copies of the
/// input with Gaussian noise, which removes much of the gradient's pixel-level noise.
pub fn smooth_grad<F>(
    logit_fn: F,
    input: &Tensor,
    config: &SmoothGradConfig,
) -> Result<SaliencyMap, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (c, h, w) = single_image(input)?;
    if config.samples == 0 {
        return Err(EvalError::InvalidParameter {
            name: "SmoothGrad samples",
            value: 0.0,
            reason: "need at least one",
        });
    }
    let values: Vec<f32> = input.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    let sigma = config.noise_fraction * f64::from((hi - lo).max(1e-6));
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut sum = Tensor::zeros((h, w), DType::F32, input.device())?;
    let mut remaining = config.samples;
    while remaining > 0 {
        let b = remaining.min(config.batch.max(1));
        remaining -= b;
        let noise: Vec<f32> = (0..b * values.len())
            .map(|_| {
                let z: f64 = StandardNormal.sample(&mut rng);
                (z * sigma) as f32
            })
            .collect();
        let noise = Tensor::from_vec(noise, (b, c, h, w), input.device())?;
        let noisy = noise.broadcast_add(&input.to_dtype(DType::F32)?)?;
        let (grad, _) = batch_gradients(&logit_fn, &noisy.to_dtype(input.dtype())?, 1.0)?;
        let maps = grad.to_dtype(DType::F32)?.abs()?.max(1)?.sum(0)?;
        sum = (sum + maps)?;
    }
    let logit = logit_fn(input)?
        .flatten_all()?
        .to_dtype(DType::F32)?
        .to_vec1::<f32>()?[0];
    let mean = (sum / config.samples as f64)?;
    Ok(SaliencyMap::from_values(
        w as u32,
        h as u32,
        mean.flatten_all()?.to_vec1()?,
        logit,
    ))
}

/// Integrated Gradients attributions of one image and the check of their completeness.
#[derive(Debug, Clone, PartialEq)]
pub struct IntegratedGradients {
    /// The positive part of the per-pixel attribution (summed over channels): evidence for the
    /// explained class.
    pub map: SaliencyMap,
    /// Signed per-pixel attributions summed over channels, row-major.
    pub attributions: Vec<f32>,
    /// Sum of all signed attributions.
    pub attribution_sum: f64,
    /// `sign * (logit(input) - logit(baseline))`: what the sum should equal (completeness).
    pub logit_difference: f64,
}

impl IntegratedGradients {
    /// `|sum - difference| / |difference|`: how far the path integral is from exact.
    pub fn completeness_error(&self) -> f64 {
        (self.attribution_sum - self.logit_difference).abs()
            / self.logit_difference.abs().max(1e-12)
    }
}

/// Integrated Gradients (Sundararajan et al., 2017): `(x - x') * integral_0^1 grad(x' + a (x - x')) da`
/// on the straight path from `baseline` to `input`, both `(1, C, H, W)`, by `steps`-point
/// Gauss-Legendre quadrature: exact for gradients polynomial in `a` up to degree `2 steps - 1`,
/// and on ReLU6 networks markedly closer to completeness than the midpoint rule at the same
/// number of gradient evaluations. Attributions of a pixel are summed over its channels (the gray
/// film is repeated on the channels, so the sum is the gray pixel's attribution).
pub fn integrated_gradients<F>(
    logit_fn: F,
    input: &Tensor,
    baseline: &Tensor,
    steps: usize,
    batch: usize,
    class: ExplainedClass,
) -> Result<IntegratedGradients, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (_, h, w) = single_image(input)?;
    if baseline.dims() != input.dims() {
        return Err(candle_core::Error::Msg(format!(
            "baseline shape {:?} differs from the input's {:?}",
            baseline.dims(),
            input.dims()
        ))
        .into());
    }
    if steps == 0 {
        return Err(EvalError::InvalidParameter {
            name: "Integrated Gradients steps",
            value: 0.0,
            reason: "need at least one",
        });
    }
    let sign = class.sign();
    let delta = (input - baseline)?;
    let mut grad_sum = input.zeros_like()?;
    let alphas: Vec<f64> = (0..steps)
        .map(|k| (k as f64 + 0.5) / steps as f64)
        .collect();
    for chunk in alphas.chunks(batch.max(1)) {
        let points: Vec<Tensor> = chunk
            .iter()
            .map(|&a| baseline + (&delta * a)?)
            .collect::<candle_core::Result<_>>()?;
        let (grad, _) = batch_gradients(&logit_fn, &Tensor::cat(&points, 0)?, sign)?;
        grad_sum = (grad_sum + grad.sum_keepdim(0)?)?;
    }
    let attributions = (delta * (grad_sum / steps as f64)?)?.sum(1)?.squeeze(0)?;
    let attributions: Vec<f32> = attributions
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let ends = logit_fn(&Tensor::cat(&[input, baseline], 0)?)?
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    Ok(IntegratedGradients {
        map: SaliencyMap::from_values(w as u32, h as u32, attributions.clone(), ends[0] as f32),
        attribution_sum: attributions.iter().map(|&a| f64::from(a)).sum(),
        attributions,
        logit_difference: sign * (ends[0] - ends[1]),
    })
}
