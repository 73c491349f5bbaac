//! Predicting on what a hospital has: files and folders of JPEG, PNG and DICOM films, streamed
//! a batch at a time, one JSON line per film appended to `predictions.jsonl` (so a rerun after
//! an interruption skips the films already written and adds no duplicate), and
//! `predictions.csv` rewritten from it at the end. A film that cannot be read gets a line with
//! its error and the run goes on. The `predict` example drives this.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secondary_capture::{write_secondary_capture, CaptureContent};
use xray_infer::{
    read_film_with_header, Bundle, Decision, DicomInfo, GrayImage, Method, Prediction,
};

use crate::Error;

/// The JSON-lines file of a run, one record per film.
pub const PREDICTIONS_JSONL: &str = "predictions.jsonl";
/// The CSV twin written from it at the end.
pub const PREDICTIONS_CSV: &str = "predictions.csv";

/// One film's line: where it came from, what the model says, or why it could not be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilmRecord {
    /// The file as given or found.
    pub path: String,
    /// The prediction (absent when the film could not be read).
    #[serde(flatten)]
    pub prediction: Option<Prediction>,
    /// The DICOM header's fields, for DICOM files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dicom: Option<DicomInfo>,
    /// Why the film could not be read or predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The bundle that judged it: its weights' SHA-256.
    pub bundle_sha256: String,
    /// The saliency overlay written for it, relative to the output folder (called films only,
    /// when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay: Option<String>,
    /// The DICOM Secondary Capture written for it, relative to the output folder (when asked
    /// for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secondary_capture: Option<String>,
}

/// What [`predict_files`] writes besides the predictions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PredictOptions {
    /// A saliency overlay PNG per film called pneumonia or normal, by this method, under
    /// `<out>/overlays/` (a referred film gets none: the model should not be read there).
    pub saliency: Option<Method>,
    /// A DICOM Secondary Capture per readable film under `<out>/secondary_capture/`: the
    /// overlay of a called film (Grad-CAM unless `saliency` names another method), the plain
    /// film of a referred one, with the decision and "not for diagnostic use" in its header
    /// ([`crate::secondary_capture`]).
    pub dicom_sc: bool,
}

/// Where the Secondary Captures go, under the output folder.
pub const SECONDARY_CAPTURES: &str = "secondary_capture";

/// Where the overlays go, under the output folder.
pub const OVERLAYS: &str = "overlays";

/// Counts of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    /// Films per decision (`pneumonia`, `normal`, `refer`).
    pub decisions: BTreeMap<String, usize>,
    /// Referred films per reason kind.
    pub refer_reasons: BTreeMap<String, usize>,
    /// Files that could not be read or predicted.
    pub errors: usize,
    /// Films skipped because an earlier run had written them.
    pub already_done: usize,
}

/// Every file under `inputs` (folders are walked recursively, in sorted order; hidden entries
/// are skipped). A path given in `inputs` that does not exist or cannot be listed is an error
/// naming it. Inside a folder, an entry that cannot be examined or listed (no permission) is
/// kept as a file: reading it then fails with an error naming it, and the run goes on.
pub fn collect_inputs(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let mut files = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|e| Error::io(input, e))?;
        if meta.is_dir() {
            std::fs::read_dir(input).map_err(|e| Error::io(input, e))?;
            walk(input, &mut files, &mut HashSet::new());
        } else {
            files.push(input.clone());
        }
    }
    Ok(files)
}

/// `visited` holds the real paths of the folders walked so far, so that a link back to a
/// parent folder is walked once, not forever.
fn walk(folder: &Path, files: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) {
    if let Ok(real) = std::fs::canonicalize(folder) {
        if !visited.insert(real) {
            return;
        }
    }
    let Ok(listing) = std::fs::read_dir(folder) else {
        files.push(folder.to_path_buf());
        return;
    };
    let mut entries: Vec<PathBuf> = listing
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        // `metadata` follows links, so a link to a folder is walked like the folder.
        if std::fs::metadata(&entry).is_ok_and(|m| m.is_dir()) {
            walk(&entry, files, visited);
        } else {
            files.push(entry);
        }
    }
}

