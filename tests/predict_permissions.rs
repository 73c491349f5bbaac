//! Files and folders the user running `predict` may not read: each gets a line naming it and
//! the reason, the readable films are predicted, and the exit status says some failed.
//!
//! Permission bits do not stop root, and CI runs as root; there the program is started as the
//! unprivileged user `nobody` (uid 65534), so this test runs the same way everywhere.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

const NOBODY: u32 = 65_534;

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Copies `from` into `to`, recursively, readable by everyone.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("folder");
    set_mode(to, 0o755);
    for entry in std::fs::read_dir(from).expect("listing") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_tree(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
            set_mode(&target, 0o644);
        }
    }
}

#[test]
fn unreadable_files_and_folders_are_named_and_the_run_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path();
    set_mode(root, 0o755);
    // The program and the bundle are copied in: the checkout may sit under a home folder that
    // `nobody` cannot enter.
    let program = root.join("predict");
    std::fs::copy(common::example("predict"), &program).expect("copy the program");
    set_mode(&program, 0o755);
    let bundle = root.join("bundle");
    copy_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("models/scratch_cnn"),
        &bundle,
    );

    let input = root.join("in");
    let train = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kermany224/train");
    let film = |name: &str| train.join(name);
    std::fs::create_dir_all(input.join("locked_folder")).expect("folders");
    for (from, to) in [
        ("NORMAL/IM-0115-0001.jpeg", "a_readable.jpeg"),
        ("PNEUMONIA/person1_bacteria_1.jpeg", "b_readable.jpeg"),
        ("NORMAL/IM-0117-0001.jpeg", "c_locked.jpeg"),
        ("NORMAL/IM-0119-0001.jpeg", "locked_folder/inside.jpeg"),
    ] {
        std::fs::copy(film(from), input.join(to)).expect("copy a film");
        set_mode(&input.join(to), 0o644);
    }
    set_mode(&input, 0o755);
    set_mode(&input.join("c_locked.jpeg"), 0o000);
    set_mode(&input.join("locked_folder"), 0o000);
    let out = root.join("out");
    std::fs::create_dir_all(&out).expect("out");
    set_mode(&out, 0o777);

    let mut command = Command::new(&program);
    command
        .args(["--model"])
        .arg(&bundle)
        .args(["--cpu", "--out"])
        .arg(&out)
        .arg(&input);
    let probe = root.join("whoami");
    std::fs::write(&probe, b"").expect("probe");
    if std::fs::metadata(&probe).expect("probe").uid() == 0 {
        command.uid(NOBODY).gid(NOBODY);
    }
    let output = command.output().expect("predict runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "some failed: {stderr}");

    let text = std::fs::read_to_string(out.join("predictions.jsonl")).expect("jsonl");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    for line in &lines {
        let path = line["path"].as_str().expect("path");
        let error = line["error"].as_str();
        if path.contains("readable") {
            assert!(error.is_none(), "{path}: {error:?}");
            assert!(line["probability"].is_number(), "{line}");
        } else {
            let error = error.unwrap_or_else(|| panic!("{path} has no error"));
            let name = Path::new(path).file_name().expect("name").to_string_lossy();
            assert!(error.contains(name.as_ref()), "{error}");
            assert!(error.contains("ermission denied"), "{error}");
        }
    }
    assert!(
        lines.iter().any(|l| l["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("locked_folder"))),
        "the unreadable folder is named: {text}"
    );
    // Unlocked again, so that the temporary folder can be removed.
    set_mode(&input.join("locked_folder"), 0o755);
}
