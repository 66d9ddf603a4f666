//! The sending end of one XDC link, run by the XDC executor.
//!
//! A link task opens a TCP connection to the remote datacenter (keepalive,
//! nodelay and buffer sizes set through socket2), proves the link
//! (`meridian_xdc::handshake`), then ships: for every vnode this node
//! ships (the first live primary's, asked of shard 0 every second), a
//! lane holds a [`Shipper`]; each tick asks every shard, in one call, for
//! the records past each lane's read position, feeds them to the lanes,
//! sends the batches that are due, and routes ACKs back to their lane.
//! Acknowledged positions are saved once a second (one fsync for every
//! lane) and moved into the engines' cursors, which keep compaction from
//! removing what the link has not shipped.
//!
//! A broken connection, an ERROR answer or an ACK later than
//! `xdc.ack_timeout_ms` rewinds every lane to its acknowledged position;
//! the task reconnects with a doubling backoff up to `xdc.reconnect_max_ms`.
//!
//! Invariants:
//! - a lane's saved position is one the remote acknowledged (replay, never
//!   skip); the engine cursor is moved only to saved positions;
//! - borrows of the link's state never cross an await.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use meridian_engine::LogPosition;
use meridian_net::message::Hello;
use meridian_net::xdc::{
    XdcMessage, XDC_BATCH, XDC_BATCH_ACK, XDC_CHALLENGE, XDC_OPEN, XDC_PROVE, XDC_PROVEN,
};
use meridian_net::{
    Decoder, Encoder, Frame, Limits, Opcode, Request, Response, Role, PROTOCOL_VERSION,
};
use meridian_xdc::handshake::{self, Introduction, Side, PROOF_LEN};
use meridian_xdc::{
    AckOutcome, BatchLimits, BatcherConfig, Closed, Compression, LinkConfig, Shipper,
    ShipperConfig, XdcRecord,
};

use super::cursors::LinkCursors;
use super::links::LinkSpec;
use super::receive::local_introduction;
use super::Executor;
use crate::shard::{ShardCall, TailAnswer, TailError, TailRead};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const OWNERSHIP_REFRESH: Duration = Duration::from_secs(1);
const CURSOR_SAVE_INTERVAL: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// What a link shows in `xdc status`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LinkStatus {
    pub state: &'static str,
    pub last_error: Option<String>,
    pub remote_datacenter: Option<String>,
    pub remote_partitions: Option<u32>,
    pub connects: u64,
    pub batches_sent: u64,
    pub records_sent: u64,
    pub bytes_sent: u64,
    pub batches_acknowledged: u64,
    pub records_applied_remote: u64,
    pub records_stale_remote: u64,
    pub rewinds: u64,
    pub records_coalesced: u64,
    /// Some vnode's cursor passed the retention cap: records were
    /// compacted away before they were shipped, and a fullsync is needed.
    pub needs_fullsync: bool,
}

/// One vnode's shipping on a link.
struct Lane {
    shipper: Shipper,
    /// The link epoch the shipper numbers its batches in.
    epoch: u32,
    /// The position last saved (and moved into the engine cursor).
    saved: LogPosition,
}

/// One link's state, shared by its task and `xdc status`.
#[allow(missing_debug_implementations)] // shipper state: shown by `xdc status`
pub struct Link {
    pub spec: RefCell<LinkSpec>,
    pub status: RefCell<LinkStatus>,
    /// Set by `xdc disconnect`: the task ends.
    pub stop: Cell<bool>,
    lanes: RefCell<BTreeMap<u32, Lane>>,
    /// The remote's answer to the last batch per request id: which lane.
    in_flight: RefCell<HashMap<u32, (u32, Instant)>>,
    /// Totals of lanes that were dropped (ownership moved), kept for status.
    retired: RefCell<meridian_xdc::ShipperStats>,
    /// The last (or running) fullsync.
    pub fullsync: RefCell<super::fullsync::FullsyncProgress>,
    /// A lane fell past the log's retention: a fullsync is due.
    pub fullsync_wanted: Cell<bool>,
    /// The link id of the lanes (the remote datacenter they ship to).
    link_id: Cell<Option<u32>>,
    /// Records of synchronous writes waiting to be sent, with their waiters.
    sync_queue: RefCell<Vec<(XdcRecord, SyncWaiter)>>,
    /// Synchronous batches sent, by request id: their waiters.
    sync_in_flight: RefCell<HashMap<u32, Vec<SyncWaiter>>>,
    sync_sequence: Cell<u64>,
}

