//! Chest films stored as DICOM, read through dicom-rs: the first frame's pixels after the
//! modality LUT (rescale slope and intercept) and the VOI LUT or window the file carries, with
//! MONOCHROME1 inverted so that bone is light, as gray intensities in `[0, 1]`; and the header
//! fields a reading needs (study, series and instance UIDs, view, age, sex).
//!
//! Without a VOI LUT or window in the file, the values are scaled from their minimum to their
//! maximum (dicom-pixeldata's normalisation). A declared image larger than [`MAX_DICOM_PIXELS`]
//! is refused before anything is decoded.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, PhotometricInterpretation, PhotometricInterpretationOption, PixelDecoder,
    VoiLutOption,
};
use serde::{Deserialize, Serialize};

use crate::{DataError, GrayImage};

/// Most pixels (rows x columns) of a frame this reader decodes: about 16k x 16k, far above any
/// radiograph, far below what would exhaust memory.
pub const MAX_DICOM_PIXELS: u64 = 16_384 * 16_384;

/// What a DICOM header says about the film.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DicomInfo {
    /// Study Instance UID.
    pub study_uid: Option<String>,
    /// Series Instance UID.
    pub series_uid: Option<String>,
    /// SOP Instance UID.
    pub sop_uid: Option<String>,
    /// Transfer syntax UID of the file.
    pub transfer_syntax: String,
    /// Photometric interpretation (`MONOCHROME1` or `MONOCHROME2`).
    pub photometric: String,
    /// View Position (e.g. `PA`, `AP`, `LL`).
    pub view_position: Option<String>,
    /// Patient's Age as written (e.g. `004Y`).
    pub patient_age: Option<String>,
    /// Patient's Sex.
    pub patient_sex: Option<String>,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Study Date (`YYYYMMDD`).
    pub study_date: Option<String>,
    /// Frames in the file (only the first is read).
    pub frames: u32,
    /// Bits Stored.
    pub bits_stored: u16,
}

/// Whether `bytes` start like a DICOM file: `DICM` after the 128-byte preamble.
pub fn is_dicom(bytes: &[u8]) -> bool {
    bytes.get(128..132) == Some(b"DICM".as_slice())
}

fn dicom_error(
    path: &Path,
    reason: impl Into<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
) -> DataError {
    DataError::Dicom {
        path: path.to_path_buf(),
        reason: reason.into(),
        source,
    }
}

fn text(object: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    let value = element.to_str().ok()?;
    let value = value.trim_matches(|c: char| c == '\0' || c.is_whitespace());
    (!value.is_empty()).then(|| value.to_string())
}

fn number(object: &DefaultDicomObject, tag: dicom_object::Tag) -> Option<u64> {
    let element = object.element_opt(tag).ok().flatten()?;
    element.to_int::<u64>().ok()
}

/// Decodes the first frame of the DICOM file `bytes` (read from `path`, named in errors).
pub fn decode_dicom(path: &Path, bytes: &[u8]) -> Result<(GrayImage, DicomInfo), DataError> {
    if !is_dicom(bytes) {
        return Err(dicom_error(
            path,
            "no DICM marker after the 128-byte preamble",
            None,
        ));
    }
    let object = OpenFileOptions::new()
        .from_reader(&bytes[132 - 4..])
        .map_err(|e| dicom_error(path, format!("unreadable data set: {e}"), Some(Box::new(e))))?;
    let transfer_syntax = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_string();
    let rows = number(&object, tags::ROWS).unwrap_or(0);
    let columns = number(&object, tags::COLUMNS).unwrap_or(0);
    if rows == 0 || columns == 0 {
        return Err(dicom_error(path, "no Rows or Columns: not an image", None));
    }
    if rows * columns > MAX_DICOM_PIXELS {
        return Err(dicom_error(
            path,
            format!("declares {rows} x {columns} pixels, more than the {MAX_DICOM_PIXELS} decoded"),
            None,
        ));
    }
    let info = DicomInfo {
        study_uid: text(&object, tags::STUDY_INSTANCE_UID),
        series_uid: text(&object, tags::SERIES_INSTANCE_UID),
        sop_uid: text(&object, tags::SOP_INSTANCE_UID),
        photometric: text(&object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default(),
        view_position: text(&object, tags::VIEW_POSITION),
        patient_age: text(&object, tags::PATIENT_AGE),
        patient_sex: text(&object, tags::PATIENT_SEX),
        patient_id: text(&object, tags::PATIENT_ID),
        study_date: text(&object, tags::STUDY_DATE),
        frames: number(&object, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1) as u32,
        bits_stored: number(&object, tags::BITS_STORED).unwrap_or(0) as u16,
        transfer_syntax,
    };
    let decoded = object.decode_pixel_data_frame(0).map_err(|e| {
        let reason = format!("pixel data (transfer syntax {}): {e}", info.transfer_syntax);
        dicom_error(path, reason, Some(Box::new(e)))
    })?;
    match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 | PhotometricInterpretation::Monochrome2 => {}
        other => {
            let reason = format!("photometric interpretation {other} is not a gray film");
            return Err(dicom_error(path, reason, None));
        }
    }
    let options = ConvertOptions::new()
        .with_voi_lut(VoiLutOption::First)
        .force_16bit()
        .with_photometric_interpretation(PhotometricInterpretationOption::InvertMonochrome1);
    let image = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|e| dicom_error(path, format!("converting pixels: {e}"), Some(Box::new(e))))?;
    Ok((image.to_luma32f(), info))
}
