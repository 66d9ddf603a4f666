//! An async client on tokio's `TcpStream` (feature `tokio`).
//!
//! [`Client`] is a cheap `Clone` handle. Every clone shares one connection:
//! a writer task drains a bounded queue of encoded frames (coalescing what
//! is queued into one write) and a reader task decodes responses and hands
//! each to the waiting caller by `request_id`. So many tasks pipeline their
//! requests on one socket, and responses may come back in any order.
//!
//! Invariants:
//! - The queue to the writer is bounded (`WRITE_QUEUE_FRAMES`): callers wait
//!   when the socket cannot keep up.
//! - At most `in_flight_max` requests wait for a response; each waits at most
//!   `request_timeout`, after which its slot is removed (a late response is
//!   dropped).
//! - When the connection breaks, every waiting request fails at once with
//!   `ConnectionClosed`, the tasks end, and the next request connects again
//!   (HELLO first) with bounded backoff, in the order
//!   [`Failover::connect_order`] gives (current datacenter first, then the
//!   others by preference). Reads are retried once; writes are not.
//! - Failback runs in a spawned task, so no caller waits for it: off the
//!   preferred datacenter, a request at least `failback_interval` after the
//!   last probe spawns one, unless a probe still runs (one at a time). If a preferred datacenter answers, its
//!   connection replaces the current one; requests already in flight finish
//!   on the old connection, which closes when the last of them lets go.
//! - Lock order: the connection slot (tokio mutex), then the failover state
//!   (std mutex, never held across an `.await`). The failover state names
//!   the datacenter of the connection in the slot.
//! - Dropping the last handle aborts the connection's tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{self, Backoff, ClientConfig, ServerHello};
use super::failover::{ConnectFailure, Failover, Target};
use super::ClientError;
use crate::codec::{Decoder, Encoder};
use crate::message::{Request, Response, Version, VersionedValue};

/// Frames queued for the writer task, at most.
const WRITE_QUEUE_FRAMES: usize = 1024;
/// Bytes the writer coalesces into one write, about.
const WRITE_COALESCE_BYTES: usize = 256 * 1024;
/// Bytes asked of the socket per read, at least.
const READ_CHUNK_BYTES: usize = 64 * 1024;

type Waiter = oneshot::Sender<Result<Response, ClientError>>;

/// State shared by a connection's handle and its two tasks.
struct Shared {
    waiters: Mutex<HashMap<u32, Waiter>>,
    closed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        // A panic while holding the lock leaves a consistent map: keep going.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection closed and fails every waiting request.
    fn close(&self) {
        let mut waiters = self.lock();
        self.closed.store(true, Ordering::Release);
        for (_, waiter) in waiters.drain() {
            let _ = waiter.send(Err(ClientError::ConnectionClosed));
        }
    }
}

struct Connection {
    shared: Arc<Shared>,
    outgoing: mpsc::Sender<Bytes>,
    server: ServerHello,
    reader: JoinHandle<()>,
    writer: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

struct Inner {
    config: ClientConfig,
    failover: Mutex<Failover>,
    encoder: Encoder,
    next_request_id: AtomicU32,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// A failback probe is running: no other starts until it ends, however
    /// short `failback_interval` is.
    probing: AtomicBool,
}

/// An async, pipelining client; clone it to share one connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.inner.config)
            .field("datacenter", &self.current_datacenter())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (HELLO included) to the first address that answers, in
    /// datacenter preference order.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client {
            inner: Arc::new(Inner {
                failover: Mutex::new(Failover::new(&config)?),
                encoder: Encoder::new(config.limits),
                config,
                next_request_id: AtomicU32::new(1),
                connection: tokio::sync::Mutex::new(None),
                probing: AtomicBool::new(false),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The server's HELLO_OK on the current connection, if connected.
    pub async fn server(&self) -> Option<ServerHello> {
        let guard = self.inner.connection.lock().await;
        guard.as_ref().map(|connection| connection.server.clone())
    }

    /// The name of the datacenter the client talks to (while disconnected,
    /// the one it talked to last).
    pub fn current_datacenter(&self) -> String {
        self.failover().current_name().to_owned()
    }

    fn failover(&self) -> std::sync::MutexGuard<'_, Failover> {
        // Every update of the state is one call: a panic leaves it whole.
        self.inner
            .failover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn take_request_id(&self) -> u32 {
        loop {
            let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        self.fail_back_if_due();
        let mut guard = self.inner.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            if !connection.shared.closed.load(Ordering::Acquire) {
                return Ok(Arc::clone(connection));
            }
        }
        *guard = None;
        let (datacenter, connection) = self.connect_with_backoff().await?;
        let connection = Arc::new(connection);
        *guard = Some(Arc::clone(&connection));
        self.failover().connected(datacenter, Instant::now());
        Ok(connection)
    }

    async fn connect_with_backoff(&self) -> Result<(usize, Connection), ClientError> {
        let mut backoff = Backoff::new(&self.inner.config);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let order = self.failover().connect_order();
            let mut failures = Vec::with_capacity(order.len());
            for Target {
                datacenter,
                address,
            } in order
            {
                match self.connect_one(&address).await {
                    Ok(connection) => return Ok((datacenter, connection)),
                    Err(error @ ClientError::HelloRefused { .. }) => return Err(error),
                    Err(error) => failures.push(ConnectFailure {
                        datacenter: self.failover().name(datacenter).to_owned(),
                        address,
                        reason: error.to_string(),
                    }),
                }
            }
            assert!(
                !failures.is_empty(),
                "a connect round tries at least one address"
            );
            match backoff.next_attempt() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => return Err(ClientError::Connect { attempts, failures }),
            }
        }
    }

