//! One film through a bundle: its decision (pneumonia, normal or refer, with the reasons), the
//! probabilities, and a saliency map of the call blended over the film, saved as PNG at the
//! film's own size.
//!
//! Decision support for radiologists only: not a diagnosis.

mod common;

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;
use xray_pneumonia::eval::{heat_overlay, save_overlay_png, DISCLAIMER};
use xray_pneumonia::infer::{read_film, Method};

#[derive(Parser, Debug)]
#[command(about = "Decision and saliency overlay for one chest film (decision support only)")]
struct Args {
    /// Model bundle directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    device: common::DeviceArgs,
    /// The film (JPEG or PNG, 8- or 16-bit, any size).
    #[arg(long)]
    image: PathBuf,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
    /// Saliency method: vanilla, smoothgrad, integrated_gradients (ig), gradcam, occlusion.
    #[arg(long, default_value = "vanilla")]
    method: Method,
    /// Operating point the call is made at: `default` or one the bundle stores.
    #[arg(long, default_value = "default")]
    operating_point: String,
    /// Heat-map opacity at the most salient pixels.
    #[arg(long, default_value_t = 0.6)]
    opacity: f32,
}

fn main() -> std::process::ExitCode {
    common::run_main(run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let bundle = args.device.load(&args.model)?;
    let bundle = bundle.with_operating_point(&args.operating_point)?;
    let film = read_film(&args.image)?;
    let p = bundle.predict(&film)?;
    let map = bundle.explain(&film, args.method)?;
    save_overlay_png(&heat_overlay(&film, &map, args.opacity), &args.out)?;
    println!(
        "{}: {} (pneumonia probability {:.3}, calibrated {:.3}; operating point {} at {:.3})",
        args.image.display(),
        p.decision,
        p.probability,
        p.calibrated_probability,
        p.operating_point,
        p.threshold,
    );
    for reason in &p.refer_reasons {
        println!("  refer: {reason}");
    }
    println!(
        "{} saliency overlay {}x{} written to {}\n{DISCLAIMER}",
        args.method.name(),
        film.width(),
        film.height(),
        args.out.display()
    );
    Ok(())
}
