//! The async ring-aware client (feature `tokio`): [`AsyncRoutingClient`]
//! sends each key straight to one of its replicas, like the blocking
//! [`super::routing::RoutingClient`], by the same runtime-free
//! [`Router`] (target order, refresh schedule, epoch rule, what to do
//! after a failure), so the two cannot route differently.
//!
//! It is a cheap `Clone` handle that many tasks share. Each node it talks
//! to has one async [`Client`], so the requests of every task bound for a
//! node are pipelined on one connection. The *seed* client is built from
//! the whole configuration and keeps that client's datacenter failover and
//! failback; it reads the first ring and is the last target of every key.
//!
//! Trade-off: where the blocking client refreshes the ring inline, before
//! the request that finds it due, this one spawns the refresh (as the
//! async client spawns its failback), so no caller waits for CLUSTERINFO;
//! the request that found it due is routed by the ring held.
//!
//! Invariants:
//! - The router (std mutex) and the node map (std mutex) are never held
//!   across an `.await` and never held together.
//! - At most one scheduled refresh per `refresh_interval` is spawned
//!   ([`Router::take_refresh`]); it is bounded: one CLUSTERINFO per node
//!   connected, then the seed, each with the request timeout.
//! - Two tasks that connect to the same new node at once keep one of the
//!   two connections; the other is dropped when its request ends.
//! - The ring held only moves to a higher epoch; routing never changes an
//!   answer, only which node coordinates it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::asynchronous::Client;
use super::core::{self, ClientConfig};
use super::routing::{after_failure, node_config, ring_from_cluster_info, Router, Target};
use super::ClientError;
use crate::message::{Request, Response, Version, VersionedValue};

struct Inner {
    config: ClientConfig,
    router: Mutex<Router>,
    seed: Client,
    /// One client per replica address, each to that address alone.
    nodes: Mutex<HashMap<String, Client>>,
}

/// An async ring-aware client (see the module doc); clone it to share.
#[derive(Clone)]
pub struct AsyncRoutingClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AsyncRoutingClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncRoutingClient")
            .field("config", &self.inner.config)
            .field("ring_epoch", &self.ring_epoch())
            .finish_non_exhaustive()
    }
}

impl AsyncRoutingClient {
    /// Connects the seed (the first of the configured addresses, or
    /// datacenters, that answers) and reads its ring.
    pub async fn connect(
        config: ClientConfig,
        refresh_interval: Duration,
    ) -> Result<AsyncRoutingClient, ClientError> {
        let seed = Client::connect(config.clone()).await?;
        let ring = ring_from_cluster_info(&seed.clusterinfo().await?)?;
        Ok(AsyncRoutingClient {
            inner: Arc::new(Inner {
                config,
                router: Mutex::new(Router::new(ring, refresh_interval, Instant::now())),
                seed,
                nodes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The epoch of the ring the client routes by.
    pub fn ring_epoch(&self) -> u64 {
        self.router().ring().epoch()
    }

    /// The datacenter the seed talks to (see [`Client::current_datacenter`]).
    pub fn seed_datacenter(&self) -> String {
        self.inner.seed.current_datacenter()
    }

    /// Reads a key: `None` if not found.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        core::into_value(self.route(key, &core::get_request(key)).await?)
    }

    /// Writes a value; returns the version written.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Version, ClientError> {
        core::into_written(
            self.route(key, &core::put_request(key, value, None))
                .await?,
        )
    }

    /// Writes a value that expires after `ttl` (rounded up to whole seconds).
    pub async fn put_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Version, ClientError> {
        let request = core::put_request(key, value, Some(core::ttl_seconds(ttl)));
        core::into_written(self.route(key, &request).await?)
    }

    /// Deletes a key; returns the tombstone's version.
    pub async fn delete(&self, key: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.route(key, &core::delete_request(key)).await?)
    }

    /// Reads the ring again now, from a replica already connected or else
    /// from the seed; keeps it if its epoch is higher.
    pub async fn refresh_ring(&self) -> Result<(), ClientError> {
        self.router().refreshed(Instant::now());
        let connected: Vec<(String, Client)> = self
            .nodes()
            .iter()
            .map(|(address, node)| (address.clone(), node.clone()))
            .collect();
        for (address, node) in connected {
            match node
                .clusterinfo()
                .await
                .map(|json| ring_from_cluster_info(&json))
            {
                Ok(Ok(ring)) => {
                    self.router().offer(ring);
                    return Ok(());
                }
                _ => self.forget(&address),
            }
        }
        let ring = ring_from_cluster_info(&self.inner.seed.clusterinfo().await?)?;
        self.router().offer(ring);
        Ok(())
    }

    async fn route(&self, key: &[u8], request: &Request) -> Result<Response, ClientError> {
        self.refresh_if_due();
        let targets = self.router().targets(key);
        let mut last_error = None;
        for target in targets {
            let address = match target {
                Target::Seed => return self.inner.seed.call(request).await,
                Target::Replica(address) => address,
            };
            let error = match self.node(&address).await {
                Ok(node) => match node.call(request).await {
                    Ok(response) => return Ok(response),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            let failure = after_failure(&error, request);
            if failure.forget_node {
                self.forget(&address);
            }
            if !failure.try_next {
                return Err(error);
            }
            last_error = Some(error);
        }
        // Not reached: the seed is always the last target and answers.
        Err(last_error.unwrap_or(ClientError::ConnectionClosed))
    }

    /// Once per `refresh_interval`: spawns a task that reads the ring again.
    fn refresh_if_due(&self) {
        if !self.router().take_refresh(Instant::now()) {
            return;
        }
        let client = self.clone();
        tokio::spawn(async move {
            // A failed refresh keeps the ring held: routing stays possible.
            let _ = client.refresh_ring().await;
        });
    }

    /// The client of the node at `address`, connecting it if there is none.
    async fn node(&self, address: &str) -> Result<Client, ClientError> {
        if let Some(node) = self.nodes().get(address) {
            return Ok(node.clone());
        }
        let node = Client::connect(node_config(&self.inner.config, address)).await?;
        let mut nodes = self.nodes();
        Ok(nodes.entry(address.to_owned()).or_insert(node).clone())
    }

    fn forget(&self, address: &str) {
        self.nodes().remove(address);
    }

    fn router(&self) -> MutexGuard<'_, Router> {
        // Every update of the router is one call: a panic leaves it whole.
        self.inner
            .router
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<String, Client>> {
        // Inserts and removes only: a panic leaves the map whole.
        self.inner
            .nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
