//! A detector of films from outside the training population (for the shipped bundles: adults),
//! fitted against reference films of that population.
//!
//! The distances of [`crate::OodStatistics`] need no examples of what to catch, and catch
//! blank, inverted or non-chest images; but adult chest films lie close to the children's in
//! both views (measured: 43% of 300 adult films flagged). Given reference films of the population
//! to catch, a linear classifier on the same two views separates them far better.

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::InferError;

/// How [`PopulationDetector::fit`] trains its logistic regression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PopulationFit {
    /// L2 penalty on the (standardised) weights.
    pub l2: f64,
    /// Full-batch Adam steps.
    pub steps: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Quantile of the validation films' logits that becomes the threshold: the share of
    /// in-population films left unflagged.
    pub quantile: f64,
}

impl Default for PopulationFit {
    fn default() -> Self {
        PopulationFit {
            l2: 1e-3,
            steps: 500,
            learning_rate: 0.1,
            quantile: 0.995,
        }
    }
}

/// A logistic regression on standardised vectors (a film's pooled features followed by its
/// appearance descriptor) that tells films of the training population (0) from reference films
/// of another (1). Its threshold is a high quantile of the validation films' logits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulationDetector {
    /// Per-dimension mean of the fitting vectors.
    pub mean: Vec<f32>,
    /// Per-dimension standard deviation (floored) of the fitting vectors.
    pub std: Vec<f32>,
    /// Weights on the standardised vector.
    pub weights: Vec<f32>,
    /// Bias.
    pub bias: f32,
    /// Logits above this flag a film.
    pub threshold: f64,
    /// How it was fitted.
    pub fit: PopulationFit,
    /// What the reference films are (e.g. the folder).
    pub reference: String,
    /// The reference films fitted on, by file name: results on them must never be reported.
    pub reference_files: Vec<String>,
    /// Training-population films fitted on.
    pub inside_films: usize,
}