/// The paths already written to `jsonl` by an earlier run. A last line cut short by a kill is
/// dropped from the file, so the film is predicted again. Read a line at a time: a run of
/// 100,000 films writes about 100 MB of lines.
fn resume(jsonl: &Path) -> Result<HashSet<String>, Error> {
    let file = match std::fs::File::open(jsonl) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(Error::io(jsonl, e)),
    };
    let mut reader = BufReader::new(file);
    let mut done = HashSet::new();
    let mut complete = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(jsonl, e))?;
        if read == 0 || !line.ends_with(b"\n") {
            break;
        }
        let Ok(record) = serde_json::from_slice::<PathOnly>(&line) else {
            break;
        };
        done.insert(record.path);
        complete += read as u64;
    }
    let length = std::fs::metadata(jsonl)
        .map_err(|e| Error::io(jsonl, e))?
        .len();
    if complete < length {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(jsonl)
            .map_err(|e| Error::io(jsonl, e))?;
        file.set_len(complete).map_err(|e| Error::io(jsonl, e))?;
    }
    Ok(done)
}

/// The one field `resume` needs from a record.
#[derive(Deserialize)]
struct PathOnly {
    path: String,
}

/// Reads and predicts `files` with `bundle`, `bundle.batch_size()` at a time, appending one
/// record per film to `<out>/predictions.jsonl` and skipping films an earlier run wrote;
/// `on_batch` is told how many films each batch held. Ends by writing `predictions.csv`.
pub fn predict_files(
    bundle: &Bundle,
    files: &[PathBuf],
    out: &Path,
    options: &PredictOptions,
    on_batch: &mut dyn FnMut(usize),
) -> Result<RunSummary, Error> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    for (wanted, folder) in [
        (options.saliency.is_some() || options.dicom_sc, OVERLAYS),
        (options.dicom_sc, SECONDARY_CAPTURES),
    ] {
        if wanted {
            let dir = out.join(folder);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
    }
    let jsonl = out.join(PREDICTIONS_JSONL);
    let done = resume(&jsonl)?;
    let todo: Vec<&PathBuf> = files
        .iter()
        .filter(|p| !done.contains(&p.display().to_string()))
        .collect();
    let mut writer = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&jsonl)
        .map_err(|e| Error::io(&jsonl, e))?;
    for chunk in todo.chunks(bundle.batch_size()) {
        let records = predict_chunk(bundle, chunk, out, options)?;
        let mut lines = String::new();
        for record in &records {
            let line = serde_json::to_string(record).map_err(|source| {
                Error::from(crate::ErrorKind::Json {
                    what: record.path.clone(),
                    source,
                })
            })?;
            lines += &line;
            lines.push('\n');
        }
        // One write per batch, then flushed: a kill loses at most this batch.
        writer
            .write_all(lines.as_bytes())
            .and_then(|()| writer.flush())
            .map_err(|e| Error::io(&jsonl, e))?;
        on_batch(chunk.len());
    }
    let mut summary = write_csv(out)?;
    summary.already_done = files.len() - todo.len();
    Ok(summary)
}

/// The overlay's file name: the film's stem and a hash of its whole path, so that films of one
/// name in different folders do not collide.
fn overlay_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map_or_else(|| "film".into(), |s| s.to_string_lossy().into_owned());
    let stem: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let digest = Sha256::digest(path.display().to_string().as_bytes());
    format!("{stem}-{}", &xray_infer::hex(&digest)[..12])
}

/// Writes the saliency overlay of a called film; returns its name under `out` and the image.
fn write_overlay(
    bundle: &Bundle,
    film: &GrayImage,
    path: &Path,
    out: &Path,
    method: Method,
) -> Result<(String, RgbImage), Error> {
    let map = bundle.explain(film, method)?;
    let name = format!("{OVERLAYS}/{}.png", overlay_name(path));
    let image = xray_eval::heat_overlay(film, &map, 0.45);
    xray_eval::save_overlay_png(&image, &out.join(&name))?;
    Ok((name, image))
}

/// The film itself as 8-bit RGB (what a referred film's Secondary Capture shows).
fn plain_rgb(film: &GrayImage) -> RgbImage {
    image::DynamicImage::ImageLuma8(xray_data::to_gray8(film)).to_rgb8()
}

