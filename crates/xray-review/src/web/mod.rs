//! HTTP: the router, shared state, security headers and error pages. Every route but
//! `/health`, `/login` and the three static files needs a signed-in session; every form that
//! changes something carries the session's CSRF token.

mod case;
mod reports;
mod session;
mod views;
mod worklist;

use std::sync::mpsc::Sender;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::{Db, FilmStore, ReviewError};
pub use session::Session;

/// Settings of the HTTP side.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Largest upload request, in bytes (all files of one upload together).
    pub max_upload_bytes: usize,
    /// Mark cookies `Secure` (behind HTTPS).
    pub secure_cookies: bool,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            max_upload_bytes: 64 << 20,
            secure_cookies: false,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub(crate) db: Arc<Db>,
    pub(crate) store: FilmStore,
    pub(crate) wake_worker: Sender<()>,
    pub(crate) config: WebConfig,
}

impl AppState {
    /// State over an open database and store; `wake_worker` is told when films are queued.
    pub fn new(
        db: Arc<Db>,
        store: FilmStore,
        wake_worker: Sender<()>,
        config: WebConfig,
    ) -> AppState {
        AppState {
            db,
            store,
            wake_worker,
            config,
        }
    }

    pub(crate) fn wake(&self) {
        // A stopped worker reads the queue on its next start: nothing to report.
        let _ = self.wake_worker.send(());
    }

    /// Runs blocking database or file work off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&AppState) -> Result<T, ReviewError> + Send + 'static,
    ) -> Result<T, AppError> {
        let state = self.clone();
        tokio::task::spawn_blocking(move || f(&state))
            .await
            .map_err(|e| AppError::Internal(ReviewError::Task(e.to_string())))?
            .map_err(AppError::Internal)
    }
}

/// The service's routes over `state`.
pub fn router(state: AppState) -> Router {
    let upload_limit = state.config.max_upload_bytes;
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/static/app.css", get(views::stylesheet))
        .route("/static/app.js", get(views::script))
        .route("/static/icon.svg", get(views::icon))
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/", get(|| async { Redirect::to("/worklist") }))
        .route("/worklist", get(worklist::worklist))
        .route(
            "/upload",
            post(worklist::upload).layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/cases/next", get(case::next_pending))
        .route("/cases/{id}", get(case::case_page))
        .route("/cases/{id}/film.png", get(case::film_image))
        .route("/cases/{id}/layers/{method}", get(case::layer_image))
        .route("/cases/{id}/decisions", post(case::decide))
        .route("/agreement", get(reports::agreement))
        .route("/audit", get(reports::audit))
        .route("/export/decisions.csv", get(reports::export))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(state)
}

/// Headers on every response: no framing, no sniffing, scripts and styles from this origin
/// only, no referrer leaking case ids.
async fn security_headers(request: Request<axum::body::Body>, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self'; script-src 'self'; style-src 'self'; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A failed request, as a page.
#[derive(Debug)]
pub enum AppError {
    /// 400, with what to fix.
    BadRequest(String),
    /// 403, with why.
    Forbidden(String),
    /// 404.
    NotFound,
    /// 413.
    TooLarge(String),
    /// 500: logged in full, shown in brief.
    Internal(ReviewError),
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            AppError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            AppError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            AppError::NotFound => (StatusCode::NOT_FOUND, "No such page or case.".into()),
            AppError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            AppError::Internal(e) => {
                log::error!("{e}");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server failed; the error is in its log.".into(),
                )
            }
        };
        let page = views::ErrorPage {
            user: None,
            disclaimer: xray_infer::DISCLAIMER,
            heading: status.canonical_reason().unwrap_or("Error").to_string(),
            message,
        };
        (status, views::render(&page, "error")).into_response()
    }
}

/// A rendered page, or a 500 if the template fails.
pub(crate) fn page(template: &impl askama::Template, name: &'static str) -> Response {
    views::render(template, name).into_response()
}
