use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use crate::GrayImage;

/// Training-time augmentation of a chest film, each range chosen to stay anatomically plausible.
///
/// - **Rotation** up to `max_rotation_deg` (default 7 degrees): children are not always
///   positioned square to the detector; larger angles do not occur in practice.
/// - **Scale** in `scale_range` (default 0.9 to 1.1): distance to the detector and body size vary.
/// - **Shift** up to `max_shift` of the side (default 6%): centring varies between films.
/// - **Brightness** up to `max_brightness` (default 0.08) and **contrast** in `contrast_range`
///   (default 0.85 to 1.15): exposure and post-processing differ between machines and days.
/// - **No horizontal flip**: the heart lies on the left and laterality markers read one way; a
///   mirrored film is anatomically implausible (dextrocardia is rare) and teaches nothing true.
///   No vertical flip either.
///
/// - **Gamma** in `gamma_range` (log-uniform; default off): detector response and
///   post-processing curves differ between acquisition series.
/// - **Blur** with probability `blur_probability`, Gaussian sigma up to `max_blur_sigma` pixels
///   (default off): focus, motion and resizing soften films.
/// - **Noise**, Gaussian with a standard deviation up to `max_noise_std` (default off): quantum
///   noise differs with dose.
///
/// The default is the recipe of the first bundles; [`AugmentConfig::strong`] adds the last three
/// and widens the others. On a validation design that holds out a whole acquisition series
/// (`docs/generalisation.md`) the strong recipe generalised at least as well, so fine-tuning uses
/// it.
///
/// Geometry is applied with a single bilinear resampling, borders clamped to the edge pixels
/// (a shifted film shows more of its own border, not a black band the model could key on).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Largest rotation either way, in degrees.
    pub max_rotation_deg: f32,
    /// Smallest and largest zoom factor.
    pub scale_range: (f32, f32),
    /// Largest translation either way, as a fraction of the image side.
    pub max_shift: f32,
    /// Largest additive intensity change either way (intensities are in `[0, 1]`).
    pub max_brightness: f32,
    /// Smallest and largest contrast factor around mid-grey.
    pub contrast_range: (f32, f32),
    /// Smallest and largest gamma (`v^gamma`), drawn log-uniformly; `(1, 1)` is off.
    #[serde(default = "no_gamma")]
    pub gamma_range: (f32, f32),
    /// Share of films blurred.
    #[serde(default)]
    pub blur_probability: f32,
    /// Largest Gaussian blur sigma, in pixels.
    #[serde(default)]
    pub max_blur_sigma: f32,
    /// Largest standard deviation of added Gaussian noise (intensities are in `[0, 1]`).
    #[serde(default)]
    pub max_noise_std: f32,
}

fn no_gamma() -> (f32, f32) {
    (1.0, 1.0)
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            max_rotation_deg: 7.0,
            scale_range: (0.9, 1.1),
            max_shift: 0.06,
            max_brightness: 0.08,
            contrast_range: (0.85, 1.15),
            gamma_range: no_gamma(),
            blur_probability: 0.0,
            max_blur_sigma: 0.0,
            max_noise_std: 0.0,
        }
    }
}

impl AugmentConfig {
    /// The recipe chosen for fine-tuning by issue 6's study: rotation up to 10 degrees, zoom
    /// 0.85-1.25, shift 8%, brightness +-0.12, contrast 0.7-1.3, gamma 0.7-1.5, blur (sigma up to
    /// 1.5 px) on half the films, noise up to 0.03.
    pub fn strong() -> Self {
        AugmentConfig {
            max_rotation_deg: 10.0,
            scale_range: (0.85, 1.25),
            max_shift: 0.08,
            max_brightness: 0.12,
            contrast_range: (0.7, 1.3),
            gamma_range: (0.7, 1.5),
            blur_probability: 0.5,
            max_blur_sigma: 1.5,
            max_noise_std: 0.03,
        }
    }

    /// [`AugmentConfig::strong`] with wider ranges for the two acquisition changes that move
    /// normal films towards pneumonia: contrast down to 0.5 (from 0.7) and blur up to 3 px (from
    /// 1.5, on half the films). A model trained on the strong recipe reads films softer or
    /// flatter than its ranges as pneumonia; this one does not (docs/shift.md, section 7).
    ///
    /// ```
    /// use xray_data::AugmentConfig;
    /// let a = AugmentConfig::acquisition();
    /// assert_eq!((a.contrast_range.0, a.max_blur_sigma), (0.5, 3.0));
    /// assert_eq!(a.gamma_range, AugmentConfig::strong().gamma_range);
    /// ```
    pub fn acquisition() -> Self {
        AugmentConfig {
            contrast_range: (0.5, 1.3),
            max_blur_sigma: 3.0,
            ..Self::strong()
        }
    }
}

fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        rng.random_range(lo..hi)
    } else {
        lo
    }
}

/// One deterministic geometric and intensity change of a film: what [`augment`] draws at random,
/// and what test-time augmentation applies in fixed views.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ViewTransform {
    /// Rotation in degrees (counter-clockwise about the centre).
    pub rotation_deg: f32,
    /// Zoom factor (> 1 enlarges).
    pub scale: f32,
    /// Horizontal translation as a fraction of the width.
    pub shift_x: f32,
    /// Vertical translation as a fraction of the height.
    pub shift_y: f32,
    /// Added to every intensity.
    pub brightness: f32,
    /// Contrast factor around mid-grey.
    pub contrast: f32,
    /// Gamma applied before contrast and brightness (`v^gamma`; 1 is none).
    #[serde(default = "one")]
    pub gamma: f32,
}

