//! The claim: which node owns each partition.
//!
//! Goal, in order: (1) any N consecutive partitions sit on N distinct nodes,
//! and on N distinct racks when racks are configured; (2) a join or a leave
//! moves close to the minimum number of partitions; (3) every node owns
//! `partitions / nodes` partitions, give or take one.
//!
//! Why it is built this way: a claim computed from scratch (Riak's
//! "sequential" claim) is perfectly spread but moves most of the ring on
//! every membership change. This claim is incremental instead: it starts from
//! the current target owners and only moves what must move.
//!
//! 1. *Targets.* Each eligible node's share is `partitions / nodes`, except
//!    that a rack (a node without a rack is a rack of its own) can hold at
//!    most `partitions / window` and stay a window apart: a rack whose
//!    members' shares would pass that is capped, and the excess is spread
//!    over the others (water-filling). The remainder goes to the nodes that
//!    own most today, so fewer move.
//! 2. *Shedding.* Partitions of a node that is going away (holes), and the
//!    surplus of nodes above their share, go to nodes below their share,
//!    visiting partitions in bit-reversed order (a low-discrepancy sequence:
//!    0, P/2, P/4, 3P/4, ...) so that a joining node's partitions spread
//!    evenly round the ring. A partition is only given to a node that
//!    conflicts with nothing within N-1 positions on either side. Partitions
//!    that are in conflict today are offered first, so the move fixes them.
//! 3. *Repair.* While some partition still conflicts with a neighbour, it is
//!    handed to a node without conflict there (back to its original owner
//!    when possible), or swapped with a partition elsewhere when that lowers
//!    the number of conflicts. Bounded by a number of rounds and of swaps
//!    tried (`REPAIR_SWAP_TRIES_MAX`); re-tiling (step 6) takes over from
//!    there on large rings. Small rings
//!    still in conflict get an exact dynamic program (step 4).
//! 5. *Refine.* Unless the ring is free of conflict and moves no more than
//!    the minimum (every partition of a leaver, every partition above a
//!    target), a deterministic simulated annealing over reassignments and
//!    swaps lowers, in order, conflicts, then moves plus load off target.
//!    This finds the chains of moves that racks need (a rack gaining a
//!    partition needs a gap of 2N in its positions, which greedy shedding
//!    cannot open). It keeps the best ring seen; bounded by
//!    `REFINE_PROPOSALS_PER_PARTITION`.
//! 6. *Re-tile.* If conflicts remain, the ring is built from scratch by
//!    [`crate::tiling`], which cannot leave a conflict when there are more
//!    racks than N and none passes its cap, turned (and its racks of equal
//!    count renamed) to agree most with the current ring, and refined again
//!    to trim its moves; it is kept only if
//!    it has no conflict left. Exactly N racks (or nodes) on a ring N does
//!    not divide get the near-tiling instead, kept only if the ring has
//!    more than twice its conflicts. This is what a leave that empties a rack
//!    needs: every rack's share and the period of the ring change, and no
//!    chain of local moves found the new layout (CI found such walks twice).
//!    Such a leave can move much of the ring (66 of 256 for a leaver owning
//!    19, N=5, 7 racks to 6; 123 before the renaming; up to 252 in 4,000
//!    random walks, median 42).
//!
//! "Conflict" is measured with windows `min(N, nodes)` for nodes and
//! `min(N, racks)` for racks, so with fewer nodes (racks) than N the claim
//! still spreads them as far as possible: every window of N partitions holds
//! all of them wherever the ring size allows.
//!
//! Limits (property-tested in `tests/claim.rs` and `tests/claim_racks.rs`):
//! with at least N+1 nodes the
//! windows are always distinct. With exactly N nodes they can be only when N
//! divides the ring size (three nodes cannot tile 256 slots in threes): the
//! wrap-around then leaves a few windows with N-1 distinct nodes. Racks are
//! honoured as far as their sizes allow: a rack holding more than `1/N` of
//! the nodes cannot keep its share and stay `N` apart (its nodes get less).
//! With N racks or fewer each rack holds exactly `partitions / racks`.
//! Movement with racks is within 1.25 × the ideal when a cluster grows
//! with nodes dealt over N+1 or N+2 racks, save three measured sizes; after
//! random joins and leaves it is within 2 × (join) and 5 × (leave), except
//! for a leave that empties a rack, which re-tiles (step 6) and may move
//! most of the ring.
//!
//! Invariants:
//! - the output has one eligible owner per partition;
//! - a partition owned by an eligible node moves only to reach a target,
//!   to fix a conflict, or in a conflict-lowering swap;
//! - the total number of conflicts never grows during repair or refining;
//! - targets sum to the ring, and no rack's targets pass
//!   `partitions / window` when the racks can hold the ring;
//! - the claim is a function of its inputs (refining uses a generator
//!   seeded from the current owners).

