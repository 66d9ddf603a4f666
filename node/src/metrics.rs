//! Counters per shard and their export in the Prometheus text format.
//!
//! Counters are plain `Cell`s owned by their shard (no atomics, nothing
//! shared); the metrics endpoint asks every shard for a [`ShardReport`]
//! over its inbox and renders them with a `shard` label.

use std::cell::Cell;
use std::fmt::Write;

use crate::shard::ShardReport;

#[derive(Debug, Default)]
pub struct ShardCounters {
    pub requests: Cell<u64>,
    pub gets: Cell<u64>,
    pub puts: Cell<u64>,
    pub deletes: Cell<u64>,
    pub errors: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub connections: Cell<u64>,
    pub syncs: Cell<u64>,
    pub sync_failures: Cell<u64>,
    /// Bytes of journal entries written by sync cycles.
    pub journal_bytes: Cell<u64>,
    /// Checkpoints completed (every store synced, old journal files gone).
    pub checkpoints: Cell<u64>,
    pub compactions: Cell<u64>,
    pub read_repairs: Cell<u64>,
    pub hints_delivered: Cell<u64>,
    pub anti_entropy_repairs: Cell<u64>,
    pub handoff_records: Cell<u64>,
    /// Records received from other datacenters and written here.
    pub xdc_records_applied: Cell<u64>,
    /// Records received from other datacenters that were not newer.
    pub xdc_records_stale: Cell<u64>,
    /// Received records that lost to a different datacenter's write.
    pub xdc_conflicts: Cell<u64>,
    /// Received records stamped further ahead than `xdc.max_clock_skew_ms`.
    pub xdc_clock_skew_records: Cell<u64>,
}

impl ShardCounters {
    pub fn add(cell: &Cell<u64>, amount: u64) {
        cell.set(cell.get() + amount);
    }

    pub fn report(&self, shard: usize) -> ShardReport {
        ShardReport {
            shard,
            requests: self.requests.get(),
            gets: self.gets.get(),
            puts: self.puts.get(),
            deletes: self.deletes.get(),
            errors: self.errors.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connections: self.connections.get(),
            syncs: self.syncs.get(),
            sync_failures: self.sync_failures.get(),
            journal_bytes: self.journal_bytes.get(),
            checkpoints: self.checkpoints.get(),
            compactions: self.compactions.get(),
            read_repairs: self.read_repairs.get(),
            hints_delivered: self.hints_delivered.get(),
            anti_entropy_repairs: self.anti_entropy_repairs.get(),
            handoff_records: self.handoff_records.get(),
            xdc_records_applied: self.xdc_records_applied.get(),
            xdc_records_stale: self.xdc_records_stale.get(),
            xdc_conflicts: self.xdc_conflicts.get(),
            xdc_clock_skew_records: self.xdc_clock_skew_records.get(),
            ..ShardReport::default()
        }
    }
}

/// Renders shard reports as Prometheus text.
pub fn render_prometheus(reports: &[ShardReport]) -> String {
    type Field = fn(&ShardReport) -> u64;
    let metrics: [(&str, &str, &str, Field); 27] = [
        (
            "meridian_requests_total",
            "counter",
            "Requests answered",
            |r| r.requests,
        ),
        (
            "meridian_gets_total",
            "counter",
            "GET operations on local vnodes",
            |r| r.gets,
        ),
        (
            "meridian_puts_total",
            "counter",
            "PUT operations on local vnodes",
            |r| r.puts,
        ),
        (
            "meridian_deletes_total",
            "counter",
            "DELETE operations on local vnodes",
            |r| r.deletes,
        ),
        (
            "meridian_errors_total",
            "counter",
            "Error responses sent",
            |r| r.errors,
        ),
        (
            "meridian_bytes_in_total",
            "counter",
            "Bytes read from client connections",
            |r| r.bytes_in,
        ),
        (
            "meridian_bytes_out_total",
            "counter",
            "Bytes written to client connections",
            |r| r.bytes_out,
        ),
        (
            "meridian_connections_open",
            "gauge",
            "Client connections open",
            |r| r.connections,
        ),
        (
            "meridian_syncs_total",
            "counter",
            "Group-commit sync cycles",
            |r| r.syncs,
        ),
        (
            "meridian_sync_failures_total",
            "counter",
            "Failed fdatasyncs",
            |r| r.sync_failures,
        ),
        (
            "meridian_journal_bytes_total",
            "counter",
            "Bytes of journal entries written by group commits",
            |r| r.journal_bytes,
        ),
        (
            "meridian_checkpoints_total",
            "counter",
            "Journal checkpoints (every vnode synced, older journal files removed)",
            |r| r.checkpoints,
        ),
        (
            "meridian_compactions_total",
            "counter",
            "Compaction runs finished",
            |r| r.compactions,
        ),
        (
            "meridian_read_repairs_total",
            "counter",
            "Replicas repaired by reads",
            |r| r.read_repairs,
        ),
        (
            "meridian_hints_delivered_total",
            "counter",
            "Hints delivered to returning replicas",
            |r| r.hints_delivered,
        ),
        (
            "meridian_anti_entropy_repairs_total",
            "counter",
            "Records repaired by anti-entropy",
            |r| r.anti_entropy_repairs,
        ),
        (
            "meridian_handoff_records_total",
            "counter",
            "Records pulled from old replicas during joins and leaves",
            |r| r.handoff_records,
        ),
        (
            "meridian_ring_epoch",
            "gauge",
            "Epoch of the ring the shard holds",
            |r| r.ring_epoch,
        ),
        (
            "meridian_ring_transfers_pending",
            "gauge",
            "Partition transfers pending in the ring the shard holds",
            |r| r.transfers_pending,
        ),
        (
            "meridian_xdc_records_applied_total",
            "counter",
            "Records from other datacenters written here",
            |r| r.xdc_records_applied,
        ),
        (
            "meridian_xdc_records_stale_total",
            "counter",
            "Records from other datacenters that were not newer than what was held",
            |r| r.xdc_records_stale,
        ),
        (
            "meridian_xdc_conflicts_total",
            "counter",
            "Concurrent writes from two datacenters resolved here by last-writer-wins",
            |r| r.xdc_conflicts,
        ),
        (
            "meridian_xdc_clock_skew_records_total",
            "counter",
            "Received records stamped further ahead than xdc.max_clock_skew_ms",
            |r| r.xdc_clock_skew_records,
        ),
        ("meridian_vnodes_open", "gauge", "Vnodes open", |r| {
            r.vnodes as u64
        }),
        (
            "meridian_keys",
            "gauge",
            "Keys in the key directories (tombstones included)",
            |r| r.keys,
        ),
        (
            "meridian_disk_bytes",
            "gauge",
            "Bytes of segment files",
            |r| r.disk_bytes,
        ),
        (
            "meridian_keydir_bytes",
            "gauge",
            "Memory of the key directories",
            |r| r.keydir_bytes,
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, field) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for report in reports {
            let _ = writeln!(
                out,
                "{name}{{shard=\"{}\"}} {}",
                report.shard,
                field(report)
            );
        }
    }
    out
}
