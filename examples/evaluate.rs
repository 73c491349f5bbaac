//! Scores a model bundle on `<data>/<split>/{NORMAL,PNEUMONIA}`: prints a metrics table with
//! patient-bootstrap intervals and writes `metrics.json` and `predictions.csv`; with `--report`,
//! also `plots/*.{png,svg}` and a self-contained `report.html`.
//!
//! `--holdout test` keeps only the patients the bundle's own split held out for testing (use it
//! with the folder the bundle was trained on); the default scores every image of the folder.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use common::Holdout;
use xray_pneumonia::data::{
    images_to_tensor, load_images, scan_split, test_time_views, GrayImage, Label, LoadOptions,
    Shift, ViewTransform,
};
use xray_pneumonia::eval::{heat_overlay, vanilla_gradient, BootstrapConfig, DISCLAIMER};
use xray_pneumonia::evaluation::{
    build_report, evaluation_figures, Evaluation, EvaluationInput, ReportContext,
};
use xray_pneumonia::pipeline::{keep_freed_memory, metrics_table, pick_device};
use xray_pneumonia::train::{Bundle, Prediction};

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
    /// Write plots and a self-contained report.html.
    #[arg(long)]
    report: bool,
    /// Prevalence of pneumonia for PPV and NPV (default: the evaluated data's own).
    #[arg(long)]
    prevalence: Option<f64>,
    /// Bootstrap resamples of patients for the 95% intervals.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Test-time augmentation: average the probabilities of 5 fixed views of each film.
    #[arg(long)]
    tta: bool,
    /// A controlled shift applied to every film before scoring, `kind:level` with kind
    /// contrast, gamma, blur, noise or resolution (e.g. `gamma:1.5`, `resolution:0.5`).
    #[arg(long)]
    shift: Option<Shift>,
    /// Most confident errors of each kind shown with saliency in the report.
    #[arg(long, default_value_t = 4)]
    errors: usize,
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

/// Pneumonia probabilities (averaged over the test-time views with `tta`) and, per film, the
/// out-of-distribution score and flag of the film itself where the bundle has the statistics.
fn predict(
    bundle: &Bundle,
    images: &[&GrayImage],
    tta: bool,
    batch_size: usize,
    device: &candle_core::Device,
) -> Result<(Vec<f64>, Vec<Prediction>)> {
    let plain = bundle.predict_with_ood(images, batch_size, device)?;
    if !tta {
        return Ok((plain.iter().map(|p| p.probability).collect(), plain));
    }
    let views = test_time_views();
    let mut sum: Vec<f64> = plain.iter().map(|p| p.probability).collect();
    for view in views.iter().filter(|v| **v != ViewTransform::IDENTITY) {
        let changed: Vec<GrayImage> = images.iter().map(|i| view.apply(i)).collect();
        let refs: Vec<&GrayImage> = changed.iter().collect();
        for (s, p) in sum
            .iter_mut()
            .zip(bundle.predict(&refs, batch_size, device)?)
        {
            *s += p;
        }
    }
    let mean = sum.into_iter().map(|s| s / views.len() as f64).collect();
    Ok((mean, plain))
}

