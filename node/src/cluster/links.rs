//! Persistent connections from one shard to the other members.
//!
//! One connection per member per shard, opened on first use with a HELLO of
//! role `peer`, then shared by every request of the shard: requests are
//! pipelined with ids, a reader task hands each answer to its waiter, and a
//! waiter gives up at its deadline. A broken connection fails every request
//! in flight on it and is opened again by the next request.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use meridian_net::message::Hello;
use meridian_net::peer::{PeerRequest, PeerResponse};
use meridian_net::{
    Decoder, Encoder, ErrorCode, Frame, Limits, Opcode, Request, Response, Role, PROTOCOL_VERSION,
};

use crate::config::Config;

/// Why a call to a peer failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PeerError {
    #[error("cannot reach node {node} at {address}: {reason}")]
    Connect {
        node: u16,
        address: String,
        reason: String,
    },
    #[error("node {node} did not answer within {timeout_ms} ms")]
    Timeout { node: u16, timeout_ms: u64 },
    #[error("connection to node {node} broke")]
    Closed { node: u16 },
    #[error("node {node} refused: {code}: {message}")]
    Remote {
        node: u16,
        code: ErrorCode,
        message: String,
    },
    #[error("node {node} answered something unreadable: {reason}")]
    Malformed { node: u16, reason: String },
}

struct LinkConnection {
    /// Encoded frames for the writer task, which sends everything queued
    /// while its previous write was in progress in one write.
    /// Dropped when the connection fails, which ends the writer task.
    outgoing: RefCell<Option<flume::Sender<BytesMut>>>,
    pending: RefCell<HashMap<u32, flume::Sender<Frame>>>,
    next_id: Cell<u32>,
    broken: Cell<bool>,
}

impl LinkConnection {
    fn fail_all(&self) {
        self.broken.set(true);
        self.pending.borrow_mut().clear();
        self.outgoing.borrow_mut().take();
    }

    /// Queues a frame for the writer; false once the connection failed.
    fn queue(&self, frame: BytesMut) -> bool {
        self.outgoing
            .borrow()
            .as_ref()
            .is_some_and(|sender| sender.send(frame).is_ok())
    }
}

pub struct PeerLinks {
    connections: RefCell<HashMap<u16, Rc<LinkConnection>>>,
    connect_locks: RefCell<HashMap<u16, Rc<Semaphore>>>,
    limits: Limits,
    hello: Hello,
}

impl std::fmt::Debug for PeerLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerLinks")
            .field("open", &self.connections.borrow().len())
            .finish()
    }
}

impl PeerLinks {
    pub fn new(config: &Config) -> PeerLinks {
        let secret = &config.node.secret;
        PeerLinks {
            connections: RefCell::default(),
            connect_locks: RefCell::default(),
            limits: Limits {
                frame_bytes_max: config.limits.frame_bytes_max,
                key_bytes_max: config.limits.key_bytes_max,
                value_bytes_max: config.limits.value_bytes_max,
                ..Limits::default()
            },
            hello: Hello {
                protocol_version: PROTOCOL_VERSION,
                role: Role::Peer,
                cluster: config.node.cluster.clone(),
                datacenter: config.node.datacenter.clone(),
                credentials: (!secret.is_empty())
                    .then(|| bytes::Bytes::from(secret.clone().into_bytes())),
            },
        }
    }

    /// Sends `request` to `node` and waits for its answer until `timeout`.
    pub async fn call(
        &self,
        node: u16,
        address: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let deadline = std::time::Instant::now() + timeout;
        let connect = async { Some(self.connection(node, address).await) };
        let connection = match futures_lite::future::or(connect, sleep_none(timeout)).await {
            Some(connection) => connection?,
            None => return Err(expired(node, timeout)),
        };
        let result = self
            .exchange(node, &connection, request, deadline, timeout)
            .await;
        if connection.broken.get() {
            self.connections.borrow_mut().remove(&node);
        }
        result
    }

    /// Sends `request` over a connection of its own to `address`, a node
    /// whose id is not known yet (a seed), and closes it after the answer.
    /// `node` only names the peer in errors.
    pub async fn call_address(
        &self,
        node: u16,
        address: &str,
        request: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let deadline = std::time::Instant::now() + timeout;
        let connect = async { Some(self.connect(node, address).await) };
        let connection = match futures_lite::future::or(connect, sleep_none(timeout)).await {
            Some(connection) => connection?,
            None => return Err(expired(node, timeout)),
        };
        let result = self
            .exchange(node, &connection, request, deadline, timeout)
            .await;
        connection.fail_all();
        result
    }

