//! Chest films stored as DICOM, read through dicom-rs: the first frame's pixels after the
//! modality LUT (rescale slope and intercept) and the VOI LUT or window the file carries, with
//! MONOCHROME1 inverted so that bone is light, as gray intensities in `[0, 1]`; and the header
//! fields a reading needs (study, series and instance UIDs, view, age, sex).
//!
//! Without a VOI LUT or window in the file, the values are scaled from their minimum to their
//! maximum (dicom-pixeldata's normalisation). A declared image larger than [`MAX_DICOM_PIXELS`]
//! is refused before anything is decoded. A bare data set without preamble and file meta
//! ([`is_bare_dicom`]) is read as implicit VR little endian. Of a multi-frame file, the first
//! frame is read, with a warning through `log`.

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::{
    ConvertOptions, PhotometricInterpretation, PhotometricInterpretationOption, PixelDecoder,
    VoiLutFunction, VoiLutOption, WindowLevelTransform,
};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
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

/// Whether `bytes` start like a bare DICOM data set, stored without preamble and file meta
/// (older modalities write these, in implicit VR little endian): an element of group 0008
/// (identification, which comes first) whose length fits in the file.
pub fn is_bare_dicom(bytes: &[u8]) -> bool {
    let Some(head) = bytes.get(..8) else {
        return false;
    };
    let group = u16::from_le_bytes([head[0], head[1]]);
    let length = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    group == 0x0008 && length < bytes.len()
}

/// Secondary Capture, assumed for a bare data set that names no SOP class.
const FALLBACK_SOP_CLASS: &str = "1.2.840.10008.5.1.4.1.1.7";

