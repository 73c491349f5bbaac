//! Reader-versus-model agreement, the audit log and the CSV export.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use xray_eval::AgreementTable;

use super::views::{timestamp, AgreementPage, AuditPage, AuditView};
use super::{page, AppError, AppState, Session};
use crate::model::{Reading, Role};

/// Audit entries the page shows.
const AUDIT_PAGE_ENTRIES: i64 = 500;

pub async fn agreement(
    State(state): State<AppState>,
    session: Session,
) -> Result<Response, AppError> {
    let (readings, (referred, predicted)) = state
        .blocking(|s| Ok((s.db.latest_readings()?, s.db.refer_counts()?)))
        .await?;
    let mut table = AgreementTable::default();
    let (mut reviewed_referred, mut uncertain) = (0, 0);
    for (reading, model) in readings {
        match (reading, model.as_deref().and_then(Reading::from_model)) {
            (Reading::Uncertain, _) => uncertain += 1,
            (_, None) => reviewed_referred += 1,
            (reader, Some(model)) => {
                table.add(reader == Reading::Pneumonia, model == Reading::Pneumonia)
            }
        }
    }
    let share = |x: Option<f64>| x.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into());
    let view = AgreementPage {
        user: session.view(),
        disclaimer: xray_infer::DISCLAIMER,
        normal_normal: table.counts[0][0],
        normal_pneumonia: table.counts[0][1],
        pneumonia_normal: table.counts[1][0],
        pneumonia_pneumonia: table.counts[1][1],
        observed: share(table.observed_agreement()),
        kappa: share(table.cohen_kappa()),
        reviewed_referred,
        uncertain,
        refer_rate: if predicted > 0 {
            format!(
                "{:.3} ({referred} of {predicted} films read)",
                referred as f64 / predicted as f64
            )
        } else {
            "n/a".into()
        },
    };
    Ok(page(&view, "agreement"))
}

pub async fn audit(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    if session.user.role != Role::Admin {
        return Err(AppError::Forbidden(
            "The audit log is for administrators.".into(),
        ));
    }
    let entries = state
        .blocking(|s| s.db.audit_log(AUDIT_PAGE_ENTRIES))
        .await?;
    let view = AuditPage {
        user: session.view(),
        disclaimer: xray_infer::DISCLAIMER,
        entries: entries.iter().map(AuditView::new).collect(),
    };
    Ok(page(&view, "audit"))
}

/// Every decision as CSV, one line per entry (amendments included, with what they amend).
pub async fn export(State(state): State<AppState>, session: Session) -> Result<Response, AppError> {
    let user_id = session.user.id;
    let body = state
        .blocking(move |s| {
            let decisions = s.db.all_decisions()?;
            s.db.audit(
                Some(user_id),
                "export",
                None,
                &format!("{} decisions", decisions.len()),
            )?;
            let mut writer = csv::Writer::from_writer(Vec::new());
            let io =
                |e: csv::Error| crate::ReviewError::io("decisions.csv", std::io::Error::other(e));
            writer
                .write_record([
                    "decision_id",
                    "case_id",
                    "film",
                    "reader",
                    "reading",
                    "agrees_with_model",
                    "reason",
                    "created_at",
                    "amends",
                    "model_decision",
                    "model_probability",
                    "bundle_sha256",
                ])
                .map_err(io)?;
            for (d, film) in decisions {
                writer
                    .write_record([
                        d.id.to_string(),
                        d.case_id.to_string(),
                        neutralise(&film),
                        d.reader.clone(),
                        d.reading.as_str().to_string(),
                        d.agrees.map(|a| a.to_string()).unwrap_or_default(),
                        neutralise(&d.reason),
                        timestamp(d.created_at),
                        d.amends.map(|a| a.to_string()).unwrap_or_default(),
                        d.model_decision.clone().unwrap_or_default(),
                        d.model_probability
                            .map(|p| format!("{p:.6}"))
                            .unwrap_or_default(),
                        d.bundle_sha256.clone().unwrap_or_default(),
                    ])
                    .map_err(io)?;
            }
            writer.into_inner().map_err(|e| {
                crate::ReviewError::io("decisions.csv", std::io::Error::other(e.to_string()))
            })
        })
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"decisions.csv\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// Free text that a spreadsheet would run as a formula gets a leading apostrophe.
fn neutralise(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_string()
    }
}
