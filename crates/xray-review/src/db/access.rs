//! Accounts, sessions and the audit log.

use rusqlite::{params, OptionalExtension};

use super::{audit, now, Db};
use crate::model::{AuditEntry, Role, User};
use crate::ReviewError;

impl Db {
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

fn user_from_row(r: &rusqlite::Row) -> rusqlite::Result<User> {
    let role: String = r.get(2)?;
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        role: Role::parse(&role).unwrap_or(Role::Reader),
    })
}
