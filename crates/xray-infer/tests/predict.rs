//! The façade on the shipped scratch-CNN bundle and real films: resizing inside, decisions at
//! named operating points, refer for films the model must not judge, explanations at the
//! film's size.

use std::path::PathBuf;

use candle_core::Device;
use image::imageops::{resize, FilterType};
use image::Luma;
use xray_infer::{
    read_film, Bundle, Decision, GrayImage, InferError, Method, ReferBand, ReferReason,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bundle() -> Bundle {
    Bundle::load(&repo().join("models/scratch_cnn"), &Device::Cpu).expect("shipped bundle")
}

fn film(name: &str) -> GrayImage {
    let path = repo().join("../shared/data/kermany224/train").join(name);
    read_film(&path).expect("real film")
}

#[test]
fn a_film_of_any_size_is_resized_as_in_training() {
    let bundle = bundle();
    let small = film("PNEUMONIA/person1_bacteria_1.jpeg");
    let large = resize(&small, 448, 300, FilterType::CatmullRom);
    let by_hand = resize(
        &large,
        bundle.input_size(),
        bundle.input_size(),
        FilterType::Triangle,
    );
    let expected = bundle.probabilities(&[&by_hand]).expect("probability")[0];
    let p = bundle.predict(&large).expect("prediction");
    assert_eq!(
        p.probability, expected,
        "predict resizes exactly as training did"
    );
    // A film already at the input size is not touched.
    let at_size = resize(
        &small,
        bundle.input_size(),
        bundle.input_size(),
        FilterType::Nearest,
    );
    let p = bundle.predict(&at_size).expect("prediction");
    assert_eq!(
        p.probability,
        bundle.probabilities(&[&at_size]).expect("p")[0]
    );
}

#[test]
fn decisions_follow_the_chosen_operating_point() {
    let names = [
        "NORMAL/IM-0115-0001.jpeg",
        "PNEUMONIA/person1_bacteria_1.jpeg",
        "NORMAL/IM-0117-0001.jpeg",
    ];
    let films: Vec<GrayImage> = names.iter().map(|n| film(n)).collect();
    let refs: Vec<&GrayImage> = films.iter().collect();
    let default = bundle();
    let points: Vec<String> = default
        .config
        .operating_points
        .iter()
        .map(|p| p.name.clone())
        .collect();
    assert!(
        !points.is_empty(),
        "the shipped bundle stores operating points"
    );
    for name in std::iter::once("default".to_string()).chain(points) {
        let bundle = bundle().with_operating_point(&name).expect("stored point");
        for p in bundle.predict_batch(&refs).expect("predictions") {
            assert_eq!(p.operating_point, name);
            assert_eq!(p.threshold, bundle.operating_point().threshold);
            let expected = match (p.refer_reasons.is_empty(), p.probability >= p.threshold) {
                (false, _) => Decision::Refer,
                (true, true) => Decision::Pneumonia,
                (true, false) => Decision::Normal,
            };
            assert_eq!(p.decision, expected, "{name}: {p:?}");
            let calibration = bundle
                .config
                .calibration
                .as_ref()
                .expect("calibrated bundle");
            assert_eq!(p.calibrated_probability, calibration.apply(p.probability));
        }
    }
    match bundle().with_operating_point("sensitivity_0.5") {
        Err(InferError::UnknownOperatingPoint { available, .. }) => {
            assert!(
                available.contains("default") && available.contains("sensitivity_0.975"),
                "{available}"
            )
        }
        other => panic!(
            "an unknown point must be refused, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[test]
fn degenerate_images_are_referred_never_called() {
    let bundle = bundle();
    let mut noise_state = 12345u32;
    let mut noise = move || {
        noise_state = noise_state
            .wrapping_mul(1_664_525)
            .wrapping_add(1_013_904_223);
        (noise_state >> 8) as f32 / (1u32 << 24) as f32
    };
    let cases: Vec<(&str, GrayImage)> = vec![
        ("blank black", GrayImage::new(224, 224)),
        ("uniform grey", GrayImage::from_pixel(300, 200, Luma([0.5]))),
        ("one pixel", GrayImage::from_pixel(1, 1, Luma([0.7]))),
        (
            "tiny film",
            resize(
                &film("NORMAL/IM-0115-0001.jpeg"),
                16,
                16,
                FilterType::Triangle,
            ),
        ),
        (
            "uniform noise",
            GrayImage::from_fn(224, 224, |_, _| Luma([noise()])),
        ),
    ];
    for (name, image) in &cases {
        let p = bundle
            .predict(image)
            .expect("a degenerate image still gets an answer");
        assert_eq!(p.decision, Decision::Refer, "{name}: {p:?}");
        assert!(
            !p.refer_reasons.is_empty(),
            "{name}: referred without a reason"
        );
    }
    let blank = bundle.predict(&cases[0].1).expect("prediction");
    assert!(
        blank
            .refer_reasons
            .iter()
            .any(|r| matches!(r, ReferReason::DegenerateImage { .. })),
        "{:?}",
        blank.refer_reasons
    );
}

#[test]
fn a_probability_in_the_uncertain_band_is_referred() {
    let mut bundle = bundle();
    let image = film("PNEUMONIA/person1_bacteria_1.jpeg");
    let p = bundle.predict(&image).expect("prediction").probability;
    // Like neither class: above normal's bound and below pneumonia's.
    bundle.config.refer_band = Some(ReferBand {
        normal_upper: p - 1e-6,
        pneumonia_lower: p + 1e-6,
        alpha: 0.025,
        rule: "test".into(),
    });
    let referred = bundle.predict(&image).expect("prediction");
    assert_eq!(referred.decision, Decision::Refer);
    assert!(matches!(
        referred.refer_reasons[..],
        [ReferReason::Uncertain { .. }]
    ));
    // Could be either: both bounds let it in.
    bundle.config.refer_band = Some(ReferBand {
        normal_upper: p + 1e-6,
        pneumonia_lower: p - 1e-6,
        alpha: 0.025,
        rule: "test".into(),
    });
    let both = bundle.predict(&image).expect("prediction");
    assert!(
        both.refer_reasons[0].to_string().contains("either class"),
        "{}",
        both.refer_reasons[0]
    );
    // One class only: a call.
    bundle.config.refer_band = Some(ReferBand {
        normal_upper: p - 1e-6,
        pneumonia_lower: p - 1e-6,
        alpha: 0.025,
        rule: "test".into(),
    });
    assert_ne!(
        bundle.predict(&image).expect("prediction").decision,
        Decision::Refer
    );
}

#[test]
fn explanations_have_the_films_size_for_every_method() {
    let bundle = bundle();
    let image = resize(
        &film("PNEUMONIA/person1_bacteria_1.jpeg"),
        300,
        250,
        FilterType::Triangle,
    );
    for method in [
        Method::Vanilla,
        Method::GradCam,
        Method::IntegratedGradients,
    ] {
        let map = bundle.explain(&image, method).expect("map");
        assert_eq!((map.width, map.height), (300, 250), "{method:?}");
        assert!(map.values.iter().all(|v| v.is_finite() && *v >= 0.0));
        assert!(
            map.values.iter().any(|v| *v > 0.0),
            "{method:?}: an empty map"
        );
    }
}

#[test]
fn a_missing_file_is_named() {
    let err = read_film(&repo().join("no/such/film.png")).expect_err("missing file");
    assert!(err.to_string().contains("no/such/film.png"), "{err}");
}
