//! Saliency maps of several methods for the films of a folder, with the evidence that each is
//! faithful to the model: deletion and insertion curves against a random pixel order, cascading
//! model randomisation, and the share of saliency inside the thorax. Writes one panel per film
//! (the film and every method's overlay, left to right) and `<out>/explain.json`.
//!
//! Each map explains the model's own decision at the bundle's threshold (pneumonia evidence
//! for films it calls pneumonia, normal evidence for the others).
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};
use common::Holdout;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use xray_pneumonia::data::{load_images, scan_split, LoadOptions};
use xray_pneumonia::eval::{
    block_ranking, deletion_curve, insertion_curve, overlay, random_block_ranking, side_by_side,
    spearman, ColourMap, ExplainedClass, OcclusionConfig, OverlayStyle, SaliencyMap,
    SmoothGradConfig, ThoracicRegion, DISCLAIMER,
};
use xray_pneumonia::explain::{
    randomization_cascade, randomize_weights, saliency, IgBaseline, Method, MethodSettings,
    References,
};
use xray_pneumonia::pipeline::{keep_freed_memory, pick_device};
use xray_pneumonia::train::Bundle;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Colours {
    Inferno,
    Viridis,
    Turbo,
}

#[derive(Parser, Debug)]
#[command(about = "Saliency maps with faithfulness evidence (decision support only)")]
struct Args {
    /// Model bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// Dataset root holding <split>/{NORMAL,PNEUMONIA}.
    #[arg(long)]
    data: PathBuf,
    /// Folder under the root.
    #[arg(long)]
    split: String,
    /// Output directory for panels/ and explain.json.
    #[arg(long)]
    out: PathBuf,
    /// Which patients of the folder.
    #[arg(long, value_enum, default_value_t = Holdout::All)]
    holdout: Holdout,
    /// Films to explain (spread evenly over the folder's sorted list).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Methods, comma-separated: vanilla, smoothgrad, integrated_gradients (ig), gradcam,
    /// occlusion.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vanilla,smoothgrad,integrated_gradients,gradcam,occlusion"
    )]
    methods: Vec<Method>,
    /// Films (the first of those explained) used for the model-randomisation check.
    #[arg(long, default_value_t = 8)]
    randomization_images: usize,
    /// Points of the deletion and insertion curves (after 0).
    #[arg(long, default_value_t = 10)]
    perturbation_steps: usize,
    /// Integrated Gradients path steps.
    #[arg(long, default_value_t = 32)]
    ig_steps: usize,
    /// Integrated Gradients baseline: blurred (the film blurred) or black.
    #[arg(long, default_value = "blurred")]
    ig_baseline: IgBaseline,
    /// SmoothGrad noisy copies.
    #[arg(long, default_value_t = 16)]
    smoothgrad_samples: usize,
    /// Occlusion patch side and stride, in input pixels.
    #[arg(long, default_value_t = 32)]
    occlusion_patch: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Overlay colours.
    #[arg(long, value_enum, default_value_t = Colours::Inferno)]
    colour_map: Colours,
    /// Overlay opacity at the most salient pixels.
    #[arg(long, default_value_t = 0.6)]
    opacity: f32,
    /// Map values at or above this percentile get the top colour.
    #[arg(long, default_value_t = 99.0)]
    clip_percentile: f32,
    /// Seed of SmoothGrad's noise, the random orders and the randomised weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Run on CPU even if a GPU is available.
    #[arg(long)]
    cpu: bool,
}

#[derive(Default)]
struct Accumulator {
    seconds: Vec<f64>,
    deletion: Vec<f64>,
    insertion: Vec<f64>,
    lung_share: Vec<f64>,
}

#[derive(Serialize)]
struct RandomizationPoint {
    randomized_up_to: String,
    spearman_mean: f64,
}

