use std::collections::{BTreeMap, BTreeSet, HashMap};

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::{DataError, Label, Sample};

/// Fractions of images held out, and the seed that decides which patients go where.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitConfig {
    /// Share of each class's images for validation (model and threshold selection).
    pub validation_fraction: f64,
    /// Share of each class's images for the held-out test (reported only).
    pub test_fraction: f64,
    /// Seed of the patient shuffle.
    pub seed: u64,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig {
            validation_fraction: 0.15,
            test_fraction: 0.15,
            seed: 42,
        }
    }
}

/// One side of a [`PatientSplit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// Fitted on.
    Train,
    /// Used to choose epochs, hyper-parameters and the decision threshold.
    Validation,
    /// Held out: reported, never used for a choice.
    Test,
}

impl Side {
    /// The three sides, in order.
    pub const ALL: [Side; 3] = [Side::Train, Side::Validation, Side::Test];

    /// Lower-case name, as on command lines and in files.
    pub fn name(self) -> &'static str {
        match self {
            Side::Train => "train",
            Side::Validation => "validation",
            Side::Test => "test",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Side::ALL
            .into_iter()
            .find(|side| side.name() == s)
            .ok_or_else(|| format!("unknown side {s:?}: train, validation or test"))
    }
}

/// Indices into the sample list for each side; no patient is on two sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientSplit {
    /// Training images.
    pub train: Vec<usize>,
    /// Validation images.
    pub validation: Vec<usize>,
    /// Held-out test images.
    pub test: Vec<usize>,
}

impl PatientSplit {
    /// The indices of one side.
    pub fn side(&self, side: Side) -> &[usize] {
        match side {
            Side::Train => &self.train,
            Side::Validation => &self.validation,
            Side::Test => &self.test,
        }
    }

    /// Sorted, de-duplicated patient ids of one side.
    pub fn patients(&self, samples: &[Sample], side: Side) -> Vec<String> {
        let ids: BTreeSet<&str> = self
            .side(side)
            .iter()
            .map(|&i| samples[i].patient_id.as_str())
            .collect();
        ids.into_iter().map(str::to_string).collect()
    }

    /// Patient ids found on more than one side (empty for a correct split).
    pub fn shared_patients(&self, samples: &[Sample]) -> Vec<String> {
        let mut seen: HashMap<&str, Side> = HashMap::new();
        let mut shared = BTreeSet::new();
        for side in [Side::Train, Side::Validation, Side::Test] {
            for &i in self.side(side) {
                let id = samples[i].patient_id.as_str();
                if let Some(&other) = seen.get(id) {
                    if other != side {
                        shared.insert(id.to_string());
                    }
                } else {
                    seen.insert(id, side);
                }
            }
        }
        shared.into_iter().collect()
    }
}

fn find(parent: &mut [usize], mut i: usize) -> usize {
    while parent[i] != i {
        parent[i] = parent[parent[i]];
        i = parent[i];
    }
    i
}

fn union(parent: &mut [usize], a: usize, b: usize) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        parent[ra.max(rb)] = ra.min(rb);
    }
}

