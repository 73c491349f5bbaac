//! The worklist and uploads.

use axum::extract::{Multipart, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::views::{Accepted, Tab, UploadPage, WorklistPage, WorklistRow};
use super::{page, AppError, AppState, Session};
use crate::ingest::{ingest, Ingested};
use crate::model::WorklistFilter;
use crate::ReviewError;

/// Cases per worklist page.
const PAGE_SIZE: i64 = 50;

#[derive(Deserialize)]
pub struct WorklistQuery {
    filter: Option<String>,
    page: Option<i64>,
}

pub async fn worklist(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<WorklistQuery>,
) -> Result<Response, AppError> {
    let filter = match query.filter.as_deref() {
        None => WorklistFilter::Pending,
        Some(name) => WorklistFilter::parse(name)
            .ok_or_else(|| AppError::BadRequest(format!("unknown filter {name:?}")))?,
    };
    let page_number = query.page.unwrap_or(1).clamp(1, 1_000_000);
    let offset = (page_number - 1) * PAGE_SIZE;
    let (rows, counts, queued) = state
        .blocking(move |s| {
            let rows = s.db.worklist(filter, offset, PAGE_SIZE + 1)?;
            let counts = s.db.worklist_counts()?;
            let queued = s.db.queued_count()?;
            Ok((rows, counts, queued))
        })
        .await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    let view = WorklistPage {
        user: session.view(),
        disclaimer: xray_infer::DISCLAIMER,
        csrf: session.csrf.clone(),
        queued,
        tabs: counts
            .into_iter()
            .map(|(f, count)| Tab {
                name: f.as_str(),
                label: f.label(),
                count,
                active: f == filter,
            })
            .collect(),
        rows: rows
            .iter()
            .take(PAGE_SIZE as usize)
            .map(WorklistRow::new)
            .collect(),
        filter: filter.as_str(),
        page: page_number,
        previous_page: (page_number > 1).then_some(page_number - 1),
        next_page: more.then_some(page_number + 1),
    };
    Ok(page(&view, "worklist"))
}

/// Several films in one multipart form. The CSRF field must come first, so nothing is stored
/// for a forged request; each file is then checked on its own, and a refused one does not
/// stop the others.
pub async fn upload(
    State(state): State<AppState>,
    session: Session,
    mut multipart: Multipart,
) -> Result<Response, AppError> {
    let mut csrf_checked = false;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name() {
            Some("csrf") => {
                let token = field.text().await.map_err(multipart_error)?;
                session.check_csrf(Some(&token))?;
                csrf_checked = true;
            }
            Some("films") if csrf_checked => {
                let name = field.file_name().unwrap_or("unnamed").to_string();
                let bytes = field.bytes().await.map_err(multipart_error)?;
                if !bytes.is_empty() {
                    files.push((name, bytes.to_vec()));
                }
            }
            Some("films") => session.check_csrf(None)?,
            _ => {}
        }
    }
    if !csrf_checked {
        session.check_csrf(None)?;
    }
    if files.is_empty() {
        return Err(AppError::BadRequest(
            "Choose at least one film to upload.".into(),
        ));
    }
    let user_id = session.user.id;
    let outcomes = state
        .blocking(move |s| {
            Ok(files
                .into_iter()
                .map(|(name, bytes)| {
                    let outcome = ingest(&s.db, &s.store, &name, &bytes, Some(user_id), "upload");
                    if let Err(ReviewError::Refused { name, reason }) = &outcome {
                        let detail = format!("{name}: {reason}");
                        let _ = s.db.audit(Some(user_id), "upload_refused", None, &detail);
                    }
                    (crate::ingest::display_name(&name), outcome)
                })
                .collect::<Vec<_>>())
        })
        .await?;
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (name, outcome) in outcomes {
        match outcome {
            Ok(ingested) => accepted.push(Accepted {
                id: ingested.case_id(),
                name,
                existing: matches!(ingested, Ingested::Existing(_)),
            }),
            Err(e @ ReviewError::Refused { .. }) => refused.push(e.to_string()),
            Err(e) => return Err(AppError::Internal(e)),
        }
    }
    state.wake();
    let status = if accepted.is_empty() {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    } else {
        axum::http::StatusCode::OK
    };
    let view = UploadPage {
        user: session.view(),
        disclaimer: xray_infer::DISCLAIMER,
        accepted,
        refused,
    };
    let mut response = page(&view, "upload");
    *response.status_mut() = status;
    Ok(response)
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> AppError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge("The upload is larger than the server accepts.".into())
    } else {
        AppError::BadRequest(format!("The upload could not be read: {}", e.body_text()))
    }
}
