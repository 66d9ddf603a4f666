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
//!   (HELLO first) with bounded backoff. Reads are retried once; writes are
//!   not.
//! - Dropping the last handle aborts the connection's tasks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::core::{self, Backoff, ClientConfig, ServerHello};
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
    encoder: Encoder,
    next_request_id: AtomicU32,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
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
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (HELLO included) to the first address that answers.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client {
            inner: Arc::new(Inner {
                encoder: Encoder::new(config.limits),
                config,
                next_request_id: AtomicU32::new(1),
                connection: tokio::sync::Mutex::new(None),
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

    fn take_request_id(&self) -> u32 {
        loop {
            let id = self.inner.next_request_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, ClientError> {
        let mut guard = self.inner.connection.lock().await;
        if let Some(connection) = guard.as_ref() {
            if !connection.shared.closed.load(Ordering::Acquire) {
                return Ok(Arc::clone(connection));
            }
        }
        *guard = None;
        let connection = Arc::new(self.connect_with_backoff().await?);
        *guard = Some(Arc::clone(&connection));
        Ok(connection)
    }

    async fn connect_with_backoff(&self) -> Result<Connection, ClientError> {
        let config = &self.inner.config;
        let mut backoff = Backoff::new(config);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut last_error = String::new();
            for address in &config.addresses {
                match self.connect_one(address).await {
                    Ok(connection) => return Ok(connection),
                    Err(error @ ClientError::HelloRefused { .. }) => return Err(error),
                    Err(error) => last_error = error.to_string(),
                }
            }
            match backoff.next_attempt() {
                Some(wait) => tokio::time::sleep(wait).await,
                None => {
                    return Err(ClientError::Connect {
                        addresses: config.addresses.clone(),
                        attempts,
                        last_error,
                    })
                }
            }
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
