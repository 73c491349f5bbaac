//! A DICOM Secondary Capture per film, so that the model's output can sit beside the study in a
//! PACS: the saliency overlay (or the plain film, when referred) as an RGB image, the decision and
//! the disclaimer in the header, and the source study's UIDs, so that a viewer files it with the
//! study it came from.

use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;
use image::RgbImage;
use sha2::{Digest, Sha256};
use xray_infer::{DicomInfo, Prediction, DISCLAIMER};

use crate::Error;

/// A DICOM UID under the `2.25` root (a UUID-derived integer, ITU-T X.667) made from `seed`, so
/// that the same film, bundle and purpose always get the same UID.
pub fn derived_uid(seed: &str) -> String {
    let digest = Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // A version-4-shaped UUID, as X.667 expects.
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    format!("2.25.{}", u128::from_be_bytes(bytes))
}

/// What a Secondary Capture says about one film.
pub struct CaptureContent<'a> {
    /// The film's path as given (names it in the header, seeds the UIDs).
    pub source: &'a str,
    /// The source file's DICOM header, when it had one: the new object joins its study.
    pub dicom: Option<&'a DicomInfo>,
    /// What the model said.
    pub prediction: &'a Prediction,
    /// The bundle's weights' SHA-256.
    pub bundle_sha256: &'a str,
}

fn text(tag: dicom_core::Tag, vr: VR, value: impl Into<String>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value.into()))
}

/// Writes `image` as an RGB Secondary Capture to `path` (through a temporary file, so that a
/// kill leaves no half-written object).
pub fn write_secondary_capture(
    path: &Path,
    image: &RgbImage,
    content: &CaptureContent,
) -> Result<(), Error> {
    let p = content.prediction;
    let seed = format!("{}|{}", content.source, content.bundle_sha256);
    let dicom = content.dicom;
    let study = dicom
        .and_then(|d| d.study_uid.clone())
        .unwrap_or_else(|| derived_uid(&format!("{seed}|study")));
    let reasons: Vec<String> = p.refer_reasons.iter().map(|r| r.to_string()).collect();
    let comments = format!(
        "NOT FOR DIAGNOSTIC USE. {DISCLAIMER} Model decision: {} (probability {:.3}, calibrated \
         {:.3}, operating point {} at {:.4}){}. Bundle weights sha256 {}. Source: {}.",
        p.decision,
        p.probability,
        p.calibrated_probability,
        p.operating_point,
        p.threshold,
        if reasons.is_empty() {
            String::new()
        } else {
            format!("; referred: {}", reasons.join("; "))
        },
        content.bundle_sha256,
        content.source
    );
    let mut object = InMemDicomObject::from_element_iter([
        text(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        ),
        text(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            derived_uid(&format!("{seed}|instance")),
        ),
        text(tags::STUDY_INSTANCE_UID, VR::UI, study),
        text(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            derived_uid(&format!("{seed}|series")),
        ),
        text(tags::MODALITY, VR::CS, "OT"),
        text(tags::CONVERSION_TYPE, VR::CS, "WSD"),
        text(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            "AI decision support - NOT FOR DIAGNOSTIC USE",
        ),
        text(tags::IMAGE_COMMENTS, VR::LT, comments),
        text(tags::BURNED_IN_ANNOTATION, VR::CS, "NO"),
        text(tags::SAMPLES_PER_PIXEL, VR::US, "3"),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
    ]);
    if let Some(d) = dicom {
        if let Some(id) = &d.patient_id {
            object.put(text(tags::PATIENT_ID, VR::LO, id.clone()));
        }
        if let Some(date) = &d.study_date {
            object.put(text(tags::STUDY_DATE, VR::DA, date.clone()));
        }
        if let Some(sop) = &d.sop_uid {
            object.put(text(
                tags::DERIVATION_DESCRIPTION,
                VR::ST,
                format!("derived from SOP instance {sop}"),
            ));
        }
    }
    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, 3u16),
        (tags::PLANAR_CONFIGURATION, 0),
        (tags::ROWS, image.height() as u16),
        (tags::COLUMNS, image.width() as u16),
        (tags::BITS_ALLOCATED, 8),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    if image.width() > u32::from(u16::MAX) || image.height() > u32::from(u16::MAX) {
        return Err(crate::ErrorKind::Invalid(format!(
            "{}: {} x {} is too large for a Secondary Capture",
            content.source,
            image.width(),
            image.height()
        ))
        .into());
    }
    let mut pixels = image.as_raw().clone();
    if pixels.len() % 2 == 1 {
        pixels.push(0); // values have even length
    }
    object.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(pixels),
    ));
    let file = object
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .map_err(|e| crate::ErrorKind::Invalid(format!("{}: {e}", path.display())))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| crate::ErrorKind::Invalid(format!("{}: {e}", path.display())))?;
    let partial = path.with_extension("dcm.partial");
    std::fs::write(&partial, &bytes).map_err(|e| Error::io(&partial, e))?;
    std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
}
