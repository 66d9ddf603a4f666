//! What the glommio race tests share: a cheap random spin, and two CPUs to
//! put the racing sides on (with one CPU the races are not concurrent, and
//! the tests prove little).

use glommio::CpuSet;

/// Spins `count` pause instructions.
pub fn spin(count: u64) {
    for _ in 0..count {
        std::hint::spin_loop();
    }
}

/// The next value of a xorshift64 generator (state never zero).
pub fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Two distinct online CPUs, when there are two.
pub fn two_cpus() -> Option<(usize, usize)> {
    let mut cpus: Vec<usize> = CpuSet::online().ok()?.into_iter().map(|l| l.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    (cpus.len() >= 2).then(|| (cpus[0], cpus[1]))
}
