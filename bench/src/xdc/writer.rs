//! The XDC benchmark's writer: PUTs of sequence-numbered keys over a few
//! pipelined connections on one mio thread, closed loop (as fast as the
//! origin answers) or paced at a constant rate, with the time each PUT was
//! acknowledged handed to the lag tracker.
//!
//! Why its own writer and not `meridian-bench`: lag per record needs each
//! record's key and acknowledgement time, which the load generator does not
//! expose. It reuses the load generator's codec ([`Wire`]), so a PUT costs
//! the server the same here as there.
//!
//! Pacing: write `n` (0-based) is due at `start + n / rate`; the loop sleeps
//! in `epoll_wait` until the next write is due, whose timeout has a
//! resolution of 1 ms, so writes leave in bursts of at most 1 ms of rate. A
//! write that finds every pipeline slot taken waits (the achieved rate is
//! reported next to the target). Lag is measured from the acknowledgement,
//! so the burstiness of sending does not enter it.
//!
//! Invariants:
//! - at most `pipeline` PUTs are in flight on a connection;
//! - every reply is matched to the PUT it answers by request id;
//! - a key is `k{tag:02}{seq:013}` (16 bytes), so phases never share keys;
//! - the tracker receives only acknowledged writes (error replies are
//!   counted, never tracked), and at most one message per write.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use meridian_bench::load::protocol::{OpKind, Outcome, Wire};
use meridian_bench::load::Protocol;
use mio::{Events, Interest, Poll, Token};

/// Key length: `k` + 2-digit tag + 13-digit sequence.
pub const KEY_BYTES: usize = 16;
/// Value length, as in the other server benchmarks.
pub const VALUE_BYTES: usize = 100;
const READ_CHUNK_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the loop sleeps when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(20);
/// After the window closes, how long replies to writes already sent are awaited.
const DRAIN_TIME_MAX: Duration = Duration::from_secs(30);

/// What the written values look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Values {
    /// Bytes from a xorshift generator: lz4 finds nothing to remove.
    Random,
    /// A short JSON-like text padded with a repeated filler: lz4 shrinks it.
    Compressible,
}

/// One run of the writer.
#[derive(Debug)]
pub struct WriterPlan {
    pub address: SocketAddr,
    pub connections: usize,
    pub pipeline: usize,
    /// Writes per second over all connections; `None`: closed loop.
    pub rate: Option<f64>,
    /// When the first write is due (the writer connects before it).
    pub start: Instant,
    /// Writes acknowledged before `start + warmup` are not counted.
    pub warmup: Duration,
    /// The measuring window after the warm-up.
    pub duration: Duration,
    /// Stop after this many writes (a preload), whatever the window.
    pub count_max: Option<u64>,
    pub key_tag: u8,
    pub values: Values,
    /// Writes acknowledged inside the window whose sequence is a multiple
    /// of this go to `tracker`.
    pub track_every: u64,
    pub tracker: Option<SyncSender<(u64, Instant)>>,
}

/// What the writer counted.
#[derive(Debug, Default, Clone)]
pub struct WriterResult {
    /// Writes sent (all of the run).
    pub sent: u64,
    /// Writes acknowledged (all of the run).
    pub acknowledged: u64,
    /// Writes acknowledged inside the measuring window.
    pub acknowledged_in_window: u64,
    /// Writes sent inside the measuring window.
    pub sent_in_window: u64,
    /// Window length actually measured, seconds.
    pub window_s: f64,
    pub errors: u64,
    /// Tracker messages dropped because its queue was full.
    pub untracked: u64,
    pub failures: Vec<String>,
}

impl WriterResult {
    /// Acknowledged writes per second inside the window.
    pub fn throughput(&self) -> f64 {
        self.acknowledged_in_window as f64 / self.window_s.max(1e-9)
    }
    /// Writes sent per second inside the window (the offered rate achieved).
    pub fn sent_rate(&self) -> f64 {
        self.sent_in_window as f64 / self.window_s.max(1e-9)
    }
}

/// The key of write `seq` in phase `tag`.
pub fn key_of(tag: u8, seq: u64, out: &mut [u8; KEY_BYTES]) {
    assert!(tag < 100 && seq < 10_000_000_000_000);
    let text = format!("k{tag:02}{seq:013}");
    assert_eq!(text.len(), KEY_BYTES);
    out.copy_from_slice(text.as_bytes());
}

