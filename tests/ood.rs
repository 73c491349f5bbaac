//! The shipped bundles' out-of-distribution warning on real films from ../shared and on
//! outliers made from them or drawn: real films of the bundle's own held-out test patients are
//! rarely flagged, while inverted films, heavily cropped films and non-chest images all are.

use std::path::{Path, PathBuf};

use candle_core::Device;
use image::imageops::{crop_imm, resize, FilterType};
use image::Luma;
use rand::{Rng, SeedableRng};
use xray_pneumonia::data::{load_images, GrayImage, LoadOptions, Side};
use xray_pneumonia::infer::{Bundle, Decision, ReferReason};
use xray_pneumonia::pipeline::samples_on_side;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `count` films of the bundle's held-out test patients, half per class, at its input size.
fn heldout_films(bundle: &Bundle, count: usize) -> Vec<GrayImage> {
    let data = root().join("../shared/data/kermany224");
    let mut samples = samples_on_side(&data, "train", &bundle.config.split, Some(Side::Test))
        .expect("held-out films");
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    let normal: Vec<_> = samples
        .iter()
        .filter(|s| s.path.to_string_lossy().contains("NORMAL/"))
        .step_by(7)
        .take(count / 2)
        .cloned()
        .collect();
    let pneumonia: Vec<_> = samples
        .iter()
        .filter(|s| s.path.to_string_lossy().contains("PNEUMONIA/"))
        .step_by(7)
        .take(count / 2)
        .cloned()
        .collect();
    let options = LoadOptions {
        size: bundle.config.preprocessing.size,
        skip_unreadable: false,
    };
    load_images([normal, pneumonia].concat(), &options)
        .expect("decode")
        .images
}

fn inverted(film: &GrayImage) -> GrayImage {
    GrayImage::from_fn(film.width(), film.height(), |x, y| {
        Luma([1.0 - film.get_pixel(x, y)[0]])
    })
}

/// The central `fraction` of the film, enlarged back to full size.
fn cropped(film: &GrayImage, fraction: f32) -> GrayImage {
    let (w, h) = film.dimensions();
    let (cw, ch) = ((w as f32 * fraction) as u32, (h as f32 * fraction) as u32);
    let part = crop_imm(film, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    resize(&part, w, h, FilterType::Triangle)
}

/// Images that are not chest films at all.
fn non_chest(size: u32) -> Vec<(&'static str, GrayImage)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let s = size as f32;
    vec![
        (
            "checkerboard",
            GrayImage::from_fn(size, size, |x, y| {
                Luma([((x * 8 / size + y * 8 / size) % 2) as f32])
            }),
        ),
        (
            "uniform noise",
            GrayImage::from_fn(size, size, |_, _| Luma([rng.random::<f32>()])),
        ),
        (
            "horizontal gradient",
            GrayImage::from_fn(size, size, |x, _| Luma([x as f32 / s])),
        ),
        ("blank grey", GrayImage::from_pixel(size, size, Luma([0.5]))),
        (
            "bright disc on black",
            GrayImage::from_fn(size, size, |x, y| {
                let (dx, dy) = (x as f32 / s - 0.5, y as f32 / s - 0.5);
                Luma([if dx * dx + dy * dy < 0.1 { 0.9 } else { 0.0 }])
            }),
        ),
        (
            "text-like stripes",
            GrayImage::from_fn(size, size, |x, y| {
                let line = (y * 12 / size) % 2 == 0;
                let glyph = (x * 37 / size + y * 5 / size) % 3 != 0;
                Luma([if line && glyph { 0.05 } else { 0.95 }])
            }),
        ),
    ]
}

fn check_bundle(dir: &Path) {
    let device = Device::Cpu;
    let bundle = Bundle::load(dir, &device)
        .expect("bundle")
        .with_batch_size(8);
    assert!(
        bundle.config.ood.is_some(),
        "{} has no out-of-distribution statistics",
        dir.display()
    );
    let size = bundle.config.preprocessing.size;
    let films = heldout_films(&bundle, 24);
    assert_eq!(films.len(), 24);
    let refs: Vec<&GrayImage> = films.iter().collect();
    let real = bundle.predict_batch(&refs).expect("predict");
    let real_scores: Vec<f64> = real.iter().map(|p| p.ood_score.expect("score")).collect();
    let flagged_real = real
        .iter()
        .filter(|p| p.out_of_distribution == Some(true))
        .count();
    // About 1% of films like the validation ones are flagged: 24 held-out films should give 0 or 1.
    assert!(
        flagged_real <= 2,
        "{}: {flagged_real} of 24 real held-out films flagged (scores {real_scores:?})",
        dir.display(),
    );

    let mut outliers: Vec<(String, GrayImage)> = Vec::new();
    for (i, film) in films.iter().step_by(4).enumerate() {
        outliers.push((format!("inverted film {i}"), inverted(film)));
        outliers.push((format!("central 30% of film {i}"), cropped(film, 0.3)));
    }
    for (name, image) in non_chest(size) {
        outliers.push((name.to_string(), image));
    }
    let refs: Vec<&GrayImage> = outliers.iter().map(|(_, im)| im).collect();
    let predicted = bundle.predict_batch(&refs).expect("predict");
    let median_real = {
        let mut s = real_scores.clone();
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    };
    eprintln!("{}: real films {real_scores:.3?}", dir.display());
    for ((name, _), p) in outliers.iter().zip(&predicted) {
        eprintln!("  {name}: {:?}", p.ood_score);
    }
    for ((name, _), p) in outliers.iter().zip(&predicted) {
        assert_eq!(
            p.out_of_distribution,
            Some(true),
            "{}: {name} not flagged (score {:?}, median real film {median_real:.3})",
            dir.display(),
            p.ood_score,
        );
        assert_eq!(
            p.decision,
            Decision::Refer,
            "{}: {name} is not referred",
            dir.display()
        );
        assert!(
            p.refer_reasons
                .iter()
                .any(|r| matches!(r, ReferReason::OutOfDistribution { .. })),
            "{}: {name}: reasons {:?}",
            dir.display(),
            p.refer_reasons
        );
    }
    // A real film is referred only for being flagged or for lying in the refer band, which
    // holds a few percent of held-out films by design (the conformal error rate).
    let band = bundle.config.refer_band.as_ref().expect("refer band");
    let banded: Vec<_> = real
        .iter()
        .filter(|p| p.decision == Decision::Refer && p.out_of_distribution != Some(true))
        .collect();
    for p in &banded {
        assert!(
            band.contains(p.probability),
            "{}: a real film referred for {:?}",
            dir.display(),
            p.refer_reasons
        );
    }
    assert!(
        banded.len() <= 4,
        "{}: {} of 24 real films in the refer band",
        dir.display(),
        banded.len()
    );
}

#[test]
fn shipped_mobilenet_flags_outliers_but_not_real_films() {
    check_bundle(&root().join("models/mobilenet_v2"));
}

#[test]
fn shipped_scratch_cnn_flags_outliers_but_not_real_films() {
    check_bundle(&root().join("models/scratch_cnn"));
}
