//! A user-space TCP proxy that sits on one cross-datacenter (XDC) link and
//! can delay it, cap its bandwidth, cut it and restore it, while a test
//! watches what replication does about it.
//!
//! [`LinkProxy::start`] listens on an ephemeral loopback port; every
//! connection it accepts (the *downstream* socket) gets a connection of its
//! own to the fixed *upstream* address, and bytes flow both ways. The
//! controls act at once on open and new connections alike.
//!
//! Why it is built this way: plain std threads and blocking sockets with
//! short timeouts, no async runtime, so the proxy cannot share a scheduler
//! with the processes under test and reads as straight-line code. Each
//! direction of a connection is a reader and a writer joined by a bounded
//! queue of timestamped chunks: a chunk read at `t` is written at
//! `t + delay`, so many chunks are in flight at once and a delay adds
//! latency without capping throughput (a stop-and-wait relay would carry
//! one chunk per delay). Bandwidth is a token bucket per direction, shared
//! by every connection of the link as a real link's capacity is, and
//! charged when bytes are written. Every thread blocks for at most
//! [`POLL_INTERVAL`] before it looks at the stop flags, which is what lets
//! `cut` and `Drop` end everything promptly.
//!
//! Invariants:
//! - within a direction, bytes are written in the order they were read,
//!   each exactly once: never duplicated, never reordered, and none skipped
//!   except by ending the connection;
//! - a connection ends as a whole: an I/O error in either direction, a
//!   `cut` or the proxy's drop shuts down both of its sockets; an end of
//!   stream in one direction is passed on as a half-close once the queued
//!   bytes before it are written;
//! - after `cut()` returns, the proxy writes no further byte of any
//!   connection opened before it (queued bytes are dropped, like packets in
//!   flight); bytes the proxy wrote earlier may still sit in the peer's
//!   receive buffer, as on a real link;
//! - while cut, a new connection is accepted and closed at once, and never
//!   reaches upstream;
//! - each direction holds at most [`CHUNKS_IN_FLIGHT_MAX`] chunks of at
//!   most [`CHUNK_BYTES_MAX`] bytes;
//! - when `drop` returns, every thread of the proxy has been joined and
//!   its listening port is closed.

#![deny(unsafe_code)]

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest any proxy thread blocks before it checks whether to stop.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// The pause between two looks at the (non-blocking) listener.
const ACCEPT_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// How long a new connection may take to reach upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The most bytes one read takes from a socket.
pub const CHUNK_BYTES_MAX: usize = 16 * 1024;
/// The most chunks queued (read, not yet written) per direction.
pub const CHUNKS_IN_FLIGHT_MAX: usize = 1024;
/// A token bucket holds this much of its rate: the largest burst.
const BURST_MS: u64 = 20;

/// One direction of a connection; indexes the per-direction state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    /// From the accepted (downstream) socket to upstream.
    TowardUpstream = 0,
    /// From upstream back to the accepted socket.
    TowardDownstream = 1,
}

/// A proxy on one link; see the module doc. Dropping it stops everything.
#[derive(Debug)]
pub struct LinkProxy {
    address: SocketAddr,
    link: Arc<Link>,
    acceptor: Option<JoinHandle<()>>,
}

/// State shared by the handle, the acceptor and every connection thread.
#[derive(Debug)]
struct Link {
    upstream: SocketAddr,
    delay_nanos: AtomicU64,
    buckets: [Mutex<TokenBucket>; 2],
    bytes_forwarded: [AtomicU64; 2],
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    registry: Mutex<Registry>,
}

/// Whether the link is cut or closing, and the connections it must end
/// when it is. Cut, closing and registration change under one lock, so no
/// connection slips past a `cut`.
#[derive(Debug, Default)]
struct Registry {
    cut: bool,
    closing: bool,
    next_id: u64,
    open: HashMap<u64, OpenConnection>,
    /// Connection threads not yet joined (finished ones are pruned).
    threads: Vec<JoinHandle<()>>,
}

/// What `cut` needs to end a connection: its stop flag and its sockets.
#[derive(Debug)]
struct OpenConnection {
    stop: Arc<AtomicBool>,
    sockets: Vec<TcpStream>,
}

