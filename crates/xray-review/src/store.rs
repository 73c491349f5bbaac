//! The film store: every file under the SHA-256 of its content, never under a name a user
//! chose, written atomically (temporary file, fsync, rename) so a crash leaves either the whole
//! file or nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ReviewError;

/// What the worker derives from a film, each a PNG beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Derived {
    /// The film as 8-bit gray at full resolution (DICOM windowed as its header says).
    Film,
    /// Grad-CAM heat layer, transparent where the map is cold.
    GradCam,
    /// Integrated Gradients heat layer.
    IntegratedGradients,
}

impl Derived {
    /// Name used in URLs and file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Derived::Film => "film",
            Derived::GradCam => "gradcam",
            Derived::IntegratedGradients => "integrated_gradients",
        }
    }

    /// The saliency layer named in a URL; `None` for anything else (no path is built from
    /// user text).
    pub fn layer(name: &str) -> Option<Derived> {
        match name {
            "gradcam" => Some(Derived::GradCam),
            "integrated_gradients" => Some(Derived::IntegratedGradients),
            _ => None,
        }
    }
}

/// The folder of films and derived images.
#[derive(Debug, Clone)]
pub struct FilmStore {
    root: PathBuf,
}

impl FilmStore {
    /// Opens (creating) the store at `root`, removing temporary files a crash left behind
    /// (no case refers to them: a case is recorded only after its file is renamed in place).
    pub fn open(root: &Path) -> Result<FilmStore, ReviewError> {
        for sub in ["films", "derived"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|e| ReviewError::io(&dir, e))?;
            for entry in std::fs::read_dir(&dir).map_err(|e| ReviewError::io(&dir, e))? {
                let path = entry.map_err(|e| ReviewError::io(&dir, e))?.path();
                let partial = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(INCOMING));
                if partial {
                    std::fs::remove_file(&path).map_err(|e| ReviewError::io(&path, e))?;
                }
            }
        }
        Ok(FilmStore {
            root: root.to_path_buf(),
        })
    }

    /// Stores `bytes` (once: the same content is stored once) and returns their SHA-256.
    pub fn put(&self, bytes: &[u8]) -> Result<String, ReviewError> {
        let sha = xray_infer::hex(&Sha256::digest(bytes));
        let path = self.root.join("films").join(&sha);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(sha)
    }

    /// The stored film with this hash; `None` unless `sha` is 64 hex digits.
    pub fn film_path(&self, sha: &str) -> Option<PathBuf> {
        is_sha256(sha).then(|| self.root.join("films").join(sha))
    }

    /// Where a derived image of the film with this hash lives.
    pub fn derived_path(&self, sha: &str, what: Derived) -> Option<PathBuf> {
        is_sha256(sha).then(|| {
            self.root
                .join("derived")
                .join(format!("{sha}-{}.png", what.as_str()))
        })
    }

    /// Reads a stored film.
    pub fn read(&self, sha: &str) -> Result<Vec<u8>, ReviewError> {
        let path = self.film_path(sha).ok_or_else(|| ReviewError::Refused {
            name: sha.to_string(),
            reason: "not a SHA-256".into(),
        })?;
        std::fs::read(&path).map_err(|e| ReviewError::io(&path, e))
    }
}

/// Prefix of files being written.
const INCOMING: &str = ".incoming-";

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes `bytes` to `path` so that `path` holds either nothing or all of them, even after a
/// crash: a temporary file in the same folder, synced, then renamed, then the folder synced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ReviewError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile_in(dir)?;
    tmp.1
        .write_all(bytes)
        .map_err(|e| ReviewError::io(&tmp.0, e))?;
    tmp.1.sync_all().map_err(|e| ReviewError::io(&tmp.0, e))?;
    std::fs::rename(&tmp.0, path).map_err(|e| ReviewError::io(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ReviewError::io(dir, e))
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, std::fs::File), ReviewError> {
    let path = dir.join(format!("{INCOMING}{}", &crate::auth::random_token()[..16]));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| ReviewError::io(&path, e))?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_decides_the_name_and_paths_need_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = FilmStore::open(dir.path()).unwrap();
        let sha = store.put(b"film bytes").unwrap();
        assert_eq!(store.put(b"film bytes").unwrap(), sha);
        assert_eq!(store.read(&sha).unwrap(), b"film bytes");
        assert!(store.film_path("../../etc/passwd").is_none());
        assert!(store.derived_path(&"a".repeat(63), Derived::Film).is_none());
        assert!(Derived::layer("../film").is_none());
        let leftovers = std::fs::read_dir(dir.path().join("films")).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file is left behind");
    }
}
