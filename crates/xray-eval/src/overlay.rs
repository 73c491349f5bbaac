use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};

use crate::{EvalError, SaliencyMap};

/// Colour maps for heat overlays (perceptually uniform, readable in gray print).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColourMap {
    /// Black - purple - orange - yellow.
    Inferno,
    /// Purple - green - yellow.
    Viridis,
    /// Dark blue to dark red, high contrast.
    Turbo,
}

impl std::str::FromStr for ColourMap {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "inferno" => Ok(ColourMap::Inferno),
            "viridis" => Ok(ColourMap::Viridis),
            "turbo" => Ok(ColourMap::Turbo),
            _ => Err(format!(
                "unknown colour map {s:?}: inferno, viridis or turbo"
            )),
        }
    }
}

impl ColourMap {
    fn gradient(self) -> colorous::Gradient {
        match self {
            ColourMap::Inferno => colorous::INFERNO,
            ColourMap::Viridis => colorous::VIRIDIS,
            ColourMap::Turbo => colorous::TURBO,
        }
    }
}

/// How a map is drawn over a film.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OverlayStyle {
    /// Colours.
    pub colour_map: ColourMap,
    /// Opacity at the most salient pixels, in `[0, 1]`.
    pub opacity: f32,
    /// Values at or above this percentile of the map get the top colour, so that one hot pixel
    /// does not wash out the rest (e.g. 99).
    pub clip_percentile: f32,
}

impl Default for OverlayStyle {
    fn default() -> Self {
        OverlayStyle {
            colour_map: ColourMap::Inferno,
            opacity: 0.6,
            clip_percentile: 99.0,
        }
    }
}

/// Blends `map` as a heat map over a gray film with intensities in `[0, 1]`, at the film's size.
///
/// Opacity grows with saliency, so unimportant regions show the plain film.
pub fn overlay(
    film: &ImageBuffer<Luma<f32>, Vec<f32>>,
    map: &SaliencyMap,
    style: &OverlayStyle,
) -> RgbImage {
    let (w, h) = film.dimensions();
    let map = map.resized(w, h);
    let strength = clipped_strength(&map, style.clip_percentile);
    let gradient = style.colour_map.gradient();
    let mut out = RgbImage::new(w, h);
    for ((pixel, gray), s) in out.pixels_mut().zip(film.pixels()).zip(strength) {
        let colour = gradient.eval_continuous(s as f64);
        let alpha = style.opacity.clamp(0.0, 1.0) * s;
        let g = gray.0[0].clamp(0.0, 1.0) * 255.0;
        let blend = |c: u8| ((1.0 - alpha) * g + alpha * c as f32).round() as u8;
        *pixel = Rgb([blend(colour.r), blend(colour.g), blend(colour.b)]);
    }
    out
}

/// `map` alone as a colour layer on a transparent background, at `width` x `height`: what a
/// viewer lays over the film at an opacity the reader chooses. Each pixel's alpha is
/// `style.opacity` times its saliency, as [`overlay`] blends it.
pub fn heat_layer(map: &SaliencyMap, width: u32, height: u32, style: &OverlayStyle) -> RgbaImage {
    let map = map.resized(width, height);
    let strength = clipped_strength(&map, style.clip_percentile);
    let gradient = style.colour_map.gradient();
    let mut out = RgbaImage::new(width, height);
    for (pixel, s) in out.pixels_mut().zip(strength) {
        let colour = gradient.eval_continuous(s as f64);
        let alpha = (style.opacity.clamp(0.0, 1.0) * s * 255.0).round() as u8;
        *pixel = Rgba([colour.r, colour.g, colour.b, alpha]);
    }
    out
}

/// Saliency scaled to `[0, 1]`, values at or above the percentile clipped to 1.
fn clipped_strength(map: &SaliencyMap, clip_percentile: f32) -> Vec<f32> {
    let mut sorted: Vec<f32> = map.values.clone();
    sorted.sort_by(f32::total_cmp);
    let q = (clip_percentile.clamp(0.0, 100.0) / 100.0) as f64;
    let top = sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
        .max(f32::MIN_POSITIVE);
    map.values
        .iter()
        .map(|s| (s / top).clamp(0.0, 1.0))
        .collect()
}

/// [`overlay`] with the inferno colours, clipping at the 99th percentile.
pub fn heat_overlay(
    film: &ImageBuffer<Luma<f32>, Vec<f32>>,
    map: &SaliencyMap,
    opacity: f32,
) -> RgbImage {
    overlay(
        film,
        map,
        &OverlayStyle {
            opacity,
            ..OverlayStyle::default()
        },
    )
}

/// Images of one height placed left to right with a white gap: e.g. the film and each method's
/// overlay.
pub fn side_by_side(tiles: &[RgbImage], gap: u32) -> RgbImage {
    let height = tiles.iter().map(|t| t.height()).max().unwrap_or(0);
    let width =
        tiles.iter().map(|t| t.width()).sum::<u32>() + gap * tiles.len().saturating_sub(1) as u32;
    let mut panel = RgbImage::from_pixel(width.max(1), height.max(1), Rgb([255, 255, 255]));
    let mut x = 0;
    for t in tiles {
        image::imageops::replace(&mut panel, t, x as i64, 0);
        x += t.width() + gap;
    }
    panel
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heat_layer_is_clear_where_the_map_is_cold_and_opaque_where_hot() {
        let map = SaliencyMap::from_values(2, 2, vec![0.0, 0.25, 0.5, 1.0], 0.0);
        let style = OverlayStyle {
            opacity: 1.0,
            clip_percentile: 100.0,
            ..OverlayStyle::default()
        };
        let layer = heat_layer(&map, 2, 2, &style);
        let alphas: Vec<u8> = layer.pixels().map(|p| p.0[3]).collect();
        assert_eq!(alphas, vec![0, 64, 128, 255]);
        // The layer over black at full opacity is what `overlay` draws on a black film.
        let black = ImageBuffer::from_pixel(2, 2, Luma([0.0f32]));
        let blended = overlay(&black, &map, &style);
        for (l, b) in layer.pixels().zip(blended.pixels()) {
            let a = l.0[3] as f32 / 255.0;
            for c in 0..3 {
                let expected = (a * l.0[c] as f32).round();
                assert!((expected - b.0[c] as f32).abs() <= 1.0);
            }
        }
    }
}