impl OpenConnection {
    fn end(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for socket in &self.sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

impl LinkProxy {
    /// Listens on 127.0.0.1 (ephemeral port) and forwards every accepted
    /// connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<LinkProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let link = Arc::new(Link {
            upstream,
            delay_nanos: AtomicU64::new(0),
            buckets: [
                Mutex::new(TokenBucket::unlimited()),
                Mutex::new(TokenBucket::unlimited()),
            ],
            bytes_forwarded: [AtomicU64::new(0), AtomicU64::new(0)],
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            registry: Mutex::new(Registry::default()),
        });
        let acceptor_link = Arc::clone(&link);
        let acceptor = thread::Builder::new()
            .name(format!("proxy-accept-{}", address.port()))
            .spawn(move || acceptor_link.accept_loop(listener))?;
        Ok(LinkProxy {
            address,
            link,
            acceptor: Some(acceptor),
        })
    }

    /// The address to connect to instead of upstream.
    pub fn addr(&self) -> SocketAddr {
        self.address
    }

    /// Where every connection is forwarded.
    pub fn upstream(&self) -> SocketAddr {
        self.link.upstream
    }

    /// One-way latency added to each direction (a round trip grows by twice
    /// this). Applies to bytes already queued too.
    pub fn set_delay(&self, delay: Duration) {
        let nanos = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.link.delay_nanos.store(nanos, Ordering::SeqCst);
    }

    /// Caps each direction of the link (all connections together) at
    /// `bytes_per_sec`; `None` lifts the cap.
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        assert!(bytes_per_sec != Some(0), "a bandwidth of 0 is a cut");
        let now = Instant::now();
        for bucket in &self.link.buckets {
            lock(bucket).set_rate(bytes_per_sec, now);
        }
    }

    /// Ends every open connection (both sockets shut down, queued bytes
    /// dropped) and closes new ones on arrival until [`LinkProxy::restore`].
    pub fn cut(&self) {
        let mut registry = lock(&self.link.registry);
        registry.cut = true;
        for connection in registry.open.values() {
            connection.end();
        }
    }

    /// Forwards new connections again after [`LinkProxy::cut`].
    pub fn restore(&self) {
        lock(&self.link.registry).cut = false;
    }

    /// Whether the link is cut.
    pub fn is_cut(&self) -> bool {
        lock(&self.link.registry).cut
    }

    /// Bytes written so far: (toward upstream, toward downstream).
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        (
            self.link.forwarded(Direction::TowardUpstream),
            self.link.forwarded(Direction::TowardDownstream),
        )
    }

    /// Connections accepted so far, including those closed because the link
    /// was cut.
    pub fn connections_accepted(&self) -> u64 {
        self.link.connections_accepted.load(Ordering::SeqCst)
    }

    /// Connections closed on arrival because the link was cut.
    pub fn connections_refused(&self) -> u64 {
        self.link.connections_refused.load(Ordering::SeqCst)
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        {
            let mut registry = lock(&self.link.registry);
            registry.closing = true;
            for connection in registry.open.values() {
                connection.end();
            }
        }
        // The acceptor sees `closing` within one poll, then drops the
        // listener; no connection registers after `closing`.
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let threads = std::mem::take(&mut lock(&self.link.registry).threads);
        for thread in threads {
            let _ = thread.join();
        }
        debug_assert!(lock(&self.link.registry).open.is_empty());
    }
}

impl Link {
    fn forwarded(&self, direction: Direction) -> u64 {
        self.bytes_forwarded[direction as usize].load(Ordering::SeqCst)
    }

    fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay_nanos.load(Ordering::SeqCst))
    }

    /// Accepts until the proxy closes; the listener closes on return.
    fn accept_loop(self: Arc<Link>, listener: TcpListener) {
        loop {
            if lock(&self.registry).closing {
                return;
            }
            match listener.accept() {
                Ok((downstream, _)) => {
                    self.connections_accepted.fetch_add(1, Ordering::SeqCst);
                    self.admit(downstream);
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                // WouldBlock, or a transient failure such as a full file table.
                Err(_) => thread::sleep(ACCEPT_POLL_INTERVAL),
            }
        }
    }

    /// Registers and starts a connection, or closes it when cut or closing.
    fn admit(self: &Arc<Link>, downstream: TcpStream) {
        let Ok(registered) = downstream.try_clone() else {
            return; // Dropping `downstream` closes it.
        };
        let stop = Arc::new(AtomicBool::new(false));
        let id = {
            let mut registry = lock(&self.registry);
            if registry.cut || registry.closing {
                self.connections_refused.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let id = registry.next_id;
            registry.next_id += 1;
            let open = OpenConnection {
                stop: Arc::clone(&stop),
                sockets: vec![registered],
            };
            registry.open.insert(id, open);
            registry.threads.retain(|thread| !thread.is_finished());
            id
        };
        let link = Arc::clone(self);
        let spawned = thread::Builder::new()
            .name(format!("proxy-connection-{id}"))
            .spawn(move || link.run_connection(id, stop, downstream));
        let mut registry = lock(&self.registry);
        match spawned {
            Ok(thread) => registry.threads.push(thread),
            Err(_) => {
                if let Some(connection) = registry.open.remove(&id) {
                    connection.end();
                }
            }
        }
    }

    /// The life of one connection: reach upstream, forward both ways until
    /// the connection ends, deregister.
    fn run_connection(self: Arc<Link>, id: u64, stop: Arc<AtomicBool>, downstream: TcpStream) {
        if let Some(upstream) = self.connect_upstream(id, &stop) {
            let connection = Connection {
                link: &self,
                stop: &stop,
                downstream,
                upstream,
            };
            if connection.configure_sockets().is_ok() {
                connection.forward_both_ways();
            }
            connection.end();
        }
        lock(&self.registry).open.remove(&id);
    }

    /// Connects to upstream and registers the socket with connection `id`;
    /// None when upstream is unreachable or the connection was ended first.
    fn connect_upstream(&self, id: u64, stop: &AtomicBool) -> Option<TcpStream> {
        let upstream = TcpStream::connect_timeout(&self.upstream, UPSTREAM_CONNECT_TIMEOUT).ok()?;
        let registered = upstream.try_clone().ok()?;
        let mut registry = lock(&self.registry);
        // A cut during the connect ended the connection: it must not start.
        if stop.load(Ordering::SeqCst) {
            return None;
        }
        registry.open.get_mut(&id)?.sockets.push(registered);
        Some(upstream)
    }
}

/// Bytes read at `read_at`, due to be written at `read_at + delay`.
#[derive(Debug)]
struct Chunk {
    read_at: Instant,
    bytes: Vec<u8>,
}

/// How one half of a direction (reader or writer) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The source's end of stream was read, or passed on to the target.
    Finished,
    /// The connection was told to stop (cut, failure elsewhere, drop).
    Stopped,
    /// A socket failed: the whole connection must end.
    Failed,
}

/// One forwarded connection, borrowed by its four threads.
struct Connection<'link> {
    link: &'link Link,
    stop: &'link AtomicBool,
    downstream: TcpStream,
    upstream: TcpStream,
}

