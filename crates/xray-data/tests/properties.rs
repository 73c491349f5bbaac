//! Properties of the split and the augmentation over random inputs.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_data::{
    augment, epoch_order, split_by_patient, split_from_lists, AugmentConfig, GrayImage, Label,
    PatientLists, Sample, Shift, SplitConfig,
};

fn random_samples(rng: &mut ChaCha8Rng) -> Vec<Sample> {
    let patients = rng.random_range(20..200);
    let mut samples = Vec::new();
    for p in 0..patients {
        let label = if rng.random_bool(0.7) {
            Label::Pneumonia
        } else {
            Label::Normal
        };
        for i in 0..rng.random_range(1..5) {
            samples.push(Sample {
                path: PathBuf::from(format!("{p}_{i}.jpeg")),
                label,
                patient_id: format!("{p}"),
            });
        }
    }
    samples
}

#[test]
fn random_splits_never_share_a_patient_and_reproduce() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for round in 0..50 {
        let samples = random_samples(&mut rng);
        let config = SplitConfig {
            validation_fraction: 0.2,
            test_fraction: 0.2,
            seed: round,
        };
        let split = split_by_patient(&samples, None, &config).unwrap();
        assert!(split.shared_patients(&samples).is_empty(), "round {round}");
        let mut all: Vec<usize> = split
            .train
            .iter()
            .chain(&split.validation)
            .chain(&split.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(
            all,
            (0..samples.len()).collect::<Vec<_>>(),
            "round {round}: every image exactly once"
        );
        assert_eq!(split, split_by_patient(&samples, None, &config).unwrap());
    }
}

#[test]
fn listed_patients_give_back_the_split_they_came_from() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for round in 0..50 {
        let samples = random_samples(&mut rng);
        let config = SplitConfig {
            seed: round,
            ..SplitConfig::default()
        };
        let split = split_by_patient(&samples, None, &config).unwrap();
        let lists = PatientLists::of(&split, &samples);
        assert_eq!(
            split_from_lists(&samples, &lists).unwrap(),
            split,
            "round {round}"
        );
    }
}

#[test]
fn patient_lists_that_cannot_be_honoured_are_refused_by_name() {
    let samples: Vec<Sample> = ["a", "b", "c"]
        .iter()
        .map(|id| Sample {
            path: PathBuf::from(format!("{id}.png")),
            label: Label::Normal,
            patient_id: id.to_string(),
        })
        .collect();
    let lists = |train: &[&str], validation: &[&str], test: &[&str]| PatientLists {
        train_patients: train.iter().map(|s| s.to_string()).collect(),
        validation_patients: validation.iter().map(|s| s.to_string()).collect(),
        test_patients: test.iter().map(|s| s.to_string()).collect(),
    };
    let refusal = |l: PatientLists| split_from_lists(&samples, &l).unwrap_err().to_string();
    let twice = refusal(lists(&["a", "b"], &["b"], &["c"]));
    assert!(
        twice.contains("\"b\"") && twice.contains("train") && twice.contains("validation"),
        "{twice}"
    );
    let missing = refusal(lists(&["a"], &["b"], &[]));
    assert!(
        missing.contains("1 patient(s)") && missing.contains("\"c\""),
        "{missing}"
    );
    let no_validation = refusal(lists(&["a", "b", "c"], &["z"], &[]));
    assert!(no_validation.contains("validation side"), "{no_validation}");
    // Listed patients without images are ignored: a subset of the data may be loaded.
    assert!(split_from_lists(&samples, &lists(&["a", "x"], &["b"], &["c", "y"])).is_ok());
}

#[test]
fn invalid_fractions_are_errors() {
    let samples = random_samples(&mut ChaCha8Rng::seed_from_u64(1));
    let config = SplitConfig {
        validation_fraction: 0.6,
        test_fraction: 0.5,
        seed: 0,
    };
    assert!(split_by_patient(&samples, None, &config).is_err());
}

fn random_image(rng: &mut ChaCha8Rng, w: u32, h: u32) -> GrayImage {
    GrayImage::from_fn(w, h, |_, _| image::Luma([rng.random::<f32>()]))
}

/// An augmentation that changes nothing: every range collapsed to the identity.
fn no_change() -> AugmentConfig {
    AugmentConfig {
        max_rotation_deg: 0.0,
        scale_range: (1.0, 1.0),
        max_shift: 0.0,
        max_brightness: 0.0,
        contrast_range: (1.0, 1.0),
        ..AugmentConfig::default()
    }
}