use std::collections::BTreeMap;

use crate::ring::NodeId;
use crate::tiling;

/// A node that may own partitions after the claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimant<'a> {
    pub id: NodeId,
    pub rack: Option<&'a str>,
}

/// Bound on the rounds of repair.
const REPAIR_ROUNDS_MAX: usize = 64;

/// The next owners of a ring whose target owners are `owners` and whose
/// owners from now on are `nodes` (sorted by id, non-empty). Nodes that own
/// partitions in `owners` but are not in `nodes` lose all of them.
pub fn claim(owners: &[NodeId], nodes: &[Claimant<'_>], replicas: u8) -> Vec<NodeId> {
    assert!(!nodes.is_empty(), "claim needs at least one node");
    assert!(owners.len().is_power_of_two());
    let mut layout = Layout::new(owners, nodes, replicas);
    layout.set_targets();
    layout.shed();
    layout.anchor = layout.owners.clone();
    layout.repair();
    if layout.violations() > 0 {
        layout.solve_exactly();
    }
    layout.refine();
    if layout.violations() > 0 {
        layout.retile();
    }
    let claimed: Vec<NodeId> = layout
        .owners
        .iter()
        .map(|&o| layout.ids[o as usize])
        .collect();
    debug_assert!(claimed.iter().all(|id| nodes.iter().any(|n| n.id == *id)));
    claimed
}

/// The number of windows of `replicas` consecutive partitions (wrapping)
/// whose owners are not all distinct, given how many distinct owners exist.
/// Zero on a ring whose claim succeeded; used by tests and diagnostics.
pub fn window_violations(owners: &[NodeId], replicas: u8) -> usize {
    let distinct_nodes = owners
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let window = usize::from(replicas).min(distinct_nodes);
    count_short_windows(owners, usize::from(replicas), window)
}

/// Windows of `length` consecutive entries of `keys` (wrapping) holding
/// fewer than `wanted` distinct values.
pub fn count_short_windows<T: PartialEq>(keys: &[T], length: usize, wanted: usize) -> usize {
    let count = keys.len();
    (0..count)
        .filter(|&start| {
            let mut seen: Vec<&T> = Vec::with_capacity(length);
            for step in 0..length.min(count) {
                let key = &keys[(start + step) % count];
                if !seen.contains(&key) {
                    seen.push(key);
                }
            }
            seen.len() < wanted.min(count)
        })
        .count()
}

/// The claim's working state, with nodes renamed to dense indices.
struct Layout {
    ids: Vec<NodeId>,
    rack: Vec<u32>,
    eligible: Vec<bool>,
    original: Vec<u16>,
    /// The owners after shedding: the moves a plan means to make.
    anchor: Vec<u16>,
    owners: Vec<u16>,
    load: Vec<u32>,
    target: Vec<u32>,
    node_window: usize,
    rack_window: usize,
}

impl Layout {
    fn new(owners: &[NodeId], nodes: &[Claimant<'_>], replicas: u8) -> Layout {
        let mut ids: Vec<NodeId> = nodes
            .iter()
            .map(|n| n.id)
            .chain(owners.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let index = |id: NodeId| ids.binary_search(&id).expect("collected above") as u16;
        let mut rack_names: BTreeMap<&str, u32> = BTreeMap::new();
        let mut rack = Vec::with_capacity(ids.len());
        let mut eligible = vec![false; ids.len()];
        for (i, &id) in ids.iter().enumerate() {
            let node = nodes.iter().find(|n| n.id == id);
            eligible[i] = node.is_some();
            // A node without a rack is a rack of its own.
            let name = node.and_then(|n| n.rack);
            let next = ids.len() as u32 + rack_names.len() as u32;
            rack.push(match name {
                Some(name) => *rack_names.entry(name).or_insert(next),
                None => i as u32,
            });
        }
        let dense: Vec<u16> = owners.iter().map(|&o| index(o)).collect();
        let mut load = vec![0u32; ids.len()];
        for &o in &dense {
            load[o as usize] += 1;
        }
        let replicas = usize::from(replicas);
        let node_count = nodes.len();
        let racks_configured = nodes.iter().any(|n| n.rack.is_some());
        let rack_count = {
            let mut racks: Vec<u32> = (0..ids.len())
                .filter(|&i| eligible[i])
                .map(|i| rack[i])
                .collect();
            racks.sort_unstable();
            racks.dedup();
            racks.len()
        };
        Layout {
            ids,
            rack,
            eligible,
            original: dense.clone(),
            anchor: dense.clone(),
            owners: dense,
            load,
            target: Vec::new(),
            node_window: replicas.min(node_count),
            rack_window: if racks_configured {
                replicas.min(rack_count)
            } else {
                0
            },
        }
    }

    fn len(&self) -> usize {
        self.owners.len()
    }

    /// Conflicts of `who` placed at `partition` with the owners within the
    /// windows on either side. Holes (owners going away) conflict with
    /// nothing.
    fn conflicts(&self, partition: usize, who: u16) -> u32 {
        let count = self.len();
        let reach = self.node_window.max(self.rack_window);
        let mut conflicts = 0;
        for distance in 1..reach {
            for q in [
                (partition + distance) % count,
                (partition + count - distance) % count,
            ] {
                let other = self.owners[q];
                if !self.eligible[other as usize] {
                    continue;
                }
                if distance < self.node_window && other == who {
                    conflicts += 1;
                }
                if distance < self.rack_window
                    && self.rack[other as usize] == self.rack[who as usize]
                {
                    conflicts += 1;
                }
            }
        }
        conflicts
    }

    fn assign(&mut self, partition: usize, who: u16) {
        let previous = self.owners[partition];
        self.load[previous as usize] -= 1;
        self.load[who as usize] += 1;
        self.owners[partition] = who;
    }

    /// Even shares, except where a rack (or a node) cannot hold its share
    /// and stay `window` apart: it is capped at `partitions / window` and
    /// the excess is spread over the others. Remainders go to the nodes
    /// owning most today, so fewer move.
    fn set_targets(&mut self) {
        let count = self.len();
        let nodes: Vec<usize> = (0..self.ids.len()).filter(|&i| self.eligible[i]).collect();
        let rack_cap = count / self.rack_window.max(1);
        let node_cap = count / self.node_window.max(1);
        let members = |i: usize| {
            nodes
                .iter()
                .filter(|&&j| self.rack[j] == self.rack[i])
                .count()
        };
        let share_at = |share: f64, i: usize| {
            let rack_share = if self.rack_window > 0 {
                rack_cap as f64 / members(i) as f64
            } else {
                f64::INFINITY
            };
            share.min(node_cap as f64).min(rack_share)
        };
        // Bisect the uncapped share so the capped shares sum to the ring.
        let (mut low, mut high) = (0.0f64, count as f64);
        for _ in 0..64 {
            let middle = (low + high) / 2.0;
            if nodes.iter().map(|&i| share_at(middle, i)).sum::<f64>() < count as f64 {
                low = middle;
            } else {
                high = middle;
            }
        }
        self.target = vec![0; self.ids.len()];
        let mut exact = vec![0f64; self.ids.len()];
        for &i in &nodes {
            exact[i] = share_at(high, i);
            self.target[i] = (exact[i] + 1e-9).floor() as u32;
        }
        let mut order = nodes.clone();
        order.sort_by(|&a, &b| {
            let fraction = |i: usize| exact[i] - f64::from(self.target[i]);
            fraction(b)
                .partial_cmp(&fraction(a))
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(self.load[b].cmp(&self.load[a]))
                .then(a.cmp(&b))
        });
        let mut missing = count - self.target.iter().sum::<u32>() as usize;
        // First within the caps; then, where the caps cannot hold the ring
        // (the racks and nodes are too few to all stay apart), beyond them.
        for within_caps in [true, false] {
            for &i in order
                .iter()
                .cycle()
                .take(if within_caps { order.len() } else { missing })
            {
                if missing == 0 {
                    break;
                }
                let rack_load: u32 = nodes
                    .iter()
                    .filter(|&&j| self.rack[j] == self.rack[i])
                    .map(|&j| self.target[j])
                    .sum();
                let room = (self.target[i] as usize) < node_cap
                    && (self.rack_window == 0 || (rack_load as usize) < rack_cap);
                if room || !within_caps {
                    self.target[i] += 1;
                    missing -= 1;
                }
            }
        }
        assert_eq!(self.target.iter().sum::<u32>() as usize, count);
    }

    fn is_hole(&self, partition: usize) -> bool {
        !self.eligible[self.owners[partition] as usize]
    }

    fn has_surplus(&self, partition: usize) -> bool {
        let owner = self.owners[partition] as usize;
        self.load[owner] > self.target[owner]
    }

    /// The node below its share, without conflict at `partition`, that is
    /// furthest below its share.
    fn receiver(&self, partition: usize) -> Option<u16> {
        (0..self.ids.len() as u16)
            .filter(|&y| {
                self.eligible[y as usize] && self.load[y as usize] < self.target[y as usize]
            })
            .filter(|&y| y != self.owners[partition] && self.conflicts(partition, y) == 0)
            .max_by_key(|&y| {
                (
                    self.target[y as usize] - self.load[y as usize],
                    std::cmp::Reverse(y),
                )
            })
    }

    /// Step 2 of the module doc: holes and surpluses go to nodes below
    /// their share; holes left over go to the least bad node.
    fn shed(&mut self) {
        let order = bit_reversed_order(self.len());
        for conflicting_only in [true, false] {
            for &p in &order {
                let owner = self.owners[p];
                if !self.is_hole(p) && !self.has_surplus(p) {
                    continue;
                }
                if conflicting_only && !self.is_hole(p) && self.conflicts(p, owner) == 0 {
                    continue;
                }
                if let Some(y) = self.receiver(p) {
                    self.assign(p, y);
                }
            }
        }
        for &p in &order {
            if self.is_hole(p) {
                let best = (0..self.ids.len() as u16)
                    .filter(|&y| self.eligible[y as usize])
                    .min_by_key(|&y| {
                        let fill = u64::from(self.load[y as usize]) * 1024
                            / u64::from(self.target[y as usize].max(1));
                        (self.conflicts(p, y), fill, y)
                    })
                    .expect("at least one eligible node");
                self.assign(p, best);
            }
        }
        debug_assert!((0..self.len()).all(|p| !self.is_hole(p)));
    }

    /// Step 3 of the module doc.
    fn repair(&mut self) {
        if self.node_window.max(self.rack_window) <= 1 {
            return;
        }
        // Swap partners, in the same spread-out order for every swap, at
        // most `SWAP_CANDIDATES_MAX` of them: a repair stays linear in the
        // ring size. Scanning the whole ring per conflict was quadratic: a
        // join to exactly N nodes of a 65,536-partition ring took ~100 s on
        // the claimant, 1.2 s now (256 partitions: unchanged, all tried).
        let order = bit_reversed_order(self.len());
        let candidates = &order[..order.len().min(SWAP_CANDIDATES_MAX)];
        let mut budget = REPAIR_SWAP_TRIES_MAX;
        for _round in 0..REPAIR_ROUNDS_MAX {
            let bad: Vec<usize> = (0..self.len())
                .filter(|&p| self.conflicts(p, self.owners[p]) > 0)
                .collect();
            if bad.is_empty() {
                return;
            }
            let mut improved = false;
            for p in bad {
                let current = self.conflicts(p, self.owners[p]);
                if current == 0 {
                    continue;
                }
                improved |=
                    self.reassign(p, current) || self.swap(p, current, candidates, &mut budget);
            }
            if !improved || budget == 0 {
                return;
            }
        }
    }

    /// Hands `partition` to a node with fewer conflicts there that is not
    /// above its share; its original owner first.
    fn reassign(&mut self, partition: usize, current: u32) -> bool {
        let owner = self.owners[partition];
        let original = self.original[partition];
        let best = (0..self.ids.len() as u16)
            .filter(|&y| y != owner && self.eligible[y as usize])
            .filter(|&y| self.load[y as usize] <= self.target[y as usize])
            .map(|y| {
                (
                    self.conflicts(partition, y),
                    y != original,
                    self.load[y as usize],
                    y,
                )
            })
            .filter(|&(conflicts, ..)| conflicts < current)
            .min();
        match best {
            Some((.., y)) => {
                self.assign(partition, y);
                true
            }
            None => false,
        }
    }

    /// Swaps the owners of `partition` and another partition when that
    /// lowers the conflicts of the two (and so of the ring).
    fn swap(
        &mut self,
        partition: usize,
        current: u32,
        candidates: &[usize],
        budget: &mut usize,
    ) -> bool {
        let owner = self.owners[partition];
        for &q in candidates {
            let other = self.owners[q];
            if other == owner {
                continue;
            }
            if *budget == 0 {
                return false;
            }
            *budget -= 1;
            let before = current + self.conflicts(q, other);
            self.owners[partition] = other;
            self.owners[q] = owner;
            let after = self.conflicts(partition, other) + self.conflicts(q, owner);
            if after < before {
                return true;
            }
            self.owners[partition] = owner;
            self.owners[q] = other;
        }
        false
    }
}

/// Partitions tried as swap partners for one conflicting partition.
const SWAP_CANDIDATES_MAX: usize = 512;
/// Swaps tried in one repair, all conflicting partitions and rounds
/// together. A ring of 256 partitions never reaches it (at most 256 × 256
/// per round, 64 rounds); a large ring with most of its partitions in
/// conflict (a leave that empties a rack of a 65,536-partition ring) stops
/// here after about half a second instead of running for minutes, and
/// re-tiling (step 6) removes what is left.
const REPAIR_SWAP_TRIES_MAX: usize = 1 << 23;

/// Bound on the dynamic program's table: positions × states.
const EXACT_TABLE_ENTRIES_MAX: usize = 1 << 23;

impl Layout {
    fn violations(&self) -> u32 {
        (0..self.len())
            .map(|p| self.conflicts(p, self.owners[p]))
            .sum()
    }

    /// Step 4 of the module doc: the valid ring closest to the current one,
    /// by dynamic programming over the last `window - 1` owners. Only small
    /// clusters get here (local repair handles large ones), and the table
    /// is bounded, so this is skipped when it would not fit.
    fn solve_exactly(&mut self) {
        let nodes: Vec<u16> = (0..self.ids.len() as u16)
            .filter(|&y| self.eligible[y as usize])
            .collect();
        let window = self.node_window.max(self.rack_window);
        let digits = window - 1;
        let base = nodes.len();
        let Some(states) = base.checked_pow(digits as u32) else {
            return;
        };
        let count = self.len();
        if digits == 0 || count <= digits || states.saturating_mul(count) > EXACT_TABLE_ENTRIES_MAX
        {
            return;
        }
        let top = states / base; // weight of the oldest digit
        let compatible = |older: u16, newer: u16, distance: usize| {
            !(distance < self.node_window && older == newer
                || distance < self.rack_window
                    && self.rack[older as usize] == self.rack[newer as usize])
        };
        // The digits of a state, oldest first, as node indices.
        let unpack = |mut state: usize| {
            let mut symbols = vec![0u16; digits];
            for slot in symbols.iter_mut().rev() {
                *slot = nodes[state % base];
                state /= base;
            }
            symbols
        };
        let cost = |p: usize, y: u16| {
            2 * u32::from(y != self.anchor[p]) + u32::from(y != self.original[p])
        };
        // Start: the first `digits` partitions, kept as they are when valid.
        let mut start = Vec::with_capacity(digits);
        for p in 0..digits {
            let pick = std::iter::once(self.owners[p])
                .chain(nodes.iter().copied())
                .find(|&y| {
                    self.eligible[y as usize]
                        && start
                            .iter()
                            .enumerate()
                            .all(|(i, &x)| compatible(x, y, p - i))
                });
            match pick {
                Some(y) => start.push(y),
                None => return,
            }
        }
        let position = |y: u16| nodes.binary_search(&y).expect("eligible node");
        let start_state = start.iter().fold(0, |state, &y| state * base + position(y));
        let start_cost: u32 = start.iter().enumerate().map(|(p, &y)| cost(p, y)).sum();
        let mut best = vec![u32::MAX; states];
        best[start_state] = start_cost;
        let mut dropped = vec![u8::MAX; states * count];
        for p in digits..count {
            let mut next = vec![u32::MAX; states];
            for (state, &so_far) in best.iter().enumerate() {
                if so_far == u32::MAX {
                    continue;
                }
                let recent = unpack(state);
                for (digit, &y) in nodes.iter().enumerate() {
                    if !recent
                        .iter()
                        .enumerate()
                        .all(|(i, &x)| compatible(x, y, digits - i))
                    {
                        continue;
                    }
                    let following = (state % top) * base + digit;
                    let total = so_far + cost(p, y);
                    if total < next[following] {
                        next[following] = total;
                        dropped[p * states + following] = (state / top) as u8;
                    }
                }
            }
            best = next;
        }
        // Close the circle: windows across the wrap count as violations,
        // so a ring that cannot close cleanly gets the fewest.
        let wrap_violations = |state: usize| {
            let tail = unpack(state);
            let mut violations = 0u32;
            for (i, &x) in tail.iter().enumerate() {
                for (j, &y) in start.iter().enumerate() {
                    violations += u32::from(!compatible(x, y, digits - i + j));
                }
            }
            violations
        };
        let chosen = (0..states)
            .filter(|&s| best[s] != u32::MAX)
            .min_by_key(|&s| (wrap_violations(s), best[s]));
        let Some(mut state) = chosen else { return };
        if wrap_violations(state) * 2 >= self.violations() {
            return; // no better than the repair's result
        }
        let mut owners = self.owners.clone();
        for p in (digits..count).rev() {
            owners[p] = nodes[state % base];
            let oldest = usize::from(dropped[p * states + state]);
            state = oldest * top + state / base;
        }
        owners[..digits].copy_from_slice(&start);
        for (p, &y) in owners.iter().enumerate() {
            if self.owners[p] != y {
                self.assign(p, y);
            }
        }
    }
}

/// Rotations of a tiling tried against the current ring: all of them on a
/// ring of up to this many partitions, this many spread evenly beyond (a
/// ring of 65,536 partitions then costs about 67M comparisons).
const RETILE_ROTATIONS_MAX: usize = 1024;

impl Layout {
    /// Step 6 of the module doc: a ring built from scratch by
    /// [`tiling::tile`] over the racks' targets (a node without a rack is a
    /// rack of its own), turned to agree most with the current ring, its
    /// racks' partitions dealt to their nodes (the partition's owner kept
    /// where it is a member with room), then refined to trim moves. Kept
    /// only if it has no conflict at all: it may move most of the ring,
    /// which is worth it to put every window on distinct racks, not to
    /// trade some short windows for fewer (N racks cannot tile a ring whose
    /// size N does not divide, whatever the claim).
    fn retile(&mut self) {
        let count = self.len();
        let window = if self.rack_window > 0 {
            self.rack_window
        } else {
            self.node_window
        };
        if window <= 1 {
            return;
        }
        let nodes: Vec<u16> = (0..self.ids.len() as u16)
            .filter(|&y| self.eligible[y as usize])
            .collect();
        let mut racks: Vec<u32> = nodes.iter().map(|&y| self.rack[y as usize]).collect();
        racks.sort_unstable();
        racks.dedup();
        let rack_index = |y: u16| racks.binary_search(&self.rack[y as usize]).ok();
        let mut rack_counts = vec![0u32; racks.len()];
        for &y in &nodes {
            rack_counts[rack_index(y).expect("an eligible node's rack")] += self.target[y as usize];
        }
        // Exactly N racks (or nodes) on a ring N does not divide cannot be
        // free of conflict: their near-tiling has the fewest short windows.
        let sequence = if tiling::holds(&rack_counts, window) {
            tiling::tile(&rack_counts, window)
        } else if let Some(near) = tiling::near_tile(&rack_counts, window) {
            near
        } else {
            // A rack past its cap: no layout helps. Keep the incremental
            // ring rather than pay for one.
            return;
        };
        // The rotation, and the naming of the tiling's racks (among racks of
        // equal count, any may take another's places), whose racks agree
        // with the most current owners.
        let current: Vec<Option<usize>> = self
            .original
            .iter()
            .map(|&o| self.eligible[o as usize].then(|| rack_index(o)).flatten())
            .collect();
        let step = count.div_ceil(RETILE_ROTATIONS_MAX).max(1);
        let (_, rotation, naming) = (0..count)
            .step_by(step)
            .map(|k| {
                let (agree, naming) = name_racks(&sequence, k, &current, &rack_counts);
                (agree, k, naming)
            })
            .max_by_key(|&(agree, k, _)| (agree, std::cmp::Reverse(k)))
            .expect("a ring has partitions");
        let mut members: Vec<Vec<u16>> = vec![Vec::new(); racks.len()];
        for &y in &nodes {
            members[rack_index(y).expect("an eligible node's rack")].push(y);
        }
        let mut room: Vec<u32> = self.target.clone();
        let mut owners = vec![u16::MAX; count];
        for p in 0..count {
            let rack = naming[sequence[(p + rotation) % count]];
            let clashes = |y: u16| {
                (1..self.node_window)
                    .any(|d| owners[(p + count - d) % count] == y || owners[(p + d) % count] == y)
            };
            let pick = members[rack]
                .iter()
                .copied()
                .filter(|&y| room[y as usize] > 0)
                .max_by_key(|&y| {
                    (
                        !clashes(y),
                        y == self.original[p],
                        room[y as usize],
                        std::cmp::Reverse(y),
                    )
                })
                .expect("a rack's targets sum to its entries in the tiling");
            room[pick as usize] -= 1;
            owners[p] = pick;
        }
        let incremental = (self.violations(), self.owners.clone());
        for (p, &y) in owners.iter().enumerate() {
            if self.owners[p] != y {
                self.assign(p, y);
            }
        }
        let violations = self.violations();
        // A near-tiling replaces the ring only when the ring has more than
        // twice its conflicts: it moves most of the ring, not worth it for a
        // short window or two.
        if violations > 0 && incremental.0 <= 2 * violations {
            for (p, &y) in incremental.1.iter().enumerate() {
                if self.owners[p] != y {
                    self.assign(p, y);
                }
            }
            return;
        }
        self.refine();
    }
}

/// Which rack takes each of the tiling's racks once it is turned by
/// `rotation`: a bijection between racks of equal count, chosen greedily by
/// the partitions where the tiling would keep the current rack; and how
/// many partitions then keep it.
fn name_racks(
    sequence: &[usize],
    rotation: usize,
    current: &[Option<usize>],
    counts: &[u32],
) -> (usize, Vec<usize>) {
    let racks = counts.len();
    let count = sequence.len();
    let mut agree = vec![0usize; racks * racks];
    for (p, &now) in current.iter().enumerate() {
        if let Some(now) = now {
            agree[sequence[(p + rotation) % count] * racks + now] += 1;
        }
    }
    let mut pairs: Vec<(usize, usize, usize)> = (0..racks)
        .flat_map(|tiled| (0..racks).map(move |now| (tiled, now)))
        .filter(|&(tiled, now)| counts[tiled] == counts[now])
        .map(|(tiled, now)| (agree[tiled * racks + now], tiled, now))
        .collect();
    pairs.sort_unstable_by(|a, b| b.cmp(a));
    let mut naming = vec![usize::MAX; racks];
    let mut taken = vec![false; racks];
    let mut kept = 0;
    for (agreeing, tiled, now) in pairs {
        if naming[tiled] == usize::MAX && !taken[now] {
            naming[tiled] = now;
            taken[now] = true;
            kept += agreeing;
        }
    }
    assert!(
        naming.iter().all(|&now| now != usize::MAX),
        "racks of equal count pair up"
    );
    (kept, naming)
}

/// 0, P/2, P/4, 3P/4, ...: every partition once, spread evenly at every
/// prefix.
fn bit_reversed_order(count: usize) -> Vec<usize> {
    debug_assert!(count.is_power_of_two());
    let bits = count.trailing_zeros();
    if bits == 0 {
        return vec![0];
    }
    (0..count)
        .map(|i| (i as u32).reverse_bits() as usize >> (32 - bits))
        .collect()
}

/// Bound on the proposals of [`Layout::refine`], per partition.
const REFINE_PROPOSALS_PER_PARTITION: usize = 150;
/// Bound on the proposals of one [`Layout::refine`]: a plan runs on the
/// claimant's shard, so even a ring of 65,536 partitions is refined in
/// bounded time (about a tenth of a second).
const REFINE_PROPOSALS_MAX: usize = 200_000;

/// Weights of [`Layout::cost`]: a conflict outweighs any number of moves
/// (one partition's windows hold at most `2 (N - 1)` of them); a load off
/// its target by more than one costs more than the move that fixes it.
const COST_CONFLICT: i64 = 1 << 20;
const COST_LOAD_FAR: i64 = 8;
const COST_LOAD_NEAR: i64 = 2;
const COST_MOVE: i64 = 2;

impl Layout {
    fn moves(&self) -> usize {
        (0..self.len())
            .filter(|&p| self.owners[p] != self.original[p])
            .count()
    }

    /// The fewest moves that reach the targets: every partition of a node
    /// going away, and every partition above a node's target.
    fn moves_min(&self) -> usize {
        let mut held = vec![0u32; self.ids.len()];
        for &o in &self.original {
            held[o as usize] += 1;
        }
        (0..self.ids.len())
            .map(|i| {
                if self.eligible[i] {
                    held[i].saturating_sub(self.target[i]) as usize
                } else {
                    held[i] as usize
                }
            })
            .sum()
    }

    fn load_cost(&self, node: usize) -> i64 {
        let off = (i64::from(self.load[node]) - i64::from(self.target[node])).abs();
        COST_LOAD_NEAR * off + COST_LOAD_FAR * (off - 1).max(0)
    }

    fn move_cost(&self, partition: usize, who: u16) -> i64 {
        COST_MOVE * i64::from(who != self.original[partition])
    }

    /// Conflicts and moves of the partitions whose windows contain
    /// `partition`.
    fn local_cost(&self, partitions: &[usize]) -> i64 {
        let count = self.len();
        let reach = self.node_window.max(self.rack_window).max(1);
        let mut seen: Vec<usize> = Vec::with_capacity(partitions.len() * (2 * reach - 1));
        for &p in partitions {
            for d in 0..2 * reach - 1 {
                seen.push((p + count + d + 1 - reach) % count);
            }
        }
        // Sorted, then deduplicated: linear-logarithmic even for the whole
        // ring (a `contains` per push would be quadratic).
        seen.sort_unstable();
        seen.dedup();
        seen.iter()
            .map(|&q| COST_CONFLICT * i64::from(self.conflicts(q, self.owners[q])))
            .sum::<i64>()
            + partitions
                .iter()
                .map(|&p| self.move_cost(p, self.owners[p]))
                .sum::<i64>()
    }

    /// Step 5: simulated annealing over single reassignments and swaps,
    /// minimising conflicts, then moves and load off target together.
    /// Keeps the best ring seen, so it never ends worse than it began.
    fn refine(&mut self) {
        let count = self.len();
        let nodes: Vec<u16> = (0..self.ids.len() as u16)
            .filter(|&y| self.eligible[y as usize])
            .collect();
        if nodes.len() < 2 || self.violations() == 0 && self.moves() <= self.moves_min() {
            return;
        }
        // Counts each conflict once per side, as the deltas below do.
        let mut cost: i64 = self.local_cost(&(0..count).collect::<Vec<_>>())
            + (0..self.ids.len()).map(|n| self.load_cost(n)).sum::<i64>();
        let mut best = (cost, self.owners.clone());
        let mut random = SplitMix(
            self.original
                .iter()
                .fold(0x9e37_79b9, |h, &o| h.rotate_left(5) ^ u64::from(o)),
        );
        let proposals = (REFINE_PROPOSALS_PER_PARTITION * count).min(REFINE_PROPOSALS_MAX);
        let (hot, cold) = (2.0f64, 0.05f64);
        for step in 0..proposals {
            let temperature = hot * (cold / hot).powf(step as f64 / proposals as f64);
            let p = random.below(count);
            let x = self.owners[p];
            let delta = if random.below(2) == 0 {
                let original = self.original[p];
                let y = if self.eligible[original as usize] && original != x && random.below(2) == 0
                {
                    original
                } else {
                    nodes[random.below(nodes.len())]
                };
                if y == x {
                    continue;
                }
                let before =
                    self.local_cost(&[p]) + self.load_cost(x as usize) + self.load_cost(y as usize);
                self.assign(p, y);
                let after =
                    self.local_cost(&[p]) + self.load_cost(x as usize) + self.load_cost(y as usize);
                let delta = after - before;
                if !accept(delta, temperature, &mut random) {
                    self.assign(p, x);
                    continue;
                }
                delta
            } else {
                let q = if random.below(2) == 0 {
                    random.below(count)
                } else {
                    (p + 1 + random.below(2 * self.node_window.max(self.rack_window).max(2)))
                        % count
                };
                let y = self.owners[q];
                if y == x {
                    continue;
                }
                let before = self.local_cost(&[p, q]);
                self.owners[p] = y;
                self.owners[q] = x;
                let after = self.local_cost(&[p, q]);
                let delta = after - before;
                if !accept(delta, temperature, &mut random) {
                    self.owners[p] = x;
                    self.owners[q] = y;
                    continue;
                }
                delta
            };
            cost += delta;
            if cost < best.0 {
                best = (cost, self.owners.clone());
            }
        }
        for (p, &y) in best.1.iter().enumerate() {
            if self.owners[p] != y {
                self.assign(p, y);
            }
        }
    }
}

fn accept(delta: i64, temperature: f64, random: &mut SplitMix) -> bool {
    delta <= 0
        || (delta as f64) < 8.0 * temperature
            && random.unit() < (-(delta as f64) / temperature).exp()
}

/// A small deterministic generator (SplitMix64), so a claim is a function
/// of its inputs.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(count: u16) -> Vec<Claimant<'static>> {
        (0..count).map(|id| Claimant { id, rack: None }).collect()
    }

    #[test]
    fn bit_reversed_order_is_a_permutation_spread_evenly() {
        let order = bit_reversed_order(16);
        assert_eq!(&order[..4], &[0, 8, 4, 12]);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn a_second_node_takes_every_other_partition() {
        let claimed = claim(&[0; 64], &nodes(2), 3);
        assert_eq!(claimed.iter().filter(|&&o| o == 1).count(), 32);
        assert_eq!(window_violations(&claimed, 3), 0);
    }

    #[test]
    fn a_leaving_node_owns_nothing_afterwards() {
        let mut owners = vec![0u16; 256];
        for size in 2..=6u16 {
            owners = claim(&owners, &nodes(size), 3);
        }
        let remaining: Vec<_> = nodes(6).into_iter().filter(|n| n.id != 2).collect();
        let after = claim(&owners, &remaining, 3);
        assert!(!after.contains(&2));
        assert_eq!(window_violations(&after, 3), 0);
    }

    #[test]
    fn short_windows_are_counted_with_wrap_around() {
        assert_eq!(count_short_windows(&[0, 1, 2, 0, 1, 2, 0, 1], 3, 3), 2);
        assert_eq!(count_short_windows(&[0, 1, 2, 3, 0, 1, 2, 3], 3, 3), 0);
    }
}
