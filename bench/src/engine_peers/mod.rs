//! The engine comparison: Meridian's store against fjall, redb and LMDB.
//!
//! Every engine gets the same workload ([`Workload`]): the same 16-byte
//! keys in the same (random) order, the same 100-byte values, and the same
//! list of keys to read. Each engine runs its fastest documented path; its
//! [`Peer::settings`] line says which. The driver (`bin/engine_compare.rs`)
//! alternates the engines within each round and reports the median of the
//! rounds, because this machine's speed drifts by up to 2× between runs.
//!
//! Invariants:
//! - the timed loops do no allocation of their own beyond what the engine
//!   does: keys and read indices are generated before the clock starts;
//! - every read is checked (present, 100 bytes, the right value), so no
//!   engine is timed doing less than the others.

pub mod fjall_peer;
pub mod lmdb_peer;
pub mod meridian_peer;
pub mod redb_peer;

use std::path::Path;
use std::time::Duration;

/// Errors of a benchmark run: any engine's, boxed.
pub type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

pub const KEY_LEN: usize = 16;
pub const VALUE_LEN: usize = 100;

/// The keys, values and reads every engine is given.
#[derive(Debug)]
pub struct Workload {
    /// Distinct keys in insertion order (uniformly spread, not sorted).
    pub keys: Vec<[u8; KEY_LEN]>,
    /// Indices into `keys` to read, uniform at random.
    pub reads: Vec<u32>,
}

/// A 64-bit mix (splitmix64): distinct inputs give distinct outputs.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Key `index`: 8 mixed bytes (spreads keys over the key space) then the
/// index itself (keeps keys distinct).
pub fn key_of(index: u64) -> [u8; KEY_LEN] {
    let mut key = [0u8; KEY_LEN];
    key[..8].copy_from_slice(&mix64(index).to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Value of key `index`: the index, then a fixed filler.
pub fn value_of(index: u64) -> [u8; VALUE_LEN] {
    let mut value = [0x5A; VALUE_LEN];
    value[..8].copy_from_slice(&index.to_le_bytes());
    value
}

/// Checks a value read back for key `index`.
pub fn check_value(index: u64, value: &[u8]) -> BenchResult<()> {
    if value.len() != VALUE_LEN || value[..8] != index.to_le_bytes() {
        return Err(format!("key {index}: wrong value read back ({} bytes)", value.len()).into());
    }
    Ok(())
}

impl Workload {
    pub fn new(keys: usize, reads: usize, seed: u64) -> Workload {
        assert!(keys > 0 && keys <= u32::MAX as usize);
        Workload {
            keys: (0..keys as u64).map(key_of).collect(),
            reads: (0..reads as u64)
                .map(|i| (mix64(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407)) % keys as u64) as u32)
                .collect(),
        }
    }
}

/// What one engine measured in one round of the put/get phase.
#[derive(Clone, Debug, Default)]
pub struct PutGet {
    pub put_elapsed: Duration,
    pub get_elapsed: Duration,
    /// Meridian only: key directory bytes per key after the load, and the
    /// largest seen while loading (sampled every 10K puts).
    pub keydir_bytes_per_key: Option<(f64, f64)>,
}

/// One engine under comparison.
pub trait Peer {
    fn name(&self) -> &'static str;
    /// The settings it runs with, printed beside its figures.
    fn settings(&self) -> String;
    /// Loads every key of `workload` into a fresh store in `directory`
    /// (timed: puts without a sync per write), then reads `workload.reads`
    /// back from the warm store (timed).
    fn put_get(&self, directory: &Path, workload: &Workload) -> BenchResult<PutGet>;
}

/// Puts under sync: `groups` groups of `group_len` puts, each group made
/// durable (one fdatasync / one durable commit) before the next starts.
pub trait GroupCommitPeer {
    fn name(&self) -> &'static str;
    fn settings(&self) -> String;
    fn group_commit(
        &self,
        directory: &Path,
        workload: &Workload,
        groups: usize,
        group_len: usize,
    ) -> BenchResult<Duration>;
}

/// Samples of one figure over the rounds.
#[derive(Clone, Debug, Default)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut values = self.0.clone();
        values.sort_by(f64::total_cmp);
        values
    }

    /// The median (the mean of the middle two for an even count).
    pub fn median(&self) -> f64 {
        let values = self.sorted();
        assert!(!values.is_empty(), "median of no samples");
        let middle = values.len() / 2;
        if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        }
    }

    pub fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// Operations per second.
pub fn ops_per_s(operations: usize, elapsed: Duration) -> f64 {
    operations as f64 / elapsed.as_secs_f64().max(1e-9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_distinct_and_values_check() {
        let workload = Workload::new(10_000, 1_000, 7);
        let mut keys = workload.keys.clone();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10_000);
        assert!(workload.reads.iter().all(|&i| i < 10_000));
        assert!(check_value(5, &value_of(5)).is_ok());
        assert!(check_value(5, &value_of(6)).is_err());
    }

    #[test]
    fn median_min_max() {
        let samples = Samples(vec![3.0, 1.0, 2.0]);
        assert_eq!(
            (samples.median(), samples.min(), samples.max()),
            (2.0, 1.0, 3.0)
        );
        assert_eq!(Samples(vec![1.0, 4.0]).median(), 2.5);
    }
}
