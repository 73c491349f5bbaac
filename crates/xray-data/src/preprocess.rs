use crate::GrayImage;
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

/// The film shrunk to `side` x `side` pixels with a triangle filter (neighbouring cells blend
/// a little), row-major: its coarse layout of light and dark, e.g. for an out-of-distribution
/// check.
///
/// ```
/// use xray_data::{thumbnail, GrayImage};
/// let film = GrayImage::from_fn(32, 32, |x, _| image::Luma([if x < 16 { 0.0 } else { 1.0 }]));
/// let t = thumbnail(&film, 2);
/// assert_eq!(t.len(), 4);
/// assert!(t[0] < 0.5 && t[1] > 0.5, "dark left, bright right: {t:?}");
/// assert_eq!((t[0], t[1]), (t[2], t[3]), "the same on both rows");
/// ```
pub fn thumbnail(image: &GrayImage, side: u32) -> Vec<f32> {
    image::imageops::resize(image, side, side, image::imageops::FilterType::Triangle).into_raw()
}

/// Edge energy on a `side` x `side` grid: the mean absolute difference between pixels `step`
/// apart horizontally and vertically inside each cell, row-major. Where [`thumbnail`] sees the
/// layout of light and dark, this sees how much structure of that scale each region holds; the
/// ratio of two steps tells fine detail (ribs, vessels) from coarse shapes, which magnified or
/// blurred images lack.
///
/// ```
/// use xray_data::{edge_energy, GrayImage};
/// let flat = GrayImage::from_pixel(16, 16, image::Luma([0.5]));
/// assert!(edge_energy(&flat, 4, 1).iter().all(|&e| e == 0.0));
/// let stripes = GrayImage::from_fn(16, 16, |x, _| image::Luma([(x % 2) as f32]));
/// assert!(edge_energy(&stripes, 4, 1).iter().all(|&e| e > 0.4));
/// assert!(edge_energy(&stripes, 4, 2).iter().all(|&e| e == 0.0));
/// ```
pub fn edge_energy(image: &GrayImage, side: u32, step: u32) -> Vec<f32> {
    let (w, h) = image.dimensions();
    let side = side.max(1) as usize;
    let step = step.max(1) as usize;
    let (w, h) = (w as usize, h as usize);
    let px = image.as_raw();
    let mut sum = vec![0f64; side * side];
    let mut count = vec![0u32; side * side];
    for y in 0..h {
        for x in 0..w {
            let v = px[y * w + x];
            let mut e = 0.0;
            if x + step < w {
                e += (px[y * w + x + step] - v).abs();
            }
            if y + step < h {
                e += (px[(y + step) * w + x] - v).abs();
            }
            let cell = (y * side / h) * side + x * side / w;
            sum[cell] += f64::from(e);
            count[cell] += 1;
        }
    }
    sum.iter()
        .zip(&count)
        .map(|(&s, &n)| {
            if n > 0 {
                (s / f64::from(n)) as f32
            } else {
                0.0
            }
        })
        .collect()
}
