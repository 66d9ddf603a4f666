//! A tiling: a circular sequence in which every window of `w` consecutive
//! entries holds `w` distinct groups, built from scratch for given counts.
//!
//! The claim is incremental and searches for its rings; when its search
//! leaves conflicts (a leave that empties a rack changes every rack's share
//! and the period of the whole ring, and local moves cannot open the gaps
//! that needs), it falls back to this construction, which cannot fail where
//! its conditions hold, and then trims the moves it caused.
//!
//! The construction: with `R = floor(P / w)` rows, the first `P - R w` rows
//! `w + 1` long and the others `w` long, the groups are written column by
//! column (column 0 of every row, top to bottom, then column 1, ...),
//! largest group first, and the ring is read row by row.
//!
//! Why it holds, when there are more than `w` groups (or exactly `w`, each
//! `P / w`) and no group has more than `R` entries (and `R >= w`):
//! - two entries of a group in one column, on consecutive rows, are a row's
//!   length apart: at least `w`;
//! - groups of exactly `R` come first and fill whole columns, so every
//!   group that starts inside a column has at most `R - 1` entries: its
//!   run from row `a` of column `c` to row `b` of column `c + 1` ends at
//!   `b <= a - 2`, at least `2w - 1` positions before it starts;
//! - the last column only has cells on the long rows, which come first, so
//!   a run that ends there is at least a long row (`w + 1`) minus one apart;
//! - around the wrap, the last row's entry of a column comes a whole row
//!   before the first row's entry of the same or the next column.
//!
//! Exactly `w` groups on a ring `w` does not divide cannot keep every window
//! distinct; [`near_tile`] lays them out with `r (w - 1)` short windows for
//! `P = q w + r`, none two short (for 256 partitions `r = 1`: 2 windows
//! for N=3, 4 for N=5).
//!
//! Invariants: the output has `sum(counts)` entries and group `g` appears
//! exactly `counts[g]` times, whatever the inputs; windows are distinct
//! under the conditions above (checked by the caller, which keeps the better
//! ring either way).

/// True when `counts` meet the module's conditions, under which [`tile`]
/// leaves every window of `window` entries distinct.
pub(crate) fn holds(counts: &[u32], window: usize) -> bool {
    let total: u32 = counts.iter().sum();
    let rows = total / window.max(1) as u32;
    let groups = counts.iter().filter(|&&c| c > 0).count();
    let within_caps = counts.iter().all(|&c| c <= rows);
    let enough_groups = groups > window
        || groups == window && counts.iter().all(|&c| c == 0 || c * window as u32 == total);
    window >= 1 && rows as usize >= window && within_caps && enough_groups
}

/// The counts of exactly `window` groups that cannot tile the ring, and how
/// [`near_tile`] lays them out: `P = q w + r` with `0 < r`, the `r` groups
/// of `q + 1` entries and the others of `q`, and `q >= 2r` so that the
/// duplicated blocks stay apart.
pub(crate) fn near_tile_applies(counts: &[u32], window: usize) -> bool {
    let total: u32 = counts.iter().sum();
    let groups: Vec<u32> = counts.iter().copied().filter(|&c| c > 0).collect();
    if window < 2 || groups.len() != window {
        return false;
    }
    let (q, r) = (total / window as u32, total % window as u32);
    let larger = groups.iter().filter(|&&c| c == q + 1).count() as u32;
    r > 0 && q >= 2 * r && larger == r && groups.iter().all(|&c| c == q || c == q + 1)
}

/// Exactly `window` groups on a ring `window` does not divide (N racks,
/// or N nodes, on 256 partitions): no layout keeps every window distinct.
/// This one repeats the groups in blocks of `window`, in one order, and
/// gives each of the `r` groups with one entry more a second, adjacent
/// entry in one block, the `r` blocks spread round the ring. Each doubled
/// entry makes `window - 1` windows one group short; no window is two
/// short. `None` unless [`near_tile_applies`].
pub(crate) fn near_tile(counts: &[u32], window: usize) -> Option<Vec<usize>> {
    if !near_tile_applies(counts, window) {
        return None;
    }
    let total: u32 = counts.iter().sum();
    let (q, r) = (total / window as u32, total % window as u32);
    let order: Vec<usize> = (0..counts.len()).filter(|&g| counts[g] > 0).collect();
    let mut larger = order.iter().copied().filter(|&g| counts[g] == q + 1);
    let mut doubled_in: Vec<(u32, usize)> = Vec::with_capacity(r as usize);
    for k in 0..r {
        let group = larger.next().expect("r groups have one entry more");
        doubled_in.push((k * q / r, group));
    }
    let mut sequence = Vec::with_capacity(total as usize);
    for block in 0..q {
        let doubled = doubled_in
            .iter()
            .find(|&&(b, _)| b == block)
            .map(|&(_, g)| g);
        for &group in &order {
            sequence.push(group);
            if doubled == Some(group) {
                sequence.push(group);
            }
        }
    }
    assert_eq!(sequence.len(), total as usize, "every entry placed once");
    Some(sequence)
}

