use std::path::PathBuf;

/// Everything that can go wrong while reading or preparing chest X-ray data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The dataset root given by the user does not exist.
    #[error("dataset root {path} does not exist or is not a folder")]
    MissingRoot { path: PathBuf },
    /// `<root>/<split>` does not exist.
    #[error("split folder {path} not found: expected <root>/<split>/{{NORMAL,PNEUMONIA}}")]
    MissingSplit { path: PathBuf },
    /// A class folder (`NORMAL` or `PNEUMONIA`) is missing.
    #[error("class folder {path} is missing: expected <root>/<split>/{{NORMAL,PNEUMONIA}}")]
    MissingClass { path: PathBuf },
    /// A class folder exists but holds no image files.
    #[error("class folder {path} holds no images (.jpeg, .jpg or .png)")]
    EmptyClass { path: PathBuf },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could be read but is not a decodable image.
    #[error("cannot decode image {path}: {reason}")]
    Decode { path: PathBuf, reason: String },
    /// A manifest row is malformed.
    #[error("manifest {path}, line {line}: {reason}")]
    Manifest {
        path: PathBuf,
        line: u64,
        reason: String,
    },
    /// Every image of a class was skipped as unreadable, or the set is empty.
    #[error("no usable images left: {reason}")]
    NoImages { reason: String },
    /// A split configuration that cannot be honoured.
    #[error("invalid split configuration: {reason}")]
    InvalidSplit { reason: String },
    /// A preprocessing or augmentation parameter out of range.
    #[error("invalid parameter {name} = {value}: {reason}")]
    InvalidParameter {
        name: &'static str,
        value: String,
        reason: String,
    },
    /// Building a tensor failed.
    #[error("building tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}
