//! Issue 14's acceptance, run for real: a folder of 1,000 files with 10 broken ones among them
//! gets 990 predictions and 10 errors naming the files, and exit status 2; the `predict`
//! program killed with SIGKILL part-way and run again ends with 1,000 lines and no duplicate.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn predict(input: &Path, out: &Path) -> Command {
    let mut command = Command::new(common::example("predict"));
    let model = concat!(env!("CARGO_MANIFEST_DIR"), "/models/scratch_cnn");
    command
        .args(["--model", model, "--cpu", "--batch-size", "16", "--out"])
        .arg(out)
        .arg(input)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn lines(out: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// 990 real films under new names and 10 broken files, in `dir`.
fn thousand_files(dir: &Path) {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    let train = shared.join("kermany224/train");
    let mut films: Vec<PathBuf> = ["NORMAL", "PNEUMONIA"]
        .iter()
        .flat_map(|class| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(train.join(class))
                .expect("class folder")
                .map(|e| e.expect("entry").path())
                .collect();
            files.sort();
            files.into_iter().take(495)
        })
        .collect();
    films.sort();
    for (i, film) in films.iter().enumerate() {
        std::fs::copy(film, dir.join(format!("film{i:04}.jpeg"))).expect("copy");
    }
    let jpeg = std::fs::read(&films[0]).expect("film");
    let dicom = std::fs::read(shared.join("dicom/cxr_pa_monochrome2.dcm")).expect("dicom");
    let broken: [(&str, &[u8]); 10] = [
        ("empty0.png", b""),
        ("empty1.jpeg", b""),
        ("empty2.dcm", b""),
        ("text0.jpeg", b"not a film"),
        ("text1.png", b"\x89PNG but not really"),
        ("text2.dcm", b"DICM somewhere, not at byte 128"),
        ("cut0.jpeg", &jpeg[..jpeg.len() / 2]),
        ("cut1.jpeg", &jpeg[..100]),
        ("cut0.dcm", &dicom[..dicom.len() / 3]),
        ("cut1.dcm", &dicom[..200]),
    ];
    for (name, bytes) in broken {
        std::fs::write(dir.join(name), bytes).expect("broken file");
    }
}

#[test]
fn a_thousand_files_killed_halfway_end_with_one_line_each() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).expect("input");
    thousand_files(&input);
    let out = dir.path().join("out");

    let mut child = predict(&input, &out).spawn().expect("predict starts");
    let start = Instant::now();
    while lines(&out).len() < 300 {
        assert!(start.elapsed() < Duration::from_secs(600), "no progress");
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("finished before it could be killed: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let partial = lines(&out).len();
    assert!(partial < 1000, "killed after {partial} lines");

    let status = predict(&input, &out).status().expect("rerun");
    assert_eq!(status.code(), Some(2), "some files failed");
    let all = lines(&out);
    let paths: HashSet<&str> = all.iter().filter_map(|r| r["path"].as_str()).collect();
    assert_eq!((all.len(), paths.len()), (1000, 1000), "one line per file");
    let errors: Vec<&serde_json::Value> = all.iter().filter(|r| r.get("error").is_some()).collect();
    assert_eq!(errors.len(), 10);
    for r in &errors {
        let path = r["path"].as_str().expect("path");
        let name = Path::new(path).file_name().expect("name").to_string_lossy();
        let error = r["error"].as_str().expect("error");
        assert!(error.contains(name.as_ref()), "{error}");
    }
    assert_eq!(
        all.iter().filter(|r| r.get("decision").is_some()).count(),
        990
    );
    let csv = std::fs::read_to_string(out.join("predictions.csv")).expect("csv");
    assert_eq!(csv.lines().count(), 1001);
}
