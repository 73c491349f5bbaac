//! Reading, patient ids and splits on the real training folder in ../shared.

mod common;

use std::collections::HashMap;

use xray_data::{
    load_images, read_manifest, scan_split, split_by_patient, LoadOptions, Side, SplitConfig,
};

#[test]
fn patient_ids_from_file_names_match_the_manifest() -> Result<(), xray_data::DataError> {
    let root = common::kermany_root();
    let scanned = scan_split(&root, "train")?;
    let manifest = read_manifest(&root.join("manifest.csv"), Some("train"))?;
    assert_eq!(scanned.len(), 5216);
    let by_path: HashMap<_, _> = manifest.iter().map(|s| (s.path.clone(), s)).collect();
    for sample in &scanned {
        let listed = by_path
            .get(&sample.path)
            .unwrap_or_else(|| panic!("{} not in manifest", sample.path.display()));
        assert_eq!(
            sample.patient_id,
            listed.patient_id,
            "{}",
            sample.path.display()
        );
        assert_eq!(sample.label, listed.label);
    }
    Ok(())
}

#[test]
fn split_keeps_patients_and_duplicates_on_one_side_and_is_stratified(
) -> Result<(), xray_data::DataError> {
    let samples = scan_split(&common::kermany_root(), "train")?;
    // Hash-only load would be cheaper, but decoding at 16x16 is quick and exercises the cache.
    let set = load_images(
        samples,
        &LoadOptions {
            size: 16,
            skip_unreadable: false,
        },
    )?;
    let config = SplitConfig::default();
    let split = split_by_patient(&set.samples, Some(&set.content_hashes), &config)?;
    assert!(split.shared_patients(&set.samples).is_empty());
    let total = split.train.len() + split.validation.len() + split.test.len();
    assert_eq!(total, set.samples.len());

    // Byte-identical files never straddle two sides.
    let mut side_of_hash = HashMap::new();
    for side in [Side::Train, Side::Validation, Side::Test] {
        for &i in split.side(side) {
            let previous = side_of_hash.insert(set.content_hashes[i], side);
            assert!(
                previous.is_none() || previous == Some(side),
                "duplicate of {} split",
                set.samples[i].path.display()
            );
        }
    }
    // Each side keeps the folder's pneumonia share (74.3%) within two points.
    for side in [Side::Train, Side::Validation, Side::Test] {
        let idx = split.side(side);
        let share = idx
            .iter()
            .filter(|&&i| set.samples[i].label.target() > 0.5)
            .count() as f64
            / idx.len() as f64;
        assert!(
            (share - 0.743).abs() < 0.02,
            "{side:?}: pneumonia share {share:.3}"
        );
    }
    assert!((split.test.len() as f64 / total as f64 - 0.15).abs() < 0.01);

    // Same seed, same split; another seed, another split.
    assert_eq!(
        split,
        split_by_patient(&set.samples, Some(&set.content_hashes), &config)?
    );
    let other = split_by_patient(
        &set.samples,
        Some(&set.content_hashes),
        &SplitConfig { seed: 7, ..config },
    )?;
    assert_ne!(split.test, other.test);
    Ok(())
}

#[test]
fn decodes_real_films_to_gray_in_unit_range() -> Result<(), xray_data::DataError> {
    let samples = scan_split(&common::kermany_root(), "train")?;
    let first_two: Vec<_> = samples.into_iter().take(2).collect();
    let set = load_images(
        first_two,
        &LoadOptions {
            size: 64,
            skip_unreadable: false,
        },
    )?;
    for image in &set.images {
        assert_eq!(image.dimensions(), (64, 64));
        let (lo, hi) = image
            .as_raw()
            .iter()
            .fold((1f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            (0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && hi - lo > 0.3,
            "range {lo}..{hi}"
        );
    }
    Ok(())
}
