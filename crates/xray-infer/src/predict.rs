//! One film, or many, from pixels to a [`Prediction`].

use std::path::Path;

use serde::{Deserialize, Serialize};
use xray_data::{
    decode_film, images_to_tensor, resize_to_input, test_time_views, DicomInfo, GrayImage,
    ViewTransform,
};

use crate::decision::{degenerate, header_reasons};
use crate::{appearance, Bundle, Decision, InferError, OodStatistics, ReferReason};

/// What the model says about one film, and whether it may say it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Pneumonia probability, uncalibrated: what the thresholds were chosen on.
    pub probability: f64,
    /// The probability after the bundle's temperature scaling (equal to `probability` when the
    /// bundle has none): read this one as a frequency.
    pub calibrated_probability: f64,
    /// The operating point the decision was made at.
    pub operating_point: String,
    /// Its threshold on `probability`.
    pub threshold: f64,
    /// Pneumonia, normal, or refer when any reason below holds.
    pub decision: Decision,
    /// Why the film is referred (empty unless `decision` is refer).
    pub refer_reasons: Vec<ReferReason>,
    /// Distance to the training films ([`OodStatistics::score`]: above 1 is unlike them);
    /// `None` when the bundle has no statistics.
    pub ood_score: Option<f64>,
    /// Whether the score flags the film; `None` when there is no score.
    pub out_of_distribution: Option<bool>,
}

impl Prediction {
    /// Adds the refer reasons a DICOM header gives ([`header_reasons`]); any of them makes the
    /// decision refer.
    pub fn apply_header(&mut self, info: &DicomInfo) {
        self.refer_reasons.extend(header_reasons(info));
        if !self.refer_reasons.is_empty() {
            self.decision = Decision::Refer;
        }
    }
}

/// Reads a film from a JPEG or PNG file (8- or 16-bit, gray or colour) or a DICOM file
/// (recognised by its content) as gray intensities in `[0, 1]`, at its own size.
pub fn read_film(path: &Path) -> Result<GrayImage, InferError> {
    Ok(read_film_with_header(path)?.0)
}

/// [`read_film`], with the DICOM header's fields when the file is DICOM.
pub fn read_film_with_header(path: &Path) -> Result<(GrayImage, Option<DicomInfo>), InferError> {
    let bytes = std::fs::read(path).map_err(|e| xray_data::DataError::io(path, e))?;
    Ok(decode_film(path, &bytes)?)
}

impl Bundle {
    /// Predicts one film of any size: resized to the input size exactly as in training,
    /// scored, checked against the training films, and decided at the bundle's operating point.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), xray_infer::InferError> {
    /// let bundle = xray_infer::Bundle::load("models/scratch_cnn".as_ref(), &candle_core::Device::Cpu)?;
    /// let film = xray_infer::read_film("film.png".as_ref())?;
    /// let p = bundle.predict(&film)?;
    /// println!("{} ({:.3}) {:?}", p.decision, p.calibrated_probability, p.refer_reasons);
    /// # Ok(()) }
    /// ```
    pub fn predict(&self, film: &GrayImage) -> Result<Prediction, InferError> {
        let mut predictions = self.predict_batch(&[film])?;
        Ok(predictions.remove(0))
    }

    /// [`Bundle::predict`] for a film whose DICOM header (if any) may add refer reasons: a
    /// lateral view, an age outside the training population ([`header_reasons`]).
    pub fn predict_with_header(
        &self,
        film: &GrayImage,
        header: Option<&DicomInfo>,
    ) -> Result<Prediction, InferError> {
        let mut prediction = self.predict(film)?;
        if let Some(info) = header {
            prediction.apply_header(info);
        }
        Ok(prediction)
    }

    /// [`Bundle::predict`] for many films, [`Bundle::batch_size`] per forward pass.
    pub fn predict_batch(&self, films: &[&GrayImage]) -> Result<Vec<Prediction>, InferError> {
        let size = self.input_size();
        let mut predictions = Vec::with_capacity(films.len());
        for chunk in films.chunks(self.batch_size()) {
            let resized: Vec<std::borrow::Cow<GrayImage>> =
                chunk.iter().map(|f| resize_to_input(f, size)).collect();
            let inputs: Vec<&GrayImage> = resized.iter().map(|c| c.as_ref()).collect();
            let x = images_to_tensor(&inputs, &self.config.preprocessing, self.device())?;
            let features = self.model.pooled_features(&x)?.detach();
            let p = candle_nn::ops::sigmoid(&self.model.logits_from_pooled(&features)?)?;
            let rows = features.flatten_all()?.to_vec1::<f32>()?;
            let dim = features.dim(1)?;
            for (((probability, row), input), film) in p
                .to_vec1::<f32>()?
                .into_iter()
                .zip(rows.chunks_exact(dim))
                .zip(&inputs)
                .zip(chunk)
            {
                predictions.push(self.decide(f64::from(probability), row, input, film)?);
            }
        }
        Ok(predictions)
    }

    /// The prediction of one film from its probability and pooled features.
    fn decide(
        &self,
        probability: f64,
        features: &[f32],
        input: &GrayImage,
        film: &GrayImage,
    ) -> Result<Prediction, InferError> {
        let mut reasons = Vec::new();
        let mut ood_score = None;
        if let Some(detail) = degenerate(film) {
            reasons.push(ReferReason::DegenerateImage { detail });
        }
        if let Some(ood) = &self.config.ood {
            let score = ood.score(features, &appearance(input))?;
            ood_score = Some(score);
            if OodStatistics::is_outlier(score) {
                reasons.push(ReferReason::OutOfDistribution { score });
            }
        }
        if let Some(band) = &self.config.refer_band {
            let set = band.prediction_set(probability);
            if !set.is_call() {
                reasons.push(ReferReason::Uncertain {
                    set,
                    normal_upper: band.normal_upper,
                    pneumonia_lower: band.pneumonia_lower,
                });
            }
        }
        if !probability.is_finite() {
            reasons.push(ReferReason::DegenerateImage {
                detail: format!("the model gave probability {probability}"),
            });
        }
        let point = self.operating_point();
        let decision = if !reasons.is_empty() {
            Decision::Refer
        } else if probability >= point.threshold {
            Decision::Pneumonia
        } else {
            Decision::Normal
        };
        Ok(Prediction {
            probability,
            calibrated_probability: self
                .config
                .calibration
                .as_ref()
                .map_or(probability, |c| c.apply(probability)),
            operating_point: point.name.clone(),
            threshold: point.threshold,
            decision,
            refer_reasons: reasons,
            ood_score,
            out_of_distribution: ood_score.map(OodStatistics::is_outlier),
        })
    }

    /// Uncalibrated probabilities of films already at the input size, averaged over the fixed
    /// test-time views of [`test_time_views`] (the film itself among them).
    pub fn probabilities_tta(&self, images: &[&GrayImage]) -> Result<Vec<f64>, InferError> {
        let views = test_time_views();
        let mut sum = self.probabilities(images)?;
        for view in views.iter().filter(|v| **v != ViewTransform::IDENTITY) {
            let changed: Vec<GrayImage> = images.iter().map(|i| view.apply(i)).collect();
            let refs: Vec<&GrayImage> = changed.iter().collect();
            for (s, p) in sum.iter_mut().zip(self.probabilities(&refs)?) {
                *s += p;
            }
        }
        Ok(sum.into_iter().map(|s| s / views.len() as f64).collect())
    }
}
