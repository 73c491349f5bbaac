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

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use indicatif::ProgressBar;
use xray_pneumonia::eval::{
    ColourMap, OcclusionConfig, OverlayStyle, SmoothGradConfig, DISCLAIMER,
};
use xray_pneumonia::faithfulness::{faithfulness_study, spread, FaithfulnessConfig, StudyEvent};
use xray_pneumonia::infer::{IgBaseline, Method, MethodSettings};
use xray_pneumonia::pipeline::{decode_for_bundle, samples_on_side};

#[derive(Parser, Debug)]
#[command(about = "Saliency maps with faithfulness evidence (decision support only)")]
struct Args {
    /// Model bundle directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    films: common::FilmArgs,
    #[command(flatten)]
    device: common::DeviceArgs,
    /// Output directory for panels/ and explain.json.
    #[arg(long)]
    out: PathBuf,
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
    /// Overlay colours: inferno, viridis or turbo.
    #[arg(long, default_value = "inferno")]
    colour_map: ColourMap,
    /// Overlay opacity at the most salient pixels.
    #[arg(long, default_value_t = 0.6)]
    opacity: f32,
    /// Map values at or above this percentile get the top colour.
    #[arg(long, default_value_t = 99.0)]
    clip_percentile: f32,
    /// Seed of SmoothGrad's noise, the random orders and the randomised weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let bundle = args.device.load(&args.model)?;
    let f = &args.films;
    let samples = samples_on_side(&f.data, &f.split, &bundle.config.split, f.holdout)?;
    // An even spread over the sorted list covers both classes and many patients.
    let chosen = spread(&samples, args.limit);
    let set = decode_for_bundle(chosen, &bundle.config, false)?;
    let config = FaithfulnessConfig {
        methods: args.methods.clone(),
        settings: MethodSettings {
            smooth_grad: SmoothGradConfig {
                samples: args.smoothgrad_samples,
                seed: args.seed,
                batch: args.device.batch_size,
                ..SmoothGradConfig::default()
            },
            ig_steps: args.ig_steps,
            ig_baseline: args.ig_baseline,
            occlusion: OcclusionConfig {
                patch: args.occlusion_patch,
                stride: args.occlusion_patch,
                batch: args.device.batch_size,
            },
            batch: args.device.batch_size,
        },
        randomization_films: args.randomization_images,
        perturbation_steps: args.perturbation_steps,
        style: OverlayStyle {
            colour_map: args.colour_map,
            opacity: args.opacity,
            clip_percentile: args.clip_percentile,
        },
        seed: args.seed,
    };
    let panels = args.out.join("panels");
    std::fs::create_dir_all(&panels).with_context(|| format!("creating {}", panels.display()))?;
    let bar = ProgressBar::new(set.images.len() as u64).with_message("explaining");
    let mut observer = |event: StudyEvent<'_>| {
        match event {
            StudyEvent::Film { index, panel } => {
                let stem = set.samples[index].path.file_stem();
                let name = stem.map_or(format!("film{index}"), |s| s.to_string_lossy().into());
                let path = panels.join(format!("{name}.png"));
                panel.save(&path).map_err(xray_pneumonia::Error::from)?;
                bar.inc(1);
            }
            StudyEvent::RandomizationStep { step, of } => {
                bar.set_message(format!("randomising {step}/{of}"))
            }
        }
        Ok(())
    };
    let films: Vec<_> = set.images.iter().collect();
    let report = faithfulness_study(&args.model, &bundle, &films, &config, &mut observer)?;
    bar.finish();
    print!("{}", report.table());
    println!("{DISCLAIMER}");
    let data = serde_json::json!({ "root": f.data, "split": f.split,
        "holdout": f.holdout_name(), "films": report.films });
    let path = args.out.join("explain.json");
    report.write_json(&path, &config, &args.model, data)?;
    eprintln!("wrote {} and panels/", path.display());
    Ok(())
}
