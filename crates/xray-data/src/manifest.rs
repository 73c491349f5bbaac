use std::path::Path;

use crate::{DataError, Label, Sample};

/// Reads a CSV manifest with at least the columns `path`, `label` and `patient_id`.
///
/// Paths are relative to the manifest's folder. Extra columns (`split`, `finding`, `sha256`)
/// are allowed and ignored. `split`, when given, keeps only the rows of that split.
pub fn read_manifest(manifest: &Path, split: Option<&str>) -> Result<Vec<Sample>, DataError> {
    let base = manifest.parent().unwrap_or(Path::new("."));
    let bad = |line: u64, reason: String| DataError::Manifest {
        path: manifest.to_path_buf(),
        line,
        reason,
    };
    let mut reader = csv::Reader::from_path(manifest).map_err(|e| bad(0, e.to_string()))?;
    let headers = reader.headers().map_err(|e| bad(1, e.to_string()))?.clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| bad(1, format!("missing column `{name}`")))
    };
    let (path_col, label_col, patient_col) =
        (column("path")?, column("label")?, column("patient_id")?);
    let split_col = headers.iter().position(|h| h == "split");
    let mut samples = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let line = row as u64 + 2;
        let record = record.map_err(|e| bad(line, e.to_string()))?;
        if let (Some(wanted), Some(col)) = (split, split_col) {
            if record.get(col) != Some(wanted) {
                continue;
            }
        }
        let field = |col: usize| record.get(col).unwrap_or_default();
        let label = Label::parse(field(label_col))
            .ok_or_else(|| bad(line, format!("unknown label `{}`", field(label_col))))?;
        samples.push(Sample {
            path: base.join(field(path_col)),
            label,
            patient_id: field(patient_col).to_string(),
        });
    }
    if samples.is_empty() {
        return Err(bad(0, "no rows (for this split)".to_string()));
    }
    Ok(samples)
}
