//! The trainer's state after an epoch, in one safetensors file written beside its final name
//! and renamed over it, so a run killed at any moment leaves the previous epoch's state or this
//! one's, never half of either.

use std::collections::HashMap;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::{EarlyStopping, EpochRecord, TrainConfig, TrainError};

/// Key of the JSON progress record in the file's metadata.
const PROGRESS_KEY: &str = "xray_train_progress";

/// Where training stands after an epoch: everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Progress {
    /// The run's settings: a resumed run must use the same.
    pub config: TrainConfig,
    /// Training and validation examples: a resumed run must see the same data.
    pub data: [usize; 2],
    /// Epochs completed.
    pub epochs_done: usize,
    /// Optimiser steps taken.
    pub steps: usize,
    /// The early-stopping tracker.
    pub stopper: EarlyStopping,
    /// The best epoch so far (1-based; 0 before any) and its score.
    pub best: (usize, f64),
    /// Every completed epoch's record.
    pub records: Vec<EpochRecord>,
    /// Whether training has finished (early stop or last epoch).
    pub finished: bool,
}

/// The tensors of a checkpoint, by group.
pub(crate) struct Tensors {
    /// The model's variables now.
    pub model: HashMap<String, Tensor>,
    /// The best epoch's variables.
    pub best: HashMap<String, Tensor>,
    /// The optimiser's moments.
    pub optimizer: HashMap<String, Tensor>,
}

const GROUPS: [&str; 3] = ["model/", "best/", "optimizer/"];

fn failed(
    path: &Path,
    what: &str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: format!("{what}: {source}"),
        source: Some(Box::new(source)),
    }
}

fn invalid(path: &Path, reason: &str) -> TrainError {
    TrainError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
        source: None,
    }
}

/// Writes `progress` and `tensors` to `path` atomically.
pub(crate) fn save(path: &Path, progress: &Progress, tensors: &Tensors) -> Result<(), TrainError> {
    let json = serde_json::to_string(progress).map_err(|e| failed(path, "progress record", e))?;
    let metadata = HashMap::from([(PROGRESS_KEY.to_string(), json)]);
    let mut named: Vec<(String, &Tensor)> = Vec::new();
    for (group, map) in GROUPS
        .iter()
        .zip([&tensors.model, &tensors.best, &tensors.optimizer])
    {
        named.extend(map.iter().map(|(k, t)| (format!("{group}{k}"), t)));
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = std::path::PathBuf::from(partial);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    safetensors::serialize_to_file(named, Some(metadata), &partial)
        .map_err(|e| failed(path, "writing", e))?;
    std::fs::rename(&partial, path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a checkpoint written by [`save`] onto `device`; `None` if there is no file.
pub(crate) fn load(
    path: &Path,
    device: &Device,
) -> Result<Option<(Progress, Tensors)>, TrainError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TrainError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let (_, metadata) =
        safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| failed(path, "header", e))?;
    let json = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get(PROGRESS_KEY))
        .ok_or_else(|| invalid(path, "no training progress record: not a checkpoint"))?;
    let progress: Progress =
        serde_json::from_str(json).map_err(|e| failed(path, "progress record", e))?;
    let file =
        safetensors::SafeTensors::deserialize(&bytes).map_err(|e| failed(path, "tensors", e))?;
    let mut tensors = Tensors {
        model: HashMap::new(),
        best: HashMap::new(),
        optimizer: HashMap::new(),
    };
    for (name, view) in file.tensors() {
        let tensor = view.load(device)?;
        let (group, key) = GROUPS
            .iter()
            .find_map(|g| name.strip_prefix(g).map(|k| (*g, k.to_string())))
            .ok_or_else(|| invalid(path, &format!("unexpected tensor `{name}`")))?;
        match group {
            "model/" => tensors.model.insert(key, tensor),
            "best/" => tensors.best.insert(key, tensor),
            _ => tensors.optimizer.insert(key, tensor),
        };
    }
    Ok(Some((progress, tensors)))
}
