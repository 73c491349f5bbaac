use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, RgbImage};

use crate::{EvalError, SaliencyMap};

/// Blends `map` as a heat map (inferno colours) over a gray film with intensities in `[0, 1]`.
///
/// The map is scaled by its 99th percentile (one hot pixel should not wash out the rest) and
/// blended with opacity proportional to saliency, so unimportant regions show the plain film.
pub fn heat_overlay(
    film: &ImageBuffer<Luma<f32>, Vec<f32>>,
    map: &SaliencyMap,
    opacity: f32,
) -> RgbImage {
    let (w, h) = film.dimensions();
    let map = map.resized(w, h);
    let mut sorted: Vec<f32> = map.values.clone();
    sorted.sort_by(f32::total_cmp);
    let p99 = sorted
        .get((sorted.len() as f64 * 0.99) as usize)
        .copied()
        .unwrap_or(0.0)
        .max(f32::MIN_POSITIVE);
    let mut out = RgbImage::new(w, h);
    for ((pixel, gray), s) in out.pixels_mut().zip(film.pixels()).zip(&map.values) {
        let s = (s / p99).clamp(0.0, 1.0);
        let colour = colorous::INFERNO.eval_continuous(s as f64);
        let alpha = opacity.clamp(0.0, 1.0) * s;
        let g = gray.0[0].clamp(0.0, 1.0) * 255.0;
        let blend = |c: u8| ((1.0 - alpha) * g + alpha * c as f32).round() as u8;
        *pixel = Rgb([blend(colour.r), blend(colour.g), blend(colour.b)]);
    }
    out
}

/// Writes an overlay as PNG.
pub fn save_overlay_png(image: &RgbImage, path: &Path) -> Result<(), EvalError> {
    image
        .save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| EvalError::Write {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}