    /// Off the preferred datacenter, once per `failback_interval` and never
    /// while a probe runs: spawns a task that tries the preferred
    /// datacenters (see [`Client::fail_back`]).
    fn fail_back_if_due(&self) {
        if self.inner.probing.load(Ordering::Acquire) {
            return;
        }
        let Some(targets) = self.failover().take_failback(Instant::now()) else {
            return;
        };
        if self.inner.probing.swap(true, Ordering::AcqRel) {
            return; // another request started one meanwhile
        }
        let client = self.clone();
        tokio::spawn(async move {
            let _probing = ProbeRunning(client.clone());
            client.fail_back(targets).await;
        });
    }

    /// Connects to the first of `targets` that answers and, if its
    /// datacenter is still preferred over the current one, makes its
    /// connection the client's. A failed probe changes nothing. Bounded:
    /// one connect and one HELLO per target, each with its timeout.
    async fn fail_back(&self, targets: Vec<Target>) {
        for target in targets {
            let Ok(connection) = self.connect_one(&target.address).await else {
                continue;
            };
            let mut slot = self.inner.connection.lock().await;
            let mut failover = self.failover();
            if target.datacenter < failover.current() {
                *slot = Some(Arc::new(connection));
                failover.connected(target.datacenter, Instant::now());
            }
            return;
        }
    }

