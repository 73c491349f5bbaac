//! How far a film lies from the training films: the out-of-distribution statistics a bundle
//! stores and the appearance descriptor they measure.

use serde::{Deserialize, Serialize};
use xray_data::{edge_energy, thumbnail, GrayImage};
use xray_eval::FeatureDistance;

use crate::{Bundle, InferError, PopulationDetector, PopulationFit};

/// The quantile of validation films' distances that becomes each out-of-distribution threshold
/// (features and appearance): together they flag about 1 film in 100 like the validation ones.
pub const OOD_QUANTILE: f64 = 0.995;

/// How far films lie from the training films, in two views, each with a threshold at a high
/// quantile of the validation films' distances:
///
/// - `features`: the model's pooled features ([`Classifier::pooled_features`](xray_models::Classifier::pooled_features)): what the
///   decision is made from. It catches most non-chest images, but a network can map an
///   inverted film to features much like a real one's (measured: both shipped models do).
/// - `appearance`: [`appearance`]'s descriptor of the film: an [`APPEARANCE_SIDE`] x
///   [`APPEARANCE_SIDE`] thumbnail (the coarse layout of dark background, bright mediastinum and
///   grey lungs) and, on the same grid, how much fine structure each region holds and how fine
///   it is; inverted, blank, magnified and non-chest images break it. Measured: a network
///   fine-tuned with strong augmentation maps blank and heavily magnified films to features
///   close to real ones, so the features alone do not suffice.
///
/// The reported score is the larger of the two distances, each divided by its threshold, and of
/// the optional [`PopulationDetector`]'s score: above 1, the film is unlike the training films
/// in at least one view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OodStatistics {
    /// Distance on the model's pooled features.
    pub features: FeatureDistance,
    /// Distance on the film's [`appearance`] descriptor.
    pub appearance: FeatureDistance,
    /// A detector of one population the training films do not cover (adults, for the shipped
    /// bundles), on the pooled features followed by the appearance descriptor; `None` where
    /// none was fitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub population: Option<PopulationDetector>,
}

/// Side of the grids [`OodStatistics::appearance`] measures.
pub const APPEARANCE_SIDE: u32 = 8;

/// Length of [`appearance`]'s descriptor.
pub const APPEARANCE_DIM: usize = 3 * (APPEARANCE_SIDE * APPEARANCE_SIDE) as usize;

/// The film's appearance descriptor on an `APPEARANCE_SIDE`-square grid: its area-averaged
/// thumbnail ([`thumbnail`]), its fine edge energy (neighbouring pixels, [`edge_energy`]), and
/// the log-ratio of fine to coarse (4 pixels apart) edge energy, which drops when a film is
/// magnified or blurred.
pub fn appearance(film: &GrayImage) -> Vec<f32> {
    let mut descriptor = thumbnail(film, APPEARANCE_SIDE);
    let fine = edge_energy(film, APPEARANCE_SIDE, 1);
    let coarse = edge_energy(film, APPEARANCE_SIDE, 4);
    // The offset keeps blank regions (both zero) finite and at a ratio of 1.
    let ratio = fine
        .iter()
        .zip(&coarse)
        .map(|(f, c)| ((f + 1e-3) / (c + 1e-3)).ln());
    descriptor.extend(fine.iter().copied());
    descriptor.extend(ratio);
    descriptor
}

impl OodStatistics {
    /// Fits the statistics of `bundle`'s features and of the films' appearance on the
    /// (unaugmented) training films, each threshold at [`OOD_QUANTILE`] of the validation films'
    /// distances. Films are at the bundle's input size.
    pub fn fit(
        bundle: &Bundle,
        train_images: &[&GrayImage],
        validation_images: &[&GrayImage],
    ) -> Result<OodStatistics, InferError> {
        let descriptors = |images: &[&GrayImage]| -> Vec<f32> {
            images.iter().flat_map(|im| appearance(im)).collect()
        };
        let (train, dim) = bundle.pooled_features(train_images)?;
        let features = FeatureDistance::fit(&train, dim)?;
        let (validation, _) = bundle.pooled_features(validation_images)?;
        let scores = features.scores(&validation)?;
        let features = features.with_threshold(&scores, OOD_QUANTILE)?;
        let appearance = FeatureDistance::fit(&descriptors(train_images), APPEARANCE_DIM)?;
        let scores = appearance.scores(&descriptors(validation_images))?;
        let appearance = appearance.with_threshold(&scores, OOD_QUANTILE)?;
        Ok(OodStatistics {
            features,
            appearance,
            population: None,
        })
    }

    /// Fits [`OodStatistics::population`]: a [`PopulationDetector`] of `outside` reference
    /// films (described by `reference`, named by `reference_files`) against the training
    /// films, thresholded on the validation films. Films are at the bundle's input size.
    pub fn fit_population(
        &mut self,
        bundle: &Bundle,
        train_images: &[&GrayImage],
        outside_images: &[&GrayImage],
        validation_images: &[&GrayImage],
        reference: String,
        reference_files: Vec<String>,
    ) -> Result<(), InferError> {
        let (inside, dim) = population_vectors(bundle, train_images)?;
        let (outside, _) = population_vectors(bundle, outside_images)?;
        let (validation, _) = population_vectors(bundle, validation_images)?;
        self.population = Some(PopulationDetector::fit(
            &inside,
            &outside,
            &validation,
            dim,
            PopulationFit::default(),
            reference,
            reference_files,
        )?);
        Ok(())
    }

    /// The combined score of one film from its pooled features and its [`appearance`]
    /// descriptor.
    pub fn score(&self, features: &[f32], descriptor: &[f32]) -> Result<f64, InferError> {
        let f = self.features.score(features)? / self.features.threshold;
        let a = self.appearance.score(descriptor)? / self.appearance.threshold;
        let p = match &self.population {
            Some(detector) => {
                let vector: Vec<f32> = features.iter().chain(descriptor).copied().collect();
                detector.score(&vector)?
            }
            None => 0.0,
        };
        Ok(f.max(a).max(p))
    }

    /// Whether a combined score flags the film (NaN, from a broken input, does).
    pub fn is_outlier(score: f64) -> bool {
        score.is_nan() || score > 1.0
    }
}

/// What a [`PopulationDetector`] reads of each film, one row per film: the bundle's pooled
/// features followed by the film's [`appearance`] descriptor. Returns the rows and their width.
pub fn population_vectors(
    bundle: &Bundle,
    images: &[&GrayImage],
) -> Result<(Vec<f32>, usize), InferError> {
    let (features, dim) = bundle.pooled_features(images)?;
    let mut rows = Vec::with_capacity(images.len() * (dim + APPEARANCE_DIM));
    for (row, image) in features.chunks_exact(dim.max(1)).zip(images) {
        rows.extend_from_slice(row);
        rows.extend(appearance(image));
    }
    Ok((rows, dim + APPEARANCE_DIM))
}
