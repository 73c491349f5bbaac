//! Evaluation of pneumonia classifiers: confusion-matrix metrics, ROC and precision-recall
//! curves, decision thresholds chosen on validation data by a named rule, operating points,
//! patient-level bootstrap intervals, calibration (temperature scaling, ECE, Brier), paired tests
//! between models (DeLong, McNemar), plots, a self-contained HTML report, and vanilla gradient
//! saliency maps with overlays.
//!
//! ```
//! use xray_eval::{Metrics, ThresholdRule, choose_threshold};
//! let probabilities = [0.1, 0.4, 0.35, 0.8];
//! let labels = [false, false, true, true];
//! let threshold = choose_threshold(&probabilities, &labels, ThresholdRule::Youden)?;
//! let m = Metrics::compute(&probabilities, &labels, threshold)?;
//! assert_eq!(m.auc, 0.75);
//! # Ok::<(), xray_eval::EvalError>(())
//! ```

#![warn(missing_docs)]

mod agreement;
mod bootstrap;
mod calibration;
mod curves;
mod error;
mod metrics;
mod ood;
mod operating;
mod overlay;
mod paired;
pub mod plots;
mod prior_shift;
mod ranks;
pub mod report;
mod roc;
pub mod saliency;
mod selective;
mod threshold;

pub use bootstrap::{
    bootstrap_by_group, percentile, BootstrapConfig, BootstrapResult, Interval, MetricIntervals,
};
pub use calibration::{
    brier_score, expected_calibration_error, fit_temperature, logit, reliability_bins, sigmoid,
    Binning, ReliabilityBin, TemperatureScaling,
};
pub use curves::{average_precision, PrCurve, RocCurve};
pub use ood::FeatureDistance;
pub use operating::{sensitivity_at_specificity, specificity_at_sensitivity, OperatingPoint};
pub use paired::{
    delong_test, mcnemar_test, predictive_values, DeLongTest, McNemarTest, PredictiveValues,
};
pub use plots::Figure;
pub use prior_shift::{PriorShift, MAX_EM_STEPS};
pub use report::{Block, Report};

pub use agreement::AgreementTable;
pub use error::EvalError;
pub use metrics::{ConfusionMatrix, Metrics};
pub use overlay::{
    heat_layer, heat_overlay, overlay, save_overlay_png, side_by_side, ColourMap, OverlayStyle,
};
pub use roc::roc_auc;
pub use saliency::{
    block_ranking, deletion_curve, grad_cam, insertion_curve, integrated_gradients, occlusion,
    random_block_ranking, random_ranking, ranking, smooth_grad, spearman, vanilla_gradient,
    ExplainedClass, IntegratedGradients, OcclusionConfig, PerturbationCurve, SaliencyMap,
    SmoothGradConfig, ThoracicRegion,
};
pub use selective::{
    prediction_set, ConformalBounds, PredictionSet, RiskCoverage, SelectiveMetrics,
};
pub use threshold::{choose_threshold, ThresholdRule};

/// Shown with every user-facing output: the tool supports radiologists, it does not diagnose.
pub const DISCLAIMER: &str =
    "Decision support for radiologists only: not a diagnosis, not validated for clinical use.";