type SyncWaiter = flume::Sender<Result<(), String>>;

/// Sequence numbers of synchronous batches live in an epoch of their own.
const SYNC_EPOCH: u64 = u32::MAX as u64 - 1;

impl Link {
    pub fn new(spec: LinkSpec) -> Link {
        Link {
            spec: RefCell::new(spec),
            status: RefCell::new(LinkStatus {
                state: "starting",
                ..LinkStatus::default()
            }),
            stop: Cell::new(false),
            lanes: RefCell::default(),
            in_flight: RefCell::default(),
            retired: RefCell::default(),
            fullsync: RefCell::default(),
            fullsync_wanted: Cell::new(false),
            link_id: Cell::new(None),
            sync_queue: RefCell::default(),
            sync_in_flight: RefCell::default(),
            sync_sequence: Cell::new(0),
        }
    }

    /// Each lane's acknowledged position, and the records and bytes sent
    /// but not yet acknowledged.
    pub fn in_flight(&self) -> (Vec<(u32, LogPosition)>, u64, u64) {
        let lanes = self.lanes.borrow();
        let mut records = 0;
        let mut bytes = 0;
        for lane in lanes.values() {
            let lag = lane.shipper.lag_in_flight();
            records += lag.0;
            bytes += lag.1;
        }
        let positions = lanes
            .iter()
            .map(|(&partition, lane)| (partition, lane.shipper.acknowledged()))
            .collect();
        (positions, records, bytes)
    }

    /// Queues a synchronous write's record; the receiver answers once the
    /// remote datacenter acknowledged it. Refused at once when the link is
    /// not open.
    pub fn queue_sync(
        &self,
        record: XdcRecord,
    ) -> Result<flume::Receiver<Result<(), String>>, String> {
        let state = self.status.borrow().state;
        if state != "open" {
            return Err(format!(
                "synchronous link {:?} is {state}: the write is stored here and will be shipped when the link reopens",
                self.spec.borrow().name
            ));
        }
        let (waiter, answer) = flume::bounded(1);
        self.sync_queue.borrow_mut().push((record, waiter));
        Ok(answer)
    }

    /// Fails every synchronous write waiting on this link.
    fn fail_sync(&self, reason: &str) {
        let message = format!("synchronous link {:?}: {reason}", self.spec.borrow().name);
        for (_, waiter) in self.sync_queue.borrow_mut().drain(..) {
            let _ = waiter.send(Err(message.clone()));
        }
        for (_, waiters) in self.sync_in_flight.borrow_mut().drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(message.clone()));
            }
        }
    }

    /// Drops every lane, keeping its counters in the link's totals.
    fn retire_lanes(&self) {
        let lanes = std::mem::take(&mut *self.lanes.borrow_mut());
        let mut retired = self.retired.borrow_mut();
        for lane in lanes.values() {
            add_stats(&mut retired, &lane.shipper.stats());
        }
    }

    fn refresh_totals(&self) {
        let lanes = self.lanes.borrow();
        let retired = *self.retired.borrow();
        let mut status = self.status.borrow_mut();
        let mut total = retired;
        for lane in lanes.values() {
            add_stats(&mut total, &lane.shipper.stats());
        }
        status.batches_sent = total.batches_sent;
        status.records_sent = total.records_sent;
        status.bytes_sent = total.bytes_sent;
        status.batches_acknowledged = total.batches_acknowledged;
        status.rewinds = total.rewinds;
        status.records_coalesced = total.batcher.records_coalesced;
    }
}

