//! Taking a film in, from an upload or a server-side folder: sniffed by content, decoded once
//! to refuse what the model could never read, stored under its hash, queued as a case.

use std::path::Path;

use crate::model::{FilmKind, NewCase};
use crate::{Db, FilmStore, ReviewError};

/// Longest name kept for display.
const MAX_NAME_CHARS: usize = 200;

/// What became of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// A new case.
    New(i64),
    /// The same content is already this case.
    Existing(i64),
}

impl Ingested {
    /// The case id either way.
    pub fn case_id(&self) -> i64 {
        match self {
            Ingested::New(id) | Ingested::Existing(id) => *id,
        }
    }
}

/// Checks, stores and queues one film. `name` is what the user called it: kept for display
/// only. `source` is the audit action (`upload` or `import`).
pub fn ingest(
    db: &Db,
    store: &FilmStore,
    name: &str,
    bytes: &[u8],
    user: Option<i64>,
    source: &'static str,
) -> Result<Ingested, ReviewError> {
    let name = display_name(name);
    let refused = |reason: String| ReviewError::Refused {
        name: name.clone(),
        reason,
    };
    let kind = FilmKind::sniff(bytes).ok_or_else(|| {
        refused("not a DICOM, JPEG or PNG file (its content was checked, not its name)".into())
    })?;
    let (_, info) = xray_data::decode_film(Path::new(&name), bytes)
        .map_err(|e| refused(format!("cannot be read as a film: {e}")))?;
    let sha = store.put(bytes)?;
    let case = NewCase {
        film_sha256: sha,
        kind,
        original_name: name.clone(),
        patient_id: info.as_ref().and_then(|i| i.patient_id.clone()),
        study_date: info.as_ref().and_then(|i| i.study_date.clone()),
        view: info.as_ref().and_then(|i| i.view_position.clone()),
        source,
    };
    let (id, new) = db.add_case(&case, user)?;
    Ok(if new {
        Ingested::New(id)
    } else {
        Ingested::Existing(id)
    })
}

/// A file's name and what became of it.
pub type ImportOutcome = (String, Result<Ingested, ReviewError>);

/// Every regular file directly in `dir`, ingested as the server's own import; returns each
/// file's outcome. Files that are refused are reported, not fatal.
pub fn import_folder(
    db: &Db,
    store: &FilmStore,
    dir: &Path,
) -> Result<Vec<ImportOutcome>, ReviewError> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| ReviewError::io(dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    Ok(entries
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let outcome = std::fs::read(&path)
                .map_err(|e| ReviewError::io(&path, e))
                .and_then(|bytes| ingest(db, store, &name, &bytes, None, "import"));
            (name, outcome)
        })
        .collect())
}

/// The last path component of a user's file name, without control characters, shortened.
pub fn display_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    if clean.trim().is_empty() {
        "unnamed".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_folders_and_control_characters() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name("C:\\films\\a.dcm"), "a.dcm");
        assert_eq!(display_name("a\u{0}b\nc.png"), "abc.png");
        assert_eq!(display_name("../"), "unnamed");
        assert_eq!(display_name(&"x".repeat(500)).len(), MAX_NAME_CHARS);
    }
}
