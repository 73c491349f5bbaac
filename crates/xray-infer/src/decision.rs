//! From a probability to an answer: the operating point's threshold, and "refer" when the
//! model must not judge the film.

use serde::{Deserialize, Serialize};

use crate::{BundleConfig, InferError};

/// A named decision threshold stored in the bundle, all chosen on validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    /// `default` for the bundle's main threshold, else the stored point's name (e.g.
    /// `sensitivity_0.975`).
    pub name: String,
    /// Call pneumonia when the (uncalibrated) probability is at least this.
    pub threshold: f64,
}

impl OperatingPoint {
    /// The name of the bundle's main threshold.
    pub const DEFAULT: &'static str = "default";

    /// The bundle's main threshold.
    pub fn main(config: &BundleConfig) -> OperatingPoint {
        OperatingPoint {
            name: Self::DEFAULT.to_string(),
            threshold: config.threshold.value,
        }
    }

    /// The stored point called `name`.
    pub fn named(config: &BundleConfig, name: &str) -> Result<OperatingPoint, InferError> {
        if name == Self::DEFAULT {
            return Ok(Self::main(config));
        }
        config
            .operating_points
            .iter()
            .find(|p| p.name == name)
            .map(|p| OperatingPoint {
                name: p.name.clone(),
                threshold: p.value,
            })
            .ok_or_else(|| InferError::UnknownOperatingPoint {
                name: name.to_string(),
                available: Self::names(config).join(", "),
            })
    }

    /// Every name [`OperatingPoint::named`] accepts for this bundle.
    pub fn names(config: &BundleConfig) -> Vec<String> {
        std::iter::once(Self::DEFAULT.to_string())
            .chain(config.operating_points.iter().map(|p| p.name.clone()))
            .collect()
    }
}

/// The answer for one film. A radiologist reads it as a second opinion, never as a diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The probability reaches the operating point's threshold.
    Pneumonia,
    /// The probability lies below the threshold.
    Normal,
    /// The model must not judge this film: a reader decides (see the reasons).
    Refer,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Decision::Pneumonia => "PNEUMONIA",
            Decision::Normal => "NORMAL",
            Decision::Refer => "REFER",
        })
    }
}

/// Why a film is referred instead of called.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum ReferReason {
    /// The film is unlike the training films (its score is above 1): the probability would be
    /// extrapolation.
    OutOfDistribution {
        /// The out-of-distribution score ([`crate::OodStatistics::score`]).
        score: f64,
    },
    /// The bundle's conformal prediction set for this probability holds both classes or
    /// neither ([`crate::ReferBand`]).
    Uncertain {
        /// The prediction set.
        set: xray_eval::PredictionSet,
        /// Normal stays in the set up to this probability.
        normal_upper: f64,
        /// Pneumonia stays in the set from this probability up.
        pneumonia_lower: f64,
    },
    /// The image cannot be a usable film (blank, uniform, too small).
    DegenerateImage {
        /// What is wrong with it.
        detail: String,
    },
    /// The DICOM header names a lateral view; the models read frontal films only.
    LateralView {
        /// The View Position as written.
        view: String,
    },
    /// The DICOM header gives an age outside the training population (children of one to five
    /// years; films up to [`MAX_AGE_YEARS`] are judged).
    AgeOutsideTraining {
        /// The Patient's Age as written.
        age: String,
    },
}

/// Oldest patient age, in years, whose film the models judge: the training films are of
/// children aged one to five, and a margin is allowed.
pub const MAX_AGE_YEARS: f64 = 10.0;

/// The reasons a DICOM header alone gives to refer a film: a lateral view, an age outside the
/// training population.
pub fn header_reasons(info: &xray_data::DicomInfo) -> Vec<ReferReason> {
    let mut reasons = Vec::new();
    if let Some(view) = &info.view_position {
        if matches!(
            view.to_ascii_uppercase().as_str(),
            "LL" | "RL" | "LATERAL" | "LAT"
        ) {
            reasons.push(ReferReason::LateralView { view: view.clone() });
        }
    }
    if let Some(age) = &info.patient_age {
        if age_in_years(age).is_some_and(|years| years > MAX_AGE_YEARS) {
            reasons.push(ReferReason::AgeOutsideTraining { age: age.clone() });
        }
    }
    reasons
}

/// A DICOM age string (`nnnD`, `nnnW`, `nnnM` or `nnnY`) in years.
pub fn age_in_years(age: &str) -> Option<f64> {
    let age = age.trim();
    let (number, unit) = age.split_at(age.len().checked_sub(1)?);
    let value: f64 = number.parse().ok()?;
    let per_year = match unit {
        "D" => 365.25,
        "W" => 52.18,
        "M" => 12.0,
        "Y" => 1.0,
        _ => return None,
    };
    Some(value / per_year)
}

impl std::fmt::Display for ReferReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReferReason::OutOfDistribution { score } => write!(
                f,
                "unlike the training films (out-of-distribution score {score:.2} > 1)"
            ),
            ReferReason::Uncertain {
                set,
                normal_upper,
                pneumonia_lower,
            } => {
                let which = match set {
                    xray_eval::PredictionSet::Both => "could be either class",
                    _ => "is like neither class's validation films",
                };
                write!(
                    f,
                    "uncertain: the probability {which} (normal up to {normal_upper:.3}, \
                     pneumonia from {pneumonia_lower:.3})"
                )
            }
            ReferReason::DegenerateImage { detail } => write!(f, "degenerate image: {detail}"),
            ReferReason::LateralView { view } => {
                write!(f, "lateral view ({view}): the models read frontal films")
            }
            ReferReason::AgeOutsideTraining { age } => write!(
                f,
                "patient age {age}: outside the training population (children of 1-5 years)"
            ),
        }
    }
}

/// Smallest side of a film the model is asked about: anything smaller holds no chest detail.
pub const MIN_FILM_SIDE: u32 = 32;

/// Pixel standard deviation (intensities in `[0, 1]`) under which an image is uniform: a real
/// film's is above 0.1.
pub const MIN_FILM_STD: f64 = 0.01;

/// Why `film` (at its own size, before resizing) cannot be judged at all, if it cannot.
pub fn degenerate(film: &xray_data::GrayImage) -> Option<String> {
    let (w, h) = film.dimensions();
    if w < MIN_FILM_SIDE || h < MIN_FILM_SIDE {
        return Some(format!(
            "{w}x{h} pixels, smaller than {MIN_FILM_SIDE}x{MIN_FILM_SIDE}"
        ));
    }
    let pixels = film.as_raw();
    let n = pixels.len() as f64;
    let mean = pixels.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = pixels
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    if !var.is_finite() {
        return Some("non-finite pixel values".into());
    }
    if var.sqrt() < MIN_FILM_STD {
        return Some(format!(
            "nearly uniform (pixel standard deviation {:.4})",
            var.sqrt()
        ));
    }
    None
}