fn add_stats(total: &mut meridian_xdc::ShipperStats, stats: &meridian_xdc::ShipperStats) {
    total.batches_sent += stats.batches_sent;
    total.records_sent += stats.records_sent;
    total.bytes_sent += stats.bytes_sent;
    total.batches_acknowledged += stats.batches_acknowledged;
    total.rewinds += stats.rewinds;
    total.batcher.records_coalesced += stats.batcher.records_coalesced;
}

/// Runs one link until `xdc disconnect` or shutdown.
pub async fn run_link(executor: Rc<Executor>, link: Rc<Link>) {
    let mut backoff = BACKOFF_FIRST;
    let reconnect_max = Duration::from_millis(u64::from(executor.config.xdc.reconnect_max_ms));
    while !link.stop.get() && !executor.stopping() {
        let spec = link.spec.borrow().clone();
        if spec.paused {
            link.status.borrow_mut().state = "paused";
            glommio::timer::sleep(Duration::from_millis(100)).await;
            continue;
        }
        link.status.borrow_mut().state = "connecting";
        let opened = open_link(&executor, &spec).await;
        let reason = match opened {
            Ok(open) => {
                backoff = BACKOFF_FIRST;
                {
                    let mut status = link.status.borrow_mut();
                    status.state = "open";
                    status.connects += 1;
                    status.last_error = None;
                    status.remote_datacenter = Some(open.remote.datacenter.clone());
                    status.remote_partitions = Some(open.remote.partitions);
                }
                tracing::info!(link = %spec.name, remote = %open.remote.datacenter, "xdc link open");
                let reason = ship(&executor, &link, open).await;
                link.status.borrow_mut().state = "reconnecting";
                link.fail_sync(&reason);
                for lane in link.lanes.borrow_mut().values_mut() {
                    lane.shipper.on_link_lost();
                }
                link.in_flight.borrow_mut().clear();
                reason
            }
            Err(reason) => reason,
        };
        if link.stop.get() || executor.stopping() {
            break;
        }
        tracing::warn!(link = %spec.name, %reason, "xdc link down; reconnecting");
        {
            let mut status = link.status.borrow_mut();
            status.state = "reconnecting";
            status.last_error = Some(reason);
        }
        glommio::timer::sleep(backoff).await;
        backoff = (backoff * 2).min(reconnect_max);
    }
    link.status.borrow_mut().state = "stopped";
}

/// An open, proven connection.
#[allow(missing_debug_implementations)] // holds a socket
pub struct OpenLink {
    pub(super) stream: TcpStream,
    pub(super) decoder: Decoder,
    pub(super) input: BytesMut,
    pub link_id: u32,
    pub remote: Introduction,
}

fn limits(executor: &Executor) -> Limits {
    Limits {
        frame_bytes_max: executor.config.limits.frame_bytes_max,
        key_bytes_max: executor.config.limits.key_bytes_max,
        value_bytes_max: executor.config.limits.value_bytes_max,
        ..Limits::default()
    }
}

/// Connects to the first of the link's addresses (a comma-separated list
/// of nodes of the remote datacenter) that answers.
async fn connect_any(addresses: &str) -> Result<TcpStream, String> {
    let mut failures = Vec::new();
    for address in addresses
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        match connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(reason) => failures.push(reason),
        }
    }
    Err(if failures.is_empty() {
        format!("no address in {addresses:?}")
    } else {
        failures.join("; ")
    })
}

/// Connects on a helper thread (a blocking connect with a timeout, socket
/// options set through socket2), then hands the socket to this executor.
async fn connect(address: &str) -> Result<TcpStream, String> {
    let address = address.to_string();
    let (sender, receiver) = flume::bounded(1);
    std::thread::Builder::new()
        .name("xdc-connect".to_string())
        .spawn(move || {
            let _ = sender.send(connect_blocking(&address));
        })
        .map_err(|e| format!("cannot start a connect thread: {e}"))?;
    let socket = receiver
        .recv_async()
        .await
        .map_err(|_| "connect thread stopped".to_string())??;
    Ok(TcpStream::from(socket))
}

