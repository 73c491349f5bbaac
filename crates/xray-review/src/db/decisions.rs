//! Readers' decisions: appended, never changed.

use rusqlite::{params, OptionalExtension};

use super::{audit, now, Db};
use crate::model::{DecisionRow, NewDecision, Reading, User};
use crate::ReviewError;

impl Db {
    /// Appends a reader's decision on a case, with the model's output it was made against,
    /// and audits it. An amendment must amend one of the same reader's entries on that case.
    pub fn add_decision(&self, new: &NewDecision, reader: &User) -> Result<i64, DecisionRefused> {
        let outcome = self.write("record a decision", |tx| {
            let case: Option<ModelAtDecision> = tx
                .query_row(
                    "SELECT status, model_decision, probability, calibrated, operating_point, bundle_sha256 \
                     FROM cases WHERE id = ?1",
                    params![new.case_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let Some((status, model_decision, probability, calibrated, operating_point, bundle)) = case else {
                return Ok(Err(DecisionRefused::NoSuchCase));
            };
            if status == "queued" {
                return Ok(Err(DecisionRefused::NotYetPredicted));
            }
            if let Some(amended) = new.amends {
                let owner: Option<(i64, i64)> = tx
                    .query_row(
                        "SELECT reader_id, case_id FROM decisions WHERE id = ?1",
                        params![amended],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?;
                match owner {
                    Some((owner, case_id)) if owner == reader.id && case_id == new.case_id => {}
                    Some((owner, _)) if owner != reader.id => {
                        return Ok(Err(DecisionRefused::NotYours));
                    }
                    _ => return Ok(Err(DecisionRefused::NoSuchDecision)),
                }
            }
            let model_class = model_decision.as_deref().and_then(Reading::from_model);
            let agrees = model_class.map(|m| m == new.reading);
            tx.execute(
                "INSERT INTO decisions (case_id, reader_id, reading, agrees, reason, created_at, amends, \
                 model_decision, model_probability, model_calibrated, operating_point, bundle_sha256) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    new.case_id,
                    reader.id,
                    new.reading.as_str(),
                    agrees,
                    new.reason,
                    now(),
                    new.amends,
                    model_decision,
                    probability,
                    calibrated,
                    operating_point,
                    bundle
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE cases SET latest_decision = ?2, disagrees = ?3 WHERE id = ?1",
                params![new.case_id, id, agrees == Some(false)],
            )?;
            let detail = format!(
                "decision {id}: {}{}{}",
                new.reading.as_str(),
                new.amends.map(|a| format!(", amends {a}")).unwrap_or_default(),
                if new.reason.is_empty() { String::new() } else { format!(" ({})", new.reason) }
            );
            audit(tx, Some(reader.id), "decision", Some(new.case_id), &detail)?;
            Ok(Ok(id))
        });
        match outcome {
            Ok(result) => result,
            Err(e) => Err(DecisionRefused::Database(e)),
        }
    }

    /// Every decision on a case, oldest first.
    pub fn decisions(&self, case_id: i64) -> Result<Vec<DecisionRow>, ReviewError> {
        self.read("read decisions", |c| {
            let mut statement = c.prepare_cached(
                "SELECT d.id, d.case_id, d.reader_id, u.name, d.reading, d.agrees, d.reason, d.created_at, \
                 d.amends, d.model_decision, d.model_probability, d.bundle_sha256 \
                 FROM decisions d JOIN users u ON u.id = d.reader_id WHERE d.case_id = ?1 ORDER BY d.id",
            )?;
            let rows = statement.query_map(params![case_id], decision_from_row)?;
            rows.collect()
        })
    }

    /// Every decision, oldest first, for the CSV export.
    pub fn all_decisions(&self) -> Result<Vec<(DecisionRow, String)>, ReviewError> {
        self.read("read decisions", |c| {
            let mut statement = c.prepare(
                "SELECT d.id, d.case_id, d.reader_id, u.name, d.reading, d.agrees, d.reason, d.created_at, \
                 d.amends, d.model_decision, d.model_probability, d.bundle_sha256, c.original_name \
                 FROM decisions d JOIN users u ON u.id = d.reader_id JOIN cases c ON c.id = d.case_id \
                 ORDER BY d.id",
            )?;
            let rows = statement.query_map([], |r| Ok((decision_from_row(r)?, r.get(12)?)))?;
            rows.collect()
        })
    }

    /// The latest reading and the model's call of every decided case, for agreement.
    pub fn latest_readings(&self) -> Result<Vec<(Reading, Option<String>)>, ReviewError> {
        self.read("read latest decisions", |c| {
            let mut statement = c.prepare(
                "SELECT d.reading, c.model_decision FROM cases c JOIN decisions d ON d.id = c.latest_decision",
            )?;
            let rows = statement.query_map([], |r| {
                let reading: String = r.get(0)?;
                Ok((Reading::parse(&reading).unwrap_or(Reading::Uncertain), r.get(1)?))
            })?;
            rows.collect()
        })
    }

    /// How many predicted cases the model referred, of how many predicted.
    pub fn refer_counts(&self) -> Result<(i64, i64), ReviewError> {
        self.read("count referrals", |c| {
            c.query_row(
                "SELECT COALESCE(SUM(model_decision = 'refer'), 0), COUNT(*) FROM cases WHERE status != 'queued'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
    }
}

/// A case's status and model output as a decision records them: status, decision,
/// probability, calibrated probability, operating point, bundle hash.
type ModelAtDecision = (
    String,
    Option<String>,
    Option<f64>,
    Option<f64>,
    Option<String>,
    Option<String>,
);

/// Why a decision was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum DecisionRefused {
    /// No case has that id.
    #[error("no such case")]
    NoSuchCase,
    /// The model has not read the film yet: a decision must record its output.
    #[error("the model has not read this film yet")]
    NotYetPredicted,
    /// The amended decision is another reader's.
    #[error("a reader may amend only their own decisions")]
    NotYours,
    /// The amended decision does not exist or is on another case.
    #[error("the amended decision is not on this case")]
    NoSuchDecision,
    /// The database failed.
    #[error(transparent)]
    Database(ReviewError),
}

fn decision_from_row(r: &rusqlite::Row) -> rusqlite::Result<DecisionRow> {
    let reading: String = r.get(4)?;
    Ok(DecisionRow {
        id: r.get(0)?,
        case_id: r.get(1)?,
        reader_id: r.get(2)?,
        reader: r.get(3)?,
        reading: Reading::parse(&reading).unwrap_or(Reading::Uncertain),
        agrees: r.get(5)?,
        reason: r.get(6)?,
        created_at: r.get(7)?,
        amends: r.get(8)?,
        model_decision: r.get(9)?,
        model_probability: r.get(10)?,
        bundle_sha256: r.get(11)?,
    })
}
