//! Sending each key straight to one of its replicas, so the node that
//! coordinates it holds a copy (one hop less than going through any node):
//! the runtime-free [`Router`] both ring-aware clients share, and
//! [`RoutingClient`], the blocking one. The async one,
//! [`super::async_routing::AsyncRoutingClient`], drives the same [`Router`]
//! and differs only in how bytes move and in running the periodic refresh
//! in a spawned task.
//!
//! A client reads the ring from CLUSTERINFO ([`ClientRing`]) at connect and
//! again every `refresh_interval` (checked before a request, not by a
//! timer), keeping a higher epoch when it sees one. It keeps one connection
//! per replica it talked to, each to that one address only, plus a *seed*
//! client built from the whole configuration (its addresses, or its
//! datacenters with their failover). A key goes to its replicas, live ones
//! first ([`Router::targets`]), then to the seed. A replica that cannot be
//! reached (nothing was sent) passes the key to the next target; a request
//! lost in flight goes on only when it is idempotent (a write might have
//! been applied) ([`after_failure`]).
//!
//! Nodes do not tell a client that the ring moved (no response carries an
//! epoch), so the ring is only refreshed on the schedule or when asked
//! (`refresh_ring`). Routing is a shortcut, not a rule: any node coordinates
//! any key, so a stale ring costs a hop, never a wrong answer.
//!
//! Invariants:
//! - routing never changes an answer, only which node coordinates it;
//! - the ring held only moves to a higher epoch;
//! - a replica's connection goes to that address alone, never failing over
//!   elsewhere (else a "routed" request could land on any node); only the
//!   seed fails over, and it is always the last target;
//! - a request that may have reached a node is never sent again unless it is
//!   idempotent.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::blocking::Client;
use super::core::{self, ClientConfig};
use super::ring::ClientRing;
use super::ClientError;
use crate::message::{Request, Response, Version, VersionedValue};

/// Where a routed request may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A replica of the key, by its client address.
    Replica(String),
    /// The client built from the whole configuration: the last resort.
    Seed,
}

/// What to do after one attempt failed (see [`after_failure`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    /// The node's connection is dead: drop it (the next use connects anew).
    pub forget_node: bool,
    /// The request may go to the next target; otherwise the error is the
    /// call's answer.
    pub try_next: bool,
}

/// How a failed attempt on a replica is handled, the same for both clients:
/// - not reached (connect failed, so nothing was sent): next target;
/// - lost in flight: next target only if the request is idempotent;
/// - anything else (the node answered with an error, a timeout): final.
pub fn after_failure(error: &ClientError, request: &Request) -> Failure {
    match error {
        ClientError::Connect { .. } => Failure {
            forget_node: true,
            try_next: true,
        },
        error if error.is_connection_lost() => Failure {
            forget_node: true,
            try_next: core::is_idempotent(request),
        },
        _ => Failure {
            forget_node: false,
            try_next: false,
        },
    }
}

/// The configuration of a connection to one node: `config`'s timeouts,
/// credentials and limits, that one address, no datacenters (no failover)
/// and a single connect round.
pub fn node_config(config: &ClientConfig, address: &str) -> ClientConfig {
    let node = ClientConfig {
        addresses: vec![address.to_owned()],
        datacenters: Vec::new(),
        reconnect_attempts_max: 1,
        ..config.clone()
    };
    assert!(node.datacenters.is_empty() && node.addresses.len() == 1);
    node
}

/// Reads the ring from a CLUSTERINFO answer.
pub fn ring_from_cluster_info(json: &str) -> Result<ClientRing, ClientError> {
    ClientRing::from_cluster_info(json).map_err(|reason| ClientError::Ring { reason })
}

/// The ring a client routes by and when to read it again. No I/O, no
/// runtime: the caller passes the time and does the reading.
#[derive(Debug, Clone)]
pub struct Router {
    ring: ClientRing,
    refresh_interval: Duration,
    refreshed_at: Instant,
}

impl Router {
    /// Routes by `ring`, read at `now`.
    pub fn new(ring: ClientRing, refresh_interval: Duration, now: Instant) -> Router {
        Router {
            ring,
            refresh_interval,
            refreshed_at: now,
        }
    }

    /// The ring routed by.
    pub fn ring(&self) -> &ClientRing {
        &self.ring
    }