fn connect_blocking(address: &str) -> Result<glommio_socket2::Socket, String> {
    use std::net::ToSocketAddrs;
    let resolved = address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let socket = glommio_socket2::Socket::new(
        glommio_socket2::Domain::for_address(resolved),
        glommio_socket2::Type::STREAM,
        Some(glommio_socket2::Protocol::TCP),
    )
    .map_err(|e| e.to_string())?;
    socket.set_nodelay(true).map_err(|e| e.to_string())?;
    socket.set_keepalive(true).map_err(|e| e.to_string())?;
    let keepalive = glommio_socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(10))
        .with_interval(Duration::from_secs(5));
    socket
        .set_tcp_keepalive(&keepalive)
        .map_err(|e| e.to_string())?;
    // Larger buffers keep a long round trip from capping throughput; the
    // kernel clamps them to its limits.
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    socket
        .connect_timeout(&resolved.into(), CONNECT_TIMEOUT)
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    socket.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(socket)
}

/// Reads one frame, within the handshake deadline.
async fn read_frame(
    stream: &mut TcpStream,
    decoder: &mut Decoder,
    input: &mut BytesMut,
) -> Result<Frame, String> {
    let mut chunk = vec![0u8; 4096];
    loop {
        if let Some(frame) = decoder.decode(input).map_err(|e| e.to_string())? {
            return Ok(frame);
        }
        let read = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if read == 0 {
            return Err("the remote closed the connection".to_string());
        }
        input.extend_from_slice(&chunk[..read]);
    }
}

fn refusal_of(frame: &Frame, limits: &Limits, step: &str) -> String {
    match frame.response(limits) {
        Ok(Response::Error { code, message }) => format!("refused at {step}: {code}: {message}"),
        _ => format!("unexpected answer {} at {step}", frame.opcode),
    }
}

/// Opens and proves a link to `spec.address`.
pub async fn open_link(executor: &Executor, spec: &LinkSpec) -> Result<OpenLink, String> {
    let attempt = async {
        let limits = limits(executor);
        let mut stream = connect_any(&spec.address).await?;
        let mut decoder = Decoder::new(limits.clone());
        let mut input = BytesMut::new();
        let encoder = Encoder::new(limits.clone());
        let config = &executor.config;
        let mut out = BytesMut::new();
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Xdc,
            cluster: config.node.cluster.clone(),
            datacenter: config.node.datacenter.clone(),
            credentials: None,
        });
        encoder
            .encode(0, &hello, &mut out)
            .map_err(|e| e.to_string())?;
        let opener = local_introduction(config);
        XdcMessage::new(XDC_OPEN, opener.encode())
            .encode(1, &limits, &mut out)
            .map_err(|e| e.to_string())?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let hello_answer = read_frame(&mut stream, &mut decoder, &mut input).await?;
        if hello_answer.opcode != Opcode::HELLO_OK {
            return Err(refusal_of(&hello_answer, &limits, "HELLO"));
        }
        let challenge = read_frame(&mut stream, &mut decoder, &mut input).await?;
        if challenge.opcode != XDC_CHALLENGE {
            return Err(refusal_of(&challenge, &limits, "XDC_OPEN"));
        }
        if challenge.body.len() < PROOF_LEN {
            return Err("XDC_CHALLENGE too short".to_string());
        }
        let answerer =
            Introduction::decode(&challenge.body[PROOF_LEN..]).map_err(|e| e.to_string())?;
        let secret = spec.secret.as_bytes();
        if !handshake::verify(
            secret,
            Side::Answerer,
            &opener,
            &answerer,
            &challenge.body[..PROOF_LEN],
        ) {
            return Err(format!(
                "datacenter {:?} did not prove the link secret: wrong secret (the link's secret must equal the remote's xdc.secret)",
                answerer.datacenter
            ));
        }
        if let Some(reason) = opener.refusal(&answerer) {
            return Err(reason);
        }
        out.clear();
        let proof = handshake::proof(secret, Side::Opener, &opener, &answerer);
        XdcMessage::new(XDC_PROVE, proof.to_vec())
            .encode(2, &limits, &mut out)
            .map_err(|e| e.to_string())?;
        stream.write_all(&out).await.map_err(|e| e.to_string())?;
        let proven = read_frame(&mut stream, &mut decoder, &mut input).await?;
        if proven.opcode != XDC_PROVEN {
            return Err(refusal_of(&proven, &limits, "XDC_PROVE"));
        }
        Ok(OpenLink {
            stream,
            decoder,
            input,
            link_id: handshake::link_id(opener.datacenter_id, answerer.datacenter_id),
            remote: answerer,
        })
    };
    let expired = async {
        glommio::timer::sleep(HANDSHAKE_TIMEOUT + CONNECT_TIMEOUT).await;
        Err(format!(
            "no answer from {} within the handshake deadline",
            spec.address
        ))
    };
    futures_lite::future::or(attempt, expired).await
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn shipper_config(executor: &Executor, partition: u32) -> ShipperConfig {
    let xdc = &executor.config.xdc;
    ShipperConfig {
        partition,
        max_in_flight: xdc.max_in_flight as usize,
        batcher: BatcherConfig {
            batch_bytes_max: xdc.batch_bytes_max as usize,
            batch_records_max: xdc.batch_records_max as usize,
            batch_delay_ms: u64::from(xdc.batch_delay_ms),
        },
        compression: Compression::Lz4,
        limits: BatchLimits::default(),
    }
}

