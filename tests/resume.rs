//! A training run killed with SIGKILL mid-run and started again with `--resume` ends with the
//! same bundle as a run never interrupted: the same weights bit for bit, the same threshold,
//! metrics and training log (timings aside).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn train_scratch(out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(common::example("train_scratch"));
    let shared = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/kermany224");
    command
        .args(["--data", shared, "--limit-per-class", "40", "--epochs", "6"])
        .args(["--size", "48", "--cpu", "--out"])
        .arg(out)
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    command
}

fn tensors(dir: &Path) -> std::collections::HashMap<String, Vec<f32>> {
    let device = candle_core::Device::Cpu;
    candle_core::safetensors::load(dir.join("model.safetensors"), &device)
        .expect("weights")
        .into_iter()
        .map(|(name, t)| (name, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// The parts of a bundle's config and log that do not depend on timing or the command line.
fn comparable(dir: &Path) -> (serde_json::Value, Vec<serde_json::Value>) {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config");
    let mut config: serde_json::Value = serde_json::from_str(&text).expect("json");
    config["training"]["seconds"] = serde_json::Value::Null;
    config["training"]["recipe"]["arguments"] = serde_json::Value::Null;
    config["data"]["root"] = serde_json::Value::Null;
    let log = std::fs::read_to_string(dir.join("train_log.jsonl")).expect("log");
    let records = log
        .lines()
        .map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).expect("record");
            r["seconds"] = serde_json::Value::Null;
            r["images_per_second"] = serde_json::Value::Null;
            r
        })
        .collect();
    (config, records)
}

#[test]
fn a_killed_run_resumes_to_the_same_bundle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (whole, resumed) = (dir.path().join("whole"), dir.path().join("resumed"));
    let status = train_scratch(&whole, &[]).status().expect("run");
    assert!(status.success(), "uninterrupted run failed");

    let mut child = train_scratch(&resumed, &[]).spawn().expect("spawn");
    let checkpoint = resumed.join("checkpoint.safetensors");
    let started = Instant::now();
    while !checkpoint.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no checkpoint after 2 minutes"
        );
        assert!(
            child.try_wait().expect("poll").is_none(),
            "the run ended without a checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    assert!(
        !resumed.join("model.safetensors").exists(),
        "the run finished before it could be killed: the test proves nothing"
    );
    let status = train_scratch(&resumed, &["--resume"])
        .status()
        .expect("resume");
    assert!(status.success(), "resumed run failed");
    assert!(
        !checkpoint.exists(),
        "the checkpoint is removed once the bundle is written"
    );

    assert_eq!(
        tensors(&whole),
        tensors(&resumed),
        "weights differ after resuming"
    );
    let ((config_a, log_a), (config_b, log_b)) = (comparable(&whole), comparable(&resumed));
    assert_eq!(log_a.len(), 6, "six epochs logged");
    assert_eq!(log_a, log_b, "training logs differ");
    assert_eq!(config_a, config_b, "bundle configs differ");
}
