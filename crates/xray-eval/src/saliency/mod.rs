//! Saliency maps: which pixels a one-logit classifier's output depends on, by five methods, and
//! the evidence that a map is faithful to the model (perturbation curves, model randomisation,
//! the share inside the thorax).

mod evidence;
mod gradcam;
mod gradient;
mod occlusion;
mod region;

pub use evidence::{
    block_ranking, deletion_curve, insertion_curve, random_block_ranking, random_ranking, ranking,
    spearman, PerturbationCurve,
};
pub use gradcam::grad_cam;
pub use gradient::{
    integrated_gradients, smooth_grad, vanilla_gradient, IntegratedGradients, SmoothGradConfig,
};
pub use occlusion::{occlusion, OcclusionConfig};
pub use region::{Ellipse, ThoracicRegion};

use candle_core::Tensor;
use image::{imageops::FilterType, ImageBuffer, Luma};

use crate::EvalError;

/// Which class a map explains. The models have one logit `z` (pneumonia when positive): the
/// pneumonia class is explained through `z`, the normal class through `-z`, so "important"
/// always means "pushes towards the explained class".
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExplainedClass {
    /// Evidence for pneumonia.
    Pneumonia,
    /// Evidence for a normal film.
    Normal,
}

impl ExplainedClass {
    /// The class the model decides for at `threshold` on its probability.
    pub fn predicted(logit: f32, threshold: f64) -> ExplainedClass {
        let probability = 1.0 / (1.0 + (-(logit as f64)).exp());
        if probability >= threshold {
            ExplainedClass::Pneumonia
        } else {
            ExplainedClass::Normal
        }
    }

    /// `+1` for pneumonia, `-1` for normal.
    pub fn sign(self) -> f64 {
        match self {
            ExplainedClass::Pneumonia => 1.0,
            ExplainedClass::Normal => -1.0,
        }
    }
}

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
    /// A map from row-major values; negative or non-finite values become 0.
    pub fn from_values(width: u32, height: u32, values: Vec<f32>, logit: f32) -> SaliencyMap {
        let values = values
            .into_iter()
            .map(|v| if v.is_finite() { v.max(0.0) } else { 0.0 })
            .collect();
        SaliencyMap {
            width,
            height,
            values,
            logit,
        }
    }

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

/// Checks that `input` is one image `(1, C, H, W)`; returns `(C, H, W)`.
pub(crate) fn single_image(input: &Tensor) -> Result<(usize, usize, usize), EvalError> {
    let (n, c, h, w) = input.dims4()?;
    if n != 1 {
        return Err(candle_core::Error::Msg(format!(
            "saliency explains one image at a time, got a batch of {n}"
        ))
        .into());
    }
    Ok((c, h, w))
}

/// Evaluates `logit_fn` on `inputs` in chunks of `batch` and returns the logits, `(B,)`.
pub(crate) fn batched_logits<F>(
    logit_fn: &F,
    inputs: &[Tensor],
    batch: usize,
) -> Result<Vec<f32>, EvalError>
where
    F: Fn(&Tensor) -> candle_core::Result<Tensor>,
{
    let mut logits = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(batch.max(1)) {
        let x = Tensor::cat(chunk, 0)?;
        logits.extend(
            logit_fn(&x)?
                .flatten_all()?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1::<f32>()?,
        );
    }
    Ok(logits)
}
