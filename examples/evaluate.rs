//! Scores a model bundle on `<data>/<split>/{NORMAL,PNEUMONIA}`: prints a metrics table and
//! writes `metrics.json` and `predictions.csv`.
//!
//! `--holdout test` keeps only the patients the bundle's own split held out for testing (use it
//! with the folder the bundle was trained on); the default scores every image of the folder.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use xray_pneumonia::data::{load_images, scan_split, Label, LoadOptions};
use xray_pneumonia::eval::{Metrics, DISCLAIMER};
use xray_pneumonia::pipeline::{keep_freed_memory, metrics_table, pick_device};
use xray_pneumonia::train::Bundle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Holdout {
    /// Every image of the folder.
    All,
    /// Only the bundle's validation patients.
    Validation,
    /// Only the bundle's held-out test patients.
    Test,
}

#[derive(Parser, Debug)]
#[command(
    about = "Evaluate a model bundle on a labelled folder (decision support only, not a diagnosis)"
)]
struct Args {
    /// Model bundle directory (model.safetensors + config.json).
    #[arg(long)]
    model: PathBuf,
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long)]
    data: PathBuf,
    /// Folder under the root to score.
    #[arg(long)]
    split: String,
    /// Output directory for metrics.json and predictions.csv.
    #[arg(long)]
    out: PathBuf,
    /// Which patients of the folder to score.
    #[arg(long, value_enum, default_value_t = Holdout::All)]
    holdout: Holdout,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Skip unreadable images instead of stopping.
    #[arg(long)]
    skip_unreadable: bool,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    cpu: bool,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    keep_freed_memory();
    let args = Args::parse();
    eprintln!("{DISCLAIMER}");
    let device = pick_device(args.cpu)?;
    let bundle = Bundle::load(&args.model, &device)
        .with_context(|| format!("loading bundle {}", args.model.display()))?;
    let mut samples = scan_split(&args.data, &args.split)?;
    let wanted: Option<HashSet<&String>> = match args.holdout {
        Holdout::All => None,
        Holdout::Validation => Some(bundle.config.split.validation_patients.iter().collect()),
        Holdout::Test => Some(bundle.config.split.test_patients.iter().collect()),
    };
    if let Some(wanted) = &wanted {
        samples.retain(|s| wanted.contains(&s.patient_id));
        anyhow::ensure!(
            !samples.is_empty(),
            "no image of {} belongs to the bundle's {:?} patients",
            args.split,
            args.holdout
        );
    }
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: args.skip_unreadable,
    };
    let set = load_images(samples, &options)?;
    for s in &set.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    let images: Vec<_> = set.images.iter().collect();
    let probabilities = bundle.predict(&images, args.batch_size, &device)?;
    let labels: Vec<bool> = set
        .samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let threshold = bundle.config.threshold.value;
    let metrics = Metrics::compute(&probabilities, &labels, threshold)?;
    let at_half = Metrics::compute(&probabilities, &labels, 0.5)?;

    let name = format!(
        "{}/{} ({:?})",
        args.data.display(),
        args.split,
        args.holdout
    )
    .to_lowercase();
    print!(
        "{}",
        metrics_table(&[("bundle threshold", &metrics), ("threshold 0.5", &at_half)])
    );
    println!(
        "data: {name}, {} images, {} skipped\n{DISCLAIMER}",
        set.samples.len(),
        set.skipped.len()
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut json = serde_json::to_value(metrics)?;
    json["threshold_rule"] = serde_json::to_value(bundle.config.threshold.rule)?;
    json["at_threshold_0_5"] = serde_json::to_value(at_half)?;
    json["data"] = serde_json::json!({ "root": args.data, "split": args.split, "holdout": format!("{:?}", args.holdout).to_lowercase(), "skipped": set.skipped.len() });
    json["model"] = serde_json::json!(args.model);
    json["disclaimer"] = serde_json::json!(DISCLAIMER);
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let mut csv = csv::Writer::from_path(args.out.join("predictions.csv"))?;
    csv.write_record(["path", "label", "probability", "predicted"])?;
    for (sample, p) in set.samples.iter().zip(&probabilities) {
        let predicted = if *p >= threshold {
            Label::Pneumonia
        } else {
            Label::Normal
        };
        csv.write_record([
            sample.path.display().to_string(),
            sample.label.folder_name().to_string(),
            format!("{p:.6}"),
            predicted.folder_name().to_string(),
        ])?;
    }
    csv.flush()?;
    eprintln!(
        "wrote {}/metrics.json and predictions.csv",
        args.out.display()
    );
    Ok(())
}
