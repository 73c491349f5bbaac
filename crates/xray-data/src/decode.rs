use std::path::{Path, PathBuf};

use image::{imageops::FilterType, ImageBuffer, Luma};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::{DataError, Sample};

/// A single-channel image with intensities in `[0, 1]`.
pub type GrayImage = ImageBuffer<Luma<f32>, Vec<f32>>;

/// How to decode a set of images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Every image is resized to `size` x `size` (the model input).
    pub size: u32,
    /// Skip unreadable files (reported in [`DecodedSet::skipped`]) instead of failing.
    pub skip_unreadable: bool,
}

/// A file left out by [`load_images`] with `skip_unreadable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedImage {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// Decoded, resized images held in memory, so that training never decodes a file twice.
#[derive(Debug, Clone)]
pub struct DecodedSet {
    /// The samples that decoded, in input order.
    pub samples: Vec<Sample>,
    /// `images[i]` is `samples[i]`, resized to the requested size.
    pub images: Vec<GrayImage>,
    /// SHA-256 of each file's bytes, to find byte-identical copies.
    pub content_hashes: Vec<[u8; 32]>,
    /// Files left out because they could not be read or decoded.
    pub skipped: Vec<SkippedImage>,
}

/// Decodes a JPEG or PNG (8- or 16-bit, gray or colour), or a DICOM file (recognised by its
/// content, [`decode_dicom`](crate::decode_dicom)), to gray intensities in `[0, 1]`; see
/// [`decode_film`] for the DICOM header too.
///
/// A JPEG without its end-of-image marker is rejected as truncated: decoders otherwise fill
/// the missing rows with grey, which would silently train on a damaged film.
pub fn decode_gray(path: &Path, bytes: &[u8]) -> Result<GrayImage, DataError> {
    Ok(decode_film(path, bytes)?.0)
}

/// [`decode_gray`], with the DICOM header's fields when the file is DICOM.
///
/// The decoders are third-party code reading untrusted bytes: a panic in one is caught and
/// returned as an error naming the file, never passed on.
pub fn decode_film(
    path: &Path,
    bytes: &[u8],
) -> Result<(GrayImage, Option<crate::DicomInfo>), DataError> {
    std::panic::catch_unwind(|| decode_film_unguarded(path, bytes)).unwrap_or_else(|_| {
        Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "the decoder failed on damaged data".into(),
        })
    })
}

fn decode_film_unguarded(
    path: &Path,
    bytes: &[u8],
) -> Result<(GrayImage, Option<crate::DicomInfo>), DataError> {
    if crate::is_dicom(bytes) || crate::is_bare_dicom(bytes) {
        let (film, info) = crate::decode_dicom(path, bytes)?;
        return Ok((film, Some(info)));
    }
    let fail = |reason: String| DataError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let format = image::guess_format(bytes)
        .map_err(|_| fail("not a JPEG, PNG or DICOM file (unrecognised header)".into()))?;
    if !matches!(format, image::ImageFormat::Jpeg | image::ImageFormat::Png) {
        return Err(fail(format!(
            "{format:?} is not read: JPEG, PNG or DICOM only"
        )));
    }
    if format == image::ImageFormat::Jpeg && !has_jpeg_end_marker(bytes) {
        return Err(fail("truncated JPEG (no end-of-image marker)".into()));
    }
    let decoded =
        image::load_from_memory_with_format(bytes, format).map_err(|e| fail(e.to_string()))?;
    if decoded.width() == 0 || decoded.height() == 0 {
        return Err(fail("image has no pixels".into()));
    }
    Ok((decoded.to_luma32f(), None))
}

fn has_jpeg_end_marker(bytes: &[u8]) -> bool {
    // Some writers pad after EOI; accept it within the last few bytes.
    let tail = &bytes[bytes.len().saturating_sub(16)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// A film at the model's `size` x `size` input, resized as every training film was (a triangle
/// filter); a film already at that size is returned as it is, untouched.
pub fn resize_to_input(film: &GrayImage, size: u32) -> std::borrow::Cow<'_, GrayImage> {
    if film.dimensions() == (size, size) {
        std::borrow::Cow::Borrowed(film)
    } else {
        std::borrow::Cow::Owned(image::imageops::resize(
            film,
            size,
            size,
            FilterType::Triangle,
        ))
    }
}

/// A film with intensities in `[0, 1]` as 8-bit gray (clamped, rounded): what a viewer or an
/// image file shows.
pub fn to_gray8(film: &GrayImage) -> image::GrayImage {
    image::GrayImage::from_fn(film.width(), film.height(), |x, y| {
        Luma([(film.get_pixel(x, y)[0].clamp(0.0, 1.0) * 255.0).round() as u8])
    })
}

/// Reads, hashes, decodes and resizes one file.
fn load_one(path: &Path, size: u32) -> Result<(GrayImage, [u8; 32]), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let hash: [u8; 32] = Sha256::digest(&bytes).into();
    let image = decode_gray(path, &bytes)?;
    let image = match resize_to_input(&image, size) {
        std::borrow::Cow::Borrowed(_) => image,
        std::borrow::Cow::Owned(resized) => resized,
    };
    Ok((image, hash))
}

/// Decodes every sample in parallel (rayon) into memory at `size` x `size`.
///
/// Without `skip_unreadable`, the first unreadable file (in input order) is the error. With it,
/// unreadable files are listed in [`DecodedSet::skipped`]; the call still fails if nothing is left.
pub fn load_images(samples: Vec<Sample>, options: &LoadOptions) -> Result<DecodedSet, DataError> {
    if options.size < 8 {
        return Err(DataError::InvalidParameter {
            name: "size",
            value: options.size.to_string(),
            reason: "images must be at least 8x8".into(),
        });
    }
    let results: Vec<_> = samples
        .par_iter()
        .map(|s| load_one(&s.path, options.size))
        .collect();
    let mut set = DecodedSet {
        samples: Vec::with_capacity(samples.len()),
        images: Vec::with_capacity(samples.len()),
        content_hashes: Vec::with_capacity(samples.len()),
        skipped: Vec::new(),
    };
    for (sample, result) in samples.into_iter().zip(results) {
        match result {
            Ok((image, hash)) => {
                set.samples.push(sample);
                set.images.push(image);
                set.content_hashes.push(hash);
            }
            Err(e) if options.skip_unreadable => set.skipped.push(SkippedImage {
                path: sample.path,
                reason: e.to_string(),
            }),
            Err(e) => return Err(e),
        }
    }
    if set.samples.is_empty() {
        return Err(DataError::NoImages {
            reason: format!("all {} files were unreadable", set.skipped.len()),
        });
    }
    Ok(set)
}