/// The data set of a DICOM file, or of a bare data set given a file meta table.
fn open(path: &Path, bytes: &[u8]) -> Result<DefaultDicomObject, DataError> {
    let preamble = is_dicom(bytes);
    if !preamble && !is_bare_dicom(bytes) {
        return Err(dicom_error(
            path,
            "no DICM marker after the 128-byte preamble, and no bare data set",
            None,
        ));
    }
    crate::dicom_lengths::check_declared_lengths(bytes, preamble)
        .map_err(|reason| dicom_error(path, format!("damaged header: {reason}"), None))?;
    let unreadable = |e: Box<dyn std::error::Error + Send + Sync>| {
        dicom_error(path, format!("unreadable data set: {e}"), Some(e))
    };
    if preamble {
        return OpenFileOptions::new()
            .from_reader(&bytes[132 - 4..])
            .map_err(|e| unreadable(Box::new(e)));
    }
    let syntax = IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let dataset = InMemDicomObject::read_dataset_with_ts(bytes, &syntax)
        .map_err(|e| unreadable(Box::new(e)))?;
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(syntax.uid())
        .media_storage_sop_class_uid(FALLBACK_SOP_CLASS)
        .media_storage_sop_instance_uid("2.25.0");
    dataset.with_meta(meta).map_err(|e| unreadable(Box::new(e)))
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
///
/// dicom-rs can panic on damaged input (the fuzzer found an index out of bounds in its RLE
/// reader); such a panic is caught here and returned as an error naming the file.
pub fn decode_dicom(path: &Path, bytes: &[u8]) -> Result<(GrayImage, DicomInfo), DataError> {
    std::panic::catch_unwind(|| decode_dicom_unguarded(path, bytes)).unwrap_or_else(|_| {
        Err(dicom_error(
            path,
            "the DICOM decoder failed on damaged data",
            None,
        ))
    })
}

fn decode_dicom_unguarded(path: &Path, bytes: &[u8]) -> Result<(GrayImage, DicomInfo), DataError> {
    let object = open(path, bytes)?;
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
    // dicom-pixeldata asserts on these (found by the fuzzer); refuse them by name instead.
    if !(1..=16).contains(&info.bits_stored) {
        let reason = format!("Bits Stored {} is not 1 to 16", info.bits_stored);
        return Err(dicom_error(path, reason, None));
    }
    if info.frames > 1 {
        log::warn!(
            "{}: {} frames; only the first is read",
            path.display(),
            info.frames
        );
    }
    check_encapsulated_frame(path, &object, rows, columns)?;
    let decoded = object.decode_pixel_data_frame(0).map_err(|e| {
        let reason = format!("pixel data (transfer syntax {}): {e}", info.transfer_syntax);
        dicom_error(path, reason, Some(Box::new(e)))
    })?;
    let inverted = match decoded.photometric_interpretation() {
        PhotometricInterpretation::Monochrome1 => true,
        PhotometricInterpretation::Monochrome2 => false,
        other => {
            let reason = format!("photometric interpretation {other} is not a gray film");
            return Err(dicom_error(path, reason, None));
        }
    };
    let converting = |e: dicom_pixeldata::Error| {
        dicom_error(path, format!("converting pixels: {e}"), Some(Box::new(e)))
    };
    if decoded.voi_lut_sequence().map_err(converting)?.is_some() {
        // An explicit VOI LUT table: dicom-pixeldata applies it, at 16 bits.
        let options = ConvertOptions::new()
            .with_voi_lut(VoiLutOption::First)
            .force_16bit()
            .with_photometric_interpretation(PhotometricInterpretationOption::InvertMonochrome1);
        let image = decoded
            .to_dynamic_image_with_options(0, &options)
            .map_err(converting)?;
        return Ok((image.to_luma32f(), info));
    }
    // The modality LUT in floating point, then the window (or min-max) here: dicom-pixeldata's
    // own tables for 8-bit data round the window's output down to 8 bits.
    let identity = ConvertOptions::new().with_voi_lut(VoiLutOption::Identity);
    let values: Vec<f32> = decoded
        .to_vec_frame_with_options(0, &identity)
        .map_err(converting)?;
    let window = decoded
        .window()
        .map_err(converting)?
        .and_then(|w| w.first().copied());
    let gray: Vec<f32> = match window {
        Some(window) => {
            let function = decoded
                .voi_lut_function()
                .map_err(converting)?
                .and_then(|f| f.first().copied())
                .unwrap_or(VoiLutFunction::Linear);
            let transform = WindowLevelTransform::new(function, window);
            values
                .iter()
                .map(|&v| transform.apply(f64::from(v), 1.0) as f32)
                .collect()
        }
        None => min_max(&values),
    };
    let gray = gray
        .into_iter()
        .map(|v| if inverted { 1.0 - v } else { v }.clamp(0.0, 1.0))
        .collect();
    let film = GrayImage::from_raw(columns as u32, rows as u32, gray)
        .ok_or_else(|| dicom_error(path, "pixel count does not match Rows x Columns", None))?;
    Ok((film, info))
}

/// Refuses encapsulated JPEG or JPEG 2000 whose own header declares more rows or columns than
/// the data set: the decoder allocates for the stream's size, so a 96 x 96 file could otherwise
/// ask for gigabytes (found by the fuzzer: 5.2 GB and 4.4 s for one input). Only the stream's
/// headers are parsed here; a stream that cannot even be parsed is left to the decoder to
/// report.
fn check_encapsulated_frame(
    path: &Path,
    object: &DefaultDicomObject,
    rows: u64,
    columns: u64,
) -> Result<(), DataError> {
    let first_fragment = object
        .element(tags::PIXEL_DATA)
        .ok()
        .and_then(|e| e.value().fragments())
        .and_then(|f| f.first());
    let Some(fragment) = first_fragment else {
        return Ok(());
    };
    let declared = jpeg_size(fragment)
        .map(|size| ("JPEG", size))
        .or_else(|| jpeg2000_size(fragment).map(|size| ("JPEG 2000", size)));
    match declared {
        Some((kind, (height, width))) if width > columns || height > rows => Err(dicom_error(
            path,
            format!(
                "its {kind} stream declares {height} x {width} pixels, more than the data \
                 set's {rows} x {columns}"
            ),
            None,
        )),
        _ => Ok(()),
    }
}

/// `(height, width)` from a JPEG stream's frame header, if it parses.
fn jpeg_size(stream: &[u8]) -> Option<(u64, u64)> {
    if !stream.starts_with(&[0xff, 0xd8]) {
        return None;
    }
    let mut decoder = jpeg_decoder::Decoder::new(stream);
    decoder.read_info().ok()?;
    let info = decoder.info()?;
    Some((u64::from(info.height), u64::from(info.width)))
}

/// `(height, width)` from a JPEG 2000 codestream's SIZ segment, which the standard requires
/// right after the SOC marker (ITU-T T.800 A.5.1): Xsiz - XOsiz by Ysiz - YOsiz.
fn jpeg2000_size(stream: &[u8]) -> Option<(u64, u64)> {
    // Some writers wrap the codestream in a JP2 file; its codestream box is tagged `jp2c`.
    const JP2_SIGNATURE: &[u8] = b"\0\0\0\x0cjP  ";
    let codestream = if stream.starts_with(JP2_SIGNATURE) {
        let box_start = stream.windows(4).position(|w| w == b"jp2c")?;
        &stream[box_start + 4..]
    } else {
        stream
    };
    let siz = codestream.strip_prefix(&[0xff, 0x4f, 0xff, 0x51])?;
    let word = |at: usize| -> Option<u64> {
        let bytes: [u8; 4] = siz.get(at..at + 4)?.try_into().ok()?;
        Some(u64::from(u32::from_be_bytes(bytes)))
    };
    // After Lsiz (2 bytes) and Rsiz (2 bytes): Xsiz, Ysiz, XOsiz, YOsiz.
    let (x, y, x0, y0) = (word(4)?, word(8)?, word(12)?, word(16)?);
    Some((y.saturating_sub(y0), x.saturating_sub(x0)))
}

/// Values scaled from their minimum (0) to their maximum (1); all 0 when they are all equal.
fn min_max(values: &[f32]) -> Vec<f32> {
    let (low, high) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    let range = high - low;
    values
        .iter()
        .map(|&v| if range > 0.0 { (v - low) / range } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SOC, then a SIZ segment for a `width` x `height` image at offset (1, 2).
    fn codestream(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = vec![0xff, 0x4f, 0xff, 0x51, 0x00, 0x29, 0x00, 0x00];
        for word in [width + 1, height + 2, 1, 2] {
            bytes.extend_from_slice(&word.to_be_bytes());
        }
        bytes
    }

    #[test]
    fn jpeg2000_size_reads_a_bare_or_jp2_wrapped_codestream() {
        assert_eq!(jpeg2000_size(&codestream(640, 480)), Some((480, 640)));
        let mut wrapped = b"\0\0\0\x0cjP  \r\n\x87\n\0\0\0\x14ftypjp2 ".to_vec();
        wrapped.extend_from_slice(b"\0\0\0\x31jp2c");
        wrapped.extend(codestream(70_000, 3));
        assert_eq!(jpeg2000_size(&wrapped), Some((3, 70_000)));
        // Not a codestream, or cut inside SIZ: no size, left to the decoder.
        assert_eq!(jpeg2000_size(b"\xff\xd8\xff\xe0"), None);
        assert_eq!(jpeg2000_size(&codestream(640, 480)[..14]), None);
    }
}