fn one() -> f32 {
    1.0
}

impl ViewTransform {
    /// The film unchanged.
    pub const IDENTITY: ViewTransform = ViewTransform {
        rotation_deg: 0.0,
        scale: 1.0,
        shift_x: 0.0,
        shift_y: 0.0,
        brightness: 0.0,
        contrast: 1.0,
        gamma: 1.0,
    };

    /// Applies the change with one bilinear resampling, borders clamped to the edge pixels.
    pub fn apply(&self, image: &GrayImage) -> GrayImage {
        let angle = self.rotation_deg.to_radians();
        let (w, h) = image.dimensions();
        let shift_x = self.shift_x * w as f32;
        let shift_y = self.shift_y * h as f32;
        // Inverse map: output pixel -> source pixel, rotating and scaling about the centre.
        let (cx, cy) = ((w as f32 - 1.0) / 2.0, (h as f32 - 1.0) / 2.0);
        let (sin, cos) = angle.sin_cos();
        let inv_scale = 1.0 / self.scale.max(1e-3);
        let src = image.as_raw();
        let mut out = GrayImage::new(w, h);
        for (y, row) in out.as_mut().chunks_exact_mut(w as usize).enumerate() {
            let dy = y as f32 - cy - shift_y;
            for (x, value) in row.iter_mut().enumerate() {
                let dx = x as f32 - cx - shift_x;
                let sx = (cos * dx + sin * dy) * inv_scale + cx;
                let sy = (-sin * dx + cos * dy) * inv_scale + cy;
                let mut v = bilinear_clamped(src, w as usize, h as usize, sx, sy);
                if self.gamma != 1.0 {
                    v = v.max(0.0).powf(self.gamma);
                }
                *value = expose(v, self.contrast, self.brightness);
            }
        }
        out
    }
}

/// The fixed views of test-time augmentation: the film itself, zoomed in and out by 5%, and
/// rotated 4 degrees either way; all well inside the training augmentation's range, and no flips
/// (see [`AugmentConfig`]).
pub fn test_time_views() -> Vec<ViewTransform> {
    let view = |rotation_deg: f32, scale: f32| ViewTransform {
        rotation_deg,
        scale,
        ..ViewTransform::IDENTITY
    };
    vec![
        ViewTransform::IDENTITY,
        view(0.0, 1.05),
        view(0.0, 0.95),
        view(4.0, 1.0),
        view(-4.0, 1.0),
    ]
}

/// Returns a randomly rotated, scaled, shifted and re-exposed copy of `image` (same size),
/// blurred and noised where `config` asks for it.
pub fn augment(image: &GrayImage, config: &AugmentConfig, rng: &mut impl Rng) -> GrayImage {
    // The draw order is part of the recipe: changing it changes every trained bundle.
    let rotation_deg = uniform(rng, -config.max_rotation_deg, config.max_rotation_deg);
    let scale = uniform(rng, config.scale_range.0, config.scale_range.1);
    let shift_x = uniform(rng, -config.max_shift, config.max_shift);
    let shift_y = uniform(rng, -config.max_shift, config.max_shift);
    let brightness = uniform(rng, -config.max_brightness, config.max_brightness);
    let contrast = uniform(rng, config.contrast_range.0, config.contrast_range.1);
    // The later draws happen only when enabled, so the default recipe's films stay as they were.
    let gamma = if config.gamma_range != no_gamma() {
        let (lo, hi) = config.gamma_range;
        uniform(rng, lo.max(1e-3).ln(), hi.max(1e-3).ln()).exp()
    } else {
        1.0
    };
    let mut out = ViewTransform {
        rotation_deg,
        scale,
        shift_x,
        shift_y,
        brightness,
        contrast,
        gamma,
    }
    .apply(image);
    if config.blur_probability > 0.0 && config.max_blur_sigma > 0.0 {
        let blurred = rng.random::<f32>() < config.blur_probability;
        let sigma = uniform(rng, 0.0, config.max_blur_sigma);
        // Below a tenth of a pixel a Gaussian is the identity to float precision.
        if blurred && sigma > 0.1 {
            out = image::imageops::blur(&out, sigma);
        }
    }
    if config.max_noise_std > 0.0 {
        let std = uniform(rng, 0.0, config.max_noise_std);
        add_noise(&mut out, std, rng);
    }
    out
}

/// Contrast around mid-grey, then a brightness offset, clamped to `[0, 1]`.
pub(crate) fn expose(v: f32, contrast: f32, brightness: f32) -> f32 {
    ((v - 0.5) * contrast + 0.5 + brightness).clamp(0.0, 1.0)
}

/// Adds Gaussian noise of standard deviation `std` to every pixel, clamped to `[0, 1]`.
pub(crate) fn add_noise(image: &mut GrayImage, std: f32, rng: &mut impl Rng) {
    for v in image.iter_mut() {
        let z: f32 = StandardNormal.sample(rng);
        *v = (*v + std * z).clamp(0.0, 1.0);
    }
}

fn bilinear_clamped(src: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    // Truncation is the floor here (both are clamped to >= 0), and unlike `floor` it needs no
    // library call on baseline x86-64: this loop runs for every pixel of every epoch.
    let (x0, y0) = (x as usize, y as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let top = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
    let bottom = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}
