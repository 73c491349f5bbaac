//! Scores several bundles on the same films and compares them: the seed-style table (accuracy,
//! precision, recall, F1, plus ROC AUC and specificity, each with a 95% patient-bootstrap
//! interval) and paired tests between every pair of models (McNemar on the decisions at each
//! bundle's stored threshold, DeLong on the ROC AUCs). Writes `compare.json` and `compare.md`.
//!
//! Bundles may differ in input size; each film is decoded once per size. With `--holdout`, only
//! patients held out by *every* bundle are scored, so no model sees its own training films.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use common::Holdout;
use serde::Serialize;
use xray_pneumonia::data::{load_images, scan_split, Label, LoadOptions, Sample};
use xray_pneumonia::eval::{
    delong_test, mcnemar_test, BootstrapConfig, DeLongTest, McNemarTest, MetricIntervals, Metrics,
    DISCLAIMER,
};
use xray_pneumonia::pipeline::{keep_freed_memory, pick_device};
use xray_pneumonia::train::Bundle;

#[derive(Parser, Debug)]
#[command(about = "Compare model bundles on the same films (decision support only)")]
struct Args {
    /// Bundle directories, two or more.
    #[arg(long, num_args = 2.., required = true)]
    models: Vec<PathBuf>,
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long)]
    data: PathBuf,
    /// Folder under the root to score.
    #[arg(long)]
    split: String,
    /// Output directory for compare.json and compare.md.
    #[arg(long)]
    out: PathBuf,
    /// Which patients to score.
    #[arg(long, value_enum, default_value_t = Holdout::All)]
    holdout: Holdout,
    /// Bootstrap resamples of patients.
    #[arg(long, default_value_t = 2000)]
    bootstrap: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    cpu: bool,
}

#[derive(Serialize)]
struct ModelResult {
    model: String,
    metrics: Metrics,
    intervals: MetricIntervals,
}

#[derive(Serialize)]
struct PairResult {
    a: String,
    b: String,
    mcnemar: McNemarTest,
    delong: DeLongTest,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn cell(estimate: f64, lower: f64, upper: f64) -> String {
    format!("{estimate:.3} ({lower:.3}-{upper:.3})")
}

fn run() -> Result<()> {
    keep_freed_memory();
    let args = Args::parse();
    eprintln!("{DISCLAIMER}");
    let device = pick_device(args.cpu)?;
    let bundles: Vec<Bundle> = args
        .models
        .iter()
        .map(|m| Bundle::load(m, &device).with_context(|| format!("loading {}", m.display())))
        .collect::<Result<_>>()?;
    let mut samples: Vec<Sample> = scan_split(&args.data, &args.split)?;
    for b in &bundles {
        args.holdout.retain(&mut samples, &b.config.split);
    }
    anyhow::ensure!(
        !samples.is_empty(),
        "no film of {} is held out ({}) by every bundle",
        args.split,
        args.holdout.name()
    );
    let labels: Vec<bool> = samples
        .iter()
        .map(|s| s.label == Label::Pneumonia)
        .collect();
    let mut group_ids = BTreeMap::new();
    let groups: Vec<usize> = samples
        .iter()
        .map(|s| {
            let next = group_ids.len();
            *group_ids.entry(s.patient_id.clone()).or_insert(next)
        })
        .collect();
    let bootstrap = BootstrapConfig {
        resamples: args.bootstrap,
        confidence: 0.95,
        seed: args.seed,
    };

    let mut probabilities = Vec::new();
    let mut results = Vec::new();
    let mut decoded: BTreeMap<u32, Vec<_>> = BTreeMap::new();
    for (bundle, path) in bundles.iter().zip(&args.models) {
        let size = bundle.config.preprocessing.size;
        if let std::collections::btree_map::Entry::Vacant(slot) = decoded.entry(size) {
            let options = LoadOptions {
                size,
                skip_unreadable: false,
            };
            slot.insert(load_images(samples.clone(), &options)?.images);
        }
        let images: Vec<_> = decoded[&size].iter().collect();
        let p = bundle.predict(&images, args.batch_size, &device)?;
        let threshold = bundle.config.threshold.value;
        results.push(ModelResult {
            model: path.display().to_string(),
            metrics: Metrics::compute(&p, &labels, threshold)?,
            intervals: MetricIntervals::compute(&p, &labels, &groups, threshold, &bootstrap)?,
        });
        probabilities.push(p);
    }
    let mut pairs = Vec::new();
    for a in 0..bundles.len() {
        for b in a + 1..bundles.len() {
            let correct = |k: usize| -> Vec<bool> {
                let t = bundles[k].config.threshold.value;
                probabilities[k]
                    .iter()
                    .zip(&labels)
                    .map(|(&p, &l)| (p >= t) == l)
                    .collect()
            };
            pairs.push(PairResult {
                a: results[a].model.clone(),
                b: results[b].model.clone(),
                mcnemar: mcnemar_test(&correct(a), &correct(b))?,
                delong: delong_test(&probabilities[a], &probabilities[b], &labels)?,
            });
        }
    }

    let data = format!(
        "{}/{} ({} patients): {} films, {} patients",
        args.data.display(),
        args.split,
        args.holdout.name(),
        samples.len(),
        group_ids.len()
    );
    let mut md = format!(
        "# Model comparison\n\n{DISCLAIMER}\n\nData: {data}. 95% intervals: {} patient-bootstrap \
         resamples, seed {}. Each model at its own stored (validation-chosen) threshold.\n\n\
         | model | accuracy | precision | recall | F1 | ROC AUC | specificity |\n\
         | --- | --- | --- | --- | --- | --- | --- |\n",
        args.bootstrap, args.seed
    );
    for r in &results {
        let i = &r.intervals;
        md += &format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.model,
            cell(i.accuracy.estimate, i.accuracy.lower, i.accuracy.upper),
            cell(i.precision.estimate, i.precision.lower, i.precision.upper),
            cell(i.recall.estimate, i.recall.lower, i.recall.upper),
            cell(i.f1.estimate, i.f1.lower, i.f1.upper),
            cell(i.roc_auc.estimate, i.roc_auc.lower, i.roc_auc.upper),
            cell(
                i.specificity.estimate,
                i.specificity.lower,
                i.specificity.upper
            ),
        );
    }
    md += "\n| A | B | only A right | only B right | McNemar p (exact) | AUC A | AUC B | DeLong z | DeLong p |\n\
           | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    for p in &pairs {
        md += &format!(
            "| {} | {} | {} | {} | {:.4} ({:.4}) | {:.4} | {:.4} | {:.3} | {:.4} |\n",
            p.a,
            p.b,
            p.mcnemar.only_a_correct,
            p.mcnemar.only_b_correct,
            p.mcnemar.p_value,
            p.mcnemar.exact_p_value,
            p.delong.auc_a,
            p.delong.auc_b,
            p.delong.z,
            p.delong.p_value
        );
    }
    md += &format!("\n{DISCLAIMER}\n");
    print!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(args.out.join("compare.md"), &md)?;
    let json = serde_json::json!({
        "data": { "root": args.data, "split": args.split, "holdout": args.holdout,
                  "films": samples.len(), "patients": group_ids.len() },
        "bootstrap": bootstrap,
        "models": results,
        "pairs": pairs,
        "disclaimer": DISCLAIMER,
    });
    std::fs::write(
        args.out.join("compare.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    eprintln!("wrote {}/compare.json and compare.md", args.out.display());
    Ok(())
}
