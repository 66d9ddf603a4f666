//! One client connection: HELLO, then pipelined requests.
//!
//! The loop reads what the socket has, decodes every complete frame (at most
//! `requests_in_flight_max`; the rest waits in the buffer and the socket, so
//! a fast sender meets TCP back-pressure, not an unbounded queue), warms
//! their keys' lookups (a pipelined batch together; a lone GET with those of
//! the other connections woken at the same time), executes them — on this shard directly, on another shard through its inbox — and
//! writes the answers in request order with one write. Writes that must be
//! durable wait together for one group commit before their answers go out.
//!
//! Bad input (a frame the codec refuses, a first frame that is not HELLO, a
//! wrong cluster or secret) gets one ERROR frame naming the problem, then the
//! connection closes. Nothing of a refused frame is stored.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use meridian_engine::RecordKind;
use meridian_net::message::Hello;
use meridian_net::peer::{self, PeerRequest, PeerResponse};
use meridian_net::xdc::{is_xdc_request, XdcMessage};
use meridian_net::{
    DecodeError, Decoder, Encoder, ErrorCode, Frame, Limits, Opcode, Request, Response, Role,
    PROTOCOL_VERSION,
};

use crate::metrics::ShardCounters;
use crate::shard::{Shard, ShardCall, VnodeOp, WARM_KEYS_MAX};

const READ_CHUNK_BYTES: usize = 64 * 1024;

/// An answer being prepared.
enum Slot {
    Ready(Response),
    /// A local write whose answer waits for the batch's group commit.
    Durable(Response),
    Remote(flume::Receiver<Response>),
    /// A request coordinated across the cluster, running as its own task.
    Coordinated(glommio::Task<Response>),
    /// A peer's request, running as its own task.
    Peer(glommio::Task<Result<PeerResponse, Response>>),
    /// An XDC link's answer (handshake steps).
    Xdc(Result<XdcMessage, Response>),
    /// An XDC batch being applied.
    XdcBatch(glommio::Task<Result<XdcMessage, Response>>),
    /// An operator's command, answered by the XDC executor.
    Admin(flume::Receiver<Result<String, String>>),
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::Ready(_) => "Ready",
            Slot::Durable(_) => "Durable",
            Slot::Remote(_) => "Remote",
            Slot::Coordinated(_) => "Coordinated",
            Slot::Peer(_) => "Peer",
            Slot::Xdc(_) => "Xdc",
            Slot::XdcBatch(_) => "XdcBatch",
            Slot::Admin(_) => "Admin",
        })
    }
}

/// A frame's body decoded as a request, or why it could not be.
type Decoded = Result<Request, DecodeError>;

