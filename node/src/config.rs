//! The server's configuration: one TOML file, every field with a default.
//!
//! `meridian server` with no file runs a single node on 127.0.0.1 with data
//! in `./meridian-data`. Unknown fields and bad values are refused with a
//! message naming the field (serde's `deny_unknown_fields` plus
//! [`Config::validate`]). `meridian.example.toml` at the repository root
//! documents every field.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// When writes reach the disk (see the engine's `Durability`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    None,
    Periodic,
    Sync,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub storage: StorageSection,
    pub limits: LimitsSection,
    pub runtime: RuntimeSection,
    pub cluster: ClusterSection,
    pub xdc: XdcSection,
}

/// Cross-datacenter replication: what this datacenter accepts, and how
/// its links ship. The links themselves are made with `meridian cli xdc
/// connect` and kept in `<data_dir>/xdc/links.json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XdcSection {
    /// The secret a remote datacenter must prove (never sends) to open a
    /// link to this one; empty = this datacenter accepts no XDC links.
    pub secret: String,
    /// A batch is sent at the latest this long after its first record.
    pub batch_delay_ms: u32,
    /// Records per batch, at most.
    pub batch_records_max: u32,
    /// Bytes of keys and values per batch, about.
    pub batch_bytes_max: u32,
    /// Batches sent and not yet acknowledged, per vnode and link.
    pub max_in_flight: u32,
    /// A link whose oldest batch is unacknowledged this long is reopened.
    pub ack_timeout_ms: u32,
    /// How often an idle link looks for new records.
    pub poll_interval_ms: u32,
    /// Longest wait between two attempts to open a link.
    pub reconnect_max_ms: u32,
    /// A received version further ahead of the local clock is reported.
    pub max_clock_skew_ms: u32,
    /// Log a vnode keeps for a link that is behind (cut, paused, slow),
    /// at most; past it compaction goes on and the link needs a fullsync.
    pub retention_bytes: u64,
    /// On a synchronous link, a write not acknowledged by the remote
    /// datacenter within this long fails (it stays written here and is
    /// still shipped).
    pub sync_timeout_ms: u32,
}

impl Default for XdcSection {
    fn default() -> XdcSection {
        XdcSection {
            secret: String::new(),
            batch_delay_ms: 2,
            batch_records_max: 1024,
            batch_bytes_max: 1 << 20,
            max_in_flight: 8,
            ack_timeout_ms: 10_000,
            poll_interval_ms: 1,
            reconnect_max_ms: 2_000,
            max_clock_skew_ms: 500,
            retention_bytes: 8 << 30,
            sync_timeout_ms: 2_000,
        }
    }
}

/// The datacenter's ring: its members and its replication settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    /// Every member of the ring as "ID@HOST:PORT", or "ID@HOST:PORT/RACK"
    /// when racks are used, this node included (its id is `node.node_id`).
    /// Empty: a cluster of one.
    pub members: Vec<String>,
    /// N: copies of each key.
    pub replicas: u8,
    /// R and W: answers a read or a write waits for.
    pub read_quorum: u8,
    pub write_quorum: u8,
    /// How long a coordinator waits for its quorum.
    pub request_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// A member that answered nothing for this long is treated as down.
    pub down_after_ms: u32,
    /// How often each shard delivers hints to members that are back.
    pub hint_delivery_interval_ms: u32,
    /// How often each shard compares one vnode's digests with a replica.
    pub anti_entropy_interval_ms: u32,
    /// For a node that is not a founding member (not in `members`): peer
    /// addresses ("HOST:PORT") of existing members to join through. A node
    /// with seeds takes peer connections from the start.
    pub seeds: Vec<String>,
    /// With seeds: join the cluster at start, once `min_contact_points`
    /// seeds answered with the cluster's ring. False: wait for
    /// `meridian cli cluster join ADDR`.
    pub join_on_start: bool,
    /// Seeds that must answer before the node joins on start.
    pub min_contact_points: u32,
    /// Handoff throttle: records a shard pulls per second at most while it
    /// receives partitions from their old owners.
    pub handoff_records_per_second: u32,
}

impl Default for ClusterSection {
    fn default() -> ClusterSection {
        ClusterSection {
            members: Vec::new(),
            replicas: 3,
            read_quorum: 2,
            write_quorum: 2,
            request_timeout_ms: 2000,
            heartbeat_interval_ms: 200,
            down_after_ms: 1000,
            hint_delivery_interval_ms: 500,
            anti_entropy_interval_ms: 1000,
            seeds: Vec::new(),
            join_on_start: true,
            min_contact_points: 1,
            handoff_records_per_second: 50_000,
        }
    }
}

