//! What several integration tests share.

use std::path::{Path, PathBuf};

/// The example program `name`, built by cargo beside the test binaries (which live in
/// `target/<profile>/deps`).
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    profile.join("examples").join(name)
}