    /// The targets of `key` in the order to try them: its replicas, live
    /// ones first, then the seed (always last, exactly once).
    pub fn targets(&self, key: &[u8]) -> Vec<Target> {
        let mut targets: Vec<Target> = self
            .ring
            .replica_addresses(key)
            .into_iter()
            .map(|address| Target::Replica(address.to_owned()))
            .collect();
        targets.push(Target::Seed);
        targets
    }

    /// Whether a refresh is due at `now`; if so, counts it as started, so
    /// one caller per interval gets `true`.
    pub fn take_refresh(&mut self, now: Instant) -> bool {
        let due = now.saturating_duration_since(self.refreshed_at) >= self.refresh_interval;
        if due {
            self.refreshed_at = now;
        }
        due
    }

    /// Records a refresh started at `now` (one asked for, not scheduled).
    pub fn refreshed(&mut self, now: Instant) {
        self.refreshed_at = self.refreshed_at.max(now);
    }

    /// Keeps `ring` if its epoch is higher than the one held; whether it did.
    pub fn offer(&mut self, ring: ClientRing) -> bool {
        let held = self.ring.epoch();
        let newer = ring.epoch() > held;
        if newer {
            self.ring = ring;
        }
        assert!(self.ring.epoch() >= held, "the ring held never goes back");
        newer
    }
}

/// A ring-aware blocking client (see the module doc).
#[derive(Debug)]
pub struct RoutingClient {
    config: ClientConfig,
    router: Router,
    seed: Client,
    /// One client per replica address, each to that address alone.
    nodes: HashMap<String, Client>,
}

impl RoutingClient {
    /// Connects the seed (the first of the configured addresses, or
    /// datacenters, that answers) and reads its ring.
    pub fn connect(
        config: ClientConfig,
        refresh_interval: Duration,
    ) -> Result<RoutingClient, ClientError> {
        let mut seed = Client::connect(config.clone())?;
        let ring = ring_from_cluster_info(&seed.clusterinfo()?)?;
        Ok(RoutingClient {
            config,
            router: Router::new(ring, refresh_interval, Instant::now()),
            seed,
            nodes: HashMap::new(),
        })
    }

    /// The epoch of the ring the client routes by.
    pub fn ring_epoch(&self) -> u64 {
        self.router.ring().epoch()
    }

