use candle_core::{DType, Tensor};

use super::{batched_logits, single_image, ExplainedClass, SaliencyMap};
use crate::EvalError;

/// Occlusion settings.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OcclusionConfig {
    /// Side of the square patch, in input pixels.
    pub patch: usize,
    /// Step between patch positions.
    pub stride: usize,
    /// Occluded copies per forward pass.
    pub batch: usize,
}

impl Default for OcclusionConfig {
    fn default() -> Self {
        // At 224 px: 7 x 7 non-overlapping 32-pixel patches (a rib space or two each).
        OcclusionConfig {
            patch: 32,
            stride: 32,
            batch: 32,
        }
    }
}

/// Occlusion sensitivity (Zeiler & Fergus, 2014): slide a patch replaced by `fill` (same shape
/// as `input`, e.g. a blurred or constant film) over the image; a pixel's value is the mean drop
/// of `s * logit` over the patches covering it, positive part. Needs no gradient.
pub fn occlusion<F>(
    logit_fn: F,
    input: &Tensor,
    fill: &Tensor,
    config: &OcclusionConfig,
    class: ExplainedClass,
) -> Result<SaliencyMap, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let (c, h, w) = single_image(input)?;
    if fill.dims() != input.dims() {
        return Err(candle_core::Error::Msg(format!(
            "occlusion fill shape {:?} differs from the input's {:?}",
            fill.dims(),
            input.dims()
        ))
        .into());
    }
    if config.patch == 0 || config.stride == 0 || config.patch > h.min(w) {
        return Err(EvalError::InvalidParameter {
            name: "occlusion patch / stride",
            value: config.patch as f64,
            reason: "patch and stride must be positive and the patch no larger than the image",
        });
    }
    let dtype = input.dtype();
    let original: Vec<f32> = input.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let filler: Vec<f32> = fill.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let starts = |size: usize| -> Vec<usize> {
        let mut s: Vec<usize> = (0..=size - config.patch).step_by(config.stride).collect();
        // Cover the far edge too.
        if s.last() != Some(&(size - config.patch)) {
            s.push(size - config.patch);
        }
        s
    };
    let positions: Vec<(usize, usize)> = starts(h)
        .into_iter()
        .flat_map(|y| starts(w).into_iter().map(move |x| (y, x)))
        .collect();
    let occluded: Vec<Tensor> = positions
        .iter()
        .map(|&(y0, x0)| {
            let mut v = original.clone();
            for ch in 0..c {
                for y in y0..y0 + config.patch {
                    let row = ch * h * w + y * w;
                    v[row + x0..row + x0 + config.patch]
                        .copy_from_slice(&filler[row + x0..row + x0 + config.patch]);
                }
            }
            Tensor::from_vec(v, (1, c, h, w), input.device())?.to_dtype(dtype)
        })
        .collect::<candle_core::Result<_>>()?;
    let base = batched_logits(&logit_fn, std::slice::from_ref(input), 1)?[0];
    let logits = batched_logits(&logit_fn, &occluded, config.batch)?;
    let sign = class.sign() as f32;
    let mut total = vec![0f32; h * w];
    let mut count = vec![0u32; h * w];
    for (&(y0, x0), &z) in positions.iter().zip(&logits) {
        let drop = sign * (base - z);
        for y in y0..y0 + config.patch {
            for x in x0..x0 + config.patch {
                total[y * w + x] += drop;
                count[y * w + x] += 1;
            }
        }
    }
    let values = total
        .iter()
        .zip(&count)
        .map(|(&t, &n)| if n > 0 { t / n as f32 } else { 0.0 })
        .collect();
    Ok(SaliencyMap::from_values(w as u32, h as u32, values, base))
}