impl Connection<'_> {
    fn configure_sockets(&self) -> io::Result<()> {
        for socket in [&self.downstream, &self.upstream] {
            socket.set_nonblocking(false)?;
            socket.set_nodelay(true)?;
            socket.set_read_timeout(Some(POLL_INTERVAL))?;
            socket.set_write_timeout(Some(POLL_INTERVAL))?;
        }
        Ok(())
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops every thread of the connection and shuts down both sockets.
    fn end(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.downstream.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }

    fn sockets(&self, direction: Direction) -> (&TcpStream, &TcpStream) {
        match direction {
            Direction::TowardUpstream => (&self.downstream, &self.upstream),
            Direction::TowardDownstream => (&self.upstream, &self.downstream),
        }
    }

    /// Runs a reader and a writer per direction; returns when all four end.
    fn forward_both_ways(&self) {
        thread::scope(|scope| {
            for direction in [Direction::TowardUpstream, Direction::TowardDownstream] {
                let (sender, receiver) = mpsc::sync_channel(CHUNKS_IN_FLIGHT_MAX);
                scope.spawn(move || {
                    if self.receive(direction, sender) == Outcome::Failed {
                        self.end();
                    }
                });
                scope.spawn(move || {
                    if self.deliver(direction, receiver) == Outcome::Failed {
                        self.end();
                    }
                });
            }
        });
    }

    /// Reads the direction's source into timestamped chunks. Dropping
    /// `chunks` on return tells the writer that no more will come.
    fn receive(&self, direction: Direction, chunks: SyncSender<Chunk>) -> Outcome {
        let (mut source, _) = self.sockets(direction);
        loop {
            if self.stopped() {
                return Outcome::Stopped;
            }
            let mut bytes = vec![0u8; CHUNK_BYTES_MAX];
            match source.read(&mut bytes) {
                Ok(0) => return Outcome::Finished,
                Ok(length) => {
                    debug_assert!(length <= CHUNK_BYTES_MAX);
                    bytes.truncate(length);
                    let read_at = Instant::now();
                    // Blocks while the queue is full; fails once the writer
                    // has returned.
                    if chunks.send(Chunk { read_at, bytes }).is_err() {
                        return Outcome::Stopped;
                    }
                }
                Err(error) if is_retryable(&error) => {}
                Err(_) => return Outcome::Failed,
            }
        }
    }

    /// Writes each chunk once it is due and the bandwidth allows; passes an
    /// end of stream on as a half-close.
    fn deliver(&self, direction: Direction, chunks: Receiver<Chunk>) -> Outcome {
        let (_, target) = self.sockets(direction);
        loop {
            let chunk = match chunks.recv_timeout(POLL_INTERVAL) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) if self.stopped() => return Outcome::Stopped,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) if self.stopped() => return Outcome::Stopped,
                Err(RecvTimeoutError::Disconnected) => {
                    return match target.shutdown(Shutdown::Write) {
                        Ok(()) => Outcome::Finished,
                        Err(_) => Outcome::Failed,
                    };
                }
            };
            if let Err(outcome) = self.wait_until_due(chunk.read_at) {
                return outcome;
            }
            if let Err(outcome) = self.write_paced(direction, target, &chunk.bytes) {
                return outcome;
            }
        }
    }

    /// Sleeps until `read_at + delay`, re-reading the delay as it may change.
    fn wait_until_due(&self, read_at: Instant) -> Result<(), Outcome> {
        loop {
            if self.stopped() {
                return Err(Outcome::Stopped);
            }
            let due = read_at + self.link.delay();
            let now = Instant::now();
            if now >= due {
                return Ok(());
            }
            thread::sleep((due - now).min(POLL_INTERVAL));
        }
    }

    /// Writes all of `bytes` in bursts the direction's bucket allows.
    fn write_paced(
        &self,
        direction: Direction,
        mut target: &TcpStream,
        mut bytes: &[u8],
    ) -> Result<(), Outcome> {
        let bucket = &self.link.buckets[direction as usize];
        let counter = &self.link.bytes_forwarded[direction as usize];
        while !bytes.is_empty() {
            if self.stopped() {
                return Err(Outcome::Stopped);
            }
            let allowed = match lock(bucket).take(bytes.len(), Instant::now()) {
                Ok(allowed) => allowed,
                Err(wait) => {
                    thread::sleep(wait.min(POLL_INTERVAL));
                    continue;
                }
            };
            assert!(allowed >= 1 && allowed <= bytes.len());
            let (burst, rest) = bytes.split_at(allowed);
            let mut unwritten = burst;
            while !unwritten.is_empty() {
                if self.stopped() {
                    return Err(Outcome::Stopped);
                }
                match target.write(unwritten) {
                    Ok(0) => return Err(Outcome::Failed),
                    Ok(written) => {
                        unwritten = &unwritten[written..];
                        counter.fetch_add(written as u64, Ordering::SeqCst);
                    }
                    Err(error) if is_retryable(&error) => {}
                    Err(_) => return Err(Outcome::Failed),
                }
            }
            bytes = rest;
        }
        Ok(())
    }
}

/// A read or write timeout (the cue to look at the stop flag) or an
/// interrupted call: try again.
fn is_retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// A poisoned lock only means another proxy thread panicked; the state it
/// guards stays consistent, so the proxy carries on.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes per second with bursts of at most [`BURST_MS`] worth of rate;
/// no rate means no limit.
#[derive(Debug)]
struct TokenBucket {
    bytes_per_sec: Option<u64>,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn unlimited() -> TokenBucket {
        TokenBucket {
            bytes_per_sec: None,
            tokens: 0.0,
            refilled_at: Instant::now(),
        }
    }

    fn burst_bytes(bytes_per_sec: u64) -> u64 {
        (bytes_per_sec.saturating_mul(BURST_MS) / 1000).max(1)
    }

    /// Starts the new rate with a full bucket.
    fn set_rate(&mut self, bytes_per_sec: Option<u64>, now: Instant) {
        self.bytes_per_sec = bytes_per_sec;
        self.tokens = bytes_per_sec.map_or(0.0, |rate| Self::burst_bytes(rate) as f64);
        self.refilled_at = now;
    }

