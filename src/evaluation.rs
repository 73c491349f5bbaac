//! Everything `evaluate` reports about one model on one labelled set: metrics at the stored and
//! at the 0.5 threshold with patient-bootstrap intervals, curves, operating points, calibration,
//! predictive values at a chosen prevalence; plus its plots and the HTML report.

use std::collections::HashMap;

use serde::Serialize;
use xray_data::{images_to_tensor, GrayImage};
use xray_eval::plots::{
    render, ConfusionPlot, PrPlot, ReliabilityPlot, RiskCoveragePlot, RocPlot, TrainingCurvesPlot,
};
use xray_eval::{
    average_precision, brier_score, expected_calibration_error, predictive_values,
    reliability_bins, roc_auc, sensitivity_at_specificity, specificity_at_sensitivity, Binning,
    Block, BootstrapConfig, ConfusionMatrix, EvalError, Figure, MetricIntervals, Metrics,
    OperatingPoint, PrCurve, PredictiveValues, PriorShift, Report, RiskCoverage, RocCurve,
    SelectiveMetrics, TemperatureScaling, DISCLAIMER,
};
use xray_eval::{heat_overlay, vanilla_gradient};
use xray_infer::{Bundle, BundleConfig, NamedThreshold};

use crate::Error;

/// Bins of the calibration error and reliability diagram.
pub const CALIBRATION_BINS: usize = 10;

/// What one evaluation needs.
pub struct EvaluationInput<'a> {
    /// Uncalibrated pneumonia probabilities, one per film.
    pub probabilities: &'a [f64],
    /// True labels (pneumonia = true).
    pub labels: &'a [bool],
    /// Patient id of each film: the bootstrap resamples patients.
    pub patients: &'a [String],
    /// The bundle's config (thresholds, calibration, operating points).
    pub bundle: &'a BundleConfig,
    /// Prevalence for PPV / NPV; `None`: the evaluated data's own.
    pub prevalence: Option<f64>,
    /// Bootstrap settings.
    pub bootstrap: BootstrapConfig,
    /// Which films the bundle referred (out of distribution, degenerate, uncertain); `None`
    /// where decisions were not made.
    pub referred: Option<&'a [bool]>,
    /// Also estimate the evaluated films' prevalence from their probabilities alone and report
    /// the metrics at the threshold adapted to it ([`SiteAdaptation`]), apart from the rest.
    pub adapt_prior: bool,
}

/// The operating point adapted to the evaluated films' own prevalence, estimated without their
/// labels by EM ([`PriorShift`]). An option, never the default: it assumes only the share of
/// pneumonia changed.
#[derive(Debug, Clone, Serialize)]
pub struct SiteAdaptation {
    /// The estimate.
    pub prior_shift: PriorShift,
    /// The stored threshold moved to the estimated prevalence.
    pub threshold: f64,
    /// Metrics at that threshold (the labels are used only here, to measure).
    pub metrics: Metrics,
    /// Their patient-bootstrap intervals (the estimate itself held fixed).
    pub intervals: MetricIntervals,
}

/// Calibration measures of one version of the probabilities.
#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSummary {
    /// Which probabilities: `uncalibrated` or `temperature_scaled`.
    pub probabilities: String,
    /// Expected calibration error, 10 equal-width bins.
    pub ece_equal_width: f64,
    /// Adaptive (equal-mass) calibration error, 10 bins.
    pub ece_equal_mass: f64,
    /// Brier score.
    pub brier: f64,
}

/// A stored threshold applied to the evaluated data.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedThreshold {
    /// Its name and how validation chose it.
    pub stored: NamedThreshold,
    /// What it gives here.
    pub metrics: Metrics,
}

