//! DICOM films through the façade: the same film as DICOM and as a 16-bit PNG gets the same
//! probability; header fields that put a film outside the models' scope make it refer.

use std::path::PathBuf;

use candle_core::Device;
use image::ImageEncoder;
use xray_infer::{
    age_in_years, header_reasons, read_film, read_film_with_header, Bundle, Decision, DicomInfo,
    ReferReason,
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dicom(name: &str) -> PathBuf {
    repo().join("../shared/data/dicom").join(name)
}

#[test]
fn the_same_film_as_dicom_and_as_png_gets_the_same_probability() {
    let bundle = Bundle::load(&repo().join("models/mobilenet_v2"), &Device::Cpu).expect("bundle");
    let (film, header) = read_film_with_header(&dicom("cxr_pa_monochrome2.dcm")).expect("DICOM");
    let header = header.expect("a DICOM header");
    assert_eq!(header.photometric, "MONOCHROME2");
    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("film.png");
    let pixels: Vec<u8> = film
        .as_raw()
        .iter()
        .flat_map(|v| ((v * 65535.0).round() as u16).to_be_bytes())
        .collect();
    let file = std::fs::File::create(&png).expect("png file");
    image::codecs::png::PngEncoder::new(file)
        .write_image(
            &pixels,
            film.width(),
            film.height(),
            image::ExtendedColorType::L16,
        )
        .expect("encode");
    let from_png = bundle
        .predict(&read_film(&png).expect("png"))
        .expect("prediction");
    let from_dicom = bundle.predict(&film).expect("prediction");
    assert!(
        (from_png.probability - from_dicom.probability).abs() < 1e-3,
        "PNG {} vs DICOM {}",
        from_png.probability,
        from_dicom.probability
    );
    assert_eq!(from_png.decision, from_dicom.decision);
}

#[test]
fn header_fields_outside_the_scope_refer() {
    assert_eq!(age_in_years("004Y"), Some(4.0));
    assert_eq!(age_in_years("018M"), Some(1.5));
    assert_eq!(age_in_years("abc"), None);
    let adult_lateral = DicomInfo {
        view_position: Some("LL".into()),
        patient_age: Some("045Y".into()),
        ..DicomInfo::default()
    };
    let reasons = header_reasons(&adult_lateral);
    assert!(matches!(
        reasons[..],
        [
            ReferReason::LateralView { .. },
            ReferReason::AgeOutsideTraining { .. }
        ]
    ));
    let child_frontal = DicomInfo {
        view_position: Some("PA".into()),
        patient_age: Some("003Y".into()),
        ..DicomInfo::default()
    };
    assert!(header_reasons(&child_frontal).is_empty());

    let bundle = Bundle::load(&repo().join("models/scratch_cnn"), &Device::Cpu).expect("bundle");
    let (film, _) = read_film_with_header(&dicom("cxr_pa_monochrome2.dcm")).expect("DICOM");
    let p = bundle
        .predict_with_header(&film, Some(&adult_lateral))
        .expect("prediction");
    assert_eq!(p.decision, Decision::Refer);
    assert!(p
        .refer_reasons
        .iter()
        .any(|r| matches!(r, ReferReason::LateralView { .. })));
}
