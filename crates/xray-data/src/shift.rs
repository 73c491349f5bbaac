//! Controlled acquisition shifts for evaluation: one deterministic change applied to every film,
//! to see how a model's metrics move when films differ from the training films in a known way.

use std::fmt;
use std::str::FromStr;

use rand::SeedableRng;
use serde::{Serialize, Serializer};

use crate::augment::{add_noise, expose};
use crate::GrayImage;

/// One controlled change of every film, written `kind:level` on the command line.
///
/// ```
/// use xray_data::Shift;
/// let s: Shift = "gamma:1.5".parse().unwrap();
/// assert_eq!(s, Shift::Gamma(1.5));
/// assert_eq!(s.to_string(), "gamma:1.5");
/// assert!("gamma".parse::<Shift>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// Contrast factor around mid-grey (`contrast:0.7`: a flatter film).
    Contrast(f32),
    /// Gamma, `v^gamma` (`gamma:1.5`: darker mid-tones).
    Gamma(f32),
    /// Gaussian blur with this sigma in pixels (`blur:1.5`).
    Blur(f32),
    /// Added Gaussian noise with this standard deviation (`noise:0.03`), seeded per film.
    Noise(f32),
    /// Down-sampled to this fraction of the side and back up (`resolution:0.5`).
    Resolution(f32),
}

impl Shift {
    /// The shifted film; `seed` makes noise reproducible (use the film's index).
    pub fn apply(&self, image: &GrayImage, seed: u64) -> GrayImage {
        let mut out = image.clone();
        match *self {
            Shift::Contrast(c) => {
                for v in out.iter_mut() {
                    *v = expose(*v, c, 0.0);
                }
            }
            Shift::Gamma(g) => {
                for v in out.iter_mut() {
                    *v = v.max(0.0).powf(g);
                }
            }
            Shift::Blur(sigma) => out = image::imageops::blur(image, sigma),
            Shift::Noise(std) => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                add_noise(&mut out, std, &mut rng);
            }
            Shift::Resolution(fraction) => {
                let (w, h) = image.dimensions();
                let small_w = ((w as f32 * fraction).round() as u32).max(1);
                let small_h = ((h as f32 * fraction).round() as u32).max(1);
                let filter = image::imageops::FilterType::Triangle;
                let small = image::imageops::resize(image, small_w, small_h, filter);
                out = image::imageops::resize(&small, w, h, filter);
            }
        }
        out
    }
}

impl fmt::Display for Shift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, level) = match self {
            Shift::Contrast(l) => ("contrast", l),
            Shift::Gamma(l) => ("gamma", l),
            Shift::Blur(l) => ("blur", l),
            Shift::Noise(l) => ("noise", l),
            Shift::Resolution(l) => ("resolution", l),
        };
        write!(f, "{kind}:{level}")
    }
}

impl Serialize for Shift {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl FromStr for Shift {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected kind:level with kind contrast, gamma, blur, noise or resolution";
        let (kind, level) = s
            .split_once(':')
            .ok_or_else(|| format!("shift {s:?}: {usage}"))?;
        let level: f32 = level
            .parse()
            .map_err(|_| format!("shift {s:?}: level {level:?} is not a number"))?;
        let valid = match kind {
            "contrast" | "gamma" => level > 0.0,
            "blur" | "noise" => level >= 0.0,
            "resolution" => level > 0.0 && level <= 1.0,
            _ => return Err(format!("shift {s:?}: unknown kind {kind:?}; {usage}")),
        };
        if !valid || !level.is_finite() {
            return Err(format!("shift {s:?}: level {level} out of range"));
        }
        Ok(match kind {
            "contrast" => Shift::Contrast(level),
            "gamma" => Shift::Gamma(level),
            "blur" => Shift::Blur(level),
            "noise" => Shift::Noise(level),
            _ => Shift::Resolution(level),
        })
    }
}