/// Everything computed for the report and `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Films.
    pub images: usize,
    /// Patients.
    pub patients: usize,
    /// Share of pneumonia among the films.
    pub data_prevalence: f64,
    /// Metrics at the bundle's stored threshold.
    pub at_stored_threshold: Metrics,
    /// Patient-bootstrap intervals at the stored threshold.
    pub intervals: MetricIntervals,
    /// Metrics at 0.5.
    pub at_threshold_0_5: Metrics,
    /// Patient-bootstrap intervals at 0.5.
    pub intervals_at_0_5: MetricIntervals,
    /// ROC AUC.
    pub roc_auc: f64,
    /// Average precision (PR AUC).
    pub pr_auc: f64,
    /// Best sensitivity at specificity >= 0.90 and 0.95, read off this data (descriptive).
    pub sensitivity_at_specificity: Vec<(f64, OperatingPoint)>,
    /// Best specificity at sensitivity >= 0.95 and 0.975, read off this data (descriptive).
    pub specificity_at_sensitivity: Vec<(f64, OperatingPoint)>,
    /// The bundle's alternative thresholds (chosen on validation) applied unchanged.
    pub stored_operating_points: Vec<AppliedThreshold>,
    /// Calibration of the raw and (when the bundle has one) temperature-scaled probabilities.
    pub calibration: Vec<CalibrationSummary>,
    /// The bundle's temperature scaling, if any.
    pub temperature: Option<TemperatureScaling>,
    /// PPV / NPV at the stored threshold and at 0.5, at the chosen prevalence.
    pub predictive_values: Vec<(String, PredictiveValues)>,
    /// Coverage and the metrics on the films not referred, when decisions were made.
    pub selective: Option<SelectiveMetrics>,
    /// The threshold adapted to the films' estimated prevalence, when asked for.
    pub site_adaptation: Option<SiteAdaptation>,
    /// Area under the risk-coverage curve at the stored threshold (mean error rate over
    /// coverage; lower is better).
    pub risk_coverage_area: f64,
    /// What the bundle lacks and other caveats.
    pub notes: Vec<String>,
}

/// A group index per film, one per distinct patient (in order of first appearance): what the
/// patient bootstrap resamples.
pub fn patient_groups(patients: &[String]) -> Vec<usize> {
    let mut ids: HashMap<&str, usize> = HashMap::new();
    patients
        .iter()
        .map(|p| {
            let next = ids.len();
            *ids.entry(p.as_str()).or_insert(next)
        })
        .collect()
}

fn calibration_summary(
    name: &str,
    probabilities: &[f64],
    labels: &[bool],
) -> Result<CalibrationSummary, EvalError> {
    Ok(CalibrationSummary {
        probabilities: name.to_string(),
        ece_equal_width: expected_calibration_error(
            probabilities,
            labels,
            CALIBRATION_BINS,
            Binning::EqualWidth,
        )?,
        ece_equal_mass: expected_calibration_error(
            probabilities,
            labels,
            CALIBRATION_BINS,
            Binning::EqualMass,
        )?,
        brier: brier_score(probabilities, labels)?,
    })
}

