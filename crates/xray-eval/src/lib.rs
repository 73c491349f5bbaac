//! Evaluation of pneumonia classifiers: confusion-matrix metrics, ROC AUC, a decision threshold
//! chosen on validation data by a named rule, and vanilla gradient saliency maps with overlays.
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

mod error;
mod metrics;
mod overlay;
mod roc;
mod saliency;
mod threshold;

pub use error::EvalError;
pub use metrics::{ConfusionMatrix, Metrics};
pub use overlay::{heat_overlay, save_overlay_png};
pub use roc::roc_auc;
pub use saliency::{vanilla_gradient, SaliencyMap};
pub use threshold::{choose_threshold, ThresholdRule};

/// Shown with every user-facing output: the tool supports radiologists, it does not diagnose.
pub const DISCLAIMER: &str =
    "Decision support for radiologists only: not a diagnosis, not validated for clinical use.";