/// Fills `out` with the value of write `seq`.
pub fn value_of(values: Values, seq: u64, rng: &mut u64, out: &mut [u8; VALUE_BYTES]) {
    match values {
        Values::Random => {
            for chunk in out.chunks_mut(8) {
                // xorshift64: cheap, and lz4 finds no repeats in it.
                *rng ^= *rng << 13;
                *rng ^= *rng >> 7;
                *rng ^= *rng << 17;
                chunk.copy_from_slice(&rng.to_le_bytes()[..chunk.len()]);
            }
        }
        Values::Compressible => {
            let head =
                format!("{{\"seq\":{seq},\"user\":\"bench\",\"state\":\"active\",\"pad\":\"");
            out.fill(b'x');
            out[..head.len()].copy_from_slice(head.as_bytes());
            out[VALUE_BYTES - 2..].copy_from_slice(b"\"}");
        }
    }
}

struct Pending {
    request_id: u32,
    seq: u64,
}

struct Connection {
    stream: mio::net::TcpStream,
    wire: Wire,
    output: BytesMut,
    input: BytesMut,
    in_flight: VecDeque<Pending>,
    alive: bool,
}

fn connect(address: SocketAddr) -> Result<Connection, String> {
    let mut stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut wire = Wire::new(Protocol::Meridian);
    let mut hello = BytesMut::new();
    let expected = wire
        .handshake("meridian", &mut hello)
        .map_err(|e| e.to_string())?;
    assert_eq!(expected, 1, "Meridian's HELLO expects one reply");
    stream
        .write_all(&hello)
        .map_err(|e| format!("HELLO: {e}"))?;
    stream
        .set_read_timeout(Some(CONNECT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
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
        return Err("HELLO refused".into());
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(Connection {
        stream: mio::net::TcpStream::from_std(stream),
        wire,
        output: BytesMut::with_capacity(READ_CHUNK_BYTES),
        input,
        in_flight: VecDeque::new(),
        alive: true,
    })
}

/// The writer's moving parts during a run.
struct Run<'a> {
    plan: &'a WriterPlan,
    result: WriterResult,
    window_start: Instant,
    window_end: Instant,
    next_seq: u64,
    next_connection: usize,
    rng: u64,
}

impl Run<'_> {
    fn sending_done(&self, now: Instant) -> bool {
        now >= self.window_end || self.plan.count_max.is_some_and(|max| self.next_seq >= max)
    }

    /// When the next write is due (`None`: closed loop, due whenever a slot frees).
    fn next_due(&self) -> Option<Instant> {
        self.plan
            .rate
            .map(|rate| self.plan.start + Duration::from_secs_f64(self.next_seq as f64 / rate))
    }

    /// Queues every write that is due on connections with a free slot.
    fn fill(&mut self, connections: &mut [Connection]) -> Result<(), String> {
        let now = Instant::now();
        let mut key = [0u8; KEY_BYTES];
        let mut value = [0u8; VALUE_BYTES];
        let slots = connections.len() * self.plan.pipeline;
        for _ in 0..slots {
            if self.sending_done(now) || self.next_due().is_some_and(|due| due > now) {
                break;
            }
            let free = (0..connections.len())
                .map(|step| (self.next_connection + step) % connections.len())
                .find(|&i| {
                    connections[i].alive && connections[i].in_flight.len() < self.plan.pipeline
                });
            let Some(index) = free else { break };
            self.next_connection = (index + 1) % connections.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            key_of(self.plan.key_tag, seq, &mut key);
            value_of(self.plan.values, seq, &mut self.rng, &mut value);
            let connection = &mut connections[index];
            let request_id = connection
                .wire
                .encode(OpKind::Put, &key, &value, &mut connection.output)
                .map_err(|e| e.to_string())?;
            connection.in_flight.push_back(Pending { request_id, seq });
            self.result.sent += 1;
            if now >= self.window_start && now < self.window_end {
                self.result.sent_in_window += 1;
            }
        }
        Ok(())
    }

    /// Counts the replies in `connection.input`.
    fn take_replies(&mut self, connection: &mut Connection) -> Result<(), String> {
        let now = Instant::now();
        let counted = now >= self.window_start && now < self.window_end;
        while let Some(reply) = connection
            .wire
            .parse(&mut connection.input)
            .map_err(|e| e.0)?
        {
            let position = connection
                .in_flight
                .iter()
                .position(|p| p.request_id == reply.request_id)
                .ok_or("a reply to no write in flight")?;
            let pending = connection.in_flight.remove(position).ok_or("in flight")?;
            if reply.outcome != Outcome::Ok {
                self.result.errors += 1;
                continue;
            }
            self.result.acknowledged += 1;
            if counted {
                self.result.acknowledged_in_window += 1;
            }
            if let (Some(tracker), true) = (&self.plan.tracker, counted) {
                if pending.seq % self.plan.track_every == 0
                    && tracker.try_send((pending.seq, now)).is_err()
                {
                    self.result.untracked += 1;
                }
            }
        }
        Ok(())
    }
}

