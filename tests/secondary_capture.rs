//! `predict --dicom-sc`: each film gets a DICOM Secondary Capture that dicom-rs reads back, in the
//! source study, with the overlay (or the plain film, when referred) at the film's size, and the
//! decision and "not for diagnostic use" in its header.

use std::path::PathBuf;

use candle_core::Device;
use dicom_dictionary_std::{tags, uids};
use dicom_pixeldata::PixelDecoder;
use xray_pneumonia::infer::{read_film_with_header, Bundle};
use xray_pneumonia::prediction::{predict_files, FilmRecord, PredictOptions, PREDICTIONS_JSONL};

#[test]
fn every_film_gets_a_secondary_capture_in_its_study() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let files = vec![
        shared.join("dicom/cxr_pa_monochrome2.dcm"),
        shared.join("kermany224/train/PNEUMONIA/person1_bacteria_1.jpeg"),
    ];
    let bundle = Bundle::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/scratch_cnn"),
        &Device::Cpu,
    )
    .expect("bundle");
    let dir = tempfile::tempdir().expect("temp dir");
    let options = PredictOptions {
        saliency: None,
        dicom_sc: true,
    };
    predict_files(&bundle, &files, dir.path(), &options, &mut |_| {}).expect("run");
    let text = std::fs::read_to_string(dir.path().join(PREDICTIONS_JSONL)).expect("jsonl");
    let records: Vec<FilmRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    assert_eq!(records.len(), 2);
    for r in &records {
        let name = r.secondary_capture.as_ref().expect("a Secondary Capture");
        let object = dicom_object::open_file(dir.path().join(name)).expect("dicom-rs reads it");
        let field = |tag| {
            object
                .element(tag)
                .expect("element")
                .to_str()
                .expect("text")
                .trim_end_matches('\0')
                .to_string()
        };
        assert_eq!(
            field(tags::SOP_CLASS_UID),
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE
        );
        assert_eq!(field(tags::PHOTOMETRIC_INTERPRETATION), "RGB");
        let comments = field(tags::IMAGE_COMMENTS);
        assert!(comments.contains("NOT FOR DIAGNOSTIC USE"), "{comments}");
        let decision = r.prediction.as_ref().expect("prediction").decision;
        assert!(comments.contains(&decision.to_string()), "{comments}");
        let (film, header) = read_film_with_header(std::path::Path::new(&r.path)).expect("film");
        let image = object
            .decode_pixel_data()
            .expect("pixel data")
            .to_dynamic_image(0)
            .expect("image");
        assert_eq!((image.width(), image.height()), film.dimensions());
        if let Some(header) = header {
            // Filed in the source study, as a new series and instance.
            assert_eq!(Some(field(tags::STUDY_INSTANCE_UID)), header.study_uid);
            assert_ne!(Some(field(tags::SOP_INSTANCE_UID)), header.sop_uid);
        }
    }
}

#[test]
fn derived_uids_are_valid_and_stable() {
    use xray_pneumonia::secondary_capture::derived_uid;
    let uid = derived_uid("film|bundle|instance");
    assert_eq!(uid, derived_uid("film|bundle|instance"));
    assert_ne!(uid, derived_uid("film|bundle|series"));
    assert!(uid.starts_with("2.25.") && uid.len() <= 64, "{uid}");
    assert!(uid[5..].chars().all(|c| c.is_ascii_digit()) && !uid[5..].starts_with('0'));
}
