//! Shared paths for tests that read the real data in `../shared`.
#![allow(dead_code)]

use std::path::PathBuf;

pub fn kermany_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/kermany224")
}

pub fn first_normal_jpeg() -> PathBuf {
    kermany_root().join("train/NORMAL/IM-0115-0001.jpeg")
}