/// Groups images that must stay together: same patient, or byte-identical content.
fn linked_groups(samples: &[Sample], content_hashes: Option<&[[u8; 32]]>) -> Vec<Vec<usize>> {
    let mut parent: Vec<usize> = (0..samples.len()).collect();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        let first = *first_of.entry(s.patient_id.as_str()).or_insert(i);
        union(&mut parent, first, i);
    }
    if let Some(hashes) = content_hashes {
        let mut first_hash: HashMap<&[u8; 32], usize> = HashMap::new();
        for (i, h) in hashes.iter().enumerate() {
            let first = *first_hash.entry(h).or_insert(i);
            union(&mut parent, first, i);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..samples.len() {
        let root = find(&mut parent, i);
        groups.entry(root).or_default().push(i);
    }
    groups.into_values().collect()
}

/// Splits images by patient, stratified by class, deterministically for a given seed.
///
/// Patients whose images share bytes with another patient's (duplicates in the source data)
/// are kept together too. Each class's groups are shuffled with the seed and dealt to test,
/// then validation, until each side holds its fraction of that class's images.
pub fn split_by_patient(
    samples: &[Sample],
    content_hashes: Option<&[[u8; 32]]>,
    config: &SplitConfig,
) -> Result<PatientSplit, DataError> {
    let (v, t) = (config.validation_fraction, config.test_fraction);
    if !(0.0..1.0).contains(&v) || !(0.0..1.0).contains(&t) || v + t >= 1.0 {
        return Err(DataError::InvalidSplit {
            reason: format!("validation {v} and test {t} must be in [0, 1) and sum below 1"),
        });
    }
    if let Some(h) = content_hashes {
        if h.len() != samples.len() {
            return Err(DataError::InvalidSplit {
                reason: format!("{} content hashes for {} samples", h.len(), samples.len()),
            });
        }
    }
    let mut by_class: BTreeMap<Label, Vec<Vec<usize>>> = BTreeMap::new();
    for group in linked_groups(samples, content_hashes) {
        let positives = group
            .iter()
            .filter(|&&i| samples[i].label == Label::Pneumonia)
            .count();
        let label = if 2 * positives >= group.len() {
            Label::Pneumonia
        } else {
            Label::Normal
        };
        by_class.entry(label).or_default().push(group);
    }
    let mut split = PatientSplit {
        train: Vec::new(),
        validation: Vec::new(),
        test: Vec::new(),
    };
    for (label, mut groups) in by_class {
        // Groups come in path order; the shuffle alone decides sides.
        let mut rng = ChaCha8Rng::seed_from_u64(
            config.seed ^ (label as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        groups.shuffle(&mut rng);
        let total: usize = groups.iter().map(Vec::len).sum();
        let test_target = (t * total as f64).round() as usize;
        let validation_target = (v * total as f64).round() as usize;
        let (mut in_test, mut in_validation) = (0, 0);
        for group in groups {
            if in_test < test_target {
                in_test += group.len();
                split.test.extend(group);
            } else if in_validation < validation_target {
                in_validation += group.len();
                split.validation.extend(group);
            } else {
                split.train.extend(group);
            }
        }
    }
    for side in [&mut split.train, &mut split.validation, &mut split.test] {
        side.sort_unstable();
    }
    Ok(split)
}

/// Patient ids of each side, as a split file lists them. The field names are those of a
/// bundle's split record, so a bundle's `split` object reads as one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientLists {
    /// Patients to fit on.
    pub train_patients: Vec<String>,
    /// Patients to choose epochs and the threshold on.
    pub validation_patients: Vec<String>,
    /// Patients held out.
    pub test_patients: Vec<String>,
}

impl PatientLists {
    /// The sorted patient ids of each side of `split`.
    pub fn of(split: &PatientSplit, samples: &[Sample]) -> Self {
        PatientLists {
            train_patients: split.patients(samples, Side::Train),
            validation_patients: split.patients(samples, Side::Validation),
            test_patients: split.patients(samples, Side::Test),
        }
    }

    /// The patients of one side.
    pub fn side(&self, side: Side) -> &[String] {
        match side {
            Side::Train => &self.train_patients,
            Side::Validation => &self.validation_patients,
            Side::Test => &self.test_patients,
        }
    }
}

/// Splits images by the sides `lists` give their patients: for designs a seed cannot draw,
/// such as holding out a whole acquisition series.
///
/// Every patient of `samples` must be on exactly one list, and training and validation must
/// each get an image; listed patients without images are ignored (a subset of the data may be
/// loaded). The lists are taken as given: unlike [`split_by_patient`], byte-identical images of
/// two patients are not pulled to one side.
///
/// ```
/// use xray_data::{split_from_lists, Label, PatientLists, Sample};
/// let sample = |id: &str| Sample { path: format!("{id}.png").into(), label: Label::Normal, patient_id: id.into() };
/// let lists = PatientLists {
///     train_patients: vec!["a".into()],
///     validation_patients: vec!["b".into()],
///     test_patients: vec!["c".into(), "d".into()],
/// };
/// let split = split_from_lists(&[sample("a"), sample("b"), sample("c")], &lists)?;
/// assert_eq!((split.train, split.validation, split.test), (vec![0], vec![1], vec![2]));
/// # Ok::<(), xray_data::DataError>(())
/// ```
pub fn split_from_lists(
    samples: &[Sample],
    lists: &PatientLists,
) -> Result<PatientSplit, DataError> {
    let mut side_of: HashMap<&str, Side> = HashMap::new();
    for side in Side::ALL {
        for id in lists.side(side) {
            if let Some(other) = side_of.insert(id.as_str(), side) {
                if other != side {
                    return Err(DataError::InvalidSplit {
                        reason: format!("patient {id:?} is listed for both {other} and {side}"),
                    });
                }
            }
        }
    }
    let mut split = PatientSplit {
        train: Vec::new(),
        validation: Vec::new(),
        test: Vec::new(),
    };
    let mut unlisted = BTreeSet::new();
    for (i, sample) in samples.iter().enumerate() {
        match side_of.get(sample.patient_id.as_str()) {
            Some(Side::Train) => split.train.push(i),
            Some(Side::Validation) => split.validation.push(i),
            Some(Side::Test) => split.test.push(i),
            None => {
                unlisted.insert(sample.patient_id.as_str());
            }
        }
    }
    if let Some(first) = unlisted.first() {
        return Err(DataError::InvalidSplit {
            reason: format!(
                "{} patient(s) of the data are on no list, e.g. {first:?}",
                unlisted.len()
            ),
        });
    }
    for side in [Side::Train, Side::Validation] {
        if split.side(side).is_empty() {
            return Err(DataError::InvalidSplit {
                reason: format!("no image of the data falls on the {side} side"),
            });
        }
    }
    Ok(split)
}
