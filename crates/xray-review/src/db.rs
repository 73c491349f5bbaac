//! The SQLite database: schema, and every statement the service runs (parameterised, always).
//!
//! One writer connection behind a mutex and a pool of readers: SQLite in WAL mode lets readers
//! run beside the writer, and `synchronous = FULL` makes a committed transaction survive a
//! `kill -9` or a power cut. Decisions and the audit log are append-only, enforced by triggers,
//! so not even a bug in this crate can rewrite them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::model::{
    AuditEntry, CaseRow, CaseStatus, DecisionRow, FilmKind, NewCase, NewDecision, Reading, Role,
    User, WorklistFilter,
};
use crate::ReviewError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'reader')),
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    csrf TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS cases (
    id INTEGER PRIMARY KEY,
    film_sha256 TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    original_name TEXT NOT NULL,
    uploaded_by INTEGER REFERENCES users(id),
    uploaded_at INTEGER NOT NULL,
    patient_id TEXT,
    study_date TEXT,
    view TEXT,
    status TEXT NOT NULL CHECK (status IN ('queued', 'done', 'failed')),
    width INTEGER,
    height INTEGER,
    probability REAL,
    calibrated REAL,
    model_decision TEXT,
    operating_point TEXT,
    threshold REAL,
    refer_reasons TEXT NOT NULL DEFAULT '[]',
    ood_score REAL,
    overlays INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    bundle_sha256 TEXT,
    priority INTEGER NOT NULL DEFAULT 3,
    latest_decision INTEGER REFERENCES decisions(id),
    disagrees INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS cases_by_priority ON cases (priority, probability DESC, id);
CREATE INDEX IF NOT EXISTS cases_by_status ON cases (status, id);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    case_id INTEGER NOT NULL REFERENCES cases(id),
    reader_id INTEGER NOT NULL REFERENCES users(id),
    reading TEXT NOT NULL CHECK (reading IN ('pneumonia', 'normal', 'uncertain')),
    agrees INTEGER,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    amends INTEGER REFERENCES decisions(id),
    model_decision TEXT,
    model_probability REAL,
    model_calibrated REAL,
    operating_point TEXT,
    bundle_sha256 TEXT
);
CREATE INDEX IF NOT EXISTS decisions_by_case ON decisions (case_id, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    user_id INTEGER REFERENCES users(id),
    action TEXT NOT NULL,
    case_id INTEGER,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS decisions_no_update BEFORE UPDATE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: amend with a new entry'); END;
CREATE TRIGGER IF NOT EXISTS decisions_no_delete BEFORE DELETE ON decisions
BEGIN SELECT RAISE(ABORT, 'decisions are append-only: amend with a new entry'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"#;

/// Columns of `cases` in the order [`case_from_row`] reads them.
const CASE_COLUMNS: &str = "c.id, c.film_sha256, c.kind, c.original_name, c.uploaded_at, \
    c.patient_id, c.study_date, c.view, c.status, c.width, c.height, c.probability, \
    c.calibrated, c.model_decision, c.operating_point, c.threshold, c.refer_reasons, \
    c.ood_score, c.overlays, c.error, c.bundle_sha256, c.priority, c.disagrees, \
    d.reading, d.agrees, u.name";

const CASE_JOINS: &str = "FROM cases c LEFT JOIN decisions d ON d.id = c.latest_decision \
    LEFT JOIN users u ON u.id = d.reader_id";

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The review database.
pub struct Db {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path`, in WAL mode, with the schema.
    pub fn open(path: &Path) -> Result<Db, ReviewError> {
        let writer = connect(path)?;
        writer
            .execute_batch(SCHEMA)
            .map_err(|e| err(path, "create the schema", e))?;
        Ok(Db {
            path: path.to_path_buf(),
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a reader connection from the pool.
    pub fn read<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, ReviewError> {
        let pooled = self.readers.lock().map_err(|_| poisoned(&self.path))?.pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => connect(&self.path)?,
        };
        let result = f(&conn).map_err(|e| err(&self.path, context, e));
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(conn);
        }
        result
    }

    /// Runs `f` in one write transaction: all of it is committed, or none.
    pub fn write<T>(
        &self,
        context: &str,
        f: impl FnOnce(&Transaction) -> rusqlite::Result<T>,
    ) -> Result<T, ReviewError> {
        let mut conn = self.writer.lock().map_err(|_| poisoned(&self.path))?;
        let tx = conn
            .transaction()
            .map_err(|e| err(&self.path, context, e))?;
        let value = f(&tx).map_err(|e| err(&self.path, context, e))?;
        tx.commit().map_err(|e| err(&self.path, context, e))?;
        Ok(value)
    }

    // ----- users and sessions -----

    /// Adds an account; `password_hash` is a PHC string from [`crate::auth::hash_password`].
    pub fn add_user(
        &self,
        name: &str,
        password_hash: &str,
        role: Role,
    ) -> Result<i64, ReviewError> {
        self.write("add a user", |tx| {
            tx.execute(
                "INSERT INTO users (name, password_hash, role, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, password_hash, role.as_str(), now()],
            )?;
            let id = tx.last_insert_rowid();
            audit(
                tx,
                Some(id),
                "account_created",
                None,
                &format!("{name} ({})", role.as_str()),
            )?;
            Ok(id)
        })
    }

    /// The account called `name` and its password hash.
    pub fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>, ReviewError> {
        self.read("find a user", |c| {
            c.query_row(
                "SELECT id, name, role, password_hash FROM users WHERE name = ?1",
                params![name],
                |r| Ok((user_from_row(r)?, r.get(3)?)),
            )
            .optional()
        })
    }

    /// How many accounts exist.
    pub fn user_count(&self) -> Result<i64, ReviewError> {
        self.read("count users", |c| {
            c.query_row("SELECT COUNT(*) FROM users", [], |r| r.get(0))
        })
    }

    /// Stores a session (the token's hash only) and audits the login.
    pub fn create_session(
        &self,
        user: &User,
        token_sha256: &str,
        csrf: &str,
        expires_at: i64,
    ) -> Result<(), ReviewError> {
        self.write("create a session", |tx| {
            tx.execute("DELETE FROM sessions WHERE expires_at < ?1", params![now()])?;
            tx.execute(
                "INSERT INTO sessions (token_sha256, user_id, csrf, expires_at) VALUES (?1, ?2, ?3, ?4)",
                params![token_sha256, user.id, csrf, expires_at],
            )?;
            audit(tx, Some(user.id), "login", None, "")
        })
    }

    /// The user and CSRF token of an unexpired session.
    pub fn session(&self, token_sha256: &str) -> Result<Option<(User, String)>, ReviewError> {
        self.read("find a session", |c| {
            c.query_row(
                "SELECT u.id, u.name, u.role, s.csrf FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.token_sha256 = ?1 AND s.expires_at >= ?2",
                params![token_sha256, now()],
                |r| Ok((user_from_row(r)?, r.get(3)?)),
            )
            .optional()
        })
    }

    /// Ends a session.
    pub fn end_session(&self, token_sha256: &str, user: &User) -> Result<(), ReviewError> {
        self.write("end a session", |tx| {
            tx.execute(
                "DELETE FROM sessions WHERE token_sha256 = ?1",
                params![token_sha256],
            )?;
            audit(tx, Some(user.id), "logout", None, "")
        })
    }

    /// Appends one audit entry on its own.
    pub fn audit(
        &self,
        user: Option<i64>,
        action: &str,
        case_id: Option<i64>,
        detail: &str,
    ) -> Result<(), ReviewError> {
        self.write("append to the audit log", |tx| {
            audit(tx, user, action, case_id, detail)
        })
    }

    // ----- cases -----

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
    pub fn finish_case(
        &self,
        id: i64,
        output: &crate::model::ModelOutput,
    ) -> Result<(), ReviewError> {
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
                    crate::model::priority(&output.decision),
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
        self.read("count the worklist", |c| {
            let (all, pending, reviewed, referred, disagree): (i64, i64, i64, i64, i64) = c
                .query_row(
                    "SELECT COUNT(*), \
                     COALESCE(SUM(latest_decision IS NULL), 0), \
                     COALESCE(SUM(latest_decision IS NOT NULL), 0), \
                     COALESCE(SUM(model_decision = 'refer'), 0), \
                     COALESCE(SUM(disagrees = 1), 0) FROM cases",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )?;
            Ok(vec![
                (WorklistFilter::Pending, pending),
                (WorklistFilter::Referred, referred),
                (WorklistFilter::Disagree, disagree),
                (WorklistFilter::Reviewed, reviewed),
                (WorklistFilter::All, all),
            ])
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

    // ----- decisions -----

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

    /// The newest audit entries, newest first.
    pub fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, ReviewError> {
        self.read("read the audit log", |c| {
            let mut statement = c.prepare(
                "SELECT a.id, a.at, u.name, a.action, a.case_id, a.detail FROM audit a \
                 LEFT JOIN users u ON u.id = a.user_id ORDER BY a.id DESC LIMIT ?1",
            )?;
            let rows = statement.query_map(params![limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    user: r.get(2)?,
                    action: r.get(3)?,
                    case_id: r.get(4)?,
                    detail: r.get(5)?,
                })
            })?;
            rows.collect()
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

fn audit(
    tx: &Transaction,
    user: Option<i64>,
    action: &str,
    case_id: Option<i64>,
    detail: &str,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, user_id, action, case_id, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now(), user, action, case_id, detail],
    )?;
    Ok(())
}

fn user_from_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Reader
        },
    })
}

fn case_from_row(r: &rusqlite::Row) -> rusqlite::Result<CaseRow> {
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

fn connect(path: &Path) -> Result<Connection, ReviewError> {
    let conn = Connection::open(path).map_err(|e| err(path, "open", e))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|e| err(path, "set the busy timeout", e))?;
    // WAL: readers never wait for the writer; FULL: a commit is on disk when it returns.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .map_err(|e| err(path, "set WAL mode", e))?;
    Ok(conn)
}

fn err(path: &Path, context: &str, source: rusqlite::Error) -> ReviewError {
    ReviewError::Database {
        db: path.to_path_buf(),
        context: context.to_string(),
        source: Box::new(source),
    }
}

fn poisoned(path: &Path) -> ReviewError {
    ReviewError::Task(format!(
        "{}: a connection's lock was poisoned by a panic",
        path.display()
    ))
}