#[derive(Serialize)]
struct MethodReport {
    randomization_spearman: f64,
    randomization_curve: Vec<RandomizationPoint>,
    passes_randomization_check: bool,
    deletion_auc: f64,
    deletion_auc_random: f64,
    insertion_auc: f64,
    insertion_auc_random: f64,
    lung_share: f64,
    seconds_per_image: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    keep_freed_memory();
    let args = Args::parse();
    eprintln!("{DISCLAIMER}");
    let device = pick_device(args.cpu)?;
    let bundle = common::load_bundle(&args.model, &device)?;
    let mut methods = args.methods.clone();
    methods.dedup();
    let mut samples = scan_split(&args.data, &args.split)?;
    args.holdout.retain(&mut samples, &bundle.config.split);
    anyhow::ensure!(!samples.is_empty(), "no film to explain in {}", args.split);
    // An even spread over the sorted list covers both classes and many patients.
    let step = (samples.len() as f64 / args.limit.max(1) as f64).max(1.0);
    let chosen: Vec<_> = (0..args.limit.min(samples.len()))
        .map(|k| samples[(k as f64 * step) as usize].clone())
        .collect();
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: false,
    };
    let set = load_images(chosen, &options)?;
    let settings = MethodSettings {
        smooth_grad: SmoothGradConfig {
            samples: args.smoothgrad_samples,
            seed: args.seed,
            batch: args.batch_size,
            ..SmoothGradConfig::default()
        },
        ig_steps: args.ig_steps,
        ig_baseline: args.ig_baseline,
        occlusion: OcclusionConfig {
            patch: args.occlusion_patch,
            stride: args.occlusion_patch,
            batch: args.batch_size,
        },
        batch: args.batch_size,
    };
    let style = OverlayStyle {
        colour_map: match args.colour_map {
            Colours::Inferno => ColourMap::Inferno,
            Colours::Viridis => ColourMap::Viridis,
            Colours::Turbo => ColourMap::Turbo,
        },
        opacity: args.opacity,
        clip_percentile: args.clip_percentile,
    };
    let region = ThoracicRegion::pediatric_frontal();
    let panels = args.out.join("panels");
    std::fs::create_dir_all(&panels).with_context(|| format!("creating {}", panels.display()))?;

    let mut acc: BTreeMap<Method, Accumulator> = BTreeMap::new();
    let (mut random_deletion, mut random_insertion) = (Vec::new(), Vec::new());
    // Maps of the trained model for the randomisation check: (film index, class, method, map).
    let mut kept: Vec<(usize, ExplainedClass, Method, SaliencyMap)> = Vec::new();
    let mut kept_references: Vec<References> = Vec::new();
    let bar = ProgressBar::new(set.images.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} films, {elapsed} < {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("explaining");
    let threshold = bundle.config.threshold.value;
    for (k, film) in set.images.iter().enumerate() {
        let references = References::new(film, &bundle.config.preprocessing, &device)?;
        let logit = bundle.model.logits(&references.input)?.to_vec1::<f32>()?[0];
        let class = ExplainedClass::predicted(logit, threshold);
        let pixels = (film.width() * film.height()) as usize;
        let block = (film.width() as usize / 28).max(1);
        let random = random_block_ranking(
            film.width(),
            film.height(),
            block,
            args.seed.wrapping_add(k as u64),
        );
        // Deletion and insertion areas of one tile order.
        let areas = |order: &[usize]| -> Result<(f64, f64)> {
            let logits = |x: &candle_core::Tensor| bundle.model.logits(x);
            let (input, blurred) = (&references.input, &references.blurred);
            let (steps, batch) = (args.perturbation_steps, args.batch_size);
            let deletion = deletion_curve(logits, input, blurred, order, steps, batch, class)?;
            let insertion = insertion_curve(logits, input, blurred, order, steps, batch, class)?;
            Ok((deletion.auc, insertion.auc))
        };
        let (deletion, insertion) = areas(&random)?;
        random_deletion.push(deletion);
        random_insertion.push(insertion);
        let mut tiles = vec![overlay(
            film,
            &SaliencyMap::from_values(film.width(), film.height(), vec![0.0; pixels], logit),
            &style,
        )];
        for &method in &methods {
            let started = Instant::now();
            let map = saliency(&bundle.model, method, &references, class, &settings)?;
            let seconds = started.elapsed().as_secs_f64();
            let order = block_ranking(&map, block);
            let a = acc.entry(method).or_default();
            a.seconds.push(seconds);
            let (deletion, insertion) = areas(&order)?;
            a.deletion.push(deletion);
            a.insertion.push(insertion);
            a.lung_share.push(region.share(&map));
            tiles.push(overlay(film, &map, &style));
            if k < args.randomization_images {
                kept.push((k, class, method, map));
            }
        }
        if k < args.randomization_images {
            kept_references.push(references);
        }
        let name = set.samples[k]
            .path
            .file_stem()
            .map_or(format!("film{k}"), |s| s.to_string_lossy().into_owned());
        let panel_path = panels.join(format!("{name}.png"));
        side_by_side(&tiles, 4)
            .save(&panel_path)
            .with_context(|| format!("writing {}", panel_path.display()))?;
        bar.inc(1);
    }
    bar.finish();

    // Cascading randomisation: a fresh copy of the model per step, re-initialised from the top
    // down to that step's layers.
    let cascade = randomization_cascade(&bundle.model);
    let mut curves: BTreeMap<Method, Vec<RandomizationPoint>> = BTreeMap::new();
    let bar = ProgressBar::new(cascade.len() as u64);
    bar.set_message("randomising");
    for step in 0..cascade.len() {
        let randomized = Bundle::load(&args.model, &device)?;
        let prefixes: Vec<String> = cascade[..=step]
            .iter()
            .flat_map(|(_, p)| p.iter().cloned())
            .collect();
        randomize_weights(&randomized.varmap, &prefixes, args.seed)?;
        let mut per_method: BTreeMap<Method, Vec<f64>> = BTreeMap::new();
        for (k, class, method, trained) in &kept {
            let map = saliency(
                &randomized.model,
                *method,
                &kept_references[*k],
                *class,
                &settings,
            )?;
            per_method
                .entry(*method)
                .or_default()
                .push(spearman(&trained.values, &map.values)?);
        }
        for (method, values) in per_method {
            curves.entry(method).or_default().push(RandomizationPoint {
                randomized_up_to: cascade[step].0.clone(),
                spearman_mean: mean(&values),
            });
        }
        bar.inc(1);
    }
    bar.finish();

    let mut report = BTreeMap::new();
    for (method, a) in &acc {
        let curve = curves.remove(method).unwrap_or_default();
        let last = curve.last().map_or(f64::NAN, |p| p.spearman_mean);
        report.insert(
            method.name(),
            MethodReport {
                randomization_spearman: last,
                randomization_curve: curve,
                passes_randomization_check: last < 0.5,
                deletion_auc: mean(&a.deletion),
                deletion_auc_random: mean(&random_deletion),
                insertion_auc: mean(&a.insertion),
                insertion_auc_random: mean(&random_insertion),
                lung_share: mean(&a.lung_share),
                seconds_per_image: mean(&a.seconds),
            },
        );
    }
    println!(
        "{:<22} {:>12} {:>9} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "method", "random rho", "del", "del rnd", "ins", "ins rnd", "lung share", "s/image"
    );
    for (name, r) in &report {
        println!(
            "{:<22} {:>12.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>10.3} {:>9.3}",
            name,
            r.randomization_spearman,
            r.deletion_auc,
            r.deletion_auc_random,
            r.insertion_auc,
            r.insertion_auc_random,
            r.lung_share,
            r.seconds_per_image
        );
    }
    let area = region.area_fraction(
        bundle.config.preprocessing.size,
        bundle.config.preprocessing.size,
    );
    println!(
        "thoracic region: {:.3} of the image area (a flat map's share)\n{DISCLAIMER}",
        area
    );
    let json = serde_json::json!({
        "model": args.model,
        "data": { "root": args.data, "split": args.split, "holdout": args.holdout.name(), "films": set.images.len() },
        "explained_class": "the model's decision at the bundle threshold",
        "settings": settings,
        "perturbation": { "steps": args.perturbation_steps, "deletion_fill": "the film blurred with sigma = 5% of its side", "order": "8x8-pixel tiles at 224 px (side / 28), by mean saliency", "insertion_start": "film blurred with sigma = 5% of its side" },
        "randomization": { "films": kept.iter().map(|k| k.0).collect::<HashSet<_>>().len(), "cascade": cascade, "reinitialised": "weights with 2+ dimensions, He-normal" },
        "region": { "definition": region, "area_fraction": area },
        "methods": report,
        "disclaimer": DISCLAIMER,
    });
    std::fs::write(
        args.out.join("explain.json"),
        serde_json::to_string_pretty(&json)? + "\n",
    )?;
    eprintln!("wrote {}/explain.json and panels/", args.out.display());
    Ok(())
}