/// Ships on an open connection until it fails; returns why.
async fn ship(executor: &Rc<Executor>, link: &Rc<Link>, open: OpenLink) -> String {
    let OpenLink {
        stream,
        decoder,
        input,
        link_id,
        remote,
    } = open;
    let spec = link.spec.borrow().clone();
    let data_dir = executor.config.storage.data_dir.clone();
    let mut cursors = match LinkCursors::start(&data_dir, &spec.name, link_id) {
        Ok(cursors) => cursors,
        Err(reason) => return format!("cursor file: {reason}"),
    };
    let link_config = LinkConfig {
        link_id,
        local_datacenter: executor.config.node.datacenter_id,
        remote_datacenter: remote.datacenter_id,
        cascade: spec.cascade,
    };
    // Lanes from an earlier connection to the same remote datacenter go on
    // (rewound to their acknowledged positions by the link loss); a link
    // that now reaches another datacenter starts its lanes afresh.
    if link.link_id.replace(Some(link_id)) != Some(link_id) {
        link.retire_lanes();
    }
    let limits = limits(executor);
    let (reader, mut writer) = futures_lite::io::split(stream);
    let (acks, answers) = flume::unbounded::<Result<Frame, String>>();
    let reader_task = glommio::spawn_local(read_answers(reader, decoder, input, acks));
    let poll = Duration::from_millis(u64::from(executor.config.xdc.poll_interval_ms));
    let ack_timeout = Duration::from_millis(u64::from(executor.config.xdc.ack_timeout_ms));
    let mut next_request_id: u32 = 16;
    let mut last_ownership = None::<Instant>;
    let mut last_save = Instant::now();
    let mut out = BytesMut::new();
    let outcome = loop {
        if link.stop.get() || executor.stopping() {
            break "stopped".to_string();
        }
        if link.spec.borrow().paused {
            break "paused".to_string();
        }
        if *link.spec.borrow() != spec {
            break "the link's settings changed".to_string();
        }
        if link.fullsync_wanted.get() && !link.fullsync.borrow().running {
            link.fullsync_wanted.set(false);
            let (executor, link) = (Rc::clone(executor), Rc::clone(link));
            glommio::spawn_local(async move {
                // A success clears `needs_fullsync`; a failure is shown
                // in `xdc status` and the flag stays for the operator.
                let _ = super::fullsync::run(executor, link, false).await;
            })
            .detach();
        }
        if last_ownership.is_none_or(|at| at.elapsed() >= OWNERSHIP_REFRESH) {
            last_ownership = Some(Instant::now());
            if let Err(reason) =
                refresh_lanes(executor, link, &spec.name, link_config, &cursors).await
            {
                break reason;
            }
        }
        // Read what the logs hold past every lane's position.
        let fed = match feed_lanes(executor, link, &spec.name).await {
            Ok(fed) => fed,
            Err(reason) => break reason,
        };
        // Send what is due.
        let now = now_ms();
        out.clear();
        let mut sent = 0usize;
        {
            let mut lanes = link.lanes.borrow_mut();
            let mut in_flight = link.in_flight.borrow_mut();
            for (&partition, lane) in lanes.iter_mut() {
                loop {
                    match lane.shipper.take_due(now) {
                        Ok(Closed::Batch(batch)) => {
                            let request_id = next_request_id;
                            next_request_id = next_request_id.wrapping_add(1).max(16);
                            if let Err(error) = XdcMessage::new(XDC_BATCH, batch.body)
                                .encode(request_id, &limits, &mut out)
                            {
                                tracing::error!(partition, %error, "xdc batch not encodable");
                                break;
                            }
                            in_flight.insert(request_id, (partition, Instant::now()));
                            sent += 1;
                        }
                        Ok(Closed::Folded) => continue,
                        Ok(Closed::NotYet) => break,
                        Err(error) => {
                            tracing::error!(partition, %error, "xdc batch not built");
                            break;
                        }
                    }
                }
            }
        }
        let queued: Vec<(XdcRecord, SyncWaiter)> = link.sync_queue.borrow_mut().drain(..).collect();
        if !queued.is_empty() {
            let (records, waiters): (Vec<XdcRecord>, Vec<SyncWaiter>) = queued.into_iter().unzip();
            let sequence = (SYNC_EPOCH << 32) | link.sync_sequence.get();
            link.sync_sequence.set(link.sync_sequence.get() + 1);
            match meridian_xdc::format::encode_batch(
                link_id,
                sequence,
                &records,
                Compression::Lz4,
                &BatchLimits::default(),
            ) {
                Ok(body) => {
                    let request_id = next_request_id;
                    next_request_id = next_request_id.wrapping_add(1).max(16);
                    match XdcMessage::new(XDC_BATCH, body).encode(request_id, &limits, &mut out) {
                        Ok(()) => {
                            link.sync_in_flight.borrow_mut().insert(request_id, waiters);
                            link.in_flight
                                .borrow_mut()
                                .insert(request_id, (u32::MAX, Instant::now()));
                            sent += 1;
                        }
                        Err(error) => {
                            for waiter in waiters {
                                let _ = waiter.send(Err(format!("not encodable: {error}")));
                            }
                        }
                    }
                }
                Err(error) => {
                    for waiter in waiters {
                        let _ = waiter.send(Err(format!("not encodable: {error}")));
                    }
                }
            }
        }
        if !out.is_empty() && writer.write_all(&out).await.is_err() {
            break "the connection broke while sending".to_string();
        }
        // Take the acknowledgements that arrived.
        let mut acked = 0usize;
        let mut failure = None;
        while let Ok(answer) = answers.try_recv() {
            match answer.and_then(|frame| on_answer(link, &frame, &limits)) {
                Ok(()) => acked += 1,
                Err(reason) => {
                    failure = Some(reason);
                    break;
                }
            }
        }
        if let Some(reason) = failure {
            break reason;
        }
        let oldest = link.in_flight.borrow().values().map(|(_, at)| *at).min();
        if oldest.is_some_and(|at| at.elapsed() > ack_timeout) {
            break format!("no acknowledgement within {} ms", ack_timeout.as_millis());
        }
        if last_save.elapsed() >= CURSOR_SAVE_INTERVAL {
            last_save = Instant::now();
            if let Err(reason) = save_cursors(executor, link, &spec.name, &mut cursors).await {
                break reason;
            }
        }
        link.refresh_totals();
        if fed == 0 && sent == 0 && acked == 0 {
            // Idle: wait for an answer or the next poll, whichever first.
            let wait = async {
                if let Ok(answer) = answers.recv_async().await {
                    Some(answer)
                } else {
                    None
                }
            };
            let tick = async {
                glommio::timer::sleep(poll).await;
                None
            };
            if let Some(answer) = futures_lite::future::or(wait, tick).await {
                if let Err(reason) = answer.and_then(|frame| on_answer(link, &frame, &limits)) {
                    break reason;
                }
            }
        }
    };
    let _ = save_cursors(executor, link, &spec.name, &mut cursors).await;
    drop(reader_task);
    let _ = writer.close().await;
    link.refresh_totals();
    outcome
}