/// The `per_kind` most confident missed pneumonias (top row) and false alarms (bottom row),
/// each with its vanilla-gradient overlay, as one PNG, and a caption naming them.
fn error_grid(
    bundle: &Bundle,
    images: &[&GrayImage],
    names: &[String],
    probabilities: &[f64],
    labels: &[bool],
    per_kind: usize,
    device: &candle_core::Device,
) -> Result<Option<(String, Vec<u8>)>> {
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
            let input = images_to_tensor(&[images[i]], &bundle.config.preprocessing, device)?;
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

fn training_log(model: &Path) -> Option<String> {
    std::fs::read_to_string(model.join("train_log.jsonl")).ok()
}

fn run() -> Result<()> {
    keep_freed_memory();
    let started = Instant::now();
    let args = Args::parse();
    eprintln!("{DISCLAIMER}");
    let device = pick_device(args.cpu)?;
    let bundle = common::load_bundle(&args.model, &device)?;
    let mut samples = scan_split(&args.data, &args.split)?;
    args.holdout.retain(&mut samples, &bundle.config.split);
    anyhow::ensure!(
        !samples.is_empty(),
        "no image of {} belongs to the bundle's {} patients",
        args.split,
        args.holdout.name()
    );
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: args.skip_unreadable,
    };
    let set = load_images(samples, &options)?;
    for s in &set.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    let shifted: Option<Vec<GrayImage>> = args.shift.map(|shift| {
        set.images
            .iter()
            .enumerate()
            .map(|(i, film)| shift.apply(film, args.seed ^ i as u64))
            .collect()
    });
    let images: Vec<_> = shifted.as_ref().unwrap_or(&set.images).iter().collect();
    let (probabilities, plain) = predict(&bundle, &images, args.tta, args.batch_size, &device)?;
    let flagged = plain
        .iter()
        .filter(|p| p.out_of_distribution == Some(true))
        .count();
    let labels: Vec<bool> = set
        .samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let patients: Vec<String> = set.samples.iter().map(|s| s.patient_id.clone()).collect();
    let evaluation = Evaluation::compute(&EvaluationInput {
        probabilities: &probabilities,
        labels: &labels,
        patients: &patients,
        bundle: &bundle.config,
        prevalence: args.prevalence,
        bootstrap: BootstrapConfig {
            resamples: args.bootstrap,
            confidence: 0.95,
            seed: args.seed,
        },
    })?;
    let metrics = evaluation.at_stored_threshold;
    let at_half = evaluation.at_threshold_0_5;

    let name = format!(
        "{}/{} ({})",
        args.data.display(),
        args.split,
        args.holdout.name()
    );
    print!(
        "{}",
        metrics_table(&[("bundle threshold", &metrics), ("threshold 0.5", &at_half)])
    );
    let i = &evaluation.intervals;
    println!(
        "95% patient-bootstrap intervals at the bundle threshold: accuracy {:.3}-{:.3}, recall {:.3}-{:.3}, specificity {:.3}-{:.3}, ROC AUC {:.3}-{:.3}; PR AUC {:.4}",
        i.accuracy.lower, i.accuracy.upper, i.recall.lower, i.recall.upper,
        i.specificity.lower, i.specificity.upper, i.roc_auc.lower, i.roc_auc.upper,
        evaluation.pr_auc
    );
    for note in &evaluation.notes {
        println!("note: {note}");
    }
    if let Some(ood) = &bundle.config.ood {
        println!(
            "out of distribution: {flagged} of {} films lie further from the training films than \
             {:.1}% of validation films (features or appearance); their predictions are \
             extrapolation",
            plain.len(),
            ood.features.quantile * 100.0
        );
    }
    println!(
        "data: {name}, {} images, {} skipped{}{}\n{DISCLAIMER}",
        set.samples.len(),
        set.skipped.len(),
        if args.tta {
            ", test-time augmentation"
        } else {
            ""
        },
        args.shift
            .map_or(String::new(), |s| format!(", every film shifted by {s}"))
    );

    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut json = serde_json::to_value(metrics)?;
    json["threshold_rule"] = serde_json::to_value(bundle.config.threshold.rule)?;
    json["at_threshold_0_5"] = serde_json::to_value(at_half)?;
    json["pr_auc"] = serde_json::json!(evaluation.pr_auc);
    json["intervals"] = serde_json::to_value(&evaluation.intervals)?;
    json["evaluation"] = serde_json::to_value(&evaluation)?;
    json["tta"] = serde_json::json!(args.tta);
    json["shift"] = serde_json::to_value(args.shift)?;
    json["ood"] = match &bundle.config.ood {
        Some(ood) => {
            serde_json::json!({ "feature_threshold": ood.features.threshold, "appearance_threshold": ood.appearance.threshold, "quantile": ood.features.quantile, "flagged": flagged })
        }
        None => serde_json::Value::Null,
    };
    json["data"] = serde_json::json!({ "root": args.data, "split": args.split, "holdout": args.holdout.name(), "skipped": set.skipped.len() });
    json["model"] = serde_json::json!(args.model);
    json["disclaimer"] = serde_json::json!(DISCLAIMER);
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    let mut csv = csv::Writer::from_path(args.out.join("predictions.csv"))?;
    csv.write_record([
        "path",
        "label",
        "probability",
        "calibrated_probability",
        "predicted",
        "ood_score",
        "out_of_distribution",
    ])?;
    for ((sample, p), plain) in set.samples.iter().zip(&probabilities).zip(&plain) {
        let predicted = if *p >= metrics.threshold {
            Label::Pneumonia
        } else {
            Label::Normal
        };
        let calibrated = bundle
            .config
            .calibration
            .as_ref()
            .map_or(String::new(), |t| format!("{:.6}", t.apply(*p)));
        csv.write_record([
            sample.path.display().to_string(),
            sample.label.folder_name().to_string(),
            format!("{p:.6}"),
            calibrated,
            predicted.folder_name().to_string(),
            plain.ood_score.map_or(String::new(), |s| format!("{s:.4}")),
            plain
                .out_of_distribution
                .map_or(String::new(), |f| f.to_string()),
        ])?;
    }
    csv.flush()?;

    if args.report {
        let log = training_log(&args.model);
        let figures = evaluation_figures(&evaluation, &probabilities, &labels, log.as_deref())?;
        for f in &figures {
            f.save(&args.out.join("plots"))?;
        }
        let names: Vec<String> = set
            .samples
            .iter()
            .map(|s| {
                s.path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            })
            .collect();
        let grid = error_grid(
            &bundle,
            &images,
            &names,
            &probabilities,
            &labels,
            args.errors,
            &device,
        )?;
        if let Some((_, png)) = &grid {
            std::fs::write(args.out.join("plots/confident_errors.png"), png)?;
        }
        let context = ReportContext {
            data: format!(
                "{name}, {} skipped{}",
                set.skipped.len(),
                args.shift
                    .map_or(String::new(), |s| format!(", every film shifted by {s}"))
            ),
            model: args.model.display().to_string(),
            tta: args.tta,
        };
        let report = build_report(&evaluation, &bundle.config, &context, &figures, grid);
        report.write(&args.out.join("report.html"))?;
        eprintln!("wrote {}/report.html and plots/", args.out.display());
    }
    eprintln!(
        "wrote {}/metrics.json and predictions.csv ({:.1} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
