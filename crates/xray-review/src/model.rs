//! The records the service keeps: accounts, cases, readers' decisions, audit entries.

use serde::Serialize;

/// What an account may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Role {
    /// Reads films, and also sees the audit log.
    Admin,
    /// Reads films.
    Reader,
}

impl Role {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reader => "reader",
        }
    }

    /// Parses `admin` or `reader`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "reader" => Some(Role::Reader),
            _ => None,
        }
    }
}

/// A signed-in account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// What the account may do.
    pub role: Role,
}

/// The format of a stored film, found from its content, never from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FilmKind {
    /// DICOM Part 10 file or bare data set.
    Dicom,
    /// JPEG.
    Jpeg,
    /// PNG.
    Png,
}

impl FilmKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            FilmKind::Dicom => "dicom",
            FilmKind::Jpeg => "jpeg",
            FilmKind::Png => "png",
        }
    }

    /// Parses [`FilmKind::as_str`]'s names.
    pub fn parse(s: &str) -> Option<FilmKind> {
        match s {
            "dicom" => Some(FilmKind::Dicom),
            "jpeg" => Some(FilmKind::Jpeg),
            "png" => Some(FilmKind::Png),
            _ => None,
        }
    }

    /// Sniffs the format from the first bytes; `None` for anything else, whatever its name.
    pub fn sniff(bytes: &[u8]) -> Option<FilmKind> {
        if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
            Some(FilmKind::Png)
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            Some(FilmKind::Jpeg)
        } else if xray_data::is_dicom(bytes) || xray_data::is_bare_dicom(bytes) {
            Some(FilmKind::Dicom)
        } else {
            None
        }
    }
}

/// Where a case is in the inference queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CaseStatus {
    /// Waiting for the model.
    Queued,
    /// The model has read it.
    Done,
    /// The model could not read the film: referred to the reader.
    Failed,
}

impl CaseStatus {
    /// Parses the stored name (anything unknown reads as queued, so it is retried).
    pub fn parse(s: &str) -> CaseStatus {
        match s {
            "done" => CaseStatus::Done,
            "failed" => CaseStatus::Failed,
            _ => CaseStatus::Queued,
        }
    }
}

/// A reader's reading of a film.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Reading {
    /// Pneumonia.
    Pneumonia,
    /// Normal.
    Normal,
    /// The reader cannot decide from this film (the reason says why).
    Uncertain,
}

impl Reading {
    /// The name stored in the database and used in forms.
    pub fn as_str(self) -> &'static str {
        match self {
            Reading::Pneumonia => "pneumonia",
            Reading::Normal => "normal",
            Reading::Uncertain => "uncertain",
        }
    }

    /// Parses [`Reading::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Reading> {
        match s {
            "pneumonia" => Some(Reading::Pneumonia),
            "normal" => Some(Reading::Normal),
            "uncertain" => Some(Reading::Uncertain),
            _ => None,
        }
    }

    /// The class the model called (`None` when it referred).
    pub fn from_model(decision: &str) -> Option<Reading> {
        match decision {
            "pneumonia" => Some(Reading::Pneumonia),
            "normal" => Some(Reading::Normal),
            _ => None,
        }
    }
}

/// A film about to become a case.
#[derive(Debug, Clone)]
pub struct NewCase {
    /// SHA-256 of the file: its name in the store.
    pub film_sha256: String,
    /// Its format.
    pub kind: FilmKind,
    /// The name it was uploaded under (shown, never used as a path).
    pub original_name: String,
    /// Patient ID from a DICOM header.
    pub patient_id: Option<String>,
    /// Study date from a DICOM header.
    pub study_date: Option<String>,
    /// View position from a DICOM header.
    pub view: Option<String>,
    /// The audit action that brought it: `upload` or `import`.
    pub source: &'static str,
}

/// What the model said about a film, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelOutput {
    /// Film width in pixels.
    pub width: u32,
    /// Film height in pixels.
    pub height: u32,
    /// Uncalibrated probability (what thresholds apply to).
    pub probability: f64,
    /// Calibrated probability.
    pub calibrated: f64,
    /// `pneumonia`, `normal` or `refer`.
    pub decision: String,
    /// The operating point's name.
    pub operating_point: String,
    /// Its threshold.
    pub threshold: f64,
    /// Why the film is referred, in words.
    pub refer_reasons: Vec<String>,
    /// Out-of-distribution score, when the bundle has statistics.
    pub ood_score: Option<f64>,
    /// Whether saliency layers were written (called films only).
    pub overlays: bool,
    /// Hash of the bundle that produced it.
    pub bundle_sha256: String,
}

/// Worklist order: referred (or unreadable) films first, then pneumonia, then normal, then
/// films the model has not read yet.
pub fn priority(decision: &str) -> i64 {
    match decision {
        "refer" => 0,
        "pneumonia" => 1,
        "normal" => 2,
        _ => 3,
    }
}

