//! The film reader's fuzzer in its quick form: 3,000 seeded mutations of real JPEG, PNG and DICOM
//! files (the `fuzz_decode` example) give films or errors, never a panic, and none takes long.
//! The full run is a million inputs (README, Tests).

mod common;

use std::process::Command;

#[test]
fn three_thousand_mutated_files_never_panic() {
    let crashes = tempfile::tempdir().expect("temp dir");
    let output = Command::new(common::example("fuzz_decode"))
        .args(["--count", "3000", "--seed", "7", "--crashes"])
        .arg(crashes.path())
        .output()
        .expect("fuzz_decode runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).expect("summary");
    assert_eq!(summary["panics"], 0);
    assert_eq!(summary["inputs"], 3000);
    let (films, errors) = (summary["films"].as_u64(), summary["errors"].as_u64());
    assert_eq!(films.zip(errors).map(|(f, e)| f + e), Some(3000));
    // Declared lengths are checked before anything is allocated: no input is a memory bomb.
    let slowest = summary["slowest_seconds"].as_f64().expect("slowest");
    assert!(slowest < 20.0, "slowest input took {slowest} s");
}