/// Reads what the socket holds; `Err` when the connection is lost.
fn read_all(connection: &mut Connection, chunk: &mut [u8]) -> Result<(), String> {
    loop {
        match connection.stream.read(chunk) {
            Ok(0) => return Err("server closed the connection".into()),
            Ok(read) => connection.input.extend_from_slice(&chunk[..read]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
}

/// Writes what the socket takes.
fn flush(connection: &mut Connection) -> Result<(), String> {
    while !connection.output.is_empty() {
        match connection.stream.write(&connection.output) {
            Ok(0) => return Err("socket closed on write".into()),
            Ok(written) => connection.output.advance(written),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {e}")),
        }
    }
    Ok(())
}

/// Runs the plan to its end (window closed or `count_max` written, then
/// every reply in, or `DRAIN_TIME_MAX`).
pub fn run(plan: &WriterPlan) -> WriterResult {
    assert!(plan.connections >= 1 && plan.pipeline >= 1 && plan.track_every >= 1);
    let mut run = Run {
        plan,
        result: WriterResult::default(),
        window_start: plan.start + plan.warmup,
        window_end: plan.start + plan.warmup + plan.duration,
        next_seq: 0,
        next_connection: 0,
        rng: 0x9e37_79b9_7f4a_7c15 ^ u64::from(plan.key_tag),
    };
    let mut poll = match Poll::new() {
        Ok(poll) => poll,
        Err(e) => {
            run.result.failures.push(format!("epoll: {e}"));
            return run.result;
        }
    };
    let mut connections = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        match connect(plan.address) {
            Ok(mut connection) => {
                let interest = Interest::READABLE | Interest::WRITABLE;
                match poll
                    .registry()
                    .register(&mut connection.stream, Token(index), interest)
                {
                    Ok(()) => connections.push(connection),
                    Err(e) => run.result.failures.push(format!("register: {e}")),
                }
            }
            Err(e) => run.result.failures.push(e),
        }
    }
    if connections.is_empty() {
        return run.result;
    }
    if let Some(wait) = plan.start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    drive(&mut run, &mut poll, &mut connections);
    let measured_end = if plan.count_max.is_some() {
        Instant::now().min(run.window_end)
    } else {
        run.window_end
    };
    run.result.window_s = measured_end
        .saturating_duration_since(run.window_start)
        .as_secs_f64();
    run.result
}

fn drive(run: &mut Run<'_>, poll: &mut Poll, connections: &mut [Connection]) {
    let mut events = Events::with_capacity(256);
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let mut drain_deadline = None;
    loop {
        let now = Instant::now();
        if run.sending_done(now) {
            let deadline = *drain_deadline.get_or_insert(now + DRAIN_TIME_MAX);
            let waiting = connections
                .iter()
                .any(|c| c.alive && !c.in_flight.is_empty());
            if !waiting || now >= deadline {
                break;
            }
        }
        if let Err(e) = run.fill(connections) {
            run.result.failures.push(e);
            break;
        }
        for connection in connections.iter_mut().filter(|c| c.alive) {
            if let Err(e) = flush(connection) {
                lose(connection, &mut run.result, e);
            }
        }
        let timeout = match run.next_due() {
            Some(due) if !run.sending_done(now) => {
                due.saturating_duration_since(Instant::now()).min(IDLE_POLL)
            }
            _ => IDLE_POLL,
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != ErrorKind::Interrupted {
                run.result.failures.push(format!("epoll_wait: {e}"));
                break;
            }
        }
        for event in events.iter() {
            let Some(connection) = connections.get_mut(event.token().0) else {
                continue;
            };
            if !connection.alive
                || !(event.is_readable() || event.is_read_closed() || event.is_error())
            {
                continue;
            }
            let outcome =
                read_all(connection, &mut chunk).and_then(|()| run.take_replies(connection));
            if let Err(e) = outcome {
                lose(connection, &mut run.result, e);
            }
        }
        if connections.iter().all(|c| !c.alive) {
            break;
        }
    }
}

fn lose(connection: &mut Connection, result: &mut WriterResult, reason: String) {
    connection.alive = false;
    connection.in_flight.clear();
    result.failures.push(reason);
}
