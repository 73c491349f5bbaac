//! A bundle scored on a folder of labelled films, and the files `evaluate` writes about it:
//! `metrics.json`, `predictions.csv`, and with a report the plots and `report.html`.

use std::path::Path;

use xray_data::{DecodedSet, GrayImage, Label, Shift};
use xray_eval::{BootstrapConfig, DISCLAIMER};
use xray_infer::{Bundle, Decision, Prediction};

use crate::evaluation::{
    build_report, confident_errors_grid, evaluation_figures, Evaluation, EvaluationInput,
    ReportContext,
};
use crate::pipeline::metrics_table;
use crate::Error;

/// How to score a bundle on a decoded set.
#[derive(Debug, Clone, Copy)]
pub struct ScoringOptions {
    /// A controlled acquisition shift applied to every film first (seeded per film).
    pub shift: Option<Shift>,
    /// Average the probabilities of the fixed test-time views.
    pub tta: bool,
    /// Prevalence for PPV / NPV; `None`: the data's own.
    pub prevalence: Option<f64>,
    /// The patient bootstrap's settings (its seed also seeds the shift).
    pub bootstrap: BootstrapConfig,
    /// Also report the threshold adapted to the films' estimated prevalence
    /// ([`crate::evaluation::SiteAdaptation`]).
    pub adapt_prior: bool,
}

/// A bundle's predictions on a labelled set, and the evaluation computed from them.
pub struct ScoredSet {
    /// Pneumonia probabilities (averaged over the test-time views with TTA).
    pub probabilities: Vec<f64>,
    /// Each film's own prediction: decision, refer reasons, out-of-distribution score.
    pub predictions: Vec<Prediction>,
    /// True labels (pneumonia = true).
    pub labels: Vec<bool>,
    /// Everything the report and `metrics.json` show.
    pub evaluation: Evaluation,
    /// The films as scored, when a shift changed them.
    shifted: Option<Vec<GrayImage>>,
}

/// Scores `bundle` on `set` (films at the bundle's input size).
pub fn score_set(
    bundle: &Bundle,
    set: &DecodedSet,
    options: &ScoringOptions,
) -> Result<ScoredSet, Error> {
    let seed = options.bootstrap.seed;
    let shifted: Option<Vec<GrayImage>> = options.shift.map(|shift| {
        set.images
            .iter()
            .enumerate()
            .map(|(i, film)| shift.apply(film, seed ^ i as u64))
            .collect()
    });
    let images: Vec<&GrayImage> = shifted.as_ref().unwrap_or(&set.images).iter().collect();
    let predictions = bundle.predict_batch(&images)?;
    let probabilities = if options.tta {
        bundle.probabilities_tta(&images)?
    } else {
        predictions.iter().map(|p| p.probability).collect()
    };
    let labels: Vec<bool> = set
        .samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let patients: Vec<String> = set.samples.iter().map(|s| s.patient_id.clone()).collect();
    let referred: Vec<bool> = predictions
        .iter()
        .map(|p| p.decision == Decision::Refer)
        .collect();
    let evaluation = Evaluation::compute(&EvaluationInput {
        referred: Some(&referred),
        adapt_prior: options.adapt_prior,
        probabilities: &probabilities,
        labels: &labels,
        patients: &patients,
        bundle: &bundle.config,
        prevalence: options.prevalence,
        bootstrap: options.bootstrap,
    })?;
    Ok(ScoredSet {
        probabilities,
        predictions,
        labels,
        evaluation,
        shifted,
    })
}

impl ScoredSet {
    /// Films flagged out of distribution.
    pub fn flagged(&self) -> usize {
        let flagged = |p: &&Prediction| p.out_of_distribution == Some(true);
        self.predictions.iter().filter(flagged).count()
    }

    /// Films referred (out of distribution, degenerate, or uncertain).
    pub fn referred(&self) -> usize {
        let referred = |p: &&Prediction| p.decision == Decision::Refer;
        self.predictions.iter().filter(referred).count()
    }

    /// The metrics tables, the intervals, the notes and the out-of-distribution count, as
    /// `evaluate` prints them.
    pub fn summary(&self, bundle: &Bundle) -> String {
        let e = &self.evaluation;
        let i = &e.intervals;
        let mut out = metrics_table(&[
            ("bundle threshold", &e.at_stored_threshold),
            ("threshold 0.5", &e.at_threshold_0_5),
        ]);
        out += &format!(
            "95% patient-bootstrap intervals at the bundle threshold: accuracy {:.3}-{:.3}, \
             recall {:.3}-{:.3}, specificity {:.3}-{:.3}, ROC AUC {:.3}-{:.3}; PR AUC {:.4}\n",
            i.accuracy.lower,
            i.accuracy.upper,
            i.recall.lower,
            i.recall.upper,
            i.specificity.lower,
            i.specificity.upper,
            i.roc_auc.lower,
            i.roc_auc.upper,
            e.pr_auc
        );
        if let Some(s) = &e.selective {
            out += &format!(
                "with refer: {} of {} films called (coverage {:.3}, {:.3}-{:.3}); on them \
                 accuracy {:.4} ({:.4}-{:.4}), recall {:.4}, specificity {:.4}\n",
                s.called,
                s.films,
                s.coverage.estimate,
                s.coverage.lower,
                s.coverage.upper,
                s.accuracy.estimate,
                s.accuracy.lower,
                s.accuracy.upper,
                s.recall.estimate,
                s.specificity.estimate
            );
        }
        if let Some(a) = &e.site_adaptation {
            out += &format!(
                "site adaptation (optional, label shift only): estimated pneumonia share {:.3} \
                 (validation {:.3}), threshold {:.4} -> {:.4}:\n{}",
                a.prior_shift.estimated_prior,
                a.prior_shift.training_prior,
                e.at_stored_threshold.threshold,
                a.threshold,
                metrics_table(&[("adapted threshold", &a.metrics)])
            );
        }
        for note in &e.notes {
            out += &format!("note: {note}\n");
        }
        if let Some(ood) = &bundle.config.ood {
            out += &format!(
                "out of distribution: {} of {} films lie further from the training films than \
                 {:.1}% of validation films (features, appearance, or the population detector); their predictions are \
                 extrapolation; {} films referred in all\n",
                self.flagged(),
                self.predictions.len(),
                ood.features.quantile * 100.0,
                self.referred()
            );
        }
        out
    }

