//! Chest X-ray data for pneumonia classifiers: reading the folder layout users download, patient
//! ids, patient-level splits, decoding into an in-memory cache, preprocessing and augmentation.
//!
//! The usual flow:
//! ```no_run
//! use xray_data::{scan_split, load_images, LoadOptions, split_by_patient, SplitConfig};
//! # fn main() -> Result<(), xray_data::DataError> {
//! let samples = scan_split("../shared/data/kermany224".as_ref(), "train")?;
//! let set = load_images(samples, &LoadOptions { size: 224, skip_unreadable: false })?;
//! let split = split_by_patient(&set.samples, Some(&set.content_hashes), &SplitConfig::default())?;
//! assert!(split.shared_patients(&set.samples).is_empty());
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod augment;
mod batch;
mod decode;
mod dicom;
mod dicom_lengths;
mod error;
pub mod fuzz;
mod layout;
mod manifest;
mod patient;
mod preprocess;
mod shift;
mod split;

pub use augment::{augment, test_time_views, AugmentConfig, ViewTransform};
pub use batch::{epoch_order, images_to_tensor};
pub use decode::{
    decode_film, decode_gray, load_images, resize_to_input, to_gray8, DecodedSet, GrayImage,
    LoadOptions, SkippedImage,
};
pub use dicom::{decode_dicom, is_bare_dicom, is_dicom, DicomInfo, MAX_DICOM_PIXELS};
pub use error::DataError;
pub use layout::{scan_split, Label, Sample};
pub use manifest::read_manifest;
pub use patient::patient_id_from_file_name;
pub use preprocess::{edge_energy, thumbnail, MeanStd, Normalization, Preprocessing};
pub use shift::Shift;
pub use split::{
    split_by_patient, split_from_lists, PatientLists, PatientSplit, Side, SplitConfig,
};
