//! One loader thread: many non-blocking connections on one mio poll.
//!
//! Why mio and not a thread per connection: the loader is pinned to one core
//! next to the server's; fifty blocking threads would pay a context switch
//! per reply on that core, one event loop pays one `epoll_wait` per batch of
//! ready sockets. Each connection keeps up to `pipeline` requests in flight.
//!
//! Two pacing modes:
//! - closed loop: a request leaves as soon as a slot frees; its latency is
//!   measured from the moment it was queued for sending;
//! - constant rate: connection `i` of `n` owns the send times
//!   `start + (k·n + i) / rate`. A request's latency is measured from its
//!   intended send time, so a server that stalls is charged for every
//!   request that should have been sent during the stall (no coordinated
//!   omission). The loop spins (`epoll_wait` with a zero timeout) because
//!   epoll's millisecond timeout is coarser than the send interval.
//!
//! Invariants:
//! - At most `pipeline` requests are in flight on a connection.
//! - Only replies that arrive inside the measuring window are counted, and
//!   every counted reply is matched to the request it answers.
//! - A connection that fails is dropped and its failure reported; the
//!   others go on.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};

use super::keys::{write_key, KeyChooser, Rng};
use super::protocol::{OpKind, Outcome, Protocol, Wire};

const READ_CHUNK_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IDLE_POLL: Duration = Duration::from_millis(20);
/// A preload that has not finished by then is cut short (and reported).
const PRELOAD_TIME_MAX: Duration = Duration::from_secs(600);
/// Largest latency the histogram holds; longer ones are clamped to it.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// What a thread's connections send.
#[derive(Debug, Clone)]
pub enum Source {
    /// Write every key of `next..end` once, then stop.
    Preload {
        /// Next key to write.
        next: u64,
        /// One past the last key.
        end: u64,
    },
    /// GETs and PUTs on keys drawn from `chooser`.
    Mix {
        /// Which key.
        chooser: KeyChooser,
        /// Fraction of requests that are GETs.
        read_fraction: f64,
        /// Random source.
        rng: Rng,
    },
    /// PINGs only.
    Ping,
}

impl Source {
    fn next_op(&mut self) -> Option<(OpKind, u64)> {
        match self {
            Source::Preload { next, end } => {
                if *next >= *end {
                    return None;
                }
                *next += 1;
                Some((OpKind::Put, *next - 1))
            }
            Source::Mix {
                chooser,
                read_fraction,
                rng,
            } => {
                let kind = if rng.next_f64() < *read_fraction {
                    OpKind::Get
                } else {
                    OpKind::Put
                };
                Some((kind, chooser.next(rng)))
            }
            Source::Ping => Some((OpKind::Ping, 0)),
        }
    }

    fn is_preload(&self) -> bool {
        matches!(self, Source::Preload { .. })
    }
}

/// Everything one thread needs.
#[derive(Debug, Clone)]
pub struct ThreadPlan {
    /// Server address.
    pub address: SocketAddr,
    /// Protocol spoken.
    pub protocol: Protocol,
    /// Cluster name for Meridian's HELLO.
    pub cluster: String,
    /// Global indexes of this thread's connections (for rate phases).
    pub connection_indexes: Vec<usize>,
    /// All connections of the run (for rate phases).
    pub connections_total: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// Key length in bytes.
    pub key_bytes: usize,
    /// Value length in bytes.
    pub value_bytes: usize,
    /// What to send.
    pub source: Source,
    /// Total requests per second over all connections, if paced.
    pub rate: Option<f64>,
    /// Time from the start before replies are counted.
    pub warmup: Duration,
    /// Length of the measuring window (ignored by a preload).
    pub duration: Duration,
}

/// What a thread counted inside the window.
#[derive(Debug)]
pub struct ThreadResult {
    /// Latency of every counted reply, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Replies counted.
    pub completed: u64,
    /// GET replies counted.
    pub reads: u64,
    /// PUT replies counted.
    pub writes: u64,
    /// GETs that found nothing.
    pub misses: u64,
    /// Error replies.
    pub errors: u64,
    /// Connections lost, with why.
    pub failures: Vec<String>,
    /// Wall time from start to the last counted reply (preload) or window length.
    pub elapsed: Duration,
}

struct Pending {
    request_id: u32,
    sent_at: Instant,
    kind: OpKind,
}

struct Connection {
    stream: mio::net::TcpStream,
    wire: Wire,
    output: BytesMut,
    input: BytesMut,
    in_flight: VecDeque<Pending>,
    next_intended: Instant,
    alive: bool,
}

