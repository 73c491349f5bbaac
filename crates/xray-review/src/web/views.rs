//! The pages' templates (askama, HTML-escaped) and the values they show, formatted once here.

use askama::Template;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};

use crate::model::{AuditEntry, CaseRow, CaseStatus, DecisionRow};

/// The signed-in user as the header shows them.
pub struct UserView {
    pub name: String,
    pub admin: bool,
    pub csrf: String,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub heading: String,
    pub message: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub csrf: String,
    pub message: Option<String>,
}

pub struct Tab {
    pub name: &'static str,
    pub label: &'static str,
    pub count: i64,
    pub active: bool,
}

pub struct WorklistRow {
    pub id: i64,
    pub css: &'static str,
    pub name: String,
    pub patient: String,
    pub study_date: String,
    pub view: String,
    pub model: String,
    pub probability: String,
    pub reader: String,
}

impl WorklistRow {
    pub fn new(case: &CaseRow) -> WorklistRow {
        WorklistRow {
            id: case.id,
            css: decision_css(case.model_decision.as_deref()),
            name: case.original_name.clone(),
            patient: case.patient_id.clone().unwrap_or_default(),
            study_date: case.study_date.clone().unwrap_or_default(),
            view: case.view.clone().unwrap_or_default(),
            model: model_label(case),
            probability: case
                .calibrated
                .map(|p| format!("{p:.3}"))
                .unwrap_or_default(),
            reader: match (&case.latest_reading, &case.latest_reader) {
                (Some(reading), Some(reader)) => format!("{} ({reader})", reading.as_str()),
                _ => String::new(),
            },
        }
    }
}

#[derive(Template)]
#[template(path = "worklist.html")]
pub struct WorklistPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub csrf: String,
    pub queued: i64,
    pub tabs: Vec<Tab>,
    pub rows: Vec<WorklistRow>,
    pub filter: &'static str,
    pub page: i64,
    pub previous_page: Option<i64>,
    pub next_page: Option<i64>,
}

pub struct Accepted {
    pub id: i64,
    pub name: String,
    pub existing: bool,
}

#[derive(Template)]
#[template(path = "upload.html")]
pub struct UploadPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub accepted: Vec<Accepted>,
    pub refused: Vec<String>,
}

pub struct CaseView {
    pub id: i64,
    pub name: String,
    pub kind: &'static str,
    pub patient: Option<String>,
    pub study_date: Option<String>,
    pub view: Option<String>,
    pub size: Option<String>,
    pub width: u32,
    pub has_film: bool,
    pub queued: bool,
    pub overlays: bool,
    pub model_label: String,
    pub model_css: &'static str,
    pub probability: Option<String>,
    pub calibrated: Option<String>,
    pub operating_point: Option<String>,
    pub ood: Option<String>,
    pub bundle: String,
    pub refer_reasons: Vec<String>,
}

impl CaseView {
    pub fn new(case: &CaseRow) -> CaseView {
        CaseView {
            id: case.id,
            name: case.original_name.clone(),
            kind: case.kind.as_str(),
            patient: case.patient_id.clone(),
            study_date: case.study_date.clone(),
            view: case.view.clone(),
            size: case
                .width
                .zip(case.height)
                .map(|(w, h)| format!("{w} x {h} px")),
            width: case.width.unwrap_or(0),
            has_film: case.status == CaseStatus::Done,
            queued: case.status == CaseStatus::Queued,
            overlays: case.overlays,
            model_label: model_label(case),
            model_css: decision_css(case.model_decision.as_deref()),
            probability: case.probability.map(|p| format!("{p:.3}")),
            calibrated: case.calibrated.map(|p| format!("{p:.3}")),
            operating_point: case
                .operating_point
                .as_ref()
                .zip(case.threshold)
                .map(|(name, t)| format!("{name} (threshold {t:.3})")),
            ood: case.ood_score.map(|s| format!("{s:.2}")),
            bundle: case.bundle_sha256.clone().unwrap_or_default(),
            refer_reasons: case.refer_reasons.clone(),
        }
    }
}

/// One reading button of the decision form.
pub struct ReadingButton {
    pub value: &'static str,
    pub id: &'static str,
    pub label: String,
}