    /// `metrics.json`: the metrics at the stored threshold at the top level, then everything
    /// else, with `context` (data, model, options) merged in.
    pub fn metrics_json(
        &self,
        bundle: &Bundle,
        context: serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let json_error = |source| {
            Error::from(crate::ErrorKind::Json {
                what: "metrics.json".into(),
                source,
            })
        };
        let e = &self.evaluation;
        let mut json = serde_json::to_value(e.at_stored_threshold).map_err(json_error)?;
        let mut add = |key: &str, value: Result<serde_json::Value, serde_json::Error>| {
            value.map(|v| json[key] = v).map_err(json_error)
        };
        add(
            "threshold_rule",
            serde_json::to_value(bundle.config.threshold.rule),
        )?;
        add("at_threshold_0_5", serde_json::to_value(e.at_threshold_0_5))?;
        add("pr_auc", Ok(serde_json::json!(e.pr_auc)))?;
        add("intervals", serde_json::to_value(&e.intervals))?;
        add("evaluation", serde_json::to_value(e))?;
        add("referred", Ok(serde_json::json!(self.referred())))?;
        add("selective", serde_json::to_value(&e.selective))?;
        let ood = bundle.config.ood.as_ref().map(|ood| {
            serde_json::json!({
                "feature_threshold": ood.features.threshold,
                "appearance_threshold": ood.appearance.threshold,
                "quantile": ood.features.quantile,
                "flagged": self.flagged(),
            })
        });
        add("ood", Ok(ood.unwrap_or(serde_json::Value::Null)))?;
        if let serde_json::Value::Object(fields) = context {
            for (key, value) in fields {
                json[key] = value;
            }
        }
        json["disclaimer"] = serde_json::json!(DISCLAIMER);
        Ok(json)
    }

    /// `predictions.csv`: one row per film with its probability, calibrated probability, the
    /// call at the stored threshold, the decision with refer, its reasons and the
    /// out-of-distribution score.
    pub fn write_predictions_csv(
        &self,
        path: &Path,
        set: &DecodedSet,
        bundle: &Bundle,
    ) -> Result<(), Error> {
        let csv_error = |source| {
            Error::from(crate::ErrorKind::Csv {
                path: path.to_path_buf(),
                source,
            })
        };
        let mut csv = csv::Writer::from_path(path).map_err(csv_error)?;
        csv.write_record([
            "path",
            "label",
            "probability",
            "calibrated_probability",
            "predicted",
            "decision",
            "refer_reasons",
            "ood_score",
            "out_of_distribution",
        ])
        .map_err(csv_error)?;
        let threshold = self.evaluation.at_stored_threshold.threshold;
        let rows = set.samples.iter().zip(&self.probabilities);
        for ((sample, &p), prediction) in rows.zip(&self.predictions) {
            let predicted = if p >= threshold {
                Label::Pneumonia
            } else {
                Label::Normal
            };
            let calibration = bundle.config.calibration.as_ref();
            let reasons: Vec<String> = prediction
                .refer_reasons
                .iter()
                .map(|r| r.to_string())
                .collect();
            csv.write_record([
                sample.path.display().to_string(),
                sample.label.folder_name().to_string(),
                format!("{p:.6}"),
                calibration.map_or(String::new(), |t| format!("{:.6}", t.apply(p))),
                predicted.folder_name().to_string(),
                prediction.decision.to_string(),
                reasons.join("; "),
                prediction
                    .ood_score
                    .map_or(String::new(), |s| format!("{s:.4}")),
                prediction
                    .out_of_distribution
                    .map_or(String::new(), |f| f.to_string()),
            ])
            .map_err(csv_error)?;
        }
        csv.flush().map_err(|e| Error::io(path, e))
    }

    /// The plots (PNG and SVG under `out/plots`), the grid of the `errors` most confident
    /// errors of each kind, and the self-contained `out/report.html`.
    pub fn write_report(
        &self,
        out: &Path,
        set: &DecodedSet,
        bundle: &Bundle,
        context: &ReportContext,
        errors: usize,
        training_log: Option<&str>,
    ) -> Result<(), Error> {
        let figures = evaluation_figures(
            &self.evaluation,
            &self.probabilities,
            &self.labels,
            training_log,
        )?;
        let plots = out.join("plots");
        for f in &figures {
            f.save(&plots)?;
        }
        let names: Vec<String> = set
            .samples
            .iter()
            .map(|s| {
                s.path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into())
            })
            .collect();
        let images: Vec<&GrayImage> = self
            .shifted
            .as_ref()
            .unwrap_or(&set.images)
            .iter()
            .collect();
        let grid = confident_errors_grid(
            bundle,
            &images,
            &names,
            &self.probabilities,
            &self.labels,
            errors,
        )?;
        if let Some((_, png)) = &grid {
            let path = plots.join("confident_errors.png");
            std::fs::write(&path, png).map_err(|e| Error::io(&path, e))?;
        }
        let report = build_report(&self.evaluation, &bundle.config, context, &figures, grid);
        report.write(&out.join("report.html"))?;
        Ok(())
    }
}
