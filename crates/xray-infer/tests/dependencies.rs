//! A program that only predicts compiles neither the trainer nor a progress bar: the
//! dependency closure of `xray-infer` in the workspace's `Cargo.lock` holds neither.

use std::collections::{BTreeSet, HashMap};

/// Package name -> names of its dependencies, from a `Cargo.lock`.
fn lock_graph(lock: &str) -> HashMap<String, Vec<String>> {
    let mut graph = HashMap::new();
    for block in lock.split("[[package]]").skip(1) {
        let name = block
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim_matches('"').to_string());
        let deps = block
            .split_once("dependencies = [")
            .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
            .unwrap_or("")
            .lines()
            .filter_map(|l| {
                l.trim()
                    .trim_end_matches(',')
                    .trim_matches('"')
                    .split(' ')
                    .next()
            })
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
        if let Some(name) = name {
            graph.insert(name, deps);
        }
    }
    graph
}

#[test]
fn inference_needs_neither_the_trainer_nor_indicatif() {
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.lock"))
        .expect("the workspace's Cargo.lock");
    let graph = lock_graph(&lock);
    assert!(
        graph["xray-train"].iter().any(|d| d == "xray-infer"),
        "the parser reads the lock"
    );
    let mut seen = BTreeSet::new();
    let mut stack = vec!["xray-infer".to_string()];
    while let Some(name) = stack.pop() {
        if seen.insert(name.clone()) {
            stack.extend(graph.get(&name).cloned().unwrap_or_default());
        }
    }
    assert!(seen.contains("candle-core") && seen.contains("xray-models"));
    for unwanted in ["xray-train", "indicatif", "xray-pneumonia"] {
        assert!(!seen.contains(unwanted), "xray-infer depends on {unwanted}");
    }
}
