//! Training on a validation design given as patient lists (`--split-file`): the committed
//! family design (`splits/family.json`, written by `tools/designs.py`) on the real films.

use std::collections::HashMap;
use std::path::PathBuf;

use xray_pneumonia::data::{Side, SplitConfig};
use xray_pneumonia::pipeline::{prepare_data, PreparedData};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The real training films at 16 px (the first `limit` of each class), split by the default seed.
fn real_films(limit: Option<usize>) -> anyhow::Result<PreparedData> {
    let root = repo("../shared/data/kermany224");
    Ok(prepare_data(
        &root,
        "train",
        16,
        false,
        limit,
        &SplitConfig::default(),
    )?)
}

#[test]
fn the_family_design_holds_out_every_normal2_normal_and_is_recorded() -> anyhow::Result<()> {
    let mut data = real_films(None)?;
    let file = repo("splits/family.json");
    data.use_split_file(&file)?;
    let lists: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
    let mut side_of: HashMap<String, Side> = HashMap::new();
    for (key, side) in [
        ("train_patients", Side::Train),
        ("validation_patients", Side::Validation),
        ("test_patients", Side::Test),
    ] {
        for id in lists[key].as_array().expect("a list of patients") {
            side_of.insert(id.as_str().expect("a patient id").to_string(), side);
        }
    }
    let samples = &data.set.samples;
    let mut normal2_held = 0;
    for side in Side::ALL {
        for &i in data.split.side(side) {
            assert_eq!(
                side_of[&samples[i].patient_id], side,
                "{:?}",
                samples[i].path
            );
            let name = samples[i].path.file_name().unwrap().to_string_lossy();
            if name.starts_with("NORMAL2-IM-") {
                assert_eq!(
                    side,
                    Side::Test,
                    "{name}: a new-series normal outside the held-out side"
                );
                normal2_held += 1;
            }
        }
    }
    assert_eq!(normal2_held, 744);
    assert_eq!(
        [
            data.split.train.len(),
            data.split.validation.len(),
            data.split.test.len()
        ],
        [2356, 498, 2362],
        "the films tools/recipe_study.py held out"
    );
    let record = data.split_record(&SplitConfig::default());
    assert_eq!(
        record.source.as_deref(),
        Some(file.display().to_string().as_str())
    );
    Ok(())
}

#[test]
fn a_split_file_that_misses_patients_or_is_not_json_is_refused_by_name() -> anyhow::Result<()> {
    let mut data = real_films(Some(30))?;
    let dir = tempfile::tempdir()?;
    let partial = dir.path().join("partial.json");
    std::fs::write(
        &partial,
        r#"{"train_patients": ["NORMAL:IM-0115"], "validation_patients": [], "test_patients": []}"#,
    )?;
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "{\"train_patients\": [")?;
    for file in [&partial, &broken] {
        let message = data.use_split_file(file).unwrap_err().to_string();
        assert!(message.contains(&file.display().to_string()), "{message}");
    }
    let missing = data.use_split_file(&partial).unwrap_err().to_string();
    assert!(missing.contains("on no list"), "{missing}");
    assert!(
        data.split_source.is_none(),
        "a refused file leaves the seeded split"
    );
    // A bundle's config.json is a split file too: its `split` is taken.
    data.use_split_file(&repo("models/scratch_cnn/config.json"))?;
    assert!(data.split.shared_patients(&data.set.samples).is_empty());
    Ok(())
}
