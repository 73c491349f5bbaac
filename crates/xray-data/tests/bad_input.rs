//! Bad input gives an error that names the culprit, never a panic.

mod common;

use std::fs;
use std::path::Path;

use xray_data::{decode_gray, load_images, scan_split, DataError, LoadOptions};

fn layout_with(dir: &Path, normal: &[(&str, Vec<u8>)], pneumonia: &[(&str, Vec<u8>)]) {
    for (class, files) in [("NORMAL", normal), ("PNEUMONIA", pneumonia)] {
        let class_dir = dir.join("train").join(class);
        fs::create_dir_all(&class_dir).unwrap();
        for (name, bytes) in files {
            fs::write(class_dir.join(name), bytes).unwrap();
        }
    }
}

fn real_jpeg() -> Vec<u8> {
    fs::read(common::first_normal_jpeg()).unwrap()
}

#[test]
fn truncated_jpeg_is_rejected_by_name() {
    let bytes = real_jpeg();
    let truncated = &bytes[..bytes.len() / 2];
    let err = decode_gray(Path::new("half.jpeg"), truncated).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("half.jpeg") && message.contains("truncated"),
        "{message}"
    );
}

#[test]
fn text_file_named_jpeg_is_rejected_by_name() {
    let err = decode_gray(Path::new("notes.jpeg"), b"this is not an image").unwrap_err();
    assert!(matches!(err, DataError::Decode { .. }));
    assert!(err.to_string().contains("notes.jpeg"), "{err}");
}

#[test]
fn sixteen_bit_png_decodes_to_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.png");
    let ramp: image::ImageBuffer<image::Luma<u16>, Vec<u16>> =
        image::ImageBuffer::from_fn(32, 8, |x, _| image::Luma([(x * 2000) as u16]));
    ramp.save(&path).unwrap();
    let gray = decode_gray(&path, &fs::read(&path).unwrap()).unwrap();
    let expected = 31.0 * 2000.0 / 65535.0;
    assert!((gray.get_pixel(31, 0).0[0] - expected).abs() < 1e-4);
}

#[test]
fn wrong_root_missing_and_empty_class_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let err = scan_split(&dir.path().join("nowhere"), "train").unwrap_err();
    assert!(matches!(err, DataError::MissingRoot { .. }), "{err}");

    let err = scan_split(dir.path(), "train").unwrap_err();
    assert!(matches!(err, DataError::MissingSplit { .. }), "{err}");

    fs::create_dir_all(dir.path().join("train/NORMAL")).unwrap();
    fs::write(dir.path().join("train/NORMAL/a.jpeg"), real_jpeg()).unwrap();
    let err = scan_split(dir.path(), "train").unwrap_err();
    assert!(
        matches!(err, DataError::MissingClass { .. }) && err.to_string().contains("PNEUMONIA"),
        "{err}"
    );

    fs::create_dir_all(dir.path().join("train/PNEUMONIA")).unwrap();
    fs::write(
        dir.path().join("train/PNEUMONIA/readme.txt"),
        "not an image",
    )
    .unwrap();
    let err = scan_split(dir.path(), "train").unwrap_err();
    assert!(
        matches!(err, DataError::EmptyClass { .. }) && err.to_string().contains("PNEUMONIA"),
        "{err}"
    );
}

#[test]
fn unreadable_files_fail_the_load_or_are_skipped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let good = real_jpeg();
    let half = good[..good.len() / 2].to_vec();
    layout_with(
        dir.path(),
        &[
            ("IM-0001-0001.jpeg", good.clone()),
            ("IM-0002-0001.jpeg", half),
        ],
        &[
            ("person1_virus_1.jpeg", good),
            ("person2_virus_2.jpeg", b"text".to_vec()),
        ],
    );
    let samples = scan_split(dir.path(), "train").unwrap();
    assert_eq!(samples.len(), 4);

    let err = load_images(
        samples.clone(),
        &LoadOptions {
            size: 32,
            skip_unreadable: false,
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("IM-0002-0001.jpeg"), "{err}");

    let set = load_images(
        samples,
        &LoadOptions {
            size: 32,
            skip_unreadable: true,
        },
    )
    .unwrap();
    assert_eq!(set.images.len(), 2);
    let skipped: Vec<String> = set
        .skipped
        .iter()
        .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(skipped, ["IM-0002-0001.jpeg", "person2_virus_2.jpeg"]);
}
