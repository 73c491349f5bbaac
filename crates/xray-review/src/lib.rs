//! Radiologist review: a worklist web service where the model assists and the reader decides.
//!
//! Films come in through the browser (DICOM, JPEG, PNG) or from a folder on the server; a
//! background worker reads them with a model bundle ([`xray_infer::Bundle`]); readers see the
//! film with zoom, window/level and a saliency overlay, the model's probability and refer
//! reasons, and record their own reading. Every decision records the model's output and the
//! bundle's hash; nothing is ever overwritten; an append-only audit log keeps logins, uploads,
//! views and decisions. The model's output is decision support, never a diagnosis.
//!
//! ```no_run
//! # async fn run() -> Result<(), xray_review::ReviewError> {
//! use std::sync::Arc;
//! let db = Arc::new(xray_review::Db::open("review.sqlite".as_ref())?);
//! let store = xray_review::FilmStore::open("review.files".as_ref())?;
//! let inference = Arc::new(xray_review::Inference::load("models/mobilenet_v2".as_ref())?);
//! let worker = xray_review::Worker::spawn(db.clone(), store.clone(), inference);
//! let state = xray_review::AppState::new(db, store, worker.waker(), Default::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await
//!     .map_err(|e| xray_review::ReviewError::Task(e.to_string()))?;
//! axum::serve(listener, xray_review::router(state)).await
//!     .map_err(|e| xray_review::ReviewError::Task(e.to_string()))?;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod db;
mod error;
pub mod ingest;
pub mod model;
pub mod store;
mod web;
mod worker;

pub use db::Db;
pub use error::ReviewError;
pub use store::FilmStore;
pub use web::{router, AppError, AppState, Session, WebConfig};
pub use worker::{Inference, Worker};
