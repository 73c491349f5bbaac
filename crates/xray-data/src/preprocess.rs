use serde::{Deserialize, Serialize};

/// How intensities in `[0, 1]` are mapped to model inputs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Normalization {
    /// `2v - 1`: the Keras MobileNetV2 convention the shared ImageNet weights expect.
    MinusOneToOne,
    /// `v` unchanged.
    ZeroToOne,
    /// `(v - mean) / std`.
    MeanStd {
        /// Subtracted first.
        mean: f32,
        /// Then divided by.
        std: f32,
    },
}

impl Normalization {
    /// Maps one intensity.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Normalization::MinusOneToOne => 2.0 * v - 1.0,
            Normalization::ZeroToOne => v,
            Normalization::MeanStd { mean, std } => (v - mean) / std,
        }
    }
}

/// Everything needed to turn a decoded film into a model input; stored in every model bundle.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Input side in pixels (images are resized to `size` x `size`, aspect ratio not kept,
    /// as in the source data).
    pub size: u32,
    /// 1 for a gray input, 3 to repeat the gray channel for ImageNet-pretrained backbones.
    pub channels: usize,
    /// Intensity mapping.
    pub normalization: Normalization,
}

/// Mean and standard deviation of the intensities of a set of images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MeanStd {
    /// Mean intensity.
    pub mean: f32,
    /// Standard deviation (at least 1e-6, so it can divide).
    pub std: f32,
}

impl MeanStd {
    /// Computes both over every pixel of `images` (in f64).
    pub fn of(images: &[&crate::GrayImage]) -> MeanStd {
        let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0usize);
        for image in images {
            for &v in image.as_raw() {
                sum += v as f64;
                sum_sq += (v as f64) * (v as f64);
            }
            count += image.as_raw().len();
        }
        let count = count.max(1) as f64;
        let mean = sum / count;
        let var = (sum_sq / count - mean * mean).max(0.0);
        MeanStd {
            mean: mean as f32,
            std: (var.sqrt() as f32).max(1e-6),
        }
    }
}
