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
