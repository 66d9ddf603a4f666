//! A blocking client that sends each key straight to one of its replicas,
//! so the node that coordinates it holds a copy (one hop less than going
//! through any node).
//!
//! It reads the ring from CLUSTERINFO ([`ClientRing`]) at connect and again
//! every `refresh_interval`, keeping a higher epoch when it sees one; it
//! keeps one [`Client`] per node it talked to. A key goes to its first live
//! replica; when that node cannot be reached (connect failed) the next
//! replica is tried, then the configured addresses. A request lost in
//! flight is retried elsewhere only when it is idempotent (a write might
//! have been applied).
//!
//! Invariants:
//! - routing never changes an answer, only which node coordinates it;
//! - the ring held only moves to a higher epoch.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::blocking::Client;
use super::core::{self, ClientConfig};
use super::ring::ClientRing;
use super::ClientError;
use crate::message::{Request, Response, Version, VersionedValue};

/// A ring-aware blocking client (see the module doc).
#[derive(Debug)]
pub struct RoutingClient {
    config: ClientConfig,
    ring: ClientRing,
    clients: HashMap<String, Client>,
    refresh_interval: Duration,
    refreshed_at: Instant,
}

impl RoutingClient {
    /// Connects to the first of `config.addresses` that answers and reads
    /// its ring.
    pub fn connect(
        config: ClientConfig,
        refresh_interval: Duration,
    ) -> Result<RoutingClient, ClientError> {
        let mut seed = Client::connect(config.clone())?;
        let ring = read_ring(&mut seed)?;
        let mut clients = HashMap::new();
        if let Some(address) = config.addresses.first() {
            clients.insert(address.clone(), seed);
        }
        Ok(RoutingClient {
            config,
            ring,
            clients,
            refresh_interval,
            refreshed_at: Instant::now(),
        })
    }

    /// The epoch of the ring the client routes by.
    pub fn ring_epoch(&self) -> u64 {
        self.ring.epoch()
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

    /// Reads the ring again now, from a node already connected or else
    /// from the configured addresses; keeps it if its epoch is higher.
    pub fn refresh_ring(&mut self) -> Result<(), ClientError> {
        self.refreshed_at = Instant::now();
        let addresses: Vec<String> = self.clients.keys().cloned().collect();
        let mut fresh = None;
        for address in addresses {
            let Some(client) = self.clients.get_mut(&address) else {
                continue;
            };
            match read_ring(client) {
                Ok(ring) => {
                    fresh = Some(ring);
                    break;
                }
                Err(_) => {
                    self.clients.remove(&address);
                }
            }
        }
        let ring = match fresh {
            Some(ring) => ring,
            None => {
                let mut seed = Client::connect(self.config.clone())?;
                let ring = read_ring(&mut seed)?;
                if let Some(address) = self.config.addresses.first() {
                    self.clients.insert(address.clone(), seed);
                }
                ring
            }
        };
        if ring.epoch() > self.ring.epoch() {
            self.ring = ring;
        }
        Ok(())
    }

    fn route(&mut self, key: &[u8], request: &Request) -> Result<Response, ClientError> {
        if self.refreshed_at.elapsed() >= self.refresh_interval {
            // A failed refresh keeps the ring held: routing stays possible.
            let _ = self.refresh_ring();
        }
        let mut targets: Vec<String> = self
            .ring
            .replica_addresses(key)
            .into_iter()
            .map(str::to_string)
            .collect();
        targets.extend(self.config.addresses.iter().cloned());
        let mut last_error = None;
        for address in targets {
            let client = match self.client_for(&address) {
                Ok(client) => client,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            match client.call(request) {
                Err(error) if error.is_connection_lost() => {
                    self.clients.remove(&address);
                    if !core::is_idempotent(request) {
                        return Err(error);
                    }
                    last_error = Some(error);
                }
                answer => return answer,
            }
        }
        Err(last_error.unwrap_or(ClientError::ConnectionClosed))
    }

    fn client_for(&mut self, address: &str) -> Result<&mut Client, ClientError> {
        match self.clients.entry(address.to_string()) {
            std::collections::hash_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let config = ClientConfig {
                    addresses: vec![address.to_string()],
                    reconnect_attempts_max: 1,
                    ..self.config.clone()
                };
                Ok(entry.insert(Client::connect(config)?))
            }
        }
    }
}

fn read_ring(client: &mut Client) -> Result<ClientRing, ClientError> {
    let json = client.clusterinfo()?;
    ClientRing::from_cluster_info(&json).map_err(|reason| ClientError::Ring { reason })
}
