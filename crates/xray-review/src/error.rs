//! What can go wrong in the review service, naming the file, table or input at fault.

use std::path::PathBuf;

/// An error of the review service.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// A database statement failed.
    #[error("database {db}: {context}: {source}")]
    Database {
        /// The database file.
        db: PathBuf,
        /// What was being done.
        context: String,
        /// The SQLite error.
        #[source]
        source: Box<rusqlite::Error>,
    },
    /// A file of the film store could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file at fault.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The model bundle failed to load or to predict.
    #[error("model: {0}")]
    Infer(#[from] xray_infer::InferError),
    /// An uploaded or imported file was refused.
    #[error("{name}: {reason}")]
    Refused {
        /// The file's name as given (never used as a path).
        name: String,
        /// Why.
        reason: String,
    },
    /// A user name or password that cannot be used.
    #[error("account {name:?}: {reason}")]
    Account {
        /// The user name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A page could not be rendered.
    #[error("template {page}: {source}")]
    Template {
        /// The page.
        page: &'static str,
        /// The template error.
        #[source]
        source: askama::Error,
    },
    /// A background task died.
    #[error("background task: {0}")]
    Task(String),
}

impl ReviewError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> ReviewError {
        ReviewError::Io {
            path: path.into(),
            source,
        }
    }
}
