//! Vanilla gradient saliency (|d logit / d pixel|) of a bundle's prediction for one film, as a
//! heat map blended over the film, saved as PNG at the film's own size.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use image::imageops::FilterType;
use xray_pneumonia::data::{decode_gray, images_to_tensor};
use xray_pneumonia::eval::{heat_overlay, save_overlay_png, vanilla_gradient, DISCLAIMER};
use xray_pneumonia::pipeline::{keep_freed_memory, pick_device};

#[derive(Parser, Debug)]
#[command(
    about = "Gradient saliency overlay for one chest film (decision support only, not a diagnosis)"
)]
struct Args {
    /// Model bundle directory.
    #[arg(long)]
    model: PathBuf,
    /// The film (JPEG or PNG, 8- or 16-bit).
    #[arg(long)]
    image: PathBuf,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Heat-map opacity at the most salient pixels.
    #[arg(long, default_value_t = 0.6)]
    opacity: f32,
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
    let device = pick_device(args.cpu)?;
    let bundle = common::load_bundle(&args.model, &device)?;
    let bytes =
        std::fs::read(&args.image).with_context(|| format!("reading {}", args.image.display()))?;
    let film = decode_gray(&args.image, &bytes)?;
    let size = bundle.config.preprocessing.size;
    let input_image = image::imageops::resize(&film, size, size, FilterType::Triangle);
    let input = images_to_tensor(&[&input_image], &bundle.config.preprocessing, &device)?;
    let map = vanilla_gradient(|x| bundle.model.logits(x), &input)?;
    let overlay = heat_overlay(&film, &map, args.opacity);
    save_overlay_png(&overlay, &args.out)?;
    let probability = 1.0 / (1.0 + (-map.logit as f64).exp());
    let call = if probability >= bundle.config.threshold.value {
        "PNEUMONIA"
    } else {
        "NORMAL"
    };
    println!(
        "{}: pneumonia probability {probability:.3} (threshold {:.3}) -> {call}; saliency overlay {}x{} written to {}",
        args.image.display(),
        bundle.config.threshold.value,
        film.width(),
        film.height(),
        args.out.display()
    );
    println!("{DISCLAIMER}");
    Ok(())
}