pub fn net_limits(shard: &Shard) -> Limits {
    let limits = &shard.config.limits;
    Limits {
        frame_bytes_max: limits.frame_bytes_max,
        key_bytes_max: limits.key_bytes_max,
        value_bytes_max: limits.value_bytes_max,
        ..Limits::default()
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error {
        code,
        message: message.into(),
    }
}

/// The request id of a frame the decoder refused, if its header got that far.
fn request_id_of(raw: &[u8]) -> u32 {
    raw.get(4..8)
        .map_or(0, |id| u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

#[derive(Debug)]
pub struct Connection {
    shard: Rc<Shard>,
    decoder: Decoder,
    encoder: Encoder,
    greeted: bool,
    /// The role the HELLO named.
    role: Option<Role>,
    /// An inbound XDC link's state (role `xdc` only).
    xdc: crate::xdc::receive::Session,
    /// Set while requests are being executed (shutdown waits for it to clear).
    pub busy: Rc<std::cell::Cell<bool>>,
    /// The answer slots of the batch being processed, kept between batches
    /// so a batch allocates nothing (empty outside `process`; at most
    /// `requests_in_flight_max` entries).
    slots: Vec<(u32, Slot)>,
    /// The frames of the batch being processed, kept the same way.
    frames: Vec<(Frame, Option<Decoded>)>,
}

impl Connection {
    pub fn new(shard: Rc<Shard>, busy: Rc<std::cell::Cell<bool>>) -> Connection {
        let limits = net_limits(&shard);
        Connection {
            decoder: Decoder::new(limits.clone()),
            encoder: Encoder::new(limits),
            shard,
            greeted: false,
            role: None,
            xdc: crate::xdc::receive::Session::default(),
            busy,
            slots: Vec::new(),
            frames: Vec::new(),
        }
    }

    pub async fn serve(mut self, mut stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let shard = Rc::clone(&self.shard);
        let counters = &shard.counters;
        // Set when `process` stopped at `requests_in_flight_max` with frames
        // possibly left in `input`: execute those before reading again, or
        // a client waiting for their answers would wait forever.
        let mut backlog = false;
        loop {
            if !backlog {
                let read = match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(read) => read,
                };
                ShardCounters::add(&counters.bytes_in, read as u64);
                input.extend_from_slice(&chunk[..read]);
            }
            self.busy.set(true);
            let (close, saturated) = self.process(&mut input, &mut output).await;
            backlog = saturated;
            self.busy.set(false);
            if !output.is_empty() {
                ShardCounters::add(&counters.bytes_out, output.len() as u64);
                if stream.write_all(&output).await.is_err() {
                    return;
                }
                output.clear();
            }
            if close {
                let _ = stream.close().await;
                return;
            }
        }
    }

    /// Executes the complete frames in `input`, at most
    /// `requests_in_flight_max`; returns whether to close, and whether it
    /// stopped at that limit (more frames may be waiting in `input`).
    async fn process(&mut self, input: &mut BytesMut, output: &mut BytesMut) -> (bool, bool) {
        let in_flight_max = self.shard.config.limits.requests_in_flight_max;
        let mut slots = std::mem::take(&mut self.slots);
        debug_assert!(slots.is_empty());
        let mut frames = std::mem::take(&mut self.frames);
        debug_assert!(frames.is_empty());
        let mut undecodable = None;
        while frames.len() < in_flight_max {
            match self.decoder.decode(input) {
                Ok(Some(frame)) => frames.push((frame, None)),
                Ok(None) => break,
                Err(refused) => {
                    undecodable = Some((
                        request_id_of(input),
                        Slot::Ready(Response::from_decode_error(&refused)),
                    ));
                    break;
                }
            }
        }
        if frames.len() > 1 {
            self.warm(&mut frames);
        } else if self.queue_warmup(&mut frames) {
            // A lone GET: the connections woken together with this one queue
            // their keys too while it yields once; the first to run again
            // warms them all.
            futures_lite::future::yield_now().await;
            self.shard.warm_queued();
        }
        let mut wait_epoch = None;
        let mut close = false;
        for (frame, request) in frames.drain(..) {
            let request_id = frame.request_id;
            let (slot, epoch, refused) = self.execute(frame, request).await;
            if let Some(epoch) = epoch {
                wait_epoch = Some(epoch);
            }
            slots.push((request_id, slot));
            if refused {
                // The frames after it are dropped unanswered: the
                // connection closes once this answer is written.
                close = true;
                break;
            }
        }
        self.frames = frames;
        if let Some(answer) = undecodable.filter(|_| !close) {
            slots.push(answer);
            close = true;
        }
        let saturated = !close && slots.len() >= in_flight_max;
        let synced = match wait_epoch {
            Some(epoch) => self.shard.wait_synced(epoch).await,
            None => Ok(()),
        };
        let answered = slots.len() as u64;
        for (request_id, slot) in slots.drain(..) {
            let response = match slot {
                Slot::Ready(response) => response,
                Slot::Durable(response) => match &synced {
                    Ok(()) => response,
                    Err(reason) => error(
                        ErrorCode::StorageError,
                        format!("write not durable: {reason}"),
                    ),
                },
                Slot::Remote(reply) => reply.recv_async().await.unwrap_or_else(|_| {
                    error(ErrorCode::Internal, "the shard owning the key stopped")
                }),
                Slot::Coordinated(task) => task.await,
                Slot::Peer(task) => match task.await {
                    Ok(answer) => {
                        self.send_peer(request_id, &answer, output);
                        continue;
                    }
                    Err(failure) => failure,
                },
                Slot::Xdc(answer) => match answer {
                    Ok(message) => {
                        self.send_xdc(request_id, &message, output);
                        continue;
                    }
                    Err(failure) => failure,
                },
                Slot::XdcBatch(task) => match task.await {
                    Ok(message) => {
                        self.send_xdc(request_id, &message, output);
                        continue;
                    }
                    Err(failure) => failure,
                },
                Slot::Admin(reply) => match reply.recv_async().await {
                    Ok(Ok(json)) => Response::Info { json },
                    Ok(Err(message)) => error(ErrorCode::MalformedBody, message),
                    Err(_) => error(ErrorCode::Internal, "the xdc executor stopped"),
                },
            };
            self.send(request_id, &response, output);
        }
        // Counted once per batch; `send` counts only the fallback paths'
        // extra frames, never a request twice.
        ShardCounters::add(&self.shard.counters.requests, answered);
        self.slots = slots;
        (close, saturated)
    }

    /// Encodes one answer (the request was counted by `process`).
    fn send(&self, request_id: u32, response: &Response, output: &mut BytesMut) {
        if matches!(response, Response::Error { .. }) {
            ShardCounters::add(&self.shard.counters.errors, 1);
        }
        if let Err(refused) = self.encoder.encode(request_id, response, output) {
            let fallback = error(
                ErrorCode::Internal,
                format!("response could not be encoded: {refused}"),
            );
            let _ = self.encoder.encode(request_id, &fallback, output);
        }
    }

    fn send_peer(&self, request_id: u32, answer: &PeerResponse, output: &mut BytesMut) {
        if let Err(refused) = answer.encode(request_id, self.decoder.limits(), output) {
            let fallback = error(
                ErrorCode::Internal,
                format!("peer answer could not be encoded: {refused}"),
            );
            self.send(request_id, &fallback, output);
        }
    }

    fn send_xdc(&self, request_id: u32, message: &XdcMessage, output: &mut BytesMut) {
        if let Err(refused) = message.encode(request_id, self.decoder.limits(), output) {
            let fallback = error(
                ErrorCode::Internal,
                format!("xdc answer could not be encoded: {refused}"),
            );
            self.send(request_id, &fallback, output);
        }
    }

    /// Starts an operator's command: `xdc …` goes to the XDC executor.
    fn execute_admin(&self, command: &str) -> Slot {
        let mut words = command.split_whitespace();
        let Some("xdc") = words.next() else {
            return Slot::Ready(error(
                ErrorCode::MalformedBody,
                format!("unknown admin command {command:?} (known: xdc …)"),
            ));
        };
        let words: Vec<String> = words.map(str::to_string).collect();
        let rest = command
            .trim_start()
            .splitn(3, char::is_whitespace)
            .nth(2)
            .unwrap_or("")
            .to_string();
        let (reply, answer) = flume::bounded(1);
        let control = crate::xdc::Control::Admin { words, rest, reply };
        if self.shard.xdc.control.try_send(control).is_err() {
            return Slot::Ready(error(
                ErrorCode::Overloaded,
                "the xdc executor is busy or stopped; try again",
            ));
        }
        Slot::Admin(answer)
    }

    /// Starts a peer's request as a task.
    fn execute_peer(&self, frame: &Frame) -> (Slot, Option<u64>, bool) {
        match PeerRequest::decode(frame, self.decoder.limits()) {
            Ok(request) => {
                let task = glommio::spawn_local(crate::cluster::serve::serve_peer(
                    Rc::clone(&self.shard),
                    request,
                ));
                (Slot::Peer(task), None, false)
            }
            Err(refused) => {
                let closes = refused.code().closes_connection();
                (
                    Slot::Ready(Response::from_decode_error(&refused)),
                    None,
                    closes,
                )
            }
        }
    }

    /// Whether this connection warms its keys' lookups: a greeted client of
    /// a single node (peers, XDC links and coordinated requests take other
    /// paths).
    fn warms_lookups(&self) -> bool {
        self.role == Some(Role::Client) && self.shard.cluster.is_none()
    }

    /// Decodes the client requests of a batch of frames and warms the cache
    /// lines their keys' lookups will read (`Shard::warm_lookups`), so a
    /// pipelined batch of GETs waits for its cache misses together (see
    /// `warms_lookups` for which connections do).
    fn warm(&self, frames: &mut [(Frame, Option<Decoded>)]) {
        if !self.warms_lookups() {
            return;
        }
        for (frame, request) in frames.iter_mut() {
            if matches!(frame.opcode, Opcode::GET | Opcode::PUT | Opcode::DELETE) {
                *request = Some(Request::decode(
                    frame.opcode,
                    frame.body.clone(),
                    self.decoder.limits(),
                ));
            }
        }
        self.shard
            .warm_lookups(frames.iter().filter_map(|(_, request)| match request {
                Some(Ok(Request::Get { key, .. }))
                | Some(Ok(Request::Put { key, .. }))
                | Some(Ok(Request::Delete { key, .. })) => Some(&key[..]),
                _ => None,
            }));
    }

    /// Decodes a batch of one GET and queues its key for the shard's next
    /// warmup (`Shard::queue_warmup`): unpipelined clients send one request
    /// at a time, but the connections the reactor wakes together run one
    /// after the other, so their lookups can be warmed together. Returns
    /// whether the key was queued (the caller then yields once).
    fn queue_warmup(&self, frames: &mut [(Frame, Option<Decoded>)]) -> bool {
        if !self.warms_lookups() {
            return false;
        }
        let Some((frame, request)) = frames.first_mut() else {
            return false;
        };
        if frame.opcode != Opcode::GET {
            return false;
        }
        let decoded = Request::decode(frame.opcode, frame.body.clone(), self.decoder.limits());
        let queued = match &decoded {
            Ok(Request::Get { key, .. }) => self.shard.queue_warmup(key.clone()),
            _ => false,
        };
        *request = Some(decoded);
        queued
    }

    /// Executes one frame (`request`: its body, when `warm` decoded it
    /// already): the answer slot, a sync epoch to wait for, and whether the
    /// connection must close after answering.
    async fn execute(
        &mut self,
        frame: Frame,
        request: Option<Decoded>,
    ) -> (Slot, Option<u64>, bool) {
        if self.role == Some(Role::Peer) && peer::is_peer_request(frame.opcode) {
            return self.execute_peer(&frame);
        }
        if self.role == Some(Role::Xdc) {
            // An xdc connection skipped node.secret at HELLO (it proves
            // xdc.secret instead): it carries XDC frames and nothing else.
            if !is_xdc_request(frame.opcode) {
                return (
                    Slot::Ready(error(
                        ErrorCode::UnknownOpcode,
                        format!(
                            "{} is not an XDC request: an xdc link carries only XDC frames",
                            frame.opcode
                        ),
                    )),
                    None,
                    true,
                );
            }
            return match self.xdc.handle(&self.shard, frame) {
                crate::xdc::receive::Step::Answer { answer, close } => {
                    (Slot::Xdc(answer), None, close)
                }
                crate::xdc::receive::Step::Applying(task) => (Slot::XdcBatch(task), None, false),
            };
        }
        let decoded = match request {
            Some(decoded) => decoded,
            None => frame.into_request(self.decoder.limits()),
        };
        let request = match decoded {
            Ok(request) => request,
            Err(refused) => {
                // A key, value or batch over its limit sits in a well-formed
                // frame: the stream is still in step, so the client keeps its
                // connection. Anything else undecodable closes it.
                let closes = refused.code().closes_connection();
                return (
                    Slot::Ready(Response::from_decode_error(&refused)),
                    None,
                    closes,
                );
            }
        };
        if !self.greeted {
            return match request {
                Request::Hello(hello) => match self.check_hello(&hello) {
                    Ok(response) => {
                        self.greeted = true;
                        self.role = Some(hello.role);
                        (Slot::Ready(response), None, false)
                    }
                    Err(refusal) => (Slot::Ready(refusal), None, true),
                },
                _ => (
                    Slot::Ready(error(
                        ErrorCode::NotHelloFirst,
                        "the first frame must be HELLO",
                    )),
                    None,
                    true,
                ),
            };
        }
        match request {
            Request::Hello(_) => (
                Slot::Ready(error(ErrorCode::MalformedBody, "HELLO was already sent")),
                None,
                true,
            ),
            Request::Ping => (Slot::Ready(Response::Pong), None, false),
            Request::Get { key, read_quorum } => {
                self.route(VnodeOp::Get { key }, read_quorum).await
            }
            Request::Put {
                key,
                value,
                ttl_seconds,
                write_quorum,
            } => {
                let op = VnodeOp::Put {
                    key,
                    value,
                    version: self.shard.stamp(),
                    expires_at: expiry(ttl_seconds),
                };
                self.write(op, write_quorum).await
            }
            Request::Delete { key, write_quorum } => {
                let op = VnodeOp::Delete {
                    key,
                    version: self.shard.stamp(),
                };
                self.write(op, write_quorum).await
            }
            Request::MultiGet { keys } => (Slot::Ready(self.multi_get(keys).await), None, false),
            Request::MultiPut {
                entries,
                ttl_seconds,
                ..
            } => (
                Slot::Ready(self.multi_put(entries, ttl_seconds).await),
                None,
                false,
            ),
            Request::BuildInfo => (
                Slot::Ready(Response::Info {
                    json: crate::info::build_info(),
                }),
                None,
                false,
            ),
            Request::ClusterInfo => (
                Slot::Ready(Response::Info {
                    json: crate::info::cluster_info(&self.shard).await,
                }),
                None,
                false,
            ),
            Request::NodeHealth => {
                let json = crate::info::node_health(&self.shard).await;
                (Slot::Ready(Response::Info { json }), None, false)
            }
            Request::Stats => (
                Slot::Ready(Response::Info {
                    json: crate::info::stats(&self.shard).await,
                }),
                None,
                false,
            ),
            Request::Admin { command } if self.role == Some(Role::Client) => {
                (self.execute_admin(&command), None, false)
            }
            other => (
                Slot::Ready(error(
                    ErrorCode::UnknownOpcode,
                    format!("{} is not served here", other.opcode()),
                )),
                None,
                false,
            ),
        }
    }

    fn check_hello(&self, hello: &Hello) -> Result<Response, Response> {
        let node = &self.shard.config.node;
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(error(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {} is not spoken here (this server speaks {PROTOCOL_VERSION})", hello.protocol_version),
            ));
        }
        if hello.role == Role::Xdc {
            // Another datacenter: its cluster name and secret are its own;
            // the link proves this datacenter's xdc.secret next (OPEN/PROVE).
            if self.shard.config.xdc.secret.is_empty() {
                return Err(error(
                    ErrorCode::AuthFailed,
                    format!(
                        "datacenter {:?} accepts no xdc links: its xdc.secret is not set",
                        node.datacenter
                    ),
                ));
            }
            return Ok(Response::HelloOk {
                protocol_version: PROTOCOL_VERSION,
                node_id: node.node_id as u32,
                cluster: node.cluster.clone(),
                datacenter: node.datacenter.clone(),
            });
        }
        if hello.cluster != node.cluster {
            return Err(error(
                ErrorCode::ClusterMismatch,
                format!(
                    "this node belongs to cluster {:?}, not {:?}",
                    node.cluster, hello.cluster
                ),
            ));
        }
        if !node.secret.is_empty() {
            let presented = hello.credentials.as_deref().unwrap_or(&[]);
            if !constant_time_equal(presented, node.secret.as_bytes()) {
                return Err(error(
                    ErrorCode::AuthFailed,
                    "credentials refused: wrong or missing secret",
                ));
            }
        }
        match hello.role {
            Role::Client => {}
            Role::Peer if self.shard.cluster.is_some() => {}
            Role::Peer => {
                return Err(error(
                    ErrorCode::ClusterMismatch,
                    "this node is a cluster of one (no cluster.members, no cluster.seeds): it takes no peers; to join a cluster, restart it with cluster.seeds",
                ))
            }
            other => {
                return Err(error(
                    ErrorCode::UnknownOpcode,
                    format!(
                        "role {other:?} is not served yet: cross-datacenter links arrive with XDC"
                    ),
                ))
            }
        }
        Ok(Response::HelloOk {
            protocol_version: PROTOCOL_VERSION,
            node_id: node.node_id as u32,
            cluster: node.cluster.clone(),
            datacenter: node.datacenter.clone(),
        })
    }

    /// Runs an op on the shard that owns `key` or, in a cluster, through
    /// the coordinator (`quorum` overrides R or W).
    async fn route(&self, op: VnodeOp, quorum: Option<u8>) -> (Slot, Option<u64>, bool) {
        if self.shard.cluster.is_some() {
            use crate::cluster::coordinator;
            use meridian_net::peer::EntryKind;
            let shard = Rc::clone(&self.shard);
            let task = match op {
                VnodeOp::Get { key } => glommio::spawn_local(coordinator::read(shard, key, quorum)),
                VnodeOp::Put {
                    key,
                    value,
                    expires_at,
                    ..
                } => glommio::spawn_local(coordinator::write(
                    shard,
                    key,
                    EntryKind::Put,
                    value,
                    expires_at,
                    quorum,
                )),
                VnodeOp::Delete { key, .. } => glommio::spawn_local(coordinator::write(
                    shard,
                    key,
                    EntryKind::Tombstone,
                    Bytes::new(),
                    0,
                    quorum,
                )),
            };
            return (Slot::Coordinated(task), None, false);
        }
        let partition = self.shard.partitioner.partition_of(op.key());
        let owner = self.shard.partitioner.shard_of_partition(partition);
        if owner == self.shard.index {
            let (response, epoch) = self.shard.apply(partition, op);
            let slot = if epoch.is_some() {
                Slot::Durable(response)
            } else {
                Slot::Ready(response)
            };
            return (slot, epoch, false);
        }
        let (reply, answer) = flume::bounded(1);
        let call = ShardCall::Op {
            partition,
            op,
            reply,
        };
        if self.shard.inboxes[owner].send_async(call).await.is_err() {
            return (
                Slot::Ready(error(
                    ErrorCode::ShuttingDown,
                    "the shard owning the key stopped",
                )),
                None,
                false,
            );
        }
        (Slot::Remote(answer), None, false)
    }

    /// Runs a PUT or DELETE: routed as usual, or, while some XDC link is
    /// synchronous, answered only once the other datacenters have it.
    async fn write(&self, op: VnodeOp, quorum: Option<u8>) -> (Slot, Option<u64>, bool) {
        if self
            .shard
            .xdc
            .sync_links
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            let response = self.write_synchronously(op, quorum).await;
            return (Slot::Ready(response), None, false);
        }
        self.route(op, quorum).await
    }

    /// A write while some XDC link is synchronous: written here as usual,
    /// then answered only once every synchronous link's datacenter has it
    /// (or with an error saying it is stored here but not there yet).
    async fn write_synchronously(&self, op: VnodeOp, quorum: Option<u8>) -> Response {
        let (kind, key, value, expires_at) = match &op {
            VnodeOp::Put {
                key,
                value,
                expires_at,
                ..
            } => (RecordKind::Put, key.clone(), value.clone(), *expires_at),
            VnodeOp::Delete { key, .. } => (RecordKind::Tombstone, key.clone(), Bytes::new(), 0),
            VnodeOp::Get { .. } => return self.resolve_with(op, quorum).await,
        };
        let partition = self.shard.partitioner.partition_of(&key);
        let response = self.resolve_with(op, quorum).await;
        let Response::Written { version } = &response else {
            return response;
        };
        let record = meridian_xdc::XdcRecord {
            kind,
            partition,
            key,
            value,
            version: meridian_engine::Version::new(version.hlc, version.origin),
            expires_at,
        };
        let timeout = Duration::from_millis(u64::from(self.shard.config.xdc.sync_timeout_ms));
        match self.shard.xdc.wait_shipped(record, timeout).await {
            Ok(()) => response,
            Err(reason) => error(
                ErrorCode::Timeout,
                format!("written here (version {}), but not confirmed by the other datacenter: {reason}", version.hlc),
            ),
        }
    }

    async fn resolve(&self, op: VnodeOp) -> Response {
        self.resolve_with(op, None).await
    }

    async fn resolve_with(&self, op: VnodeOp, quorum: Option<u8>) -> Response {
        let (slot, epoch, _) = self.route(op, quorum).await;
        match slot {
            Slot::Ready(response) => response,
            Slot::Durable(response) => match self.shard.wait_synced(epoch.unwrap_or(0)).await {
                Ok(()) => response,
                Err(reason) => error(
                    ErrorCode::StorageError,
                    format!("write not durable: {reason}"),
                ),
            },
            Slot::Remote(reply) => reply
                .recv_async()
                .await
                .unwrap_or_else(|_| error(ErrorCode::Internal, "the shard owning the key stopped")),
            Slot::Coordinated(task) => task.await,
            Slot::Peer(task) => task
                .await
                .err()
                .unwrap_or_else(|| error(ErrorCode::Internal, "peer answer on a client path")),
            Slot::Xdc(_) | Slot::XdcBatch(_) | Slot::Admin(_) => {
                error(ErrorCode::Internal, "an xdc slot on a client path")
            }
        }
    }

    /// Reads the keys in order, warming each `WARM_KEYS_MAX` of them
    /// together first (as `warm` does for a pipelined batch).
    async fn multi_get(&self, keys: Vec<Bytes>) -> Response {
        let mut entries = Vec::with_capacity(keys.len());
        for group in keys.chunks(WARM_KEYS_MAX) {
            if self.shard.cluster.is_none() {
                self.shard.warm_lookups(group.iter().map(|key| &key[..]));
            }
            for key in group {
                match self.resolve(VnodeOp::Get { key: key.clone() }).await {
                    Response::Value(value) => entries.push(Some(value)),
                    Response::NotFound => entries.push(None),
                    failure => return failure,
                }
            }
        }
        Response::Values { entries }
    }

    async fn multi_put(&self, pairs: Vec<(Bytes, Bytes)>, ttl_seconds: Option<u32>) -> Response {
        let mut versions = Vec::with_capacity(pairs.len());
        for (key, value) in pairs {
            let op = VnodeOp::Put {
                key,
                value,
                version: self.shard.stamp(),
                expires_at: expiry(ttl_seconds),
            };
            match self.resolve(op).await {
                Response::Written { version } => versions.push(version),
                failure => return failure,
            }
        }
        Response::WrittenMany { versions }
    }
}

/// Unix seconds at which a value with `ttl_seconds` expires; 0 = never.
fn expiry(ttl_seconds: Option<u32>) -> u32 {
    match ttl_seconds {
        Some(ttl) if ttl > 0 => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (now + ttl as u64).min(u32::MAX as u64) as u32
        }
        _ => 0,
    }
}

fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    left.iter()
        .zip(right)
        .fold(0u8, |difference, (a, b)| difference | (a ^ b))
        == 0
}