/// One member of `cluster.members`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberAddress {
    pub id: u16,
    pub address: String,
    /// The rack after a `/`, if any.
    pub rack: Option<String>,
}

/// Longest rack name: the ring document stores it behind a one-byte length.
pub const RACK_BYTES_MAX: usize = 255;

/// A rack name is 1 to [`RACK_BYTES_MAX`] bytes of printable characters
/// without spaces (it is shown in `cluster status`).
fn check_rack(field: &str, rack: &str) -> Result<(), ConfigError> {
    if rack.is_empty() || rack.len() > RACK_BYTES_MAX {
        return Err(invalid(
            field,
            format!(
                "a rack name is 1 to {RACK_BYTES_MAX} bytes, not {}",
                rack.len()
            ),
        ));
    }
    if let Some(bad) = rack.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            format!(
                "the rack name {rack:?} holds {bad:?}: use printable characters without spaces"
            ),
        ));
    }
    Ok(())
}

impl ClusterSection {
    /// The members, parsed ("ID@HOST:PORT"), sorted by id.
    pub fn parsed_members(&self) -> Result<Vec<MemberAddress>, ConfigError> {
        let mut members = Vec::with_capacity(self.members.len());
        for text in &self.members {
            let bad = || {
                invalid(
                    "cluster.members",
                    format!("{text:?} is not ID@HOST:PORT or ID@HOST:PORT/RACK"),
                )
            };
            let (id, rest) = text.split_once('@').ok_or_else(bad)?;
            let (address, rack) = match rest.split_once('/') {
                Some((address, rack)) => {
                    check_rack("cluster.members", rack)?;
                    (address, Some(rack.to_string()))
                }
                None => (rest, None),
            };
            let id: u16 = id.parse().map_err(|_| bad())?;
            if address.parse::<SocketAddr>().is_err() {
                return Err(bad());
            }
            if members.iter().any(|m: &MemberAddress| m.id == id) {
                return Err(invalid(
                    "cluster.members",
                    format!("node id {id} listed twice"),
                ));
            }
            members.push(MemberAddress {
                id,
                address: address.to_string(),
                rack,
            });
        }
        members.sort_by_key(|m| m.id);
        Ok(members)
    }

    /// True when this node takes part in a ring (founding members or seeds);
    /// a node with a persisted ring is clustered whatever its config says.
    pub fn is_clustered(&self) -> bool {
        self.members.len() > 1 || !self.seeds.is_empty()
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Client and peer address (every shard listens on it, SO_REUSEPORT).
    pub listen: SocketAddr,
    /// Prometheus metrics over HTTP; empty string disables.
    pub metrics_listen: String,
    pub cluster: String,
    pub datacenter: String,
    /// 0..=255: part of every version's origin.
    pub datacenter_id: u8,
    pub node_id: u16,
    /// A secret clients must present in HELLO; empty = no authentication.
    pub secret: String,
    /// The rack (or zone, or power domain) this node sits in. With racks,
    /// the claim puts the N replicas of a key on N distinct racks where
    /// the racks allow. A founding member's rack is also given in
    /// `cluster.members` (`ID@HOST:PORT/RACK`); a node moves to another
    /// rack by leaving the ring and joining again.
    pub rack: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub data_dir: PathBuf,
    /// Ring size: a power of two from 8 to 65536.
    pub partitions: u32,
    pub durability: DurabilityMode,
    /// With `durability = "periodic"`: how often to sync.
    pub sync_interval_ms: u32,
    /// Size each journal file is prepared to (zero-filled) before use; a
    /// full file starts a checkpoint (every vnode synced, old files removed).
    pub journal_file_bytes: u64,
    pub segment_bytes: u32,
    pub compaction_dead_fraction: f64,
    pub tombstone_grace_s: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    pub connections_max: usize,
    /// Frames read and not yet answered on one connection.
    pub requests_in_flight_max: usize,
    pub key_bytes_max: u32,
    pub value_bytes_max: u32,
    pub frame_bytes_max: u32,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeSection {
    /// Shard executors; 0 = one per core minus one (reserved for XDC), at least 1.
    pub shards: usize,
    /// Pin each shard to a core.
    pub pin: bool,
    /// First CPU to pin to when `pin` is true.
    pub first_cpu: usize,
    /// io_uring buffer memory per executor (the locked-memory limit is often 8 MiB).
    pub io_memory_bytes: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node: NodeSection::default(),
            storage: StorageSection::default(),
            limits: LimitsSection::default(),
            runtime: RuntimeSection::default(),
            cluster: ClusterSection::default(),
            xdc: XdcSection::default(),
        }
    }
}

