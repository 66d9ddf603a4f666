//! A shard's hybrid logical clock.
//!
//! 48 bits of milliseconds since the Unix epoch, 16 bits of counter. Each
//! shard owns one (nothing shared between cores). It advances on every write
//! the shard stamps and on every version it receives, so it never issues the
//! same value twice and never falls behind a version it has seen.
//!
//! Invariant: successive `next()` values strictly increase.

#[derive(Debug)]
pub struct HybridClock {
    last: u64,
    now_ms: fn() -> u64,
}

fn system_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Default for HybridClock {
    fn default() -> HybridClock {
        HybridClock::new(system_now_ms)
    }
}

impl HybridClock {
    pub fn new(now_ms: fn() -> u64) -> HybridClock {
        HybridClock { last: 0, now_ms }
    }

    /// A new timestamp, greater than every one issued or observed before.
    pub fn next(&mut self) -> u64 {
        let physical = (self.now_ms)() << 16;
        self.last = if physical > self.last {
            physical
        } else {
            self.last + 1
        };
        self.last
    }

    /// Takes a version seen from elsewhere into account.
    pub fn observe(&mut self, hlc: u64) {
        self.last = self.last.max(hlc);
    }
}

/// The origin of versions a shard stamps: datacenter, node, shard.
pub fn origin(datacenter_id: u8, node_id: u16, shard: u8) -> u32 {
    (datacenter_id as u32) << 24 | (node_id as u32) << 8 | shard as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictly_increases_even_when_time_stands_still() {
        let mut clock = HybridClock::new(|| 1_000);
        let a = clock.next();
        let b = clock.next();
        assert!(b > a);
        clock.observe(b + 100);
        assert!(clock.next() > b + 100);
        assert_eq!(origin(1, 2, 3), 0x0100_0203);
    }
}
