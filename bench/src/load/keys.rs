//! Which key each request names: a fast random source, the uniform and
//! zipfian distributions, and the fixed-width key text.
//!
//! The zipfian generator is YCSB's (Gray et al., "Quickly generating
//! billion-record synthetic databases"), scrambled the way YCSB's
//! `ScrambledZipfianGenerator` does it, so the hot keys are spread over the
//! key space instead of being the lowest indexes (which would put them in
//! the same few partitions of a hash ring only by accident).
//!
//! Invariants:
//! - Every index drawn is below `key_count`.
//! - A key is exactly `key_bytes` long and distinct for distinct indexes.

/// YCSB's default skew.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// How keys are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with [`ZIPFIAN_THETA`], scrambled over the key space.
    Zipfian,
}

/// wyrand: small, fast, good enough to pick keys and operations.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator from a seed (any value).
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let product = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((product >> 64) ^ product) as u64
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[0, bound)`; `bound` must be at least 1.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }
}

/// Draws key indexes in `[0, key_count)`.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    key_count: u64,
    zipfian: Option<Zipfian>,
}

impl KeyChooser {
    /// A chooser over `key_count` keys (at least 1).
    pub fn new(key_count: u64, distribution: Distribution) -> KeyChooser {
        assert!(key_count > 0, "key_count must be at least 1");
        let zipfian = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipfian => Some(Zipfian::new(key_count, ZIPFIAN_THETA)),
        };
        KeyChooser { key_count, zipfian }
    }

    /// The next key index.
    pub fn next(&self, rng: &mut Rng) -> u64 {
        let index = match &self.zipfian {
            None => rng.below(self.key_count),
            Some(zipfian) => fnv1a64(zipfian.next(rng)) % self.key_count,
        };
        debug_assert!(index < self.key_count);
        index
    }
}

#[derive(Debug, Clone)]
struct Zipfian {
    items: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    fn new(items: u64, theta: f64) -> Zipfian {
        let zeta = |n: u64| (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zeta_n = zeta(items);
        let zeta_2 = zeta(2.min(items));
        let n = items as f64;
        let eta = if items < 2 {
            0.0
        } else {
            (1.0 - (2.0 / n).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        };
        Zipfian {
            items: n,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    /// A rank in `[0, items)`; rank 0 is the most popular.
    fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.items as u64 - 1);
        }
        let rank = (self.items * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.items as u64 - 1)
    }
}

fn fnv1a64(value: u64) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Writes key `index` as `key_bytes` bytes: `k` then the zero-padded decimal.
///
/// Panics if `key_bytes` is too short for the index (checked once up front
/// by [`key_bytes_min`]).
pub fn write_key(index: u64, out: &mut [u8]) {
    assert!(!out.is_empty());
    out[0] = b'k';
    let mut rest = index;
    for slot in out[1..].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    assert_eq!(rest, 0, "key too short for index {index}");
}

/// The shortest key that holds every index below `key_count`.
pub fn key_bytes_min(key_count: u64) -> usize {
    1 + key_count.saturating_sub(1).max(1).ilog10() as usize + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_fixed_width_and_distinct() {
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        write_key(7, &mut a);
        write_key(70, &mut b);
        assert_eq!(&a, b"k000000000000007");
        assert_ne!(a, b);
        assert_eq!(key_bytes_min(1_000_000), 7);
        let mut tight = [0u8; 7];
        write_key(999_999, &mut tight);
        assert_eq!(&tight, b"k999999");
    }

    #[test]
    fn zipfian_is_skewed_and_in_range() {
        let chooser = KeyChooser::new(10_000, Distribution::Zipfian);
        let mut rng = Rng::new(1);
        let mut counts = vec![0u32; 10_000];
        for _ in 0..200_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top_ten: u32 = counts[..10].iter().sum();
        assert!(top_ten > 200_000 / 5, "top 10 keys got only {top_ten}");
    }

    #[test]
    fn uniform_covers_the_space() {
        let chooser = KeyChooser::new(100, Distribution::Uniform);
        let mut rng = Rng::new(2);
        let mut seen = [false; 100];
        for _ in 0..10_000 {
            seen[chooser.next(&mut rng) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }
}
