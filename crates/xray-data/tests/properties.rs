//! Properties of the split and the augmentation over random inputs.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use xray_data::{
    augment, epoch_order, split_by_patient, AugmentConfig, GrayImage, Label, Sample, SplitConfig,
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

#[test]
fn identity_augmentation_returns_the_image() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let image = random_image(&mut rng, 17, 23);
    let identity = AugmentConfig {
        max_rotation_deg: 0.0,
        scale_range: (1.0, 1.0),
        max_shift: 0.0,
        max_brightness: 0.0,
        contrast_range: (1.0, 1.0),
    };
    let out = augment(&image, &identity, &mut rng);
    for (a, b) in out.as_raw().iter().zip(image.as_raw()) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn augmentation_is_seeded_bounded_and_keeps_the_size() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let config = AugmentConfig::default();
    for _ in 0..20 {
        let (w, h) = (rng.random_range(8..40), rng.random_range(8..40));
        let image = random_image(&mut rng, w, h);
        let seed = rng.random::<u64>();
        let a = augment(&image, &config, &mut ChaCha8Rng::seed_from_u64(seed));
        let b = augment(&image, &config, &mut ChaCha8Rng::seed_from_u64(seed));
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