/// Reads a batch of files in parallel and predicts the readable ones in one pass.
fn predict_chunk(
    bundle: &Bundle,
    chunk: &[&PathBuf],
    out: &Path,
    options: &PredictOptions,
) -> Result<Vec<FilmRecord>, Error> {
    let read: Vec<_> = chunk.par_iter().map(|p| read_film_with_header(p)).collect();
    let films: Vec<_> = read.iter().filter_map(|r| r.as_ref().ok()).collect();
    let images: Vec<_> = films.iter().map(|(film, _)| film).collect();
    let mut predictions = bundle.predict_batch(&images)?.into_iter();
    let mut records = Vec::with_capacity(chunk.len());
    for (path, result) in chunk.iter().zip(read) {
        let mut record = FilmRecord {
            path: path.display().to_string(),
            prediction: None,
            dicom: None,
            error: None,
            bundle_sha256: bundle.weights_sha256().to_string(),
            overlay: None,
            secondary_capture: None,
        };
        match result {
            Ok((film, header)) => {
                let mut p = predictions.next().ok_or_else(|| {
                    Error::from(crate::ErrorKind::Invalid(
                        "a prediction went missing".into(),
                    ))
                })?;
                if let Some(info) = &header {
                    p.apply_header(info);
                }
                let called = p.decision != Decision::Refer;
                let method = options
                    .saliency
                    .or(options.dicom_sc.then_some(Method::GradCam));
                let mut shown = None;
                if let (Some(method), true) = (method, called) {
                    let (name, image) = write_overlay(bundle, &film, path, out, method)?;
                    record.overlay = Some(name);
                    shown = Some(image);
                }
                if options.dicom_sc {
                    let name = format!("{SECONDARY_CAPTURES}/{}.dcm", overlay_name(path));
                    let image = shown.unwrap_or_else(|| plain_rgb(&film));
                    let content = CaptureContent {
                        source: &record.path,
                        dicom: header.as_ref(),
                        prediction: &p,
                        bundle_sha256: &record.bundle_sha256,
                    };
                    write_secondary_capture(&out.join(&name), &image, &content)?;
                    record.secondary_capture = Some(name);
                }
                record.prediction = Some(p);
                record.dicom = header;
            }
            Err(e) => record.error = Some(e.to_string()),
        }
        records.push(record);
    }
    Ok(records)
}

/// Rewrites `<out>/predictions.csv` from the JSON lines and counts them.
fn write_csv(out: &Path) -> Result<RunSummary, Error> {
    let jsonl = out.join(PREDICTIONS_JSONL);
    let lines =
        BufReader::new(std::fs::File::open(&jsonl).map_err(|e| Error::io(&jsonl, e))?).lines();
    let csv_path = out.join(PREDICTIONS_CSV);
    let csv_error = |source| {
        Error::from(crate::ErrorKind::Csv {
            path: csv_path.clone(),
            source,
        })
    };
    let mut csv = csv::Writer::from_path(&csv_path).map_err(csv_error)?;
    csv.write_record([
        "path",
        "decision",
        "probability",
        "calibrated_probability",
        "operating_point",
        "threshold",
        "refer_reasons",
        "ood_score",
        "study_uid",
        "series_uid",
        "sop_uid",
        "view_position",
        "patient_age",
        "patient_sex",
        "error",
        "bundle_sha256",
        "overlay",
        "secondary_capture",
    ])
    .map_err(csv_error)?;
    let mut summary = RunSummary::default();
    for line in lines {
        let line = line.map_err(|e| Error::io(&jsonl, e))?;
        let Ok(r) = serde_json::from_str::<FilmRecord>(&line) else {
            continue;
        };
        let p = r.prediction.as_ref();
        let d = r.dicom.as_ref();
        let opt = |v: Option<&String>| v.cloned().unwrap_or_default();
        let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
        match p {
            Some(p) => {
                *summary.decisions.entry(p.decision.to_string()).or_default() += 1;
                for reason in &p.refer_reasons {
                    let kind = serde_json::to_value(reason).ok();
                    let kind = kind
                        .as_ref()
                        .and_then(|v| v["reason"].as_str())
                        .unwrap_or("other");
                    *summary.refer_reasons.entry(kind.to_string()).or_default() += 1;
                }
            }
            None => summary.errors += 1,
        }
        let reasons: Vec<String> = p.map_or(Vec::new(), |p| {
            p.refer_reasons.iter().map(|r| r.to_string()).collect()
        });
        csv.write_record([
            r.path.clone(),
            p.map_or("ERROR".to_string(), |p| p.decision.to_string()),
            number(p.map(|p| p.probability)),
            number(p.map(|p| p.calibrated_probability)),
            p.map_or(String::new(), |p| p.operating_point.clone()),
            number(p.map(|p| p.threshold)),
            reasons.join("; "),
            number(p.and_then(|p| p.ood_score)),
            opt(d.and_then(|d| d.study_uid.as_ref())),
            opt(d.and_then(|d| d.series_uid.as_ref())),
            opt(d.and_then(|d| d.sop_uid.as_ref())),
            opt(d.and_then(|d| d.view_position.as_ref())),
            opt(d.and_then(|d| d.patient_age.as_ref())),
            opt(d.and_then(|d| d.patient_sex.as_ref())),
            opt(r.error.as_ref()),
            r.bundle_sha256.clone(),
            opt(r.overlay.as_ref()),
            opt(r.secondary_capture.as_ref()),
        ])
        .map_err(csv_error)?;
    }
    csv.flush().map_err(|e| Error::io(&csv_path, e))?;
    Ok(summary)
}
