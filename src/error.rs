use std::path::PathBuf;

/// An error from the programs' shared steps; [`Error::kind`] says which. Boxed, so that a
/// `Result` stays one pointer wide.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Error(Box<ErrorKind>);

impl<E: Into<ErrorKind>> From<E> for Error {
    fn from(e: E) -> Self {
        Error(Box::new(e.into()))
    }
}

impl Error {
    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.0
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ErrorKind::Io {
            path: path.into(),
            source,
        }
        .into()
    }
}

/// What went wrong in the programs' shared steps: data, models, training, inference,
/// evaluation and the files they write.
#[derive(Debug, thiserror::Error)]
pub enum ErrorKind {
    /// A file could not be read or written.
    #[error("file {path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be written.
    #[error("CSV file {path}: {source}")]
    Csv {
        /// The file at fault.
        path: PathBuf,
        /// What the writer said.
        #[source]
        source: csv::Error,
    },
    /// A value could not be turned into JSON.
    #[error("JSON for {what}: {source}")]
    Json {
        /// What was being written.
        what: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// An image could not be encoded.
    #[error("encoding an image: {0}")]
    Image(#[from] image::ImageError),
    /// Nothing to work on, or an option out of range.
    #[error("{0}")]
    Invalid(String),
    /// Reading or preparing data failed.
    #[error(transparent)]
    Data(#[from] xray_data::DataError),
    /// Building a model or loading weights failed.
    #[error(transparent)]
    Model(#[from] xray_models::ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] xray_train::TrainError),
    /// Loading a bundle, predicting or explaining failed.
    #[error(transparent)]
    Infer(#[from] xray_infer::InferError),
    /// A metric, plot or saliency method failed.
    #[error(transparent)]
    Eval(#[from] xray_eval::EvalError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