/// Routes one answer to its lane.
fn on_answer(link: &Link, frame: &Frame, limits: &Limits) -> Result<(), String> {
    if frame.opcode != XDC_BATCH_ACK {
        return Err(refusal_of(frame, limits, "XDC_BATCH"));
    }
    let Some((partition, _)) = link.in_flight.borrow_mut().remove(&frame.request_id) else {
        return Ok(());
    };
    if let Some(waiters) = link.sync_in_flight.borrow_mut().remove(&frame.request_id) {
        for waiter in waiters {
            let _ = waiter.send(Ok(()));
        }
        return Ok(());
    }
    let ack = meridian_xdc::format::decode_ack(&frame.body).map_err(|e| format!("ack: {e}"))?;
    {
        let mut status = link.status.borrow_mut();
        status.records_applied_remote += u64::from(ack.applied);
        status.records_stale_remote += u64::from(ack.stale);
    }
    let mut lanes = link.lanes.borrow_mut();
    if let Some(lane) = lanes.get_mut(&partition) {
        match lane.shipper.on_ack(&ack) {
            Ok(AckOutcome::Advanced(_) | AckOutcome::Pending | AckOutcome::Ignored) => {}
            Err(error) => return Err(format!("ack: {error}")),
        }
    }
    Ok(())
}