    /// Grants up to `wanted` bytes (at least 1), or says how long to wait
    /// before the bucket holds `min(wanted, burst)`.
    fn take(&mut self, wanted: usize, now: Instant) -> Result<usize, Duration> {
        assert!(wanted >= 1);
        let Some(rate) = self.bytes_per_sec else {
            return Ok(wanted);
        };
        let burst = Self::burst_bytes(rate);
        let elapsed = now.saturating_duration_since(self.refilled_at);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * rate as f64).min(burst as f64);
        self.refilled_at = now;
        let granted = (wanted as u64).min(burst);
        if self.tokens >= granted as f64 {
            self.tokens -= granted as f64;
            debug_assert!(self.tokens >= 0.0);
            Ok(granted as usize)
        } else {
            Err(Duration::from_secs_f64(
                (granted as f64 - self.tokens) / rate as f64,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: each control of the proxy does what it says, on a real
    //! loopback connection. Method: an echo server on std threads as
    //! upstream, a client that writes patterned bytes and reads them back,
    //! every wait bounded by a deadline; timings are asserted only as lower
    //! bounds with generous upper bounds.

    use super::*;
    use crate::wait_until;

    /// The bound on every wait in these tests.
    const TEST_DEADLINE: Duration = Duration::from_secs(10);

    /// Upstream: echoes every byte back on the connection it came from,
    /// and half-closes after the client's end of stream.
    struct EchoServer {
        address: SocketAddr,
        stopping: Arc<AtomicBool>,
        acceptor: Option<JoinHandle<()>>,
    }

    impl EchoServer {
        fn start() -> EchoServer {
            let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind the echo server");
            listener
                .set_nonblocking(true)
                .expect("non-blocking listener");
            let address = listener.local_addr().expect("echo server address");
            let stopping = Arc::new(AtomicBool::new(false));
            let acceptor_stopping = Arc::clone(&stopping);
            let acceptor = thread::spawn(move || {
                let mut connections = Vec::new();
                while !acceptor_stopping.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let stopping = Arc::clone(&acceptor_stopping);
                            connections.push(thread::spawn(move || echo(stream, &stopping)));
                        }
                        Err(_) => thread::sleep(ACCEPT_POLL_INTERVAL),
                    }
                }
                for connection in connections {
                    let _ = connection.join();
                }
            });
            EchoServer {
                address,
                stopping,
                acceptor: Some(acceptor),
            }
        }
    }

    impl Drop for EchoServer {
        fn drop(&mut self) {
            self.stopping.store(true, Ordering::SeqCst);
            if let Some(acceptor) = self.acceptor.take() {
                let _ = acceptor.join();
            }
        }
    }