impl Default for NodeSection {
    fn default() -> NodeSection {
        NodeSection {
            listen: SocketAddr::from(([127, 0, 0, 1], 7411)),
            metrics_listen: "127.0.0.1:7412".to_string(),
            cluster: "meridian".to_string(),
            datacenter: "dc1".to_string(),
            datacenter_id: 1,
            node_id: 1,
            secret: String::new(),
            rack: None,
        }
    }
}

impl Default for StorageSection {
    fn default() -> StorageSection {
        StorageSection {
            data_dir: PathBuf::from("meridian-data"),
            partitions: 256,
            durability: DurabilityMode::Periodic,
            sync_interval_ms: 100,
            journal_file_bytes: 32 << 20,
            segment_bytes: 32 << 20,
            compaction_dead_fraction: 0.5,
            tombstone_grace_s: 24 * 3600,
        }
    }
}

impl Default for LimitsSection {
    fn default() -> LimitsSection {
        LimitsSection {
            connections_max: 10_000,
            requests_in_flight_max: 1024,
            key_bytes_max: u16::MAX as u32,
            value_bytes_max: 16 << 20,
            frame_bytes_max: 32 << 20,
        }
    }
}

impl Default for RuntimeSection {
    fn default() -> RuntimeSection {
        RuntimeSection {
            shards: 0,
            pin: false,
            first_cpu: 0,
            io_memory_bytes: 1 << 20,
        }
    }
}

/// A configuration the server cannot run with.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.to_string(),
        reason: reason.into(),
    }
}

impl Config {
    /// This node's rack: `node.rack`, else its own entry's in
    /// `cluster.members` (validation made the two agree when both are set).
    pub fn own_rack(&self) -> Option<String> {
        self.node.rack.clone().or_else(|| {
            let members = self.cluster.parsed_members().ok()?;
            members
                .into_iter()
                .find(|m| m.id == self.node.node_id)
                .and_then(|m| m.rack)
        })
    }