async fn read_answers(
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    mut decoder: Decoder,
    mut input: BytesMut,
    answers: flume::Sender<Result<Frame, String>>,
) {
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => {
                    if answers.send(Ok(frame)).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    let _ = answers.send(Err(format!("undecodable answer: {error}")));
                    return;
                }
            }
        }
        match reader.read(&mut chunk).await {
            Ok(0) => {
                let _ = answers.send(Err("the remote closed the connection".to_string()));
                return;
            }
            Err(error) => {
                let _ = answers.send(Err(format!("connection error: {error}")));
                return;
            }
            Ok(read) => input.extend_from_slice(&chunk[..read]),
        }
    }
}

/// Adds lanes for the partitions this node now ships (registering their
/// engine cursors at the saved positions) and drops the others.
async fn refresh_lanes(
    executor: &Executor,
    link: &Link,
    name: &str,
    link_config: LinkConfig,
    cursors: &LinkCursors,
) -> Result<(), String> {
    let shipped = executor.shipped_partitions().await?;
    let mut added: Vec<Vec<(u32, LogPosition)>> = vec![Vec::new(); executor.inboxes.len()];
    {
        let mut lanes = link.lanes.borrow_mut();
        let keep: std::collections::BTreeSet<u32> = shipped.iter().copied().collect();
        let dropped: Vec<u32> = lanes
            .keys()
            .copied()
            .filter(|p| !keep.contains(p))
            .collect();
        for partition in dropped {
            if let Some(lane) = lanes.remove(&partition) {
                add_stats(&mut link.retired.borrow_mut(), &lane.shipper.stats());
            }
        }
        for partition in shipped {
            if lanes.contains_key(&partition) {
                continue;
            }
            let position = cursors.position(partition);
            lanes.insert(
                partition,
                Lane {
                    shipper: Shipper::new(
                        link_config,
                        shipper_config(executor, partition),
                        position,
                        cursors.epoch,
                    ),
                    epoch: cursors.epoch,
                    saved: position,
                },
            );
            added[executor.partitioner.shard_of_partition(partition)].push((partition, position));
        }
    }
    for (shard, moves) in added.into_iter().enumerate() {
        if moves.is_empty() {
            continue;
        }
        executor.inboxes[shard]
            .send_async(ShardCall::MoveCursors {
                name: cursor_name(name),
                moves,
                register: true,
            })
            .await
            .map_err(|_| "a shard stopped".to_string())?;
    }
    Ok(())
}

