use std::path::PathBuf;

/// Errors from loading a bundle, reading a film, predicting and explaining.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A bundle file could not be read or written.
    #[error("bundle file {path}: {source}")]
    Io {
        /// The file or folder at fault.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A bundle's `config.json` is not valid JSON of the expected layout.
    #[error("bundle config {path} is not valid: {source}")]
    Config {
        /// The file at fault.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// The weights could not be written.
    #[error("cannot write weights {path}: {source}")]
    WriteWeights {
        /// The file at fault.
        path: PathBuf,
        /// What candle said.
        #[source]
        source: candle_core::Error,
    },
    /// The operating point asked for is not stored in the bundle.
    #[error("the bundle has no operating point `{name}`; it stores: {available}")]
    UnknownOperatingPoint {
        /// The name asked for.
        name: String,
        /// The names the bundle stores, comma-separated.
        available: String,
    },
    /// The bundle has no out-of-distribution statistics where they are needed.
    #[error("the bundle has no out-of-distribution statistics")]
    NoOodStatistics,
    /// The out-of-population detector could not be fitted or applied.
    #[error("out-of-population detector: {0}")]
    Population(String),
    /// Reading or decoding a film failed.
    #[error(transparent)]
    Data(#[from] xray_data::DataError),
    /// Building the model or loading its weights failed.
    #[error(transparent)]
    Model(#[from] xray_models::ModelError),
    /// A saliency method or a statistic failed.
    #[error(transparent)]
    Eval(#[from] xray_eval::EvalError),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}
