//! One case: its page, its images, and the reader's decisions.

use axum::extract::{Form, Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::views::{CasePage, CaseView, DecisionView, ReadingButton};
use super::{page, AppError, AppState, Session};
use crate::db::DecisionRefused;
use crate::model::{NewDecision, Reading};
use crate::store::Derived;

/// Longest reason kept.
const MAX_REASON_CHARS: usize = 2000;

pub async fn case_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    let user_id = session.user.id;
    let (case, decisions) = state
        .blocking(move |s| {
            let case = s.db.case(id)?;
            if case.is_some() {
                s.db.audit(Some(user_id), "view", Some(id), "")?;
            }
            Ok((case, s.db.decisions(id)?))
        })
        .await?;
    let case = case.ok_or(AppError::NotFound)?;
    let own = decisions
        .iter()
        .filter(|d| d.reader_id == user_id)
        .map(DecisionView::new)
        .collect();
    let view = CasePage {
        user: session.view(),
        disclaimer: xray_infer::DISCLAIMER,
        csrf: session.csrf.clone(),
        case: CaseView::new(&case),
        buttons: ReadingButton::for_case(&case),
        decisions: decisions.iter().map(DecisionView::new).collect(),
        own,
    };
    Ok(page(&view, "case"))
}

pub async fn film_image(
    State(state): State<AppState>,
    _session: Session,
    Path(id): Path<i64>,
) -> Result<Response, AppError> {
    image(&state, id, Derived::Film).await
}

pub async fn layer_image(
    State(state): State<AppState>,
    _session: Session,
    Path((id, method)): Path<(i64, String)>,
) -> Result<Response, AppError> {
    let layer = Derived::layer(&method).ok_or(AppError::NotFound)?;
    image(&state, id, layer).await
}

/// A derived PNG of a case, found through the case's stored hash (never through the URL).
async fn image(state: &AppState, id: i64, what: Derived) -> Result<Response, AppError> {
    let bytes = state
        .blocking(move |s| {
            let Some(case) = s.db.case(id)? else {
                return Ok(None);
            };
            let Some(path) = s.store.derived_path(&case.film_sha256, what) else {
                return Ok(None);
            };
            match std::fs::read(&path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(crate::ReviewError::io(&path, e)),
            }
        })
        .await?
        .ok_or(AppError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (header::CACHE_CONTROL, "private, max-age=3600"),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct NextQuery {
    after: Option<i64>,
}

pub async fn next_pending(
    State(state): State<AppState>,
    _session: Session,
    Query(query): Query<NextQuery>,
) -> Result<Response, AppError> {
    let next = state
        .blocking(move |s| s.db.next_pending(query.after))
        .await?;
    Ok(match next {
        Some(id) => Redirect::to(&format!("/cases/{id}")).into_response(),
        None => Redirect::to("/worklist?filter=pending").into_response(),
    })
}

#[derive(Deserialize)]
pub struct DecisionForm {
    csrf: Option<String>,
    reading: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    amends: String,
}

/// Records a reading and moves on to the next pending case.
pub async fn decide(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(form): Form<DecisionForm>,
) -> Result<Response, AppError> {
    session.check_csrf(form.csrf.as_deref())?;
    let reason: String = form.reason.trim().chars().take(MAX_REASON_CHARS).collect();
    let amends = match form.amends.trim() {
        "" => None,
        text => Some(text.parse::<i64>().map_err(|_| {
            AppError::BadRequest(format!("amends {text:?} is not an entry number"))
        })?),
    };
    let case = state
        .blocking(move |s| s.db.case(id))
        .await?
        .ok_or(AppError::NotFound)?;
    let reading = if form.reading == "agree" {
        case.model_decision
            .as_deref()
            .and_then(Reading::from_model)
            .ok_or_else(|| {
                AppError::BadRequest(
                    "The model referred this film: read it as pneumonia, normal or uncertain."
                        .into(),
                )
            })?
    } else {
        let reading = Reading::parse(&form.reading)
            .ok_or_else(|| AppError::BadRequest(format!("unknown reading {:?}", form.reading)))?;
        let model = case.model_decision.as_deref().and_then(Reading::from_model);
        let disagrees = model.is_some_and(|m| m != reading);
        if reason.is_empty() && (disagrees || reading == Reading::Uncertain) {
            return Err(AppError::BadRequest(
                "Give a reason when you disagree with the model or are uncertain.".into(),
            ));
        }
        reading
    };
    let new = NewDecision {
        case_id: id,
        reading,
        reason,
        amends,
    };
    let reader = session.user.clone();
    let outcome = state
        .blocking(move |s| Ok(s.db.add_decision(&new, &reader)))
        .await?;
    match outcome {
        Ok(_) => Ok(Redirect::to(&format!("/cases/next?after={id}")).into_response()),
        Err(DecisionRefused::NoSuchCase) => Err(AppError::NotFound),
        Err(e @ DecisionRefused::NotYours) => Err(AppError::Forbidden(e.to_string())),
        Err(e @ (DecisionRefused::NotYetPredicted | DecisionRefused::NoSuchDecision)) => {
            Err(AppError::BadRequest(e.to_string()))
        }
        Err(DecisionRefused::Database(e)) => Err(AppError::Internal(e)),
    }
}