/// The engine cursor name of a link.
pub fn cursor_name(link: &str) -> String {
    format!("xdc:{link}")
}

/// Asks every shard for the records past each lane's read position and
/// feeds them to the lanes; returns how many records arrived.
async fn feed_lanes(executor: &Executor, link: &Link, name: &str) -> Result<usize, String> {
    let mut reads: Vec<Vec<TailRead>> = vec![Vec::new(); executor.inboxes.len()];
    for (&partition, lane) in link.lanes.borrow().iter() {
        if let Some(request) = lane.shipper.read_request() {
            reads[executor.partitioner.shard_of_partition(partition)]
                .push(TailRead { partition, request });
        }
    }
    let mut fed = 0;
    for (shard, reads) in reads.into_iter().enumerate() {
        if reads.is_empty() {
            continue;
        }
        let answers: Vec<TailAnswer> = executor
            .ask(shard, |reply| ShardCall::TailReads { reads, reply })
            .await?;
        let now = now_ms();
        let mut lanes = link.lanes.borrow_mut();
        for answer in answers {
            let Some(lane) = lanes.get_mut(&answer.partition) else {
                continue;
            };
            match answer.result {
                Ok(batch) => {
                    fed += batch.records.len();
                    lane.shipper
                        .feed(answer.from, &batch, now)
                        .map_err(|e| format!("partition {}: {e}", answer.partition))?;
                }
                Err(TailError::FellBehind(reason)) => {
                    // Records were compacted away unshipped: go on from the
                    // oldest retained record and let a fullsync cover the
                    // gap.
                    tracing::error!(link = name, partition = answer.partition, %reason, "xdc link fell behind the log's retention: shipping resumes from the oldest retained record and a fullsync runs");
                    lane.shipper = Shipper::new(
                        *lane.shipper.link(),
                        shipper_config(executor, answer.partition),
                        LogPosition::default(),
                        lane.epoch,
                    );
                    lane.saved = LogPosition::default();
                    link.status.borrow_mut().needs_fullsync = true;
                    link.fullsync_wanted.set(true);
                }
                Err(TailError::Other(reason)) => {
                    return Err(format!("reading partition {}: {reason}", answer.partition))
                }
            }
        }
    }
    Ok(fed)
}

/// Saves the acknowledged positions that moved (one file, one fsync) and
/// moves the engine cursors to them.
async fn save_cursors(
    executor: &Executor,
    link: &Link,
    name: &str,
    cursors: &mut LinkCursors,
) -> Result<(), String> {
    let mut moves: Vec<Vec<(u32, LogPosition)>> = vec![Vec::new(); executor.inboxes.len()];
    let mut changed = Vec::new();
    for (&partition, lane) in link.lanes.borrow().iter() {
        let acknowledged = lane.shipper.acknowledged();
        if acknowledged > lane.saved {
            cursors.set(partition, acknowledged);
            changed.push((partition, acknowledged));
        }
    }
    if changed.is_empty() {
        return Ok(());
    }
    cursors
        .save(&executor.config.storage.data_dir, name)
        .map_err(|e| format!("saving cursors: {e}"))?;
    {
        let mut lanes = link.lanes.borrow_mut();
        for &(partition, position) in &changed {
            if let Some(lane) = lanes.get_mut(&partition) {
                lane.saved = position;
            }
            moves[executor.partitioner.shard_of_partition(partition)].push((partition, position));
        }
    }
    for (shard, moves) in moves.into_iter().enumerate() {
        if moves.is_empty() {
            continue;
        }
        let _ = executor.inboxes[shard]
            .send_async(ShardCall::MoveCursors {
                name: cursor_name(name),
                moves,
                register: false,
            })
            .await;
    }
    Ok(())
}