impl PopulationDetector {
    /// Fits the detector on `inside` (training-population vectors, row-major with `dim`
    /// columns) against `outside` (reference vectors), with the threshold at
    /// `settings.quantile` of `validation`'s logits (in-population films not fitted on).
    pub fn fit(
        inside: &[f32],
        outside: &[f32],
        validation: &[f32],
        dim: usize,
        settings: PopulationFit,
        reference: String,
        reference_files: Vec<String>,
    ) -> Result<PopulationDetector, InferError> {
        let rows = |v: &[f32], what: &str| -> Result<usize, InferError> {
            if dim == 0 || v.is_empty() || !v.len().is_multiple_of(dim) {
                return Err(InferError::Population(format!(
                    "{what}: {} values do not make rows of {dim}",
                    v.len()
                )));
            }
            Ok(v.len() / dim)
        };
        let (n_in, n_out) = (
            rows(inside, "inside films")?,
            rows(outside, "reference films")?,
        );
        rows(validation, "validation films")?;
        let all: Vec<f32> = inside.iter().chain(outside).copied().collect();
        let (mean, std) = standardisation(&all, dim);
        let device = Device::Cpu;
        let x = Tensor::from_vec(standardise(&all, &mean, &std), (n_in + n_out, dim), &device)?;
        // Balanced: each population weighs half of the loss, however many films it has.
        let targets: Vec<f32> = (0..n_in + n_out)
            .map(|i| f32::from(u8::from(i >= n_in)))
            .collect();
        let weights: Vec<f32> = (0..n_in + n_out)
            .map(|i| {
                if i < n_in {
                    0.5 / n_in as f32
                } else {
                    0.5 / n_out as f32
                }
            })
            .collect();
        let y = Tensor::from_vec(targets, n_in + n_out, &device)?;
        let sample_weight = Tensor::from_vec(weights, n_in + n_out, &device)?;
        let w = Var::zeros((dim, 1), DType::F32, &device)?;
        let b = Var::zeros(1, DType::F32, &device)?;
        let mut optimiser = AdamW::new(
            vec![w.clone(), b.clone()],
            ParamsAdamW {
                lr: settings.learning_rate,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )?;
        for _ in 0..settings.steps {
            let z = x
                .matmul(w.as_tensor())?
                .squeeze(1)?
                .broadcast_add(b.as_tensor())?;
            // Numerically stable BCE with logits: max(z, 0) - z y + ln(1 + e^-|z|).
            let bce = (z.relu()? - (&z * &y)? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            let penalty = (w.as_tensor().sqr()?.sum_all()? * (0.5 * settings.l2))?;
            let loss = ((bce * &sample_weight)?.sum_all()? + penalty)?;
            optimiser.backward_step(&loss)?;
        }
        let mut detector = PopulationDetector {
            mean,
            std,
            weights: w.as_tensor().flatten_all()?.to_vec1()?,
            bias: b.as_tensor().to_vec1::<f32>()?[0],
            threshold: 0.0,
            fit: settings,
            reference,
            reference_files,
            inside_films: n_in,
        };
        let mut logits = detector.logits(validation)?;
        logits.sort_by(f64::total_cmp);
        detector.threshold = xray_eval::percentile(&logits, settings.quantile);
        Ok(detector)
    }

    /// The logit of each row of `vectors` (`dim` columns): above [`Self::threshold`], the film
    /// looks like the reference population.
    pub fn logits(&self, vectors: &[f32]) -> Result<Vec<f64>, InferError> {
        let dim = self.weights.len();
        if dim == 0 || !vectors.len().is_multiple_of(dim) {
            return Err(InferError::Population(format!(
                "{} values do not make rows of the detector's width {dim}",
                vectors.len()
            )));
        }
        Ok(vectors
            .chunks_exact(dim)
            .map(|row| {
                let z: f64 = row
                    .iter()
                    .zip(&self.mean)
                    .zip(&self.std)
                    .zip(&self.weights)
                    .map(|(((&v, &m), &s), &w)| f64::from((v - m) / s) * f64::from(w))
                    .sum();
                z + f64::from(self.bias)
            })
            .collect())
    }

    /// A film's score on the scale of the other out-of-distribution views: `exp(logit -
    /// threshold)`, above 1 when the film is flagged.
    pub fn score(&self, vector: &[f32]) -> Result<f64, InferError> {
        let logit = self.logits(vector)?[0];
        Ok((logit - self.threshold).min(700.0).exp())
    }
}

fn standardisation(rows: &[f32], dim: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (rows.len() / dim) as f64;
    let mut mean = vec![0f64; dim];
    let mut square = vec![0f64; dim];
    for row in rows.chunks_exact(dim) {
        for ((m, s), &v) in mean.iter_mut().zip(square.iter_mut()).zip(row) {
            *m += f64::from(v);
            *s += f64::from(v) * f64::from(v);
        }
    }
    let mean: Vec<f64> = mean.into_iter().map(|m| m / n).collect();
    let std = square
        .into_iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(0.0).sqrt() + 1e-6) as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

fn standardise(rows: &[f32], mean: &[f32], std: &[f32]) -> Vec<f32> {
    rows.chunks_exact(mean.len())
        .flat_map(|row| {
            row.iter()
                .zip(mean)
                .zip(std)
                .map(|((&v, &m), &s)| (v - m) / s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `dim` values: noise, shifted by `shift` along the first dimension only.
    fn rows(n: usize, dim: usize, shift: f32, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as f32 / u32::MAX as f32 - 0.5
        };
        (0..n * dim)
            .map(|i| next() + if i % dim == 0 { shift } else { 0.0 })
            .collect()
    }

    #[test]
    fn separates_a_shifted_population_and_flags_few_of_its_own() {
        let dim = 6;
        let inside = rows(400, dim, 0.0, 1);
        let outside = rows(40, dim, 1.5, 2);
        let validation = rows(400, dim, 0.0, 3);
        let detector = PopulationDetector::fit(
            &inside,
            &outside,
            &validation,
            dim,
            PopulationFit {
                quantile: 0.99,
                ..PopulationFit::default()
            },
            "test".into(),
            vec![],
        )
        .unwrap();
        let flagged = |v: &[f32]| {
            v.chunks_exact(dim)
                .filter(|r| detector.score(r).unwrap() > 1.0)
                .count()
        };
        assert!(flagged(&rows(200, dim, 1.5, 4)) >= 190);
        assert!(flagged(&rows(400, dim, 0.0, 5)) <= 12);
        // The weight on the shifted dimension dominates the others.
        let w: Vec<f32> = detector.weights.iter().map(|w| w.abs()).collect();
        assert!(w[1..].iter().all(|&x| x < w[0] / 3.0), "{w:?}");
    }

    #[test]
    fn ragged_inputs_are_refused_with_what_was_wrong() {
        let error = PopulationDetector::fit(
            &[0.0; 7],
            &[0.0; 6],
            &[0.0; 6],
            3,
            PopulationFit::default(),
            "test".into(),
            vec![],
        )
        .unwrap_err();
        assert!(error.to_string().contains("7 values"), "{error}");
    }
}
