//! Fits temperature scaling, the standard operating points and the conformal refer band on a
//! bundle's own validation patients and stores them in its `config.json`. Training runs do this
//! themselves; this is for bundles trained before.
//!
//! With `--main-threshold NAME`, the bundle's main threshold becomes that stored operating
//! point, and the metrics the bundle records are recomputed at it: on validation, and on the
//! held-out test patients, which are scored for the record only (no choice reads them).
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use anyhow::{bail, Result};
use clap::Parser;
use xray_pneumonia::data::Side;
use xray_pneumonia::data::{DecodedSet, Label};
use xray_pneumonia::eval::Metrics;
use xray_pneumonia::infer::{Bundle, ThresholdChoice, BUNDLE_FORMAT_VERSION};
use xray_pneumonia::pipeline::{
    bundle_side_films, fit_on_validation, metrics_table, DEFAULT_REFER_ALPHA,
};

#[derive(Parser, Debug)]
#[command(about = "Fit calibration, operating points and the refer band on validation patients")]
struct Args {
    #[command(flatten)]
    upgrade: common::UpgradeArgs,
    /// Make this stored operating point (e.g. `conformal_0.05`) the bundle's main threshold.
    #[arg(long)]
    main_threshold: Option<String>,
    /// Error rate per class of the conformal refer band; default: the bundle's current band's
    /// (2.5% where it has none). Name `conformal_<alpha>` as the main threshold to keep it the
    /// band's upper edge.
    #[arg(long)]
    refer_alpha: Option<f64>,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

/// Probabilities and labels (`true` = pneumonia) of a decoded set.
fn scored(bundle: &Bundle, set: &DecodedSet) -> Result<(Vec<f64>, Vec<bool>)> {
    let images: Vec<_> = set.images.iter().collect();
    let labels = set
        .samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    Ok((bundle.probabilities(&images)?, labels))
}

fn run() -> Result<()> {
    let args = Args::parse();
    let model = &args.upgrade.model;
    let mut bundle = args.upgrade.device.load(model)?;
    let validation = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Validation)?;
    let (probabilities, labels) = scored(&bundle, &validation)?;
    let refer_alpha = args
        .refer_alpha
        .or(bundle.config.refer_band.as_ref().map(|band| band.alpha))
        .unwrap_or(DEFAULT_REFER_ALPHA);
    let fit = fit_on_validation(&probabilities, &labels, refer_alpha)?;
    let (calibration, band) = (&fit.calibration, &fit.refer_band);
    eprintln!(
        "temperature {:.4} on {} validation films (NLL {:.4} -> {:.4})",
        calibration.temperature, calibration.images, calibration.nll_before, calibration.nll_after
    );
    for p in &fit.operating_points {
        eprintln!(
            "  {:<18} threshold {:.4}: validation sensitivity {:.3}, specificity {:.3}",
            p.name, p.value, p.validation_sensitivity, p.validation_specificity
        );
    }
    eprintln!(
        "refer band: normal up to {:.4}, pneumonia from {:.4} ({})",
        band.normal_upper, band.pneumonia_lower, band.rule
    );
    if let Some(name) = &args.main_threshold {
        let Some(point) = fit.operating_points.iter().find(|p| &p.name == name) else {
            let names: Vec<&str> = fit
                .operating_points
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            bail!(
                "no operating point `{name}`; choose one of {}",
                names.join(", ")
            );
        };
        let test = bundle_side_films(&args.upgrade.data, &bundle.config, Side::Test)?;
        let (test_probabilities, test_labels) = scored(&bundle, &test)?;
        let config = &mut bundle.config;
        config.threshold = ThresholdChoice {
            value: point.value,
            rule: point.rule,
        };
        config.validation_metrics = Metrics::compute(&probabilities, &labels, point.value)?;
        config.heldout_test_metrics =
            Metrics::compute(&test_probabilities, &test_labels, point.value)?;
        eprintln!(
            "main threshold now `{name}` ({:.4}):\n{}",
            point.value,
            metrics_table(&[
                ("own validation split", &config.validation_metrics),
                ("own held-out test split", &config.heldout_test_metrics),
            ])
        );
    }
    bundle.config.calibration = Some(fit.calibration);
    bundle.config.operating_points = fit.operating_points;
    bundle.config.refer_band = Some(fit.refer_band);
    bundle.config.format_version = BUNDLE_FORMAT_VERSION;
    Bundle::save_config(model, &bundle.config)?;
    eprintln!("updated {}", model.join(Bundle::CONFIG).display());
    Ok(())
}