    async fn exchange(
        &self,
        node: u16,
        connection: &Rc<LinkConnection>,
        request: &PeerRequest,
        deadline: std::time::Instant,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        let request_id = connection.next_id.get();
        connection.next_id.set(request_id.wrapping_add(1).max(1));
        let (answer, reply) = flume::bounded(1);
        connection.pending.borrow_mut().insert(request_id, answer);
        let exchange = async {
            let mut frame = BytesMut::new();
            request
                .encode(request_id, &self.limits, &mut frame)
                .map_err(|e| PeerError::Malformed {
                    node,
                    reason: format!("request not encodable: {e}"),
                })?;
            if !connection.queue(frame) {
                connection.fail_all();
                return Err(PeerError::Closed { node });
            }
            let frame = reply
                .recv_async()
                .await
                .map_err(|_| PeerError::Closed { node })?;
            self.interpret(node, frame)
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match futures_lite::future::or(async { Some(exchange.await) }, sleep_none(left)).await {
            Some(result) => result,
            None => {
                // Forget the waiter: a late answer is dropped on arrival.
                connection.pending.borrow_mut().remove(&request_id);
                Err(expired(node, timeout))
            }
        }
    }

    fn interpret(&self, node: u16, frame: Frame) -> Result<PeerResponse, PeerError> {
        if frame.opcode == Opcode::ERROR {
            return match frame.response(&self.limits) {
                Ok(Response::Error { code, message }) => Err(PeerError::Remote {
                    node,
                    code,
                    message,
                }),
                _ => Err(PeerError::Malformed {
                    node,
                    reason: "undecodable ERROR frame".to_string(),
                }),
            };
        }
        PeerResponse::decode(&frame, &self.limits).map_err(|e| PeerError::Malformed {
            node,
            reason: e.to_string(),
        })
    }

    async fn connection(&self, node: u16, address: &str) -> Result<Rc<LinkConnection>, PeerError> {
        if let Some(connection) = self.live_connection(node) {
            return Ok(connection);
        }
        let lock = Rc::clone(
            self.connect_locks
                .borrow_mut()
                .entry(node)
                .or_insert_with(|| Rc::new(Semaphore::new(1))),
        );
        let _permit = lock.acquire_permit(1).await;
        if let Some(connection) = self.live_connection(node) {
            return Ok(connection);
        }
        let connection = self.connect(node, address).await?;
        self.connections
            .borrow_mut()
            .insert(node, Rc::clone(&connection));
        Ok(connection)
    }

    fn live_connection(&self, node: u16) -> Option<Rc<LinkConnection>> {
        let connections = self.connections.borrow();
        connections.get(&node).filter(|c| !c.broken.get()).cloned()
    }

    async fn connect(&self, node: u16, address: &str) -> Result<Rc<LinkConnection>, PeerError> {
        let failed = |reason: String| PeerError::Connect {
            node,
            address: address.to_string(),
            reason,
        };
        let mut stream = TcpStream::connect(address)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let mut hello = BytesMut::new();
        Encoder::new(self.limits)
            .encode(0, &Request::Hello(self.hello.clone()), &mut hello)
            .map_err(|e| failed(e.to_string()))?;
        stream
            .write_all(&hello)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let mut decoder = Decoder::new(self.limits);
        let mut input = BytesMut::new();
        let mut chunk = vec![0u8; 4096];
        let answer = loop {
            if let Some(frame) = decoder
                .decode(&mut input)
                .map_err(|e| failed(e.to_string()))?
            {
                break frame;
            }
            let read = stream
                .read(&mut chunk)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if read == 0 {
                return Err(failed("closed during HELLO".to_string()));
            }
            input.extend_from_slice(&chunk[..read]);
        };
        match answer.response(&self.limits) {
            Ok(Response::HelloOk { .. }) => {}
            Ok(Response::Error { code, message }) => {
                return Err(PeerError::Remote {
                    node,
                    code,
                    message,
                })
            }
            other => return Err(failed(format!("unexpected answer to HELLO: {other:?}"))),
        }
        let (reader, writer) = futures_lite::io::split(stream);
        let (outgoing, queued) = flume::unbounded();
        let connection = Rc::new(LinkConnection {
            outgoing: RefCell::new(Some(outgoing)),
            pending: RefCell::default(),
            next_id: Cell::new(1),
            broken: Cell::new(false),
        });
        glommio::spawn_local(read_answers(Rc::clone(&connection), reader, decoder, input)).detach();
        glommio::spawn_local(write_requests(Rc::clone(&connection), writer, queued)).detach();
        Ok(connection)
    }
}

fn expired(node: u16, timeout: Duration) -> PeerError {
    PeerError::Timeout {
        node,
        timeout_ms: timeout.as_millis() as u64,
    }
}

/// Sleeps for `duration`, then yields `None` (the losing side of a race).
async fn sleep_none<T>(duration: Duration) -> Option<T> {
    glommio::timer::sleep(duration).await;
    None
}

/// Sends queued request frames, coalescing whatever queued up during the
/// previous write into the next one, until the connection ends.
async fn write_requests(
    connection: Rc<LinkConnection>,
    mut writer: WriteHalf<TcpStream>,
    queued: flume::Receiver<BytesMut>,
) {
    /// Bytes gathered into one write at most.
    const COALESCE_BYTES_MAX: usize = 1 << 20;
    while let Ok(mut batch) = queued.recv_async().await {
        while batch.len() < COALESCE_BYTES_MAX {
            match queued.try_recv() {
                Ok(more) => batch.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if connection.broken.get() || writer.write_all(&batch).await.is_err() {
            connection.fail_all();
            return;
        }
    }
}

/// Hands every answer on a connection to its waiter, until the connection ends.
async fn read_answers(
    connection: Rc<LinkConnection>,
    mut reader: ReadHalf<TcpStream>,
    mut decoder: Decoder,
    mut input: BytesMut,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    if let Some(waiter) = connection.pending.borrow_mut().remove(&frame.request_id)
                    {
                        let _ = waiter.send(frame);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    connection.fail_all();
                    return;
                }
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                connection.fail_all();
                return;
            }
            Ok(read) => input.extend_from_slice(&chunk[..read]),
        }
    }
}
