//! The SQLite database: schema, and every statement the service runs (parameterised, always).
//!
//! One writer connection behind a mutex and a pool of readers: SQLite in WAL mode lets readers
//! run beside the writer, and `synchronous = FULL` makes a committed transaction survive a
//! `kill -9` or a power cut. Decisions and the audit log are append-only, enforced by triggers,
//! so not even a bug in this crate can rewrite them.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, Transaction};

use crate::ReviewError;

mod access;
mod cases;
mod decisions;

pub use decisions::DecisionRefused;

/// The tables, indexes and append-only triggers (idempotent: run at every start).
const SCHEMA: &str = include_str!("schema.sql");

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
}

pub(crate) fn audit(
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

pub(crate) fn err(path: &Path, context: &str, source: rusqlite::Error) -> ReviewError {
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