    fn echo(mut stream: TcpStream, stopping: &AtomicBool) {
        let configured = stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_nodelay(true))
            .and_then(|()| stream.set_read_timeout(Some(POLL_INTERVAL)))
            .and_then(|()| stream.set_write_timeout(Some(TEST_DEADLINE)));
        if configured.is_err() {
            return;
        }
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        while !stopping.load(Ordering::SeqCst) {
            match stream.read(&mut buffer) {
                Ok(0) => {
                    let _ = stream.shutdown(Shutdown::Write);
                    return;
                }
                Ok(length) => {
                    if stream.write_all(&buffer[..length]).is_err() {
                        return;
                    }
                }
                Err(error) if is_retryable(&error) => {}
                Err(_) => return,
            }
        }
    }

    fn connect(address: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(address).expect("connect through the proxy");
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(POLL_INTERVAL))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(TEST_DEADLINE))
            .expect("write timeout");
        stream
    }

    /// `length` bytes whose pattern (period 251, a prime) shows a reorder,
    /// a duplicate or a loss.
    fn patterned(length: usize) -> Vec<u8> {
        (0..length).map(|index| (index % 251) as u8).collect()
    }

    /// Reads exactly `length` bytes; panics at the deadline or end of stream.
    fn read_exactly(mut stream: &TcpStream, length: usize, deadline: Instant) -> Vec<u8> {
        let mut received = vec![0u8; length];
        let mut filled = 0;
        while filled < length {
            assert!(
                Instant::now() < deadline,
                "{filled} of {length} bytes by the deadline"
            );
            match stream.read(&mut received[filled..]) {
                Ok(0) => panic!("end of stream after {filled} of {length} bytes"),
                Ok(read) => filled += read,
                Err(error) if is_retryable(&error) => {}
                Err(error) => panic!("read failed after {filled} of {length} bytes: {error}"),
            }
        }
        received
    }

    /// Reads until end of stream or a reset; returns the bytes that came
    /// first, or None if the stream is still open at the deadline.
    fn read_until_closed(mut stream: &TcpStream, deadline: Instant) -> Option<Vec<u8>> {
        let mut received = Vec::new();
        let mut buffer = vec![0u8; CHUNK_BYTES_MAX];
        while Instant::now() < deadline {
            match stream.read(&mut buffer) {
                Ok(0) => return Some(received),
                Ok(read) => received.extend_from_slice(&buffer[..read]),
                Err(error) if is_retryable(&error) => {}
                Err(_) => return Some(received),
            }
        }
        None
    }

    /// Writes `payload` through the proxy (then half-closes) while reading
    /// its echo until the echo server closes; returns the echo.
    fn echo_transfer(address: SocketAddr, payload: &[u8]) -> Vec<u8> {
        let stream = connect(address);
        let deadline = Instant::now() + TEST_DEADLINE;
        thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut stream = &stream;
                stream.write_all(payload).expect("write the payload");
                stream.shutdown(Shutdown::Write).expect("half-close");
            });
            let echoed = read_until_closed(&stream, deadline).expect("the echo ends in time");
            writer.join().expect("writer thread");
            echoed
        })
    }

    /// Sends one byte and waits for its echo; returns the round trip.
    fn ping(stream: &TcpStream) -> Duration {
        let started = Instant::now();
        let mut writer = stream;
        writer.write_all(&[7]).expect("write the ping");
        let echoed = read_exactly(stream, 1, started + TEST_DEADLINE);
        assert_eq!(echoed, [7]);
        started.elapsed()
    }

    #[test]
    fn bytes_round_trip_in_order() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let payload = patterned(1024 * 1024);
        let echoed = echo_transfer(proxy.addr(), &payload);
        assert_eq!(echoed.len(), payload.len());
        assert!(echoed == payload, "the echo differs from the payload");
        let length = payload.len() as u64;
        let counted = wait_until(Instant::now() + TEST_DEADLINE, || {
            proxy.bytes_forwarded() == (length, length)
        });
        assert!(counted, "bytes_forwarded {:?}", proxy.bytes_forwarded());
        assert_eq!(proxy.connections_accepted(), 1);
        assert_eq!(proxy.connections_refused(), 0);
    }

    #[test]
    fn delay_adds_twice_the_delay_to_a_round_trip() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let stream = connect(proxy.addr());
        ping(&stream); // Before the delay: the connection is up.
        let delay = Duration::from_millis(60);
        proxy.set_delay(delay);
        for _ in 0..3 {
            let round_trip = ping(&stream);
            assert!(round_trip >= 2 * delay, "round trip {round_trip:?}");
            assert!(
                round_trip < 2 * delay + Duration::from_secs(2),
                "round trip {round_trip:?}"
            );
        }
        proxy.set_delay(Duration::ZERO);
        let round_trip = ping(&stream);
        assert!(
            round_trip < 2 * delay,
            "round trip {round_trip:?} after the delay was lifted"
        );
    }

    #[test]
    fn delay_keeps_many_chunks_in_flight() {
        // 1 MiB is 64 chunks or more each way: relaying one chunk per delay
        // would take 64 × 2 × 100 ms, over 12 s; a queue takes about 0.2 s.
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let delay = Duration::from_millis(100);
        proxy.set_delay(delay);
        let payload = patterned(1024 * 1024);
        let started = Instant::now();
        let echoed = echo_transfer(proxy.addr(), &payload);
        let elapsed = started.elapsed();
        assert!(echoed == payload, "the echo differs from the payload");
        assert!(elapsed >= 2 * delay, "elapsed {elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "elapsed {elapsed:?}");
    }

    #[test]
    fn bandwidth_cap_bounds_throughput() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let bytes_per_sec = 256 * 1024;
        proxy.set_bandwidth(Some(bytes_per_sec));
        let payload = patterned(128 * 1024);
        let started = Instant::now();
        let echoed = echo_transfer(proxy.addr(), &payload);
        let elapsed = started.elapsed();
        assert!(echoed == payload, "the echo differs from the payload");
        let expected = Duration::from_secs_f64(payload.len() as f64 / bytes_per_sec as f64);
        assert!(elapsed >= expected.mul_f64(0.8), "elapsed {elapsed:?}");
        assert!(
            elapsed < expected + TEST_DEADLINE / 2,
            "elapsed {elapsed:?}"
        );
        proxy.set_bandwidth(None);
        let started = Instant::now();
        let echoed = echo_transfer(proxy.addr(), &payload);
        assert!(echoed == payload, "the echo differs once the cap is lifted");
        assert!(started.elapsed() < expected.mul_f64(0.8), "still capped");
    }

    #[test]
    fn cut_closes_open_connections_and_restore_admits_new_ones() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let before = connect(proxy.addr());
        ping(&before);
        proxy.cut();
        assert!(proxy.is_cut());
        let after_cut = read_until_closed(&before, Instant::now() + TEST_DEADLINE);
        assert_eq!(
            after_cut,
            Some(Vec::new()),
            "the open connection was not closed"
        );

        let while_cut = connect(proxy.addr());
        let refused = read_until_closed(&while_cut, Instant::now() + TEST_DEADLINE);
        assert_eq!(
            refused,
            Some(Vec::new()),
            "a connection got through while cut"
        );
        assert!(wait_until(Instant::now() + TEST_DEADLINE, || {
            proxy.connections_refused() == 1
        }));

        proxy.restore();
        assert!(!proxy.is_cut());
        let restored = connect(proxy.addr());
        ping(&restored);
        assert_eq!(proxy.connections_accepted(), 3);
    }

    #[test]
    fn cut_drops_bytes_in_flight() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let stream = connect(proxy.addr());
        ping(&stream);
        let forwarded = proxy.bytes_forwarded();
        proxy.set_delay(Duration::from_secs(1));
        let mut writer = &stream;
        writer.write_all(&patterned(1000)).expect("write");
        proxy.cut();
        let after_cut = read_until_closed(&stream, Instant::now() + TEST_DEADLINE);
        assert_eq!(after_cut, Some(Vec::new()), "bytes came back after the cut");
        assert_eq!(proxy.bytes_forwarded(), forwarded);
    }

    #[test]
    fn drop_stops_every_thread_and_unbinds_the_port() {
        let upstream = EchoServer::start();
        let proxy = LinkProxy::start(upstream.address).expect("start the proxy");
        let address = proxy.addr();
        let open = connect(address);
        ping(&open);
        proxy.set_delay(Duration::from_secs(5));
        let mut writer = &open;
        writer.write_all(&[1, 2, 3]).expect("write");

        // Drop joins every proxy thread; it must return within the deadline.
        let (dropped_sender, dropped) = mpsc::channel();
        let dropper = thread::spawn(move || {
            drop(proxy);
            let _ = dropped_sender.send(());
        });
        dropped
            .recv_timeout(TEST_DEADLINE)
            .expect("the proxy's drop returns in time");
        dropper.join().expect("dropper thread");

        let closed = read_until_closed(&open, Instant::now() + TEST_DEADLINE);
        assert_eq!(
            closed,
            Some(Vec::new()),
            "the open connection outlived the proxy"
        );
        let unbound = wait_until(Instant::now() + TEST_DEADLINE, || {
            matches!(
                TcpStream::connect(address),
                Err(error) if error.kind() == ErrorKind::ConnectionRefused
            )
        });
        assert!(unbound, "{address} still accepts connections");
    }

    #[test]
    fn token_bucket_grants_bursts_then_paces() {
        let started = Instant::now();
        let mut bucket = TokenBucket::unlimited();
        assert_eq!(bucket.take(1 << 20, started), Ok(1 << 20));
        bucket.set_rate(Some(1000), started);
        // A full bucket holds 20 ms of rate: 20 bytes.
        assert_eq!(bucket.take(100, started), Ok(20));
        let wait = bucket.take(100, started).expect_err("the bucket is empty");
        assert_eq!(wait, Duration::from_millis(20));
        assert_eq!(bucket.take(100, started + wait), Ok(20));
        assert_eq!(
            bucket.take(5, started + wait + Duration::from_millis(5)),
            Ok(5)
        );
    }
}
