use std::path::Path;

use image::{ImageBuffer, Luma, Rgb, RgbImage};

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
    let mut sorted: Vec<f32> = map.values.clone();
    sorted.sort_by(f32::total_cmp);
    let q = (style.clip_percentile.clamp(0.0, 100.0) / 100.0) as f64;
    let top = sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0.0)
        .max(f32::MIN_POSITIVE);
    let gradient = style.colour_map.gradient();
    let mut out = RgbImage::new(w, h);
    for ((pixel, gray), s) in out.pixels_mut().zip(film.pixels()).zip(&map.values) {
        let s = (s / top).clamp(0.0, 1.0);
        let colour = gradient.eval_continuous(s as f64);
        let alpha = style.opacity.clamp(0.0, 1.0) * s;
        let g = gray.0[0].clamp(0.0, 1.0) * 255.0;
        let blend = |c: u8| ((1.0 - alpha) * g + alpha * c as f32).round() as u8;
        *pixel = Rgb([blend(colour.r), blend(colour.g), blend(colour.b)]);
    }
    out
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
