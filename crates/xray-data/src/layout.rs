use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{patient_id_from_file_name, DataError};

/// The diagnosis a chest film is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Label {
    /// No pneumonia.
    Normal,
    /// Bacterial or viral pneumonia.
    Pneumonia,
}

impl Label {
    /// Both labels, in the order of their folder names.
    pub const ALL: [Label; 2] = [Label::Normal, Label::Pneumonia];

    /// The class folder name in the downloaded layout.
    pub fn folder_name(self) -> &'static str {
        match self {
            Label::Normal => "NORMAL",
            Label::Pneumonia => "PNEUMONIA",
        }
    }

    /// The binary target: 1 for pneumonia (the positive class), 0 for normal.
    pub fn target(self) -> f32 {
        match self {
            Label::Normal => 0.0,
            Label::Pneumonia => 1.0,
        }
    }

    /// Parses a folder or manifest name, case-insensitively.
    pub fn parse(name: &str) -> Option<Label> {
        match name.to_ascii_uppercase().as_str() {
            "NORMAL" => Some(Label::Normal),
            "PNEUMONIA" => Some(Label::Pneumonia),
            _ => None,
        }
    }
}

/// One labelled image on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Where the image file is.
    pub path: PathBuf,
    /// Its diagnosis.
    pub label: Label,
    /// The child it was taken of; images of one patient must stay on one side of a split.
    pub patient_id: String,
}

const IMAGE_EXTENSIONS: [&str; 3] = ["jpeg", "jpg", "png"];

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Lists the images of `<root>/<split>/{NORMAL,PNEUMONIA}`, sorted by path.
///
/// Both class folders must exist and hold at least one `.jpeg`, `.jpg` or `.png` file; other
/// files are ignored. Patient ids come from the file names ([`patient_id_from_file_name`]).
pub fn scan_split(root: &Path, split: &str) -> Result<Vec<Sample>, DataError> {
    if !root.is_dir() {
        return Err(DataError::MissingRoot {
            path: root.to_path_buf(),
        });
    }
    let split_dir = root.join(split);
    if !split_dir.is_dir() {
        return Err(DataError::MissingSplit { path: split_dir });
    }
    let mut samples = Vec::new();
    for label in Label::ALL {
        let class_dir = split_dir.join(label.folder_name());
        if !class_dir.is_dir() {
            return Err(DataError::MissingClass { path: class_dir });
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class_dir)
            .map_err(|e| DataError::io(&class_dir, e))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|e| DataError::io(&class_dir, e))?;
        files.retain(|p| p.is_file() && is_image_file(p));
        if files.is_empty() {
            return Err(DataError::EmptyClass { path: class_dir });
        }
        files.sort();
        samples.extend(files.into_iter().map(|path| {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            Sample {
                patient_id: patient_id_from_file_name(label, name),
                label,
                path,
            }
        }));
    }
    Ok(samples)
}