/// Opens one connection and completes its handshake, blocking.
fn connect(plan: &ThreadPlan) -> Result<(TcpStream, Wire, BytesMut), String> {
    let mut stream = TcpStream::connect_timeout(&plan.address, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {}: {e}", plan.address))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut wire = Wire::new(plan.protocol);
    let mut hello = BytesMut::new();
    let expected = wire
        .handshake(&plan.cluster, &mut hello)
        .map_err(|e| e.to_string())?;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    if expected > 0 {
        stream
            .write_all(&hello)
            .map_err(|e| format!("HELLO: {e}"))?;
        stream
            .set_read_timeout(Some(CONNECT_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let mut chunk = vec![0u8; READ_CHUNK_BYTES];
        let reply = loop {
            if let Some(reply) = wire.parse(&mut input).map_err(|e| e.to_string())? {
                break reply;
            }
            let read = stream.read(&mut chunk).map_err(|e| format!("HELLO: {e}"))?;
            if read == 0 {
                return Err("server closed the connection during HELLO".into());
            }
            input.extend_from_slice(&chunk[..read]);
        };
        if reply.outcome != Outcome::Ok {
            return Err("HELLO refused (wrong cluster name?)".into());
        }
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((stream, wire, input))
}

/// Runs one thread's share: connects, waits at `barrier`, drives the load.
pub fn run_thread(mut plan: ThreadPlan, barrier: &std::sync::Barrier) -> ThreadResult {
    let mut result = ThreadResult {
        histogram: Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3)
            .expect("constant histogram bounds are valid"),
        completed: 0,
        reads: 0,
        writes: 0,
        misses: 0,
        errors: 0,
        failures: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let poll = match Poll::new() {
        Ok(poll) => poll,
        Err(error) => {
            result.failures.push(format!("epoll: {error}"));
            barrier.wait();
            return result;
        }
    };
    let connections = open_all(&plan, &poll, &mut result.failures);
    barrier.wait();
    drive(&mut plan, poll, connections, &mut result);
    result
}

fn open_all(plan: &ThreadPlan, poll: &Poll, failures: &mut Vec<String>) -> Vec<Connection> {
    let mut connections = Vec::with_capacity(plan.connection_indexes.len());
    for _ in &plan.connection_indexes {
        match connect(plan) {
            Ok((stream, wire, input)) => {
                let mut stream = mio::net::TcpStream::from_std(stream);
                let token = Token(connections.len());
                let interest = Interest::READABLE | Interest::WRITABLE;
                if let Err(error) = poll.registry().register(&mut stream, token, interest) {
                    failures.push(format!("register: {error}"));
                    continue;
                }
                connections.push(Connection {
                    stream,
                    wire,
                    output: BytesMut::with_capacity(READ_CHUNK_BYTES),
                    input,
                    in_flight: VecDeque::with_capacity(plan.pipeline),
                    next_intended: Instant::now(),
                    alive: true,
                });
            }
            Err(error) => failures.push(error),
        }
    }
    connections
}

/// The window and pacing of one thread.
struct Clock {
    window_start: Instant,
    window_end: Instant,
    interval: Option<Duration>,
}

fn drive(
    plan: &mut ThreadPlan,
    mut poll: Poll,
    mut connections: Vec<Connection>,
    result: &mut ThreadResult,
) {
    let start = Instant::now();
    let preload = plan.source.is_preload();
    let clock = Clock {
        window_start: if preload { start } else { start + plan.warmup },
        window_end: if preload {
            start + PRELOAD_TIME_MAX
        } else {
            start + plan.warmup + plan.duration
        },
        interval: plan
            .rate
            .map(|rate| Duration::from_secs_f64(plan.connections_total as f64 / rate)),
    };
    if let Some(interval) = clock.interval {
        let slice = interval.as_secs_f64() / plan.connections_total as f64;
        for (connection, global) in connections.iter_mut().zip(&plan.connection_indexes) {
            connection.next_intended = start + Duration::from_secs_f64(slice * *global as f64);
        }
    }
    let value = vec![b'v'; plan.value_bytes];
    let mut key = vec![0u8; plan.key_bytes];
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut events = Events::with_capacity(1024);
    let mut last_reply = start;
    for connection in connections.iter_mut() {
        fill_and_flush(plan, &clock, connection, &mut key, &value, result);
    }
    loop {
        let now = Instant::now();
        let live = connections.iter().filter(|c| c.alive).count();
        if live == 0 || (!preload && now >= clock.window_end) {
            break;
        }
        if preload && connections.iter().all(|c| c.in_flight.is_empty()) {
            break;
        }
        if clock.interval.is_some() {
            for connection in connections.iter_mut().filter(|c| c.alive) {
                fill_and_flush(plan, &clock, connection, &mut key, &value, result);
            }
        }
        let timeout = if clock.interval.is_some() {
            Duration::ZERO
        } else {
            IDLE_POLL
        };
        if let Err(error) = poll.poll(&mut events, Some(timeout)) {
            if error.kind() != ErrorKind::Interrupted {
                result.failures.push(format!("epoll_wait: {error}"));
                break;
            }
        }
        for event in events.iter() {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if !connection.alive {
                continue;
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                if read_replies(&clock, connection, &mut chunk, result) {
                    last_reply = Instant::now();
                }
            }
            if connection.alive {
                fill_and_flush(plan, &clock, connection, &mut key, &value, result);
            }
        }
    }
    result.elapsed = if preload {
        last_reply - start
    } else {
        clock.window_end - clock.window_start
    };
    for connection in connections.iter_mut() {
        let _ = poll.registry().deregister(&mut connection.stream);
    }
}

/// Queues requests while slots (and, when paced, send times) allow, then
/// writes what the socket takes.
fn fill_and_flush(
    plan: &mut ThreadPlan,
    clock: &Clock,
    connection: &mut Connection,
    key: &mut [u8],
    value: &[u8],
    result: &mut ThreadResult,
) {
    let now = Instant::now();
    let mut steps = 0usize;
    while connection.in_flight.len() < plan.pipeline && now < clock.window_end {
        steps += 1;
        assert!(
            steps <= plan.pipeline,
            "fill loop is bounded by the pipeline"
        );
        let sent_at = match clock.interval {
            Some(interval) => {
                if connection.next_intended > now {
                    break;
                }
                let intended = connection.next_intended;
                connection.next_intended += interval;
                intended
            }
            None => now,
        };
        let Some((kind, index)) = plan.source.next_op() else {
            break;
        };
        write_key(index, key);
        match connection
            .wire
            .encode(kind, key, value, &mut connection.output)
        {
            Ok(request_id) => connection.in_flight.push_back(Pending {
                request_id,
                sent_at,
                kind,
            }),
            Err(error) => {
                fail(connection, result, format!("encode: {error}"));
                return;
            }
        }
    }
    while !connection.output.is_empty() {
        match connection.stream.write(&connection.output) {
            Ok(0) => {
                fail(connection, result, "socket closed on write".into());
                return;
            }
            Ok(written) => connection.output.advance(written),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                fail(connection, result, format!("write: {error}"));
                return;
            }
        }
    }
}

/// Reads everything the socket has and counts each reply; returns whether
/// any reply arrived.
fn read_replies(
    clock: &Clock,
    connection: &mut Connection,
    chunk: &mut [u8],
    result: &mut ThreadResult,
) -> bool {
    loop {
        match connection.stream.read(chunk) {
            Ok(0) => {
                fail(connection, result, "server closed the connection".into());
                return false;
            }
            Ok(read) => connection.input.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => {
                fail(connection, result, format!("read: {error}"));
                return false;
            }
        }
    }
    let done = Instant::now();
    let counted = done >= clock.window_start && done < clock.window_end;
    let mut any = false;
    loop {
        let reply = match connection.wire.parse(&mut connection.input) {
            Ok(Some(reply)) => reply,
            Ok(None) => break,
            Err(error) => {
                fail(connection, result, error.0);
                return any;
            }
        };
        let Some(pending) = take_pending(connection, reply.request_id) else {
            fail(connection, result, "a reply to no request in flight".into());
            return any;
        };
        any = true;
        if !counted {
            continue;
        }
        let latency = done.saturating_duration_since(pending.sent_at).as_nanos() as u64;
        result
            .histogram
            .saturating_record(latency.clamp(1, LATENCY_NS_MAX));
        result.completed += 1;
        match pending.kind {
            OpKind::Get => result.reads += 1,
            OpKind::Put => result.writes += 1,
            OpKind::Ping => {}
        }
        match reply.outcome {
            Outcome::Ok => {}
            Outcome::Miss => result.misses += 1,
            Outcome::Error => result.errors += 1,
        }
    }
    any
}

/// The in-flight request a reply answers: the oldest for RESP (in order),
/// the one with the reply's id for Meridian (usually the oldest too).
fn take_pending(connection: &mut Connection, request_id: u32) -> Option<Pending> {
    if connection.wire.protocol() == Protocol::Resp {
        return connection.in_flight.pop_front();
    }
    let position = connection
        .in_flight
        .iter()
        .position(|p| p.request_id == request_id)?;
    connection.in_flight.remove(position)
}

fn fail(connection: &mut Connection, result: &mut ThreadResult, reason: String) {
    connection.alive = false;
    connection.in_flight.clear();
    result.failures.push(reason);
}