/// A case as the pages show it.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRow {
    /// Row id.
    pub id: i64,
    /// SHA-256 of the film file.
    pub film_sha256: String,
    /// Its format.
    pub kind: FilmKind,
    /// The name it was uploaded under.
    pub original_name: String,
    /// Upload time, Unix seconds.
    pub uploaded_at: i64,
    /// DICOM Patient ID.
    pub patient_id: Option<String>,
    /// DICOM Study Date.
    pub study_date: Option<String>,
    /// DICOM View Position.
    pub view: Option<String>,
    /// Queue state.
    pub status: CaseStatus,
    /// Film width.
    pub width: Option<u32>,
    /// Film height.
    pub height: Option<u32>,
    /// Uncalibrated probability.
    pub probability: Option<f64>,
    /// Calibrated probability.
    pub calibrated: Option<f64>,
    /// `pneumonia`, `normal` or `refer`.
    pub model_decision: Option<String>,
    /// Operating point name.
    pub operating_point: Option<String>,
    /// Its threshold.
    pub threshold: Option<f64>,
    /// Refer reasons in words.
    pub refer_reasons: Vec<String>,
    /// Out-of-distribution score.
    pub ood_score: Option<f64>,
    /// Whether saliency layers exist.
    pub overlays: bool,
    /// Why the film could not be read.
    pub error: Option<String>,
    /// Hash of the bundle that read it.
    pub bundle_sha256: Option<String>,
    /// Worklist priority ([`priority`]).
    pub priority: i64,
    /// Whether the latest reading disagrees with the model.
    pub disagrees: bool,
    /// The latest reading, if any.
    pub latest_reading: Option<Reading>,
    /// Whether it agrees with the model (`None`: the model referred).
    pub latest_agrees: Option<bool>,
    /// Who made it.
    pub latest_reader: Option<String>,
}

/// A reader's decision about to be recorded.
#[derive(Debug, Clone)]
pub struct NewDecision {
    /// The case.
    pub case_id: i64,
    /// The reading.
    pub reading: Reading,
    /// Why (required when disagreeing or uncertain).
    pub reason: String,
    /// The reader's own earlier decision this one amends.
    pub amends: Option<i64>,
}

/// A recorded decision.
#[derive(Debug, Clone, Serialize)]
pub struct DecisionRow {
    /// Row id.
    pub id: i64,
    /// The case.
    pub case_id: i64,
    /// The reader's account id.
    pub reader_id: i64,
    /// The reader's name.
    pub reader: String,
    /// The reading.
    pub reading: Reading,
    /// Whether it agrees with the model (`None`: the model referred).
    pub agrees: Option<bool>,
    /// The reader's reason.
    pub reason: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The decision it amends.
    pub amends: Option<i64>,
    /// The model's decision at the time.
    pub model_decision: Option<String>,
    /// The model's probability at the time.
    pub model_probability: Option<f64>,
    /// The bundle that made it.
    pub bundle_sha256: Option<String>,
}

/// One line of the audit log.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who (none for a failed login or a server-side import).
    pub user: Option<String>,
    /// What: login, login_refused, logout, upload, import, view, decision, export...
    pub action: String,
    /// The case concerned.
    pub case_id: Option<i64>,
    /// Details.
    pub detail: String,
}

/// The worklist's status filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum WorklistFilter {
    /// No decision yet.
    Pending,
    /// The model referred the film.
    Referred,
    /// The latest reading disagrees with the model.
    Disagree,
    /// Decided.
    Reviewed,
    /// Everything.
    All,
}

impl WorklistFilter {
    /// Every filter, in the order the worklist's tabs show them.
    pub const ALL: [WorklistFilter; 5] = [
        WorklistFilter::Pending,
        WorklistFilter::Referred,
        WorklistFilter::Disagree,
        WorklistFilter::Reviewed,
        WorklistFilter::All,
    ];

    /// The name used in URLs.
    pub fn as_str(self) -> &'static str {
        match self {
            WorklistFilter::Pending => "pending",
            WorklistFilter::Referred => "referred",
            WorklistFilter::Disagree => "disagree",
            WorklistFilter::Reviewed => "reviewed",
            WorklistFilter::All => "all",
        }
    }

    /// The label on the page.
    pub fn label(self) -> &'static str {
        match self {
            WorklistFilter::Pending => "Pending",
            WorklistFilter::Referred => "Referred by the model",
            WorklistFilter::Disagree => "Reader disagrees",
            WorklistFilter::Reviewed => "Reviewed",
            WorklistFilter::All => "All",
        }
    }

    /// Parses [`WorklistFilter::as_str`]'s names.
    pub fn parse(s: &str) -> Option<WorklistFilter> {
        WorklistFilter::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The SQL condition on `cases c` (constant text: no user input reaches it).
    pub(crate) fn condition(self) -> &'static str {
        match self {
            WorklistFilter::Pending => "c.latest_decision IS NULL",
            WorklistFilter::Referred => "c.model_decision = 'refer'",
            WorklistFilter::Disagree => "c.disagrees = 1",
            WorklistFilter::Reviewed => "c.latest_decision IS NOT NULL",
            WorklistFilter::All => "1 = 1",
        }
    }
}
