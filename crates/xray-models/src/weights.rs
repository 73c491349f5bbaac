use std::collections::HashSet;
use std::path::Path;

use candle_core::safetensors::Load;
use candle_nn::VarMap;

use crate::ModelError;

/// Copies every tensor of a safetensors file into the matching variable of `varmap`, strictly.
///
/// Each variable whose name does not start with one of `skip_prefixes` must be in the file with
/// the same shape; every tensor of the file must be used (except skipped ones and PyTorch's
/// `num_batches_tracked` counters). Errors name the tensor and both shapes.
pub fn load_weights_strict(
    varmap: &VarMap,
    path: &Path,
    skip_prefixes: &[&str],
) -> Result<(), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::ReadWeights {
        path: path.to_path_buf(),
        source,
    })?;
    load_weights_strict_from_bytes(varmap, path, &bytes, skip_prefixes)
}

/// [`load_weights_strict`] from the file's bytes already in memory (`path` names it in errors),
/// for a caller that also needs the bytes, e.g. to hash them.
pub fn load_weights_strict_from_bytes(
    varmap: &VarMap,
    path: &Path,
    bytes: &[u8],
    skip_prefixes: &[&str],
) -> Result<(), ModelError> {
    let file = safetensors::SafeTensors::deserialize(bytes).map_err(|source| {
        ModelError::ParseWeights {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let skipped = |name: &str| skip_prefixes.iter().any(|p| name.starts_with(p));
    let vars = varmap
        .data()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut names: Vec<&String> = vars.keys().filter(|n| !skipped(n)).collect();
    names.sort();
    for name in &names {
        let var = &vars[*name];
        let expected = var.dims().to_vec();
        let view = file.tensor(name).map_err(|_| ModelError::MissingTensor {
            path: path.to_path_buf(),
            tensor: name.to_string(),
            expected: expected.clone(),
        })?;
        if view.shape() != expected.as_slice() {
            return Err(ModelError::ShapeMismatch {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                expected,
                actual: view.shape().to_vec(),
            });
        }
        let tensor = view.load(var.device())?.to_dtype(var.dtype())?;
        var.set(&tensor)?;
    }
    let used: HashSet<&str> = names.iter().map(|n| n.as_str()).collect();
    let mut unexpected: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !used.contains(*n) && !skipped(n) && !n.ends_with("num_batches_tracked"))
        .map(str::to_string)
        .collect();
    unexpected.sort();
    if let Some(first) = unexpected.first() {
        return Err(ModelError::UnexpectedTensors {
            path: path.to_path_buf(),
            count: unexpected.len(),
            first: first.clone(),
        });
    }
    Ok(())
}
