//! Cases: queueing films, the model's output, the worklist.

use rusqlite::{params, OptionalExtension};

use super::{audit, now, Db};
use crate::model::{
    priority, CaseRow, CaseStatus, FilmKind, ModelOutput, NewCase, Reading, WorklistFilter,
};
use crate::ReviewError;

/// Columns of `cases` in the order [`case_from_row`] reads them.
const CASE_COLUMNS: &str = "c.id, c.film_sha256, c.kind, c.original_name, c.uploaded_at, \
    c.patient_id, c.study_date, c.view, c.status, c.width, c.height, c.probability, \
    c.calibrated, c.model_decision, c.operating_point, c.threshold, c.refer_reasons, \
    c.ood_score, c.overlays, c.error, c.bundle_sha256, c.priority, c.disagrees, \
    d.reading, d.agrees, u.name";

const CASE_JOINS: &str = "FROM cases c LEFT JOIN decisions d ON d.id = c.latest_decision \
    LEFT JOIN users u ON u.id = d.reader_id";

impl Db {
    /// Adds a queued case for a film already in the store, unless one exists for the same
    /// content: returns the case id and whether it is new.
    pub fn add_case(&self, case: &NewCase, user: Option<i64>) -> Result<(i64, bool), ReviewError> {
        self.write("add a case", |tx| {
            let existing: Option<i64> = tx
                .query_row(
                    "SELECT id FROM cases WHERE film_sha256 = ?1",
                    params![case.film_sha256],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(id) = existing {
                return Ok((id, false));
            }
            tx.execute(
                "INSERT INTO cases (film_sha256, kind, original_name, uploaded_by, uploaded_at, \
                 patient_id, study_date, view, status) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued')",
                params![
                    case.film_sha256,
                    case.kind.as_str(),
                    case.original_name,
                    user,
                    now(),
                    case.patient_id,
                    case.study_date,
                    case.view
                ],
            )?;
            let id = tx.last_insert_rowid();
            audit(tx, user, case.source, Some(id), &case.original_name)?;
            Ok((id, true))
        })
    }

    /// The oldest queued case, if any: what the inference worker does next.
    pub fn next_queued(&self) -> Result<Option<(i64, String, String)>, ReviewError> {
        self.read("find queued cases", |c| {
            c.query_row(
                "SELECT id, film_sha256, original_name FROM cases WHERE status = 'queued' ORDER BY id LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
        })
    }

    /// Records the model's output for a case.
    pub fn finish_case(&self, id: i64, output: &ModelOutput) -> Result<(), ReviewError> {
        let reasons = serde_json::to_string(&output.refer_reasons).unwrap_or_else(|_| "[]".into());
        self.write("record a prediction", |tx| {
            tx.execute(
                "UPDATE cases SET status = 'done', width = ?2, height = ?3, probability = ?4, \
                 calibrated = ?5, model_decision = ?6, operating_point = ?7, threshold = ?8, \
                 refer_reasons = ?9, ood_score = ?10, overlays = ?11, bundle_sha256 = ?12, \
                 priority = ?13, error = NULL WHERE id = ?1",
                params![
                    id,
                    output.width,
                    output.height,
                    output.probability,
                    output.calibrated,
                    output.decision,
                    output.operating_point,
                    output.threshold,
                    reasons,
                    output.ood_score,
                    output.overlays,
                    output.bundle_sha256,
                    priority(&output.decision),
                ],
            )?;
            Ok(())
        })
    }

    /// Marks a case whose film the model could not read: it is referred to the reader.
    pub fn fail_case(&self, id: i64, error: &str, bundle_sha256: &str) -> Result<(), ReviewError> {
        let reasons = serde_json::to_string(&[format!("the film could not be read: {error}")])
            .unwrap_or_else(|_| "[]".into());
        self.write("record a failed prediction", |tx| {
            tx.execute(
                "UPDATE cases SET status = 'failed', model_decision = 'refer', error = ?2, \
                 refer_reasons = ?3, bundle_sha256 = ?4, priority = 0 WHERE id = ?1",
                params![id, error, reasons, bundle_sha256],
            )?;
            Ok(())
        })
    }

    /// One case.
    pub fn case(&self, id: i64) -> Result<Option<CaseRow>, ReviewError> {
        self.read("read a case", |c| {
            c.query_row(
                &format!("SELECT {CASE_COLUMNS} {CASE_JOINS} WHERE c.id = ?1"),
                params![id],
                case_from_row,
            )
            .optional()
        })
    }

    /// How many cases wait for the model.
    pub fn queued_count(&self) -> Result<i64, ReviewError> {
        self.read("count queued cases", |c| {
            c.query_row(
                "SELECT COUNT(*) FROM cases WHERE status = 'queued'",
                [],
                |r| r.get(0),
            )
        })
    }

    /// A page of the worklist, most urgent first: referred, then pneumonia by falling
    /// probability, then normal, then films still queued.
    pub fn worklist(
        &self,
        filter: WorklistFilter,
        offset: i64,
        limit: i64,
    ) -> Result<Vec<CaseRow>, ReviewError> {
        self.read("read the worklist", |c| {
            let mut statement = c.prepare_cached(&format!(
                "SELECT {CASE_COLUMNS} {CASE_JOINS} WHERE {} \
                 ORDER BY c.priority, c.probability DESC, c.id LIMIT ?1 OFFSET ?2",
                filter.condition()
            ))?;
            let rows = statement.query_map(params![limit, offset], case_from_row)?;
            rows.collect()
        })
    }

    /// How many cases each filter shows, in [`WorklistFilter::ALL`]'s order.
    pub fn worklist_counts(&self) -> Result<Vec<(WorklistFilter, i64)>, ReviewError> {
        // One pass, each filter counted by its own condition.
        let sums: Vec<String> = WorklistFilter::ALL
            .iter()
            .map(|f| format!("COALESCE(SUM({}), 0)", f.condition()))
            .collect();
        let sql = format!("SELECT {} FROM cases c", sums.join(", "));
        self.read("count the worklist", |c| {
            c.query_row(&sql, [], |r| {
                WorklistFilter::ALL
                    .iter()
                    .enumerate()
                    .map(|(i, f)| Ok((*f, r.get(i)?)))
                    .collect()
            })
        })
    }

    /// The most urgent case with no decision yet, other than `after`.
    pub fn next_pending(&self, after: Option<i64>) -> Result<Option<i64>, ReviewError> {
        self.read("find the next pending case", |c| {
            c.query_row(
                "SELECT id FROM cases c WHERE latest_decision IS NULL AND status != 'queued' \
                 AND id != ?1 ORDER BY c.priority, c.probability DESC, c.id LIMIT 1",
                params![after.unwrap_or(-1)],
                |r| r.get(0),
            )
            .optional()
        })
    }
}

pub(super) fn case_from_row(r: &rusqlite::Row) -> rusqlite::Result<CaseRow> {
    let kind: String = r.get(2)?;
    let status: String = r.get(8)?;
    let reasons: String = r.get(16)?;
    let reading: Option<String> = r.get(23)?;
    Ok(CaseRow {
        id: r.get(0)?,
        film_sha256: r.get(1)?,
        kind: FilmKind::parse(&kind).unwrap_or(FilmKind::Png),
        original_name: r.get(3)?,
        uploaded_at: r.get(4)?,
        patient_id: r.get(5)?,
        study_date: r.get(6)?,
        view: r.get(7)?,
        status: CaseStatus::parse(&status),
        width: r.get(9)?,
        height: r.get(10)?,
        probability: r.get(11)?,
        calibrated: r.get(12)?,
        model_decision: r.get(13)?,
        operating_point: r.get(14)?,
        threshold: r.get(15)?,
        refer_reasons: serde_json::from_str(&reasons).unwrap_or_default(),
        ood_score: r.get(17)?,
        overlays: r.get(18)?,
        error: r.get(19)?,
        bundle_sha256: r.get(20)?,
        priority: r.get(21)?,
        disagrees: r.get(22)?,
        latest_reading: reading.as_deref().and_then(Reading::parse),
        latest_agrees: r.get(24)?,
        latest_reader: r.get(25)?,
    })
}