impl Evaluation {
    /// Computes every number of the report.
    pub fn compute(input: &EvaluationInput) -> Result<Evaluation, EvalError> {
        let (p, y) = (input.probabilities, input.labels);
        if input.patients.len() != y.len() {
            return Err(EvalError::LengthMismatch {
                scores: input.patients.len(),
                labels: y.len(),
            });
        }
        let groups = patient_groups(input.patients);
        let stored = input.bundle.threshold.value;
        let at_stored = Metrics::compute(p, y, stored)?;
        let at_half = Metrics::compute(p, y, 0.5)?;
        let data_prevalence = y.iter().filter(|&&l| l).count() as f64 / y.len() as f64;
        let prevalence = input.prevalence.unwrap_or(data_prevalence);
        let mut notes = input.bundle.missing_parts();
        let mut calibration = vec![calibration_summary("uncalibrated", p, y)?];
        if let Some(t) = &input.bundle.calibration {
            calibration.push(calibration_summary(
                "temperature_scaled",
                &t.apply_all(p),
                y,
            )?);
        }
        let mut stored_operating_points = Vec::new();
        for point in &input.bundle.operating_points {
            stored_operating_points.push(AppliedThreshold {
                stored: point.clone(),
                metrics: Metrics::compute(p, y, point.value)?,
            });
        }
        let intervals = MetricIntervals::compute(p, y, &groups, stored, &input.bootstrap)?;
        if intervals.resamples_skipped > 0 {
            notes.push(format!(
                "{} of {} bootstrap resamples lacked a class and were dropped",
                intervals.resamples_skipped, input.bootstrap.resamples
            ));
        }
        let selective = match input.referred {
            Some(referred) => {
                match SelectiveMetrics::compute(p, y, referred, stored, &groups, &input.bootstrap) {
                    Ok(m) => Some(m),
                    // Every film referred, or one class never called: nothing to measure.
                    Err(EvalError::Undefined { what }) => {
                        notes.push(format!("no metrics on the films called: {what}"));
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let site_adaptation = if input.adapt_prior {
            Some(site_adaptation(input, &groups)?)
        } else {
            None
        };
        Ok(Evaluation {
            selective,
            site_adaptation,
            risk_coverage_area: RiskCoverage::compute(p, y, stored)?.area(),
            images: y.len(),
            patients: groups.iter().max().map_or(0, |m| m + 1),
            data_prevalence,
            at_stored_threshold: at_stored,
            intervals,
            at_threshold_0_5: at_half,
            intervals_at_0_5: MetricIntervals::compute(p, y, &groups, 0.5, &input.bootstrap)?,
            roc_auc: roc_auc(p, y)?,
            pr_auc: average_precision(p, y)?,
            sensitivity_at_specificity: [0.90, 0.95]
                .iter()
                .map(|&t| Ok((t, sensitivity_at_specificity(p, y, t)?)))
                .collect::<Result<_, EvalError>>()?,
            specificity_at_sensitivity: [0.95, 0.975]
                .iter()
                .map(|&t| Ok((t, specificity_at_sensitivity(p, y, t)?)))
                .collect::<Result<_, EvalError>>()?,
            stored_operating_points,
            calibration,
            temperature: input.bundle.calibration.clone(),
            predictive_values: vec![
                (
                    format!("stored threshold {stored:.4}"),
                    predictive_values(at_stored.recall, at_stored.specificity, prevalence)?,
                ),
                (
                    "threshold 0.5".to_string(),
                    predictive_values(at_half.recall, at_half.specificity, prevalence)?,
                ),
            ],
            notes,
        })
    }
}

/// [`SiteAdaptation`] of the bundle's stored threshold to the evaluated films: EM on their
/// calibrated probabilities, from the prevalence of the bundle's validation films.
fn site_adaptation(input: &EvaluationInput, groups: &[usize]) -> Result<SiteAdaptation, EvalError> {
    let v = &input.bundle.validation_metrics;
    let training_prior = (v.tp + v.fn_) as f64 / v.n.max(1) as f64;
    let temperature = input
        .bundle
        .calibration
        .as_ref()
        .map_or(1.0, |t| t.temperature);
    let calibrated: Vec<f64> = match &input.bundle.calibration {
        Some(t) => t.apply_all(input.probabilities),
        None => input.probabilities.to_vec(),
    };
    let prior_shift = PriorShift::estimate(&calibrated, training_prior)?;
    let threshold = prior_shift.adapted_threshold(input.bundle.threshold.value, temperature);
    let (p, y) = (input.probabilities, input.labels);
    Ok(SiteAdaptation {
        prior_shift,
        threshold,
        metrics: Metrics::compute(p, y, threshold)?,
        intervals: MetricIntervals::compute(p, y, groups, threshold, &input.bootstrap)?,
    })
}

/// The training log's per-epoch numbers as curves: loss panel and validation AUC panel.
/// Lines that are not JSON objects with an `epoch` are ignored.
pub fn training_curves(log: &str) -> Option<TrainingCurvesPlot> {
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("epoch").is_some())
        .collect();
    let series = |key: &str| -> Vec<(f64, f64)> {
        records
            .iter()
            .filter_map(|r| Some((r["epoch"].as_f64()?, r.get(key)?.as_f64()?)))
            .collect()
    };
    let (train_loss, val_loss, val_auc) =
        (series("train_loss"), series("val_loss"), series("val_auc"));
    if train_loss.is_empty() && val_auc.is_empty() {
        return None;
    }
    Some(TrainingCurvesPlot {
        panels: vec![
            (
                "Loss".to_string(),
                vec![
                    ("training".to_string(), train_loss),
                    ("validation".to_string(), val_loss),
                ],
            ),
            (
                "Validation ROC AUC".to_string(),
                vec![("validation".to_string(), val_auc)],
            ),
        ],
    })
}

/// ROC, PR, calibration and confusion-matrix figures (and training curves when a log is given).
pub fn evaluation_figures(
    evaluation: &Evaluation,
    probabilities: &[f64],
    labels: &[bool],
    training_log: Option<&str>,
) -> Result<Vec<Figure>, EvalError> {
    let at = &evaluation.at_stored_threshold;
    let mut markers = vec![(
        format!("stored threshold {:.3}", at.threshold),
        (1.0 - at.specificity, at.recall),
    )];
    let half = &evaluation.at_threshold_0_5;
    markers.push((
        "threshold 0.5".into(),
        (1.0 - half.specificity, half.recall),
    ));
    let mut figures = vec![
        render(
            &RocPlot {
                curves: vec![(
                    format!("model (AUC {:.3})", evaluation.roc_auc),
                    RocCurve::compute(probabilities, labels)?,
                )],
                markers,
            },
            640,
            560,
        )?,
        render(
            &PrPlot {
                curves: vec![(
                    format!("model (AP {:.3})", evaluation.pr_auc),
                    PrCurve::compute(probabilities, labels)?,
                )],
                prevalence: evaluation.data_prevalence,
            },
            640,
            560,
        )?,
    ];
    let mut reliability = vec![(
        "uncalibrated".to_string(),
        reliability_bins(probabilities, labels, CALIBRATION_BINS, Binning::EqualWidth)?,
    )];
    if let Some(t) = &evaluation.temperature {
        reliability.push((
            format!("temperature-scaled (T = {:.3})", t.temperature),
            reliability_bins(
                &t.apply_all(probabilities),
                labels,
                CALIBRATION_BINS,
                Binning::EqualWidth,
            )?,
        ));
    }
    figures.push(render(
        &ReliabilityPlot {
            series: reliability,
        },
        640,
        560,
    )?);
    figures.push(render(
        &ConfusionPlot {
            matrix: ConfusionMatrix {
                tp: at.tp,
                fp: at.fp,
                tn: at.tn,
                fn_: at.fn_,
            },
            threshold: at.threshold,
        },
        640,
        360,
    )?);
    let mut markers = Vec::new();
    if let Some(s) = &evaluation.selective {
        markers.push((
            format!("with refer (coverage {:.3})", s.coverage.estimate),
            (s.coverage.estimate, 1.0 - s.accuracy.estimate),
        ));
    }
    figures.push(render(
        &RiskCoveragePlot {
            curves: vec![(
                format!("model (area {:.4})", evaluation.risk_coverage_area),
                RiskCoverage::compute(probabilities, labels, at.threshold)?,
            )],
            markers,
        },
        640,
        480,
    )?);
    if let Some(plot) = training_log.and_then(training_curves) {
        figures.push(render(&plot, 960, 400)?);
    }
    Ok(figures)
}

fn interval_cell(estimate: f64, lower: f64, upper: f64) -> String {
    format!("{estimate:.3} ({lower:.3}-{upper:.3})")
}

fn metric_rows(name: &str, m: &Metrics, i: &MetricIntervals) -> Vec<String> {
    vec![
        name.to_string(),
        format!("{:.4}", m.threshold),
        interval_cell(m.accuracy, i.accuracy.lower, i.accuracy.upper),
        interval_cell(m.precision, i.precision.lower, i.precision.upper),
        interval_cell(m.recall, i.recall.lower, i.recall.upper),
        interval_cell(m.specificity, i.specificity.lower, i.specificity.upper),
        interval_cell(m.f1, i.f1.lower, i.f1.upper),
        format!("{} / {} / {} / {}", m.tp, m.fp, m.tn, m.fn_),
    ]
}

/// Where the evaluated films and the model come from, for the report's first section.
pub struct ReportContext {
    /// The data, in words (root, split, which patients).
    pub data: String,
    /// The bundle directory.
    pub model: String,
    /// Whether test-time augmentation averaged several views.
    pub tta: bool,
}

/// The HTML report: context, metrics side by side with intervals, operating points,
/// calibration, predictive values, figures and an optional grid of the most confident errors.
pub fn build_report(
    evaluation: &Evaluation,
    bundle: &BundleConfig,
    context: &ReportContext,
    figures: &[Figure],
    error_grid: Option<(String, Vec<u8>)>,
) -> Report {
    let mut r = Report::new("Pneumonia classifier evaluation");
    r.push(Block::Heading("Data and model".into()));
    let s = &bundle.split;
    let table = vec![
        vec!["evaluated data".into(), context.data.clone()],
        vec![
            "films / patients / pneumonia share".into(),
            format!(
                "{} / {} / {:.3}",
                evaluation.images, evaluation.patients, evaluation.data_prevalence
            ),
        ],
        vec!["model bundle".into(), context.model.clone()],
        vec![
            "architecture".into(),
            serde_json::to_string(&bundle.architecture).unwrap_or_default(),
        ],
        vec![
            "input".into(),
            format!(
                "{} x {} px, {}",
                bundle.preprocessing.size,
                bundle.preprocessing.size,
                serde_json::to_string(&bundle.preprocessing.normalization).unwrap_or_default()
            ),
        ],
        vec![
            "training split".into(),
            format!(
                "{} / {} / {} films (train / validation / held-out test), {}, patients hash {}",
                s.images[0],
                s.images[1],
                s.images[2],
                s.origin(),
                &s.patients_sha256[..12.min(s.patients_sha256.len())]
            ),
        ],
        vec![
            "stored threshold".into(),
            format!(
                "{:.4}, chosen on validation by {}",
                bundle.threshold.value,
                serde_json::to_string(&bundle.threshold.rule).unwrap_or_default()
            ),
        ],
        vec![
            "test-time augmentation".into(),
            if context.tta {
                "on (mean of 5 fixed views)".into()
            } else {
                "off".into()
            },
        ],
    ];
    r.push(Block::Table {
        header: vec!["".into(), "value".into()],
        rows: table,
    });
    for note in &evaluation.notes {
        r.push(Block::Notice(note.clone()));
    }

    r.push(Block::Heading(
        "Metrics with 95% patient-bootstrap intervals".into(),
    ));
    r.push(Block::Table {
        header: [
            "threshold",
            "value",
            "accuracy",
            "precision",
            "recall",
            "specificity",
            "F1",
            "TP / FP / TN / FN",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![
            metric_rows(
                "stored (validation-chosen)",
                &evaluation.at_stored_threshold,
                &evaluation.intervals,
            ),
            metric_rows(
                "0.5",
                &evaluation.at_threshold_0_5,
                &evaluation.intervals_at_0_5,
            ),
        ],
    });
    let i = &evaluation.intervals;
    r.push(Block::Paragraph(format!(
        "ROC AUC {} ; PR AUC (average precision) {} ; Brier {} ; {} resamples of patients, seed {}.",
        interval_cell(i.roc_auc.estimate, i.roc_auc.lower, i.roc_auc.upper),
        interval_cell(i.pr_auc.estimate, i.pr_auc.lower, i.pr_auc.upper),
        interval_cell(i.brier.estimate, i.brier.lower, i.brier.upper),
        i.resamples_used,
        i.config.seed
    )));

    if let Some(s) = &evaluation.selective {
        r.push(Block::Heading(
            "Refer: coverage and accuracy on the films called".into(),
        ));
        let cell = |i: &xray_eval::Interval| interval_cell(i.estimate, i.lower, i.upper);
        r.push(Block::Table {
            header: [
                "films",
                "called",
                "coverage",
                "accuracy",
                "recall",
                "specificity",
            ]
            .map(String::from)
            .to_vec(),
            rows: vec![vec![
                s.films.to_string(),
                s.called.to_string(),
                cell(&s.coverage),
                cell(&s.accuracy),
                cell(&s.recall),
                cell(&s.specificity),
            ]],
        });
        r.push(Block::Paragraph(format!(
            "Films are referred when out of distribution, degenerate, or in the refer band \
             ({}); the metrics above are on the films called, at the stored threshold. \
             Area under the risk-coverage curve: {:.4}.",
            bundle
                .refer_band
                .as_ref()
                .map_or("none stored".to_string(), |b| format!(
                    "normal up to {:.3}, pneumonia from {:.3}",
                    b.normal_upper, b.pneumonia_lower
                )),
            evaluation.risk_coverage_area
        )));
    }

    if let Some(a) = &evaluation.site_adaptation {
        r.push(Block::Heading(
            "Site adaptation (optional; assumes only the share of pneumonia changed)".into(),
        ));
        r.push(Block::Paragraph(format!(
            "EM on these films' calibrated probabilities, without their labels, estimates a \
             pneumonia share of {:.3} (validation: {:.3}; {} steps). The stored threshold {:.4} \
             moves to {:.4}. Reported apart from the unadapted result above.",
            a.prior_shift.estimated_prior,
            a.prior_shift.training_prior,
            a.prior_shift.steps,
            bundle.threshold.value,
            a.threshold
        )));
        r.push(Block::Table {
            header: [
                "threshold",
                "value",
                "accuracy",
                "precision",
                "recall",
                "specificity",
                "F1",
                "TP / FP / TN / FN",
            ]
            .map(String::from)
            .to_vec(),
            rows: vec![metric_rows("adapted to the site", &a.metrics, &a.intervals)],
        });
    }

    r.push(Block::Heading("Operating points".into()));
    let mut rows = Vec::new();
    for a in &evaluation.stored_operating_points {
        rows.push(vec![
            format!("stored: {}", a.stored.name),
            format!("{:.4}", a.stored.value),
            format!(
                "{:.3} / {:.3}",
                a.stored.validation_sensitivity, a.stored.validation_specificity
            ),
            format!("{:.3}", a.metrics.recall),
            format!("{:.3}", a.metrics.specificity),
        ]);
    }
    for (target, p) in &evaluation.sensitivity_at_specificity {
        rows.push(vec![
            format!("read off this data: best sensitivity at specificity >= {target}"),
            format!("{:.4}", p.threshold),
            "-".into(),
            format!("{:.3}", p.sensitivity),
            format!("{:.3}", p.specificity),
        ]);
    }
    for (target, p) in &evaluation.specificity_at_sensitivity {
        rows.push(vec![
            format!("read off this data: best specificity at sensitivity >= {target}"),
            format!("{:.4}", p.threshold),
            "-".into(),
            format!("{:.3}", p.sensitivity),
            format!("{:.3}", p.specificity),
        ]);
    }
    r.push(Block::Table {
        header: [
            "operating point",
            "threshold",
            "validation sens. / spec.",
            "sensitivity here",
            "specificity here",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    r.push(Block::Paragraph(
        "Stored points were chosen on the bundle's validation patients and are applied unchanged; \
         points read off this data are descriptive and optimistic (chosen on the data they score)."
            .into(),
    ));

    r.push(Block::Heading("Calibration and predictive values".into()));
    let mut rows: Vec<Vec<String>> = evaluation
        .calibration
        .iter()
        .map(|c| {
            vec![
                c.probabilities.clone(),
                format!("{:.4}", c.ece_equal_width),
                format!("{:.4}", c.ece_equal_mass),
                format!("{:.4}", c.brier),
            ]
        })
        .collect();
    if let Some(t) = &evaluation.temperature {
        rows.push(vec![
            format!("temperature T = {:.4}", t.temperature),
            format!("fitted on {} ({} films)", t.fitted_on, t.images),
            format!("NLL {:.4} -> {:.4}", t.nll_before, t.nll_after),
            "".into(),
        ]);
    }
    r.push(Block::Table {
        header: [
            "probabilities",
            "ECE (equal width)",
            "ECE (equal mass)",
            "Brier",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    });
    r.push(Block::Table {
        header: ["decision", "prevalence", "PPV", "NPV"]
            .map(String::from)
            .to_vec(),
        rows: evaluation
            .predictive_values
            .iter()
            .map(|(name, v)| {
                vec![
                    name.clone(),
                    format!("{:.3}", v.prevalence),
                    format!("{:.3}", v.ppv),
                    format!("{:.3}", v.npv),
                ]
            })
            .collect(),
    });

    r.push(Block::Heading("Figures".into()));
    for f in figures {
        let caption = match f.name.as_str() {
            "roc" => "ROC curve with the stored and the 0.5 thresholds marked",
            "pr" => "Precision-recall curve; the flat line is a model that guesses",
            "calibration" => "Reliability diagram, 10 equal-width bins",
            "confusion" => "Confusion matrix at the stored threshold (row shares)",
            "training" => "Training curves from the bundle's train_log.jsonl",
            other => other,
        };
        r.push(Block::figure(caption, f));
    }
    if let Some((caption, png)) = error_grid {
        r.push(Block::Heading("Most confident errors".into()));
        r.push(Block::Image {
            caption,
            mime: "image/png",
            bytes: png,
        });
    }
    r.push(Block::Paragraph(DISCLAIMER.into()));
    r
}

/// The `per_kind` most confident missed pneumonias (top row) and false alarms (bottom row),
/// each with its vanilla-gradient overlay, as one PNG, and a caption naming them; `None` when
/// there is no error. `images` are at the bundle's input size.
pub fn confident_errors_grid(
    bundle: &Bundle,
    images: &[&GrayImage],
    names: &[String],
    probabilities: &[f64],
    labels: &[bool],
    per_kind: usize,
) -> Result<Option<(String, Vec<u8>)>, Error> {
    let threshold = bundle.config.threshold.value;
    let mut missed: Vec<usize> = (0..labels.len())
        .filter(|&i| labels[i] && probabilities[i] < threshold)
        .collect();
    missed.sort_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b]));
    let mut false_alarms: Vec<usize> = (0..labels.len())
        .filter(|&i| !labels[i] && probabilities[i] >= threshold)
        .collect();
    false_alarms.sort_by(|&a, &b| probabilities[b].total_cmp(&probabilities[a]));
    missed.truncate(per_kind);
    false_alarms.truncate(per_kind);
    if missed.is_empty() && false_alarms.is_empty() {
        return Ok(None);
    }
    let size = bundle.config.preprocessing.size;
    let columns = missed.len().max(false_alarms.len()) as u32;
    let mut grid = image::RgbImage::from_pixel(columns * size, 2 * size, image::Rgb([255; 3]));
    let mut caption = String::from("Top row: most confident missed pneumonias; bottom row: most confident false alarms (left to right): ");
    for (row, kind) in [&missed, &false_alarms].iter().enumerate() {
        for (column, &i) in kind.iter().enumerate() {
            let input =
                images_to_tensor(&[images[i]], &bundle.config.preprocessing, bundle.device())?;
            let map = vanilla_gradient(|x| bundle.model.logits(x), &input)?;
            let overlay = heat_overlay(images[i], &map, 0.6);
            image::imageops::replace(
                &mut grid,
                &overlay,
                (column as u32 * size) as i64,
                (row as u32 * size) as i64,
            );
            caption += &format!("{} p={:.3}; ", names[i], probabilities[i]);
        }
    }
    let mut png = Vec::new();
    grid.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    Ok(Some((caption, png)))
}
