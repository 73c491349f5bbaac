//! Predicting on a folder as a hospital keeps it: real films, DICOM among them, and broken
//! files; every film gets one line, every broken file a line naming it, and a run cut short
//! mid-line resumes without duplicates.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use xray_pneumonia::infer::{Bundle, Decision};
use xray_pneumonia::prediction::{
    collect_inputs, predict_files, FilmRecord, PredictOptions, PREDICTIONS_JSONL,
};

fn shared() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

fn records(out: &Path) -> Vec<FilmRecord> {
    let text = std::fs::read_to_string(out.join(PREDICTIONS_JSONL)).expect("jsonl");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

#[test]
fn a_folder_with_broken_files_resumes_without_duplicates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub/folder.jpeg")).expect("dirs");
    let train = shared().join("kermany224/train");
    for (i, name) in [
        "NORMAL/IM-0115-0001.jpeg",
        "NORMAL/IM-0117-0001.jpeg",
        "PNEUMONIA/person1_bacteria_1.jpeg",
    ]
    .iter()
    .enumerate()
    {
        std::fs::copy(train.join(name), input.join(format!("film{i}.jpeg"))).expect("copy");
    }
    let dicom = shared().join("dicom/cxr_pa_monochrome2.dcm");
    std::fs::copy(&dicom, input.join("sub/film.dcm")).expect("copy");
    let bytes = std::fs::read(&dicom).expect("dicom");
    std::fs::write(input.join("sub/truncated.dcm"), &bytes[..4000]).expect("write");
    std::fs::write(input.join("empty.png"), b"").expect("write");
    std::fs::write(input.join("notes.jpeg"), b"not an image").expect("write");

    let files = collect_inputs(std::slice::from_ref(&input)).expect("inputs");
    assert_eq!(files.len(), 7, "{files:?}");
    let bundle = Bundle::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/scratch_cnn"),
        &Device::Cpu,
    )
    .expect("bundle")
    .with_batch_size(2);
    let out = dir.path().join("out");
    let summary = predict_files(
        &bundle,
        &files,
        &out,
        &PredictOptions::default(),
        &mut |_| {},
    )
    .expect("run");
    assert_eq!(summary.errors, 3);
    let first = records(&out);
    assert_eq!(first.len(), 7);
    for r in &first {
        let broken = ["truncated.dcm", "empty.png", "notes.jpeg"]
            .iter()
            .any(|b| r.path.ends_with(b));
        assert_eq!(r.error.is_some(), broken, "{r:?}");
        if let Some(error) = &r.error {
            let name = Path::new(&r.path)
                .file_name()
                .expect("name")
                .to_string_lossy();
            assert!(error.contains(name.as_ref()), "{error}");
        }
    }
    let from_dicom = first
        .iter()
        .find(|r| r.path.ends_with("film.dcm"))
        .expect("DICOM line");
    assert!(from_dicom
        .dicom
        .as_ref()
        .is_some_and(|d| d.sop_uid.is_some()));
    assert!(from_dicom.prediction.is_some());

    // Killed mid-write: the last line half written, the two before it never written.
    let jsonl = out.join(PREDICTIONS_JSONL);
    let text = std::fs::read_to_string(&jsonl).expect("jsonl");
    let lines: Vec<&str> = text.lines().collect();
    let cut = lines[..4].join("\n") + "\n" + &lines[4][..lines[4].len() / 2];
    std::fs::write(&jsonl, cut).expect("cut");
    let summary = predict_files(
        &bundle,
        &files,
        &out,
        &PredictOptions::default(),
        &mut |_| {},
    )
    .expect("resume");
    assert_eq!(summary.already_done, 4);
    let again = records(&out);
    let paths: HashSet<&String> = again.iter().map(|r| &r.path).collect();
    assert_eq!(
        (again.len(), paths.len()),
        (7, 7),
        "one line per film, no duplicate"
    );
    for r in &first {
        let twin = again
            .iter()
            .find(|a| a.path == r.path)
            .expect("every film again");
        assert_eq!(twin.prediction, r.prediction, "{}", r.path);
    }
    let csv = std::fs::read_to_string(out.join("predictions.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 8, "header and one row per film");
    assert!(first
        .iter()
        .filter_map(|r| r.prediction.as_ref())
        .all(|p| p.decision != Decision::Refer || !p.refer_reasons.is_empty()));
}

#[test]
fn overlays_are_written_for_called_films_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let train = shared().join("kermany224/train");
    let mut files: Vec<PathBuf> = [
        "NORMAL/IM-0115-0001.jpeg",
        "PNEUMONIA/person1_bacteria_1.jpeg",
    ]
    .iter()
    .map(|n| train.join(n))
    .collect();
    // An adult film: referred by the population detector, so it gets no overlay.
    files.push(shared().join("external/rsna_adult_normal/Normal-10025.png"));
    let bundle = Bundle::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/scratch_cnn"),
        &Device::Cpu,
    )
    .expect("bundle");
    let out = dir.path().join("out");
    let options = PredictOptions {
        saliency: Some(xray_pneumonia::infer::Method::GradCam),
        dicom_sc: false,
    };
    predict_files(&bundle, &files, &out, &options, &mut |_| {}).expect("run");
    let lines = records(&out);
    assert_eq!(lines.len(), 3);
    for r in &lines {
        let decision = r.prediction.as_ref().expect("prediction").decision;
        match (&r.overlay, decision) {
            (None, Decision::Refer) => {}
            (Some(name), d) if d != Decision::Refer => {
                let overlay = image::open(out.join(name)).expect("overlay PNG");
                let film = image::open(&r.path).expect("film");
                assert_eq!(overlay.width(), film.width(), "{name}");
                assert_eq!(overlay.height(), film.height(), "{name}");
            }
            other => panic!("{}: {other:?}", r.path),
        }
    }
    assert!(lines.iter().any(|r| r.overlay.is_some()));
    assert!(lines.iter().any(|r| r.overlay.is_none()));
    let csv = std::fs::read_to_string(out.join("predictions.csv")).expect("csv");
    assert!(csv
        .lines()
        .next()
        .expect("header")
        .ends_with(",overlay,secondary_capture"));
}