    /// Reads a key: `None` if not found.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        core::into_value(self.route(key, &core::get_request(key))?)
    }

    /// Writes a value.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.route(key, &core::put_request(key, value, None))?)
    }

    /// Deletes a key.
    pub fn delete(&mut self, key: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.route(key, &core::delete_request(key))?)
    }

    /// Reads the ring again now, from a replica already connected or else
    /// from the seed; keeps it if its epoch is higher.
    pub fn refresh_ring(&mut self) -> Result<(), ClientError> {
        self.router.refreshed(Instant::now());
        let addresses: Vec<String> = self.nodes.keys().cloned().collect();
        for address in addresses {
            let Some(node) = self.nodes.get_mut(&address) else {
                continue;
            };
            match node.clusterinfo().map(|json| ring_from_cluster_info(&json)) {
                Ok(Ok(ring)) => {
                    self.router.offer(ring);
                    return Ok(());
                }
                _ => {
                    self.nodes.remove(&address);
                }
            }
        }
        let ring = ring_from_cluster_info(&self.seed.clusterinfo()?)?;
        self.router.offer(ring);
        Ok(())
    }

    fn route(&mut self, key: &[u8], request: &Request) -> Result<Response, ClientError> {
        if self.router.take_refresh(Instant::now()) {
            // A failed refresh keeps the ring held: routing stays possible.
            let _ = self.refresh_ring();
        }
        let mut last_error = None;
        for target in self.router.targets(key) {
            let address = match target {
                Target::Seed => return self.seed.call(request),
                Target::Replica(address) => address,
            };
            let answer = self.node(&address).and_then(|node| node.call(request));
            let error = match answer {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let failure = after_failure(&error, request);
            if failure.forget_node {
                self.nodes.remove(&address);
            }
            if !failure.try_next {
                return Err(error);
            }
            last_error = Some(error);
        }
        // Not reached: the seed is always the last target and answers.
        Err(last_error.unwrap_or(ClientError::ConnectionClosed))
    }

    fn node(&mut self, address: &str) -> Result<&mut Client, ClientError> {
        match self.nodes.entry(address.to_owned()) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let node = Client::connect(node_config(&self.config, address))?;
                Ok(entry.insert(node))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the shared routing rules — target order, refresh schedule,
    //! epoch monotony, per-node configuration, retry decisions — hold.
    //! Method: a hand-written CLUSTERINFO document and a fixed clock.

    use super::*;
    use crate::client::failover::Datacenter;
    use crate::ErrorCode;

    fn ring(epoch: u64) -> ClientRing {
        let json = format!(
            r#"{{"ring_epoch": {epoch}, "partitions": 4, "replicas": 2,
                "owners": [1, 2, 3, 1],
                "members": [
                  {{"node_id": 1, "address": "h:1", "status": "up", "ring_status": "up"}},
                  {{"node_id": 2, "address": "h:2", "status": "up", "ring_status": "up"}},
                  {{"node_id": 3, "address": "h:3", "status": "up", "ring_status": "up"}}
                ]}}"#
        );
        ring_from_cluster_info(&json).expect("a routable ring")
    }

    #[test]
    fn targets_are_the_replicas_then_the_seed_once() {
        let start = Instant::now();
        let router = Router::new(ring(3), Duration::from_secs(1), start);
        for key in [&b"a"[..], b"b", b"key-9", b""] {
            let targets = router.targets(key);
            let replicas: Vec<Target> = router
                .ring()
                .replica_addresses(key)
                .into_iter()
                .map(|address| Target::Replica(address.to_owned()))
                .collect();
            assert_eq!(replicas.len(), 2);
            assert_eq!(targets[..2], replicas[..]);
            assert_eq!(targets[2..], [Target::Seed]);
        }
    }

    #[test]
    fn a_refresh_is_due_once_per_interval() {
        let start = Instant::now();
        let interval = Duration::from_millis(200);
        let mut router = Router::new(ring(3), interval, start);
        assert!(!router.take_refresh(start + interval / 2));
        assert!(router.take_refresh(start + interval));
        assert!(!router.take_refresh(start + interval), "taken already");
        router.refreshed(start + interval * 3);
        assert!(!router.take_refresh(start + interval * 3 + interval / 2));
        assert!(router.take_refresh(start + interval * 4));
        // A clock reading from before the last refresh is never due.
        assert!(!router.take_refresh(start));
    }

    #[test]
    fn the_ring_only_moves_to_a_higher_epoch() {
        let mut router = Router::new(ring(5), Duration::from_secs(1), Instant::now());
        assert!(!router.offer(ring(4)));
        assert!(!router.offer(ring(5)));
        assert_eq!(router.ring().epoch(), 5);
        assert!(router.offer(ring(6)));
        assert_eq!(router.ring().epoch(), 6);
    }

    #[test]
    fn a_node_connection_goes_to_its_address_alone() {
        let mut config =
            ClientConfig::with_datacenters([("east", vec!["e:1", "e:2"]), ("west", vec!["w:1"])]);
        config.credentials = Some(bytes::Bytes::from_static(b"secret"));
        config.reconnect_attempts_max = 7;
        let node = node_config(&config, "h:2");
        assert_eq!(node.addresses, ["h:2"]);
        assert_eq!(node.datacenters, Vec::<Datacenter>::new());
        assert_eq!(node.reconnect_attempts_max, 1);
        assert_eq!(node.credentials, config.credentials);
        assert_eq!(node.datacenter, "east", "HELLO still names the client's");
    }

    #[test]
    fn only_unreached_nodes_and_lost_reads_go_on() {
        let get = core::get_request(b"k");
        let put = core::put_request(b"k", b"v", None);
        let unreached = ClientError::Connect {
            attempts: 1,
            failures: Vec::new(),
        };
        let lost = ClientError::ConnectionClosed;
        let answered = ClientError::Server {
            code: ErrorCode::QuorumUnavailable,
            message: "no quorum".to_owned(),
        };
        let next = |forget_node| Failure {
            forget_node,
            try_next: true,
        };
        let stop = |forget_node| Failure {
            forget_node,
            try_next: false,
        };
        assert_eq!(after_failure(&unreached, &put), next(true));
        assert_eq!(after_failure(&lost, &get), next(true));
        assert_eq!(after_failure(&lost, &put), stop(true));
        assert_eq!(after_failure(&answered, &get), stop(false));
        assert_eq!(after_failure(&answered, &put), stop(false));
    }
}