    async fn connect_one(&self, address: &str) -> Result<Connection, ClientError> {
        let config = &self.inner.config;
        let stream =
            match tokio::time::timeout(config.connect_timeout, TcpStream::connect(address)).await {
                Ok(stream) => stream?,
                Err(_) => return Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()),
            };
        stream.set_nodelay(true)?;
        let (mut read_half, mut write_half) = stream.into_split();
        let mut read_buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let request_id = self.take_request_id();
        let hello = tokio::time::timeout(
            config.request_timeout,
            self.hello(request_id, &mut read_half, &mut write_half, &mut read_buf),
        )
        .await
        .map_err(|_| ClientError::Timeout {
            request_id,
            timeout: config.request_timeout,
        })??;
        let shared = Arc::new(Shared {
            waiters: Mutex::new(HashMap::new()),
            closed: AtomicBool::new(false),
        });
        let (outgoing, queue) = mpsc::channel(WRITE_QUEUE_FRAMES);
        let decoder = Decoder::new(config.limits);
        Ok(Connection {
            reader: tokio::spawn(read_loop(read_half, read_buf, decoder, Arc::clone(&shared))),
            writer: tokio::spawn(write_loop(write_half, queue, Arc::clone(&shared))),
            shared,
            outgoing,
            server: hello,
        })
    }

    async fn hello(
        &self,
        request_id: u32,
        read_half: &mut OwnedReadHalf,
        write_half: &mut OwnedWriteHalf,
        read_buf: &mut BytesMut,
    ) -> Result<ServerHello, ClientError> {
        let config = &self.inner.config;
        let mut buf = BytesMut::new();
        self.inner
            .encoder
            .encode(request_id, &core::hello_request(config), &mut buf)?;
        write_half.write_all(&buf).await?;
        let mut decoder = Decoder::new(config.limits);
        let frame = loop {
            if let Some(frame) = decoder.decode(read_buf)? {
                break frame;
            }
            read_buf.reserve(READ_CHUNK_BYTES);
            if read_half.read_buf(read_buf).await? == 0 {
                return Err(ClientError::ConnectionClosed);
            }
        };
        if frame.request_id != request_id {
            return Err(ClientError::UnexpectedResponse {
                expected: "HELLO_OK",
                opcode: frame.opcode,
            });
        }
        core::into_hello(frame.response(decoder.limits())?)
    }

    /// Sends one request and waits for its response; retries a read once on
    /// a new connection if the old one broke. Safe to call from many tasks.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        match self.call_once(request).await {
            Err(error) if error.is_connection_lost() && core::is_idempotent(request) => {
                self.call_once(request).await
            }
            other => other,
        }
    }

    async fn call_once(&self, request: &Request) -> Result<Response, ClientError> {
        let connection = self.connection().await?;
        let request_id = self.take_request_id();
        let mut buf = BytesMut::new();
        self.inner.encoder.encode(request_id, request, &mut buf)?;
        let (waiter, response) = oneshot::channel();
        {
            let mut waiters = connection.shared.lock();
            if connection.shared.closed.load(Ordering::Acquire) {
                return Err(ClientError::ConnectionClosed);
            }
            let in_flight_max = self.inner.config.in_flight_max;
            if waiters.len() >= in_flight_max {
                return Err(ClientError::TooManyInFlight {
                    in_flight: waiters.len(),
                    in_flight_max,
                });
            }
            waiters.insert(request_id, waiter);
        }
        let timeout = self.inner.config.request_timeout;
        let outcome = tokio::time::timeout(timeout, async {
            if connection.outgoing.send(buf.freeze()).await.is_err() {
                return Err(ClientError::ConnectionClosed);
            }
            response.await.unwrap_or(Err(ClientError::ConnectionClosed))
        })
        .await;
        match outcome {
            Ok(result) => {
                if result.is_err() {
                    connection.shared.lock().remove(&request_id);
                }
                result
            }
            Err(_) => {
                connection.shared.lock().remove(&request_id);
                Err(ClientError::Timeout {
                    request_id,
                    timeout,
                })
            }
        }
    }

    /// Reads a key: `None` if not found.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        core::into_value(self.call(&core::get_request(key)).await?)
    }

    /// Writes a key; returns the version written.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.call(&core::put_request(key, value, None)).await?)
    }

    /// Writes a key that expires after `ttl` (rounded up to whole seconds).
    pub async fn put_with_ttl(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Version, ClientError> {
        let request = core::put_request(key, value, Some(core::ttl_seconds(ttl)));
        core::into_written(self.call(&request).await?)
    }

    /// Deletes a key; returns the tombstone's version.
    pub async fn delete(&self, key: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.call(&core::delete_request(key)).await?)
    }

    /// Reads many keys; one entry per key, in order.
    pub async fn mget<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
    ) -> Result<Vec<Option<VersionedValue>>, ClientError> {
        core::into_values(self.call(&core::mget_request(keys)).await?, keys.len())
    }

    /// Writes many keys; one version per entry, in order.
    pub async fn mput<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &self,
        entries: &[(K, V)],
    ) -> Result<Vec<Version>, ClientError> {
        core::into_written_many(
            self.call(&core::mput_request(entries)).await?,
            entries.len(),
        )
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        core::into_pong(self.call(&Request::Ping).await?)
    }

    /// Build information, as JSON.
    pub async fn buildinfo(&self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::BuildInfo).await?)
    }

    /// Cluster information, as JSON.
    pub async fn clusterinfo(&self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::ClusterInfo).await?)
    }

    /// The node's health, as JSON.
    pub async fn nodehealth(&self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::NodeHealth).await?)
    }

    /// Counters, as JSON.
    pub async fn stats(&self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::Stats).await?)
    }
}

async fn read_loop(
    mut read_half: OwnedReadHalf,
    mut read_buf: BytesMut,
    mut decoder: Decoder,
    shared: Arc<Shared>,
) {
    loop {
        loop {
            let frame = match decoder.decode(&mut read_buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return shared.close(),
            };
            let response = frame.response(decoder.limits()).map_err(ClientError::from);
            // A response nobody waits for (timed out) is dropped.
            if let Some(waiter) = shared.lock().remove(&frame.request_id) {
                let _ = waiter.send(response);
            }
        }
        read_buf.reserve(READ_CHUNK_BYTES);
        match read_half.read_buf(&mut read_buf).await {
            Ok(0) | Err(_) => return shared.close(),
            Ok(_) => {}
        }
    }
}