#[test]
fn identity_augmentation_returns_the_image() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let image = random_image(&mut rng, 17, 23);
    let identity = no_change();
    let out = augment(&image, &identity, &mut rng);
    for (a, b) in out.as_raw().iter().zip(image.as_raw()) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn augmentation_is_seeded_bounded_and_keeps_the_size() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for config in [
        AugmentConfig::default(),
        AugmentConfig::strong(),
        AugmentConfig::acquisition(),
    ] {
        augmentation_is_seeded_bounded_and_keeps_the_size_for(&config, &mut rng);
    }
}

fn augmentation_is_seeded_bounded_and_keeps_the_size_for(
    config: &AugmentConfig,
    rng: &mut ChaCha8Rng,
) {
    for _ in 0..20 {
        let (w, h) = (rng.random_range(8..40), rng.random_range(8..40));
        let image = random_image(rng, w, h);
        let seed = rng.random::<u64>();
        let a = augment(&image, config, &mut ChaCha8Rng::seed_from_u64(seed));
        let b = augment(&image, config, &mut ChaCha8Rng::seed_from_u64(seed));
        assert_eq!(a, b);
        assert_eq!(a.dimensions(), (w, h));
        assert!(a.as_raw().iter().all(|v| (0.0..=1.0).contains(v)));
    }
}

#[test]
fn epoch_order_is_a_seeded_permutation() {
    let a = epoch_order(100, 1, 3);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    assert_eq!(a, epoch_order(100, 1, 3));
    assert_ne!(a, epoch_order(100, 1, 4));
}

#[test]
fn gamma_alone_raises_each_intensity_to_a_power_in_range() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let image = random_image(&mut rng, 19, 13);
    let gamma_only = AugmentConfig {
        gamma_range: (0.7, 1.5),
        ..no_change()
    };
    for _ in 0..10 {
        let out = augment(&image, &gamma_only, &mut rng);
        // Recover the gamma from one mid-grey pixel, then check every pixel obeys it.
        let (i, v) = image
            .as_raw()
            .iter()
            .enumerate()
            .find(|(_, v)| (0.2..0.8).contains(*v))
            .expect("a mid-grey pixel");
        let gamma = out.as_raw()[i].ln() / v.ln();
        assert!((0.7 - 1e-3..1.5 + 1e-3).contains(&gamma), "gamma {gamma}");
        for (a, b) in out.as_raw().iter().zip(image.as_raw()) {
            assert!((a - b.powf(gamma)).abs() < 1e-4);
        }
    }
}

#[test]
fn noise_alone_has_a_bounded_spread_and_keeps_the_mean() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let image = GrayImage::from_pixel(64, 64, image::Luma([0.5]));
    let noise_only = AugmentConfig {
        max_noise_std: 0.05,
        ..no_change()
    };
    let mut spreads = Vec::new();
    for _ in 0..20 {
        let out = augment(&image, &noise_only, &mut rng);
        let n = out.as_raw().len() as f32;
        let mean = out.as_raw().iter().sum::<f32>() / n;
        let std = (out.as_raw().iter().map(|v| (v - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!(std < 0.05 * 1.1, "std {std}");
        spreads.push(std);
    }
    assert!(
        spreads.iter().any(|&s| s > 0.02),
        "noise never drawn: {spreads:?}"
    );
}

#[test]
fn neutral_shifts_leave_the_film_and_real_ones_change_it() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let image = random_image(&mut rng, 24, 24);
    for neutral in ["contrast:1", "gamma:1", "resolution:1", "noise:0"] {
        let shift: Shift = neutral.parse().expect("parse");
        let out = shift.apply(&image, 1);
        for (a, b) in out.as_raw().iter().zip(image.as_raw()) {
            assert!((a - b).abs() < 1e-5, "{neutral} changed the film");
        }
    }
    for real in [
        "contrast:0.7",
        "gamma:1.5",
        "blur:1.5",
        "noise:0.03",
        "resolution:0.5",
    ] {
        let shift: Shift = real.parse().expect("parse");
        let out = shift.apply(&image, 1);
        assert_eq!(out.dimensions(), image.dimensions());
        assert!(out.as_raw().iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(out, image, "{real} left the film unchanged");
        assert_eq!(out, shift.apply(&image, 1), "{real} is not deterministic");
    }
    // Contrast 0.7 around mid-grey: exact.
    let flat = Shift::Contrast(0.7).apply(&image, 0);
    for (a, b) in flat.as_raw().iter().zip(image.as_raw()) {
        assert!((a - ((b - 0.5) * 0.7 + 0.5)).abs() < 1e-6);
    }
    for bad in ["gamma", "gamma:x", "gamma:-1", "resolution:2", "sharpen:1"] {
        assert!(bad.parse::<Shift>().is_err(), "{bad} accepted");
    }
}
