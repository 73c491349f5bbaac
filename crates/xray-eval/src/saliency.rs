use candle_core::{Tensor, Var};
use image::{imageops::FilterType, ImageBuffer, Luma};

use crate::EvalError;

/// A per-pixel importance map (row-major, `width * height` values, all finite and >= 0).
#[derive(Debug, Clone, PartialEq)]
pub struct SaliencyMap {
    /// Columns.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Importance of each pixel.
    pub values: Vec<f32>,
    /// The logit the map explains.
    pub logit: f32,
}

impl SaliencyMap {
    /// The map bilinearly resized to `width` x `height` (e.g. the original film's size).
    pub fn resized(&self, width: u32, height: u32) -> SaliencyMap {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let buffer: ImageBuffer<Luma<f32>, Vec<f32>> =
            ImageBuffer::from_raw(self.width, self.height, self.values.clone()).unwrap_or_default();
        let resized = image::imageops::resize(&buffer, width, height, FilterType::Triangle);
        SaliencyMap {
            width,
            height,
            values: resized.into_raw().into_iter().map(|v| v.max(0.0)).collect(),
            logit: self.logit,
        }
    }
}

/// Vanilla gradient saliency (Simonyan et al., 2014): `|d logit / d pixel|`, the maximum over
/// input channels, for one image `(1, C, H, W)`. `logit_fn` maps the input to `(1,)` logits in
/// evaluation mode.
pub fn vanilla_gradient<F>(logit_fn: F, input: &Tensor) -> Result<SaliencyMap, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (n, _, h, w) = input.dims4()?;
    if n != 1 {
        return Err(candle_core::Error::Msg(format!(
            "saliency explains one image at a time, got a batch of {n}"
        ))
        .into());
    }
    let x = Var::from_tensor(&input.detach())?;
    let logit = logit_fn(x.as_tensor())?.flatten_all()?;
    let grads = logit.sum_all()?.backward()?;
    let grad = grads
        .get(x.as_tensor())
        .ok_or_else(|| candle_core::Error::Msg("the logit does not depend on the input".into()))?;
    let map = grad.abs()?.max(1)?.squeeze(0)?;
    let values: Vec<f32> = map.flatten_all()?.to_vec1()?;
    Ok(SaliencyMap {
        width: w as u32,
        height: h as u32,
        values,
        logit: logit.to_vec1::<f32>()?[0],
    })
}