/// The groups of a circular sequence of `counts.iter().sum()` entries in
/// which group `g` appears `counts[g]` times and, under the module's
/// conditions, every `window` consecutive entries are distinct.
pub(crate) fn tile(counts: &[u32], window: usize) -> Vec<usize> {
    let total: usize = counts.iter().map(|&c| c as usize).sum();
    assert!(window >= 1, "a tiling needs a window of at least one");
    let rows = (total / window).max(1);
    let long_rows = total - rows * window.min(total);
    let row_len = |row: usize| window.min(total) + usize::from(row < long_rows);
    let mut row_start = vec![0usize; rows];
    for row in 1..rows {
        row_start[row] = row_start[row - 1] + row_len(row - 1);
    }
    // Cells in column-major order: column c exists on the rows long enough.
    let cells = (0..=window).flat_map(|column| {
        let row_start = &row_start;
        (0..rows)
            .filter(move |&row| column < row_len(row))
            .map(move |row| row_start[row] + column)
    });
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by_key(|&g| (std::cmp::Reverse(counts[g]), g));
    let entries = order
        .iter()
        .flat_map(|&g| std::iter::repeat_n(g, counts[g] as usize));
    let mut sequence = vec![usize::MAX; total];
    for (cell, group) in cells.zip(entries) {
        sequence[cell] = group;
    }
    assert!(
        sequence.iter().all(|&g| g != usize::MAX),
        "every position of the tiling is filled"
    );
    sequence
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claim::count_short_windows;

    /// Deterministic pseudo-random counts summing to `total`, each at most
    /// `total / window`.
    fn counts(total: u32, groups: usize, window: usize, seed: &mut u64) -> Option<Vec<u32>> {
        let cap = total / window as u32;
        for _ in 0..100 {
            let mut counts = vec![0u32; groups];
            for _ in 0..total {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let g = (*seed % groups as u64) as usize;
                counts[g] += 1;
            }
            if counts.iter().all(|&c| c <= cap) {
                return Some(counts);
            }
        }
        None
    }

    #[test]
    fn every_window_is_distinct_when_no_group_passes_its_cap() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut checked = 0;
        for total in [16u32, 64, 256, 1024] {
            for window in 1..=5usize {
                for extra in 1..=6usize {
                    let Some(counts) = counts(total, window + extra, window, &mut seed) else {
                        continue;
                    };
                    if !holds(&counts, window) {
                        continue;
                    }
                    let sequence = tile(&counts, window);
                    for (g, &count) in counts.iter().enumerate() {
                        let seen = sequence.iter().filter(|&&s| s == g).count();
                        assert_eq!(seen, count as usize, "{counts:?}: group {g}");
                    }
                    let short = count_short_windows(&sequence, window, window);
                    assert_eq!(short, 0, "total {total} window {window} {counts:?}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 100, "only {checked} cases had counts within caps");
    }

    #[test]
    fn the_conditions_are_checked_before_tiling() {
        assert!(holds(&[51, 51, 51, 35, 34, 34], 5));
        assert!(holds(&[64, 64, 64, 64], 4), "exactly w groups of P / w");
        assert!(!holds(&[52, 51, 51, 51, 51], 5), "5 groups cannot tile 256");
        assert!(!holds(&[52, 51, 51, 34, 34, 34], 5), "a group past P / w");
        assert!(!holds(&[128, 128], 3), "fewer groups than the window");
    }

    #[test]
    fn exactly_window_groups_on_a_ring_they_cannot_tile_leave_r_times_window_minus_one_short() {
        for (total, window) in [
            (256u32, 3usize),
            (256, 5),
            (65_536, 3),
            (65_536, 5),
            (1002, 4),
        ] {
            let (q, r) = (total / window as u32, total % window as u32);
            let counts: Vec<u32> = (0..window as u32).map(|g| q + u32::from(g < r)).collect();
            let sequence = near_tile(&counts, window).expect("applies");
            for (g, &count) in counts.iter().enumerate() {
                assert_eq!(sequence.iter().filter(|&&s| s == g).count(), count as usize);
            }
            let short = count_short_windows(&sequence, window, window);
            assert_eq!(
                short,
                r as usize * (window - 1),
                "total {total} window {window}"
            );
            assert_eq!(count_short_windows(&sequence, window, window - 1), 0);
        }
        assert!(near_tile(&[64, 64, 64, 64], 4).is_none(), "it tiles");
        assert!(
            near_tile(&[86, 85, 85, 0], 3).is_some(),
            "an empty group is no group"
        );
        assert!(near_tile(&[90, 83, 83], 3).is_none(), "uneven counts");
    }

    #[test]
    fn exactly_window_groups_of_equal_share_tile_the_ring() {
        for window in 1..=4usize {
            let counts = vec![(256 / window) as u32; window];
            let sequence = tile(&counts, window);
            assert_eq!(count_short_windows(&sequence, window, window), 0);
        }
    }

    #[test]
    fn the_largest_groups_fill_whole_columns() {
        // 3 groups at the cap of 256 / 5 = 51, the rest smaller.
        let counts = [51, 51, 51, 35, 34, 34];
        let sequence = tile(&counts, 5);
        assert_eq!(count_short_windows(&sequence, 5, 5), 0);
        assert_eq!(&sequence[..6], &[0, 1, 2, 3, 4, 5]);
    }
}