impl ReadingButton {
    /// Agree and disagree when the model called the film; the three readings when it referred.
    pub fn for_case(case: &CaseRow) -> Vec<ReadingButton> {
        let button = |value, id, label: &str| ReadingButton {
            value,
            id,
            label: label.to_string(),
        };
        let mut buttons = match case.model_decision.as_deref() {
            Some("normal") => vec![
                button("agree", "agree", "Agree: normal"),
                button("pneumonia", "read-pneumonia", "Disagree: pneumonia"),
            ],
            Some("pneumonia") => vec![
                button("agree", "agree", "Agree: pneumonia"),
                button("normal", "read-normal", "Disagree: normal"),
            ],
            _ => vec![
                button("pneumonia", "read-pneumonia", "Pneumonia"),
                button("normal", "read-normal", "Normal"),
            ],
        };
        buttons.push(button("uncertain", "read-uncertain", "Uncertain"));
        buttons
    }
}

pub struct DecisionView {
    pub id: i64,
    pub reading: &'static str,
    pub reader: String,
    pub at: String,
    pub amends: Option<i64>,
    pub reason: String,
    pub versus_model: &'static str,
}

impl DecisionView {
    pub fn new(d: &DecisionRow) -> DecisionView {
        DecisionView {
            id: d.id,
            reading: d.reading.as_str(),
            reader: d.reader.clone(),
            at: timestamp(d.created_at),
            amends: d.amends,
            reason: d.reason.clone(),
            versus_model: match d.agrees {
                Some(true) => "agrees with the model",
                Some(false) => "disagrees with the model",
                None => "the model had referred",
            },
        }
    }
}

#[derive(Template)]
#[template(path = "case.html")]
pub struct CasePage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub csrf: String,
    pub case: CaseView,
    pub decisions: Vec<DecisionView>,
    pub own: Vec<DecisionView>,
    pub buttons: Vec<ReadingButton>,
}

#[derive(Template)]
#[template(path = "agreement.html")]
pub struct AgreementPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub normal_normal: u64,
    pub normal_pneumonia: u64,
    pub pneumonia_normal: u64,
    pub pneumonia_pneumonia: u64,
    pub observed: String,
    pub kappa: String,
    pub reviewed_referred: u64,
    pub uncertain: u64,
    pub refer_rate: String,
}

pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub user: String,
    pub action: String,
    pub case: String,
    pub detail: String,
}

impl AuditView {
    pub fn new(e: &AuditEntry) -> AuditView {
        AuditView {
            id: e.id,
            at: timestamp(e.at),
            user: e.user.clone().unwrap_or_else(|| "-".into()),
            action: e.action.clone(),
            case: e.case_id.map(|c| format!("#{c}")).unwrap_or_default(),
            detail: e.detail.clone(),
        }
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub user: Option<UserView>,
    pub disclaimer: &'static str,
    pub entries: Vec<AuditView>,
}

/// The model's call in words.
pub fn model_label(case: &CaseRow) -> String {
    match (case.status, case.model_decision.as_deref()) {
        (CaseStatus::Queued, _) => "queued".into(),
        (CaseStatus::Failed, _) => "REFER (unreadable)".into(),
        (_, Some(d)) => d.to_uppercase(),
        (_, None) => String::new(),
    }
}

fn decision_css(decision: Option<&str>) -> &'static str {
    match decision {
        Some("refer") => "refer",
        Some("pneumonia") => "pneumonia",
        Some("normal") => "normal",
        _ => "queued",
    }
}

/// Unix seconds as RFC 3339 UTC.
pub fn timestamp(seconds: i64) -> String {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Renders a template; a failure is logged and answered with a plain 500.
pub fn render(template: &impl Template, name: &'static str) -> Response {
    match template.render() {
        Ok(body) => Html(body).into_response(),
        Err(source) => {
            log::error!("{}", crate::ReviewError::Template { page: name, source });
            (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// A file shipped inside the binary, cacheable for an hour.
fn static_file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

pub async fn stylesheet() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/app.css"),
    )
}

pub async fn script() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

pub async fn icon() -> Response {
    static_file("image/svg+xml", include_str!("../../static/icon.svg"))
}
