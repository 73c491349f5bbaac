//! A seeded mutation fuzzer of [`decode_film`]: real files with bits flipped, bytes and 16- or
//! 32-bit words overwritten with boundary values, and ranges cut, deleted or repeated. Every
//! input must give a film or an error, never a panic. The `fuzz_decode` example drives it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::decode_film;

/// Values that sit on the edges parsers get wrong.
const BOUNDARY_BYTES: [u8; 6] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF];
const BOUNDARY_WORDS: [u32; 6] = [0, 1, 0x7FFF, 0xFFFF, 0x7FFF_FFFF, 0xFFFF_FFFF];

/// One to four mutations of `bytes`.
pub fn mutate(bytes: &[u8], rng: &mut ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        if out.is_empty() {
            break;
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..6) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = BOUNDARY_BYTES[rng.random_range(0..BOUNDARY_BYTES.len())],
            2 => {
                let word = BOUNDARY_WORDS[rng.random_range(0..BOUNDARY_WORDS.len())].to_le_bytes();
                let width = if rng.random_bool(0.5) { 2 } else { 4 };
                for (k, b) in word.iter().take(width).enumerate() {
                    if let Some(slot) = out.get_mut(at + k) {
                        *slot = *b;
                    }
                }
            }
            3 => out.truncate(at),
            4 => {
                let end = (at + rng.random_range(1..=64)).min(out.len());
                out.drain(at..end);
            }
            _ => {
                let end = (at + rng.random_range(1..=64)).min(out.len());
                let copy = out[at..end].to_vec();
                let to = rng.random_range(0..=out.len());
                out.splice(to..to, copy);
            }
        }
    }
    out
}

/// One fuzzed input: which, from which file, and its bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FuzzInput {
    /// Its index in the run (with the seed, it reproduces the input).
    pub index: usize,
    /// The file it was mutated from.
    pub origin: PathBuf,
    /// The mutated bytes.
    pub bytes: Vec<u8>,
}

impl FuzzInput {
    /// Input `index` of a run with `seed` over `originals` (file paths and their bytes): the
    /// same three always give the same input, whatever the threads.
    pub fn nth(originals: &[(PathBuf, Vec<u8>)], seed: u64, index: usize) -> FuzzInput {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let (origin, bytes) = &originals[rng.random_range(0..originals.len())];
        FuzzInput {
            index,
            origin: origin.clone(),
            bytes: mutate(bytes, &mut rng),
        }
    }

    /// A file name for it: its index and its origin's name.
    pub fn file_name(&self) -> String {
        let origin = self.origin.file_name();
        let origin = origin.map_or("input".into(), |n| n.to_string_lossy());
        format!("{}-{origin}", self.index)
    }
}

/// What a run found.
#[derive(Debug, Clone, Default)]
pub struct FuzzReport {
    /// Inputs that decoded to a film.
    pub films: usize,
    /// Inputs refused with an error.
    pub errors: usize,
    /// Inputs that panicked.
    pub panicked: Vec<FuzzInput>,
    /// The slowest input and its seconds.
    pub slowest: (f64, FuzzInput),
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// Decodes `count` mutated inputs from `originals` in parallel with `seed`, catching panics.
/// `originals` must not be empty. Callers may silence the panic hook while it runs.
pub fn fuzz_decode(originals: &[(PathBuf, Vec<u8>)], count: usize, seed: u64) -> FuzzReport {
    let (films, errors) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let panicked = Mutex::new(Vec::new());
    let slowest = Mutex::new((0.0f64, FuzzInput::default()));
    let started = Instant::now();
    (0..count).into_par_iter().for_each(|i| {
        let input = FuzzInput::nth(originals, seed, i);
        let began = Instant::now();
        let result =
            std::panic::catch_unwind(|| decode_film(&input.origin, &input.bytes).map(|_| ()));
        let took = began.elapsed().as_secs_f64();
        match result {
            Ok(Ok(())) => films.fetch_add(1, Ordering::Relaxed),
            Ok(Err(_)) => errors.fetch_add(1, Ordering::Relaxed),
            Err(_) => {
                if let Ok(mut list) = panicked.lock() {
                    list.push(input.clone());
                }
                0
            }
        };
        if let Ok(mut slowest) = slowest.lock() {
            if took > slowest.0 {
                *slowest = (took, input);
            }
        }
    });
    let mut panicked = panicked.into_inner().unwrap_or_default();
    panicked.sort_by_key(|p| p.index);
    FuzzReport {
        films: films.into_inner(),
        errors: errors.into_inner(),
        panicked,
        slowest: slowest.into_inner().unwrap_or_default(),
        seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_reproducible_and_changed() {
        let originals = vec![(PathBuf::from("a.bin"), (0..=255u8).collect::<Vec<u8>>())];
        for i in 0..50 {
            let a = FuzzInput::nth(&originals, 9, i);
            assert_eq!(a, FuzzInput::nth(&originals, 9, i));
            assert_ne!(a.bytes, originals[0].1, "input {i} unchanged");
        }
        assert_eq!(FuzzInput::nth(&originals, 9, 7).file_name(), "7-a.bin");
    }

    #[test]
    fn every_input_is_counted_once() {
        let originals = vec![(
            PathBuf::from("x.png"),
            b"\x89PNG\r\n\x1a\n not a real png".to_vec(),
        )];
        let report = fuzz_decode(&originals, 200, 1);
        assert_eq!(report.films + report.errors + report.panicked.len(), 200);
        assert!(report.panicked.is_empty());
    }
}
