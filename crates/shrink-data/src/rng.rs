//! Deterministic shuffling and splitting from a seed.
//!
//! One small PRNG, [`SplitMix64`], instead of `rand`: its output for a seed is
//! fixed by this file alone (no dependency upgrade can change which samples
//! land in the validation set), and it is ten lines to audit.

use serde::Deserialize;

use crate::DataError;

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014; the generator Vigna recommends for seeding
/// xoshiro). A 64-bit counter stepped by the golden ratio and passed through
/// a strong mixing function; passes BigCrush, period 2^64. Not cryptographic.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole output is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// A uniform integer in `0..n` (`n > 0`), without modulo bias
    /// (Lemire's multiply-and-reject, "Fast random integer generation in an
    /// interval", 2019). Returns 0 for `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// The finalizer of SplitMix64 (a variant of MurmurHash3's fmix64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An independent seed for sub-stream `stream` of `seed` (e.g. one per
/// epoch: `permutation(n, derive_seed(seed, epoch))`).
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream.wrapping_add(0x9E37_79B9_7F4A_7C15)))
}

/// Shuffles `items` in place (Fisher–Yates, last index first).
pub fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

/// `0..n` in an order fixed by `seed`.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, &mut SplitMix64::new(seed));
    order
}

/// How much of a dataset to hold out for validation. In TOML an integer is a
/// count (`validation = 5000`) and a float a fraction (`validation = 0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Holdout {
    /// This many samples.
    Count(usize),
    /// This fraction of the samples (in `[0, 1]`), rounded to the nearest count.
    Fraction(f64),
}

/// Indices of a train/validation split, each list sorted ascending.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrainVal {
    /// The samples left for training.
    pub train: Vec<usize>,
    /// The samples held out.
    pub validation: Vec<usize>,
}

/// Splits `0..len` into disjoint train and validation indices: the first
/// samples of [`permutation`]`(len, seed)` are held out. The same
/// `(len, holdout, seed)` always gives the same split.
pub fn train_val_split(len: usize, holdout: Holdout, seed: u64) -> Result<TrainVal, DataError> {
    let n_val = match holdout {
        Holdout::Count(n) if n <= len => n,
        Holdout::Count(n) => {
            return Err(DataError::Split { reason: format!("validation count {n} is more than the {len} samples") });
        }
        Holdout::Fraction(f) if (0.0..=1.0).contains(&f) => (f * len as f64).round() as usize,
        Holdout::Fraction(f) => {
            return Err(DataError::Split { reason: format!("validation fraction {f} is not in [0, 1]") });
        }
    };
    let order = permutation(len, seed);
    let (val, train) = order.split_at(n_val.min(len));
    let (mut train, mut validation) = (train.to_vec(), val.to_vec());
    train.sort_unstable();
    validation.sort_unstable();
    Ok(TrainVal { train, validation })
}
