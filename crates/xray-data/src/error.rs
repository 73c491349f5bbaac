use std::path::PathBuf;

/// Everything that can go wrong while reading or preparing chest X-ray data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset root given by the user does not exist.
    #[error("dataset root {path} does not exist or is not a folder")]
    MissingRoot {
        /// The file or folder at fault.
        path: PathBuf,
    },
    /// `<root>/<split>` does not exist.
    #[error("split folder {path} not found: expected <root>/<split>/{{NORMAL,PNEUMONIA}}")]
    MissingSplit {
        /// The file or folder at fault.
        path: PathBuf,
    },
    /// A class folder (`NORMAL` or `PNEUMONIA`) is missing.
    #[error("class folder {path} is missing: expected <root>/<split>/{{NORMAL,PNEUMONIA}}")]
    MissingClass {
        /// The file or folder at fault.
        path: PathBuf,
    },
    /// A class folder exists but holds no image files.
    #[error("class folder {path} holds no images (.jpeg, .jpg or .png)")]
    EmptyClass {
        /// The file or folder at fault.
        path: PathBuf,
    },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file could be read but is not a decodable image.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The file or folder at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A DICOM file could not be read, is unsupported, or declares an image too large to decode.
    #[error("cannot read DICOM {path}: {reason}")]
    Dicom {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it, with the transfer syntax or photometric interpretation UID
        /// where that is the cause.
        reason: String,
        /// The DICOM library's error, where one caused it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A manifest row is malformed.
    #[error("manifest {path}, line {line}: {reason}")]
    Manifest {
        /// The file or folder at fault.
        path: PathBuf,
        /// The 1-based line number (0: the file as a whole).
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Every image of a class was skipped as unreadable, or the set is empty.
    #[error("no usable images left: {reason}")]
    NoImages {
        /// What is wrong with it.
        reason: String,
    },
    /// A split configuration that cannot be honoured.
    #[error("invalid split configuration: {reason}")]
    InvalidSplit {
        /// What is wrong with it.
        reason: String,
    },
    /// A preprocessing or augmentation parameter out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Building a tensor failed.
    #[error("building tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