    /// Parses TOML text; unknown fields are refused by name.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| invalid("(file)", e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let xdc = &self.xdc;
        for (field, value) in [
            ("xdc.batch_records_max", xdc.batch_records_max),
            ("xdc.batch_bytes_max", xdc.batch_bytes_max),
            ("xdc.max_in_flight", xdc.max_in_flight),
            ("xdc.ack_timeout_ms", xdc.ack_timeout_ms),
            ("xdc.poll_interval_ms", xdc.poll_interval_ms),
            ("xdc.reconnect_max_ms", xdc.reconnect_max_ms),
            ("xdc.sync_timeout_ms", xdc.sync_timeout_ms),
        ] {
            if value == 0 {
                return Err(invalid(field, "must be at least 1"));
            }
        }
        let records_max = meridian_xdc::BatchLimits::default().batch_records_max;
        if xdc.batch_records_max > records_max {
            return Err(invalid(
                "xdc.batch_records_max",
                format!("must be at most {records_max}"),
            ));
        }
        let partitions = self.storage.partitions;
        if !(8..=65536).contains(&partitions) || !partitions.is_power_of_two() {
            return Err(invalid(
                "storage.partitions",
                format!("{partitions} is not a power of two from 8 to 65536"),
            ));
        }
        if self.storage.durability == DurabilityMode::Periodic && self.storage.sync_interval_ms == 0
        {
            return Err(invalid(
                "storage.sync_interval_ms",
                "must be at least 1 with durability = \"periodic\"",
            ));
        }
        if self.limits.key_bytes_max == 0 || self.limits.key_bytes_max > u16::MAX as u32 {
            return Err(invalid("limits.key_bytes_max", "must be in 1..=65535"));
        }
        if self.limits.value_bytes_max > 16 << 20 {
            return Err(invalid(
                "limits.value_bytes_max",
                "must be at most 16 MiB (16777216)",
            ));
        }
        let frame_needed =
            self.limits.key_bytes_max as u64 + self.limits.value_bytes_max as u64 + 64;
        if (self.limits.frame_bytes_max as u64) < frame_needed {
            return Err(invalid(
                "limits.frame_bytes_max",
                format!("must hold the largest PUT ({frame_needed} bytes)"),
            ));
        }
        let segment_needed =
            self.limits.key_bytes_max as u64 + self.limits.value_bytes_max as u64 + 128;
        if (self.storage.segment_bytes as u64) < segment_needed {
            return Err(invalid(
                "storage.segment_bytes",
                format!("must hold the largest record ({segment_needed} bytes); lower limits.value_bytes_max or raise it"),
            ));
        }
        const JOURNAL_FILE_MIN: u64 = 1 << 20;
        if self.storage.journal_file_bytes < JOURNAL_FILE_MIN {
            return Err(invalid(
                "storage.journal_file_bytes",
                format!("must be at least {JOURNAL_FILE_MIN} (1 MiB)"),
            ));
        }
        if !(self.storage.compaction_dead_fraction > 0.0
            && self.storage.compaction_dead_fraction <= 1.0)
        {
            return Err(invalid(
                "storage.compaction_dead_fraction",
                "must be in (0, 1]",
            ));
        }
        if self.limits.connections_max == 0 || self.limits.requests_in_flight_max == 0 {
            return Err(invalid(
                "limits",
                "connections_max and requests_in_flight_max must be at least 1",
            ));
        }
        if !self.node.metrics_listen.is_empty()
            && self.node.metrics_listen.parse::<SocketAddr>().is_err()
        {
            return Err(invalid(
                "node.metrics_listen",
                format!("{:?} is not HOST:PORT", self.node.metrics_listen),
            ));
        }
        let members = self.cluster.parsed_members()?;
        if !members.is_empty() && !members.iter().any(|m| m.id == self.node.node_id) {
            return Err(invalid(
                "cluster.members",
                format!(
                    "does not list this node (node.node_id = {})",
                    self.node.node_id
                ),
            ));
        }
        if let Some(rack) = &self.node.rack {
            check_rack("node.rack", rack)?;
            let listed = members.iter().find(|m| m.id == self.node.node_id);
            if let Some(member) = listed.filter(|m| m.rack.as_ref() != Some(rack)) {
                return Err(invalid(
                    "cluster.members",
                    format!(
                        "lists this node (node {}) in rack {:?}, node.rack says {rack:?}: every founding node builds the first ring from cluster.members, so give this node's entry as {}@{}/{rack}",
                        member.id,
                        member.rack.as_deref().unwrap_or("(none)"),
                        member.id,
                        member.address
                    ),
                ));
            }
        }
        let cluster = &self.cluster;
        for seed in &cluster.seeds {
            if seed.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    "cluster.seeds",
                    format!("{seed:?} is not HOST:PORT"),
                ));
            }
        }
        if !cluster.seeds.is_empty() && cluster.join_on_start {
            let seeds = cluster.seeds.len() as u32;
            if cluster.min_contact_points == 0 || cluster.min_contact_points > seeds {
                return Err(invalid(
                    "cluster.min_contact_points",
                    format!("must be 1 to the number of seeds ({seeds})"),
                ));
            }
        }
        if !cluster.seeds.is_empty() && self.node.listen.ip().is_unspecified() {
            return Err(invalid(
                "node.listen",
                "a node that joins through seeds must listen on an address its peers can reach, not 0.0.0.0",
            ));
        }
        if cluster.handoff_records_per_second == 0 {
            return Err(invalid(
                "cluster.handoff_records_per_second",
                "must be at least 1",
            ));
        }
        if !(1..=5).contains(&cluster.replicas) {
            return Err(invalid("cluster.replicas", "must be 1 to 5"));
        }
        if cluster.read_quorum == 0 || cluster.read_quorum > cluster.replicas {
            return Err(invalid(
                "cluster.read_quorum",
                "must be 1 to cluster.replicas",
            ));
        }
        if cluster.write_quorum == 0 || cluster.write_quorum > cluster.replicas {
            return Err(invalid(
                "cluster.write_quorum",
                "must be 1 to cluster.replicas",
            ));
        }
        if cluster.request_timeout_ms == 0
            || cluster.heartbeat_interval_ms == 0
            || cluster.down_after_ms == 0
        {
            return Err(invalid(
                "cluster",
                "timeouts and intervals must be at least 1 ms",
            ));
        }
        if self.node.cluster.is_empty() || self.node.cluster.len() > 255 {
            return Err(invalid("node.cluster", "must be 1 to 255 bytes"));
        }
        Ok(())
    }

    /// Shards to run: configured, or one per core minus one for XDC.
    pub fn shard_count(&self) -> usize {
        if self.runtime.shards > 0 {
            return self.runtime.shards;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        cores.saturating_sub(1).max(1)
    }

    /// True when writes go through the shard's journal: `periodic` and
    /// `sync` (`none` leaves everything to the page cache).
    pub fn journaled(&self) -> bool {
        self.storage.durability != DurabilityMode::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let config = Config::from_toml("").expect("defaults are valid");
        assert_eq!(config.node.listen.port(), 7411);
        assert_eq!(config.storage.partitions, 256);
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_field() {
        let error = Config::from_toml("[storage]\nparttions = 8\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("parttions"), "{error}");
        let error = Config::from_toml("[storage]\npartitions = 100\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("storage.partitions"), "{error}");
        let error = Config::from_toml("[storage]\ndurability = \"always\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("always"), "{error}");
    }

    #[test]
    fn seeds_are_checked_by_name() {
        let seeded = Config::from_toml("[cluster]\nseeds = [\"127.0.0.1:7411\"]\n")
            .expect("one seed, defaults otherwise");
        assert!(seeded.cluster.is_clustered());
        let error = Config::from_toml("[cluster]\nseeds = [\"nowhere\"]\n")
            .expect_err("refused")
            .to_string();
        assert!(
            error.contains("cluster.seeds") && error.contains("nowhere"),
            "{error}"
        );
        let error =
            Config::from_toml("[cluster]\nseeds = [\"127.0.0.1:7411\"]\nmin_contact_points = 2\n")
                .expect_err("refused")
                .to_string();
        assert!(error.contains("cluster.min_contact_points"), "{error}");
        let error = Config::from_toml(
            "[node]\nlisten = \"0.0.0.0:7411\"\n[cluster]\nseeds = [\"127.0.0.1:7412\"]\n",
        )
        .expect_err("refused")
        .to_string();
        assert!(error.contains("node.listen"), "{error}");
    }

    #[test]
    fn racks_come_from_the_members_list_or_node_rack_and_must_agree() {
        let members = "[cluster]\nmembers = [\"1@127.0.0.1:7411/r1\", \"2@127.0.0.1:7421\"]\n";
        let config = Config::from_toml(members).expect("a rack for member 1 only");
        let parsed = config.cluster.parsed_members().expect("members");
        assert_eq!(parsed[0].rack.as_deref(), Some("r1"));
        assert_eq!(parsed[1].rack, None);
        assert_eq!(parsed[1].address, "127.0.0.1:7421");
        assert_eq!(config.own_rack().as_deref(), Some("r1"));
        let both = format!("[node]\nrack = \"r1\"\n{members}");
        assert_eq!(
            Config::from_toml(&both)
                .expect("agreeing racks")
                .own_rack()
                .as_deref(),
            Some("r1")
        );
        let seeded = "[node]\nrack = \"r9\"\n[cluster]\nseeds = [\"127.0.0.1:7411\"]\n";
        assert_eq!(
            Config::from_toml(seeded)
                .expect("a joiner's rack")
                .own_rack()
                .as_deref(),
            Some("r9")
        );
        let error = Config::from_toml(&format!("[node]\nrack = \"r2\"\n{members}"))
            .expect_err("disagreeing racks")
            .to_string();
        assert!(
            error.contains("cluster.members") && error.contains("\"r1\"") && error.contains("r2"),
            "{error}"
        );
        for (text, field) in [
            ("[node]\nrack = \"\"\n", "node.rack"),
            ("[node]\nrack = \"two words\"\n", "node.rack"),
            (
                "[cluster]\nmembers = [\"1@127.0.0.1:7411/\", \"2@127.0.0.1:7421\"]\n",
                "cluster.members",
            ),
        ] {
            let error = Config::from_toml(text).expect_err(text).to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
        let long = format!("[node]\nrack = \"{}\"\n", "r".repeat(RACK_BYTES_MAX + 1));
        let error = Config::from_toml(&long).expect_err("too long").to_string();
        assert!(
            error.contains("node.rack") && error.contains("256"),
            "{error}"
        );
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../meridian.example.toml");
        Config::from_toml(text).expect("the shipped example is valid");
    }
}