async fn write_loop(
    mut write_half: OwnedWriteHalf,
    mut queue: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
) {
    let mut batch = BytesMut::with_capacity(WRITE_COALESCE_BYTES);
    while let Some(frame) = queue.recv().await {
        batch.extend_from_slice(&frame);
        while batch.len() < WRITE_COALESCE_BYTES {
            match queue.try_recv() {
                Ok(frame) => batch.extend_from_slice(&frame),
                Err(_) => break,
            }
        }
        if write_half.write_all(&batch).await.is_err() {
            return shared.close();
        }
        batch.clear();
    }
}

/// Clears [`Inner::probing`] when a probe's task ends, however it ends.
struct ProbeRunning(Client);

impl Drop for ProbeRunning {
    fn drop(&mut self) {
        self.0.inner.probing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the async client fails over and back like the blocking one.
    //! Method: fake datacenters on loopback (`super::super::fake`), a
    //! failback interval of zero; the spawned failback is awaited by a
    //! bounded poll of `current_datacenter`.

    use std::time::Duration;

    use super::super::fake::FakeDatacenter;
    use super::*;

    fn config(datacenters: &[&FakeDatacenter]) -> ClientConfig {
        ClientConfig {
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_millis(500),
            reconnect_attempts_max: 2,
            reconnect_backoff_initial: Duration::from_millis(1),
            failback_interval: Duration::ZERO,
            ..ClientConfig::with_datacenters(
                datacenters
                    .iter()
                    .map(|fake| (fake.name.clone(), vec![fake.address.clone()])),
            )
        }
    }

    /// Pings until the client is on `name`; whether it got there in 5 s.
    async fn ping_until_on(client: &Client, name: &str) -> bool {
        for _ in 0..500 {
            client.ping().await.expect("ping");
            if client.current_datacenter() == name {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fails_over_when_the_preferred_is_down_and_back_when_it_returns() {
        let mut east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let client = Client::connect(config(&[&east, &west]))
            .await
            .expect("connect");
        assert_eq!(client.current_datacenter(), "east");

        east.stop();
        for _ in 0..3 {
            client.ping().await.expect("a read goes on to west");
            assert_eq!(client.current_datacenter(), "west");
        }
        client.put(b"k", b"v").await.expect("a write on west");
        let server = client.server().await.expect("connected");
        assert_eq!(server.datacenter, "west");

        east.restart();
        assert!(ping_until_on(&client, "east").await, "never back on east");
        let server = client.server().await.expect("connected");
        assert_eq!(server.datacenter, "east");
        assert_eq!(east.hellos(), 1, "one successful probe");
    }

    #[tokio::test]
    async fn a_write_cut_off_is_not_retried_and_the_next_request_fails_over() {
        let east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let client = Client::connect(config(&[&east, &west]))
            .await
            .expect("connect");
        east.die_on_next_request();
        let error = client.put(b"k", b"v").await.expect_err("east died");
        assert!(error.is_connection_lost(), "{error}");
        assert_eq!(west.requests(), 0, "the write was not sent again");

        client
            .delete(b"k")
            .await
            .expect("the next write goes to west");
        assert_eq!(client.current_datacenter(), "west");
        assert_eq!(west.requests(), 1);
    }

    #[tokio::test]
    async fn a_read_cut_off_is_retried_on_the_next_datacenter() {
        let east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let client = Client::connect(config(&[&east, &west]))
            .await
            .expect("connect");
        east.die_on_next_request();
        assert_eq!(client.get(b"k").await.expect("retried on west"), None);
        assert_eq!(client.current_datacenter(), "west");
        assert_eq!((east.requests(), west.requests()), (1, 1));
    }

    #[tokio::test]
    async fn when_every_datacenter_is_down_the_error_names_each_address() {
        let mut east = FakeDatacenter::start("east");
        let mut west = FakeDatacenter::start("west");
        let config = config(&[&east, &west]);
        east.stop();
        west.stop();
        let error = Client::connect(config).await.expect_err("nothing listens");
        let ClientError::Connect { failures, .. } = &error else {
            panic!("expected a Connect error, got {error:?}");
        };
        let tried: Vec<&str> = failures.iter().map(|f| f.datacenter.as_str()).collect();
        assert_eq!(tried, ["east", "west"]);
        let text = error.to_string();
        assert!(
            text.contains(&east.address) && text.contains(&west.address),
            "{text}"
        );
    }
}
