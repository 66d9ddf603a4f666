//! A blocking client on `std::net::TcpStream`.
//!
//! Two layers:
//! - Pipelined, low level: [`Client::send`] (or [`Client::send_raw`]) queues
//!   a request and returns its id; [`Client::recv`] waits for one id,
//!   [`Client::recv_any`] and [`Client::recv_frame`] for whichever comes
//!   first. A load generator sends many, then receives.
//! - Typed: `get`, `put`, … send one request and wait for its response.
//!
//! Sends are buffered and flushed by the next receive (or [`Client::flush`]),
//! so a burst of requests leaves in few system calls.
//!
//! Invariants:
//! - At most `in_flight_max` requests are in flight; each has a deadline of
//!   `request_timeout` from its send.
//! - A response whose id is not in flight (late, after a timeout) is dropped.
//! - Any I/O or decode failure drops the connection and forgets every request
//!   in flight; the next send connects again (HELLO first), with backoff,
//!   in the order [`Failover::connect_order`] gives (current datacenter
//!   first, then the others by preference).
//! - Typed reads (GET, MGET, PING, info) are retried once on a new connection
//!   if the old one broke; writes are not, so a write is never applied twice
//!   by this client.
//! - A failback (moving to a preferred datacenter that answers again) only
//!   replaces the connection when nothing is in flight or buffered, so no
//!   request is lost to it; it is tried before a send, at most once per
//!   `failback_interval`, and costs that send at most one connect per
//!   preferred address.
//! - `failover.current()` is the datacenter of the connection, or of the
//!   last one while disconnected.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::core::{self, Backoff, ClientConfig, ServerHello};
use super::failover::{ConnectFailure, Failover, Target};
use super::ClientError;
use crate::codec::{Decoder, Encoder, Frame};
use crate::message::{Opcode, Request, Response, Version, VersionedValue};

/// Bytes asked of the socket per read, at least.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Buffered request bytes that trigger a flush inside `send`.
const WRITE_FLUSH_BYTES: usize = 256 * 1024;

struct Connection {
    stream: TcpStream,
    read_buf: BytesMut,
    server: ServerHello,
}

/// A blocking, pipelining client of one server at a time.
pub struct Client {
    config: ClientConfig,
    failover: Failover,
    encoder: Encoder,
    decoder: Decoder,
    connection: Option<Connection>,
    write_buf: BytesMut,
    next_request_id: u32,
    /// Requests sent and not yet received: id → deadline.
    in_flight: HashMap<u32, Instant>,
    /// Responses received before they were asked for.
    arrived: HashMap<u32, Frame>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("config", &self.config)
            .field("connected", &self.connection.is_some())
            .field("datacenter", &self.current_datacenter())
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (HELLO included) to the first address that answers, in
    /// datacenter preference order.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut client = Client {
            failover: Failover::new(&config)?,
            encoder: Encoder::new(config.limits),
            decoder: Decoder::new(config.limits),
            config,
            connection: None,
            write_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            next_request_id: 1,
            in_flight: HashMap::new(),
            arrived: HashMap::new(),
        };
        client.ensure_connected()?;
        Ok(client)
    }

    /// The server's HELLO_OK on the current connection, if connected.
    pub fn server(&self) -> Option<&ServerHello> {
        self.connection
            .as_ref()
            .map(|connection| &connection.server)
    }

    /// The name of the datacenter the client talks to (while disconnected,
    /// the one it talked to last).
    pub fn current_datacenter(&self) -> &str {
        self.failover.current_name()
    }

    /// Requests sent and not yet received.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len() + self.arrived.len()
    }

    /// Queues `request`; returns its id. Connects first if needed.
    pub fn send(&mut self, request: &Request) -> Result<u32, ClientError> {
        self.send_with(|encoder, id, buf| encoder.encode(id, request, buf))
    }

    /// Queues a frame whose body is already encoded; returns its id.
    pub fn send_raw(&mut self, opcode: Opcode, body: &[u8]) -> Result<u32, ClientError> {
        self.send_with(|encoder, id, buf| encoder.encode_raw(id, opcode, body, buf))
    }

    fn send_with(
        &mut self,
        encode: impl FnOnce(&Encoder, u32, &mut BytesMut) -> Result<usize, crate::EncodeError>,
    ) -> Result<u32, ClientError> {
        if self.in_flight() >= self.config.in_flight_max {
            return Err(ClientError::TooManyInFlight {
                in_flight: self.in_flight(),
                in_flight_max: self.config.in_flight_max,
            });
        }
        self.fail_back_if_due();
        self.ensure_connected()?;
        let request_id = self.take_request_id();
        encode(&self.encoder, request_id, &mut self.write_buf)?;
        self.in_flight
            .insert(request_id, Instant::now() + self.config.request_timeout);
        if self.write_buf.len() >= WRITE_FLUSH_BYTES {
            self.flush()?;
        }
        Ok(request_id)
    }

    /// Writes every queued request to the socket.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        if self.write_buf.is_empty() {
            return Ok(());
        }
        let Some(connection) = self.connection.as_mut() else {
            self.write_buf.clear();
            return Err(ClientError::ConnectionClosed);
        };
        let result = connection.stream.write_all(&self.write_buf);
        self.write_buf.clear();
        result.map_err(|error| self.disconnect(error.into()))
    }

    /// Waits for the response to `request_id`.
    pub fn recv(&mut self, request_id: u32) -> Result<Response, ClientError> {
        let frame = self.recv_frame_for(request_id)?;
        Ok(frame.response(self.decoder.limits())?)
    }

    /// Waits for whichever response comes first; returns it with its id.
    pub fn recv_any(&mut self) -> Result<(u32, Response), ClientError> {
        let frame = self.recv_frame()?;
        Ok((frame.request_id, frame.response(self.decoder.limits())?))
    }

    /// Waits for whichever response frame comes first, body not decoded
    /// (the cheapest way to drain responses in a load generator).
    pub fn recv_frame(&mut self) -> Result<Frame, ClientError> {
        if let Some(id) = self.arrived.keys().next().copied() {
            if let Some(frame) = self.arrived.remove(&id) {
                return Ok(frame);
            }
        }
        let Some((&request_id, &deadline)) =
            self.in_flight.iter().min_by_key(|(_, deadline)| **deadline)
        else {
            return Err(ClientError::NothingInFlight);
        };
        self.flush()?;
        loop {
            match self.read_frame(deadline)? {
                None => return Err(self.time_out(request_id)),
                Some(frame) if self.in_flight.remove(&frame.request_id).is_some() => {
                    return Ok(frame)
                }
                Some(_late) => continue,
            }
        }
    }

    fn recv_frame_for(&mut self, request_id: u32) -> Result<Frame, ClientError> {
        if let Some(frame) = self.arrived.remove(&request_id) {
            return Ok(frame);
        }
        let Some(&deadline) = self.in_flight.get(&request_id) else {
            return Err(ClientError::NotInFlight { request_id });
        };
        self.flush()?;
        loop {
            let Some(frame) = self.read_frame(deadline)? else {
                return Err(self.time_out(request_id));
            };
            if self.in_flight.remove(&frame.request_id).is_none() {
                continue; // late response to a request that timed out
            }
            if frame.opcode == Opcode::ERROR {
                let closes = matches!(
                    frame.response(self.decoder.limits()),
                    Ok(Response::Error { code, .. }) if code.closes_connection()
                );
                if closes {
                    // The server closes after such an error: drop the
                    // connection now so the next request reconnects.
                    let _ = self.disconnect(ClientError::ConnectionClosed);
                    if frame.request_id == request_id {
                        return Ok(frame);
                    }
                    return Err(ClientError::ConnectionClosed);
                }
            }
            if frame.request_id == request_id {
                return Ok(frame);
            }
            self.arrived.insert(frame.request_id, frame);
        }
    }

    fn time_out(&mut self, request_id: u32) -> ClientError {
        self.in_flight.remove(&request_id);
        ClientError::Timeout {
            request_id,
            timeout: self.config.request_timeout,
        }
    }

    /// Reads until one frame is complete; `Ok(None)` once `deadline` passes.
    fn read_frame(&mut self, deadline: Instant) -> Result<Option<Frame>, ClientError> {
        loop {
            let Some(connection) = self.connection.as_mut() else {
                return Err(ClientError::ConnectionClosed);
            };
            match self.decoder.decode(&mut connection.read_buf) {
                Ok(Some(frame)) => return Ok(Some(frame)),
                Ok(None) => {}
                Err(error) => return Err(self.disconnect(error.into())),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            match read_some(connection, deadline - now) {
                Ok(true) => {}
                Ok(false) => return Err(self.disconnect(ClientError::ConnectionClosed)),
                Err(error) if is_timeout(&error) => {}
                Err(error) => return Err(self.disconnect(error.into())),
            }
        }
    }

    fn take_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Drops the connection and forgets everything in flight.
    fn disconnect(&mut self, error: ClientError) -> ClientError {
        self.connection = None;
        self.in_flight.clear();
        self.arrived.clear();
        self.write_buf.clear();
        error
    }

    fn ensure_connected(&mut self) -> Result<(), ClientError> {
        if self.connection.is_some() {
            return Ok(());
        }
        let mut backoff = Backoff::new(&self.config);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failures = match self.connect_round()? {
                Ok((datacenter, connection)) => {
                    self.connection = Some(connection);
                    self.failover.connected(datacenter, Instant::now());
                    return Ok(());
                }
                Err(failures) => failures,
            };
            match backoff.next_attempt() {
                Some(wait) => std::thread::sleep(wait),
                None => return Err(ClientError::Connect { attempts, failures }),
            }
        }
    }

    /// One pass over every address in failover order: `Ok(Ok(_))` with the
    /// first that takes a HELLO and its datacenter, `Ok(Err(_))` with every
    /// address's failure, `Err(_)` for a HELLO refusal (ends the connect).
    fn connect_round(
        &mut self,
    ) -> Result<Result<(usize, Connection), Vec<ConnectFailure>>, ClientError> {
        let order = self.failover.connect_order();
        let mut failures = Vec::with_capacity(order.len());
        for Target {
            datacenter,
            address,
        } in order
        {
            match self.connect_one(&address) {
                Ok(connection) => return Ok(Ok((datacenter, connection))),
                Err(error @ ClientError::HelloRefused { .. }) => return Err(error),
                Err(error) => failures.push(ConnectFailure {
                    datacenter: self.failover.name(datacenter).to_owned(),
                    address,
                    reason: error.to_string(),
                }),
            }
        }
        assert!(
            !failures.is_empty(),
            "a connect round tries at least one address"
        );
        Ok(Err(failures))
    }

    /// Off the preferred datacenter, once per `failback_interval` and only
    /// with nothing in flight: connects to the first preferred datacenter
    /// that answers and makes it current. A failed probe changes nothing.
    fn fail_back_if_due(&mut self) {
        let idle = self.in_flight() == 0 && self.write_buf.is_empty();
        if !idle {
            return;
        }
        let Some(targets) = self.failover.take_failback(Instant::now()) else {
            return;
        };
        for target in targets {
            assert!(target.datacenter < self.failover.current());
            if let Ok(connection) = self.connect_one(&target.address) {
                self.connection = Some(connection);
                self.failover.connected(target.datacenter, Instant::now());
                return;
            }
        }
    }

    fn connect_one(&mut self, address: &str) -> Result<Connection, ClientError> {
        let mut last_error =
            std::io::Error::new(std::io::ErrorKind::NotFound, "address resolved to nothing");
        for socket_address in address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&socket_address, self.config.connect_timeout) {
                Ok(stream) => return self.hello(stream),
                Err(error) => last_error = error,
            }
        }
        Err(last_error.into())
    }

    fn hello(&mut self, stream: TcpStream) -> Result<Connection, ClientError> {
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            stream,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            server: ServerHello {
                protocol_version: 0,
                node_id: 0,
                cluster: String::new(),
                datacenter: String::new(),
            },
        };
        let request_id = self.take_request_id();
        let mut buf = BytesMut::new();
        self.encoder
            .encode(request_id, &core::hello_request(&self.config), &mut buf)?;
        connection.stream.write_all(&buf)?;
        let deadline = Instant::now() + self.config.request_timeout;
        let frame = loop {
            if let Some(frame) = self.decoder.decode(&mut connection.read_buf)? {
                break frame;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ClientError::Timeout {
                    request_id,
                    timeout: self.config.request_timeout,
                });
            }
            if !read_some(&mut connection, deadline - now)? {
                return Err(ClientError::ConnectionClosed);
            }
        };
        if frame.request_id != request_id {
            return Err(ClientError::UnexpectedResponse {
                expected: "HELLO_OK",
                opcode: frame.opcode,
            });
        }
        connection.server = core::into_hello(frame.response(self.decoder.limits())?)?;
        Ok(connection)
    }

    /// Sends one request and waits for its response; retries a read once
    /// on a new connection if the old one broke.
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        let result = self.send(request).and_then(|id| self.recv(id));
        match result {
            Err(error) if error.is_connection_lost() && core::is_idempotent(request) => {
                let id = self.send(request)?;
                self.recv(id)
            }
            other => other,
        }
    }

    /// Reads a key: `None` if not found.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<VersionedValue>, ClientError> {
        core::into_value(self.call(&core::get_request(key))?)
    }

    /// Writes a key; returns the version written.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.call(&core::put_request(key, value, None))?)
    }

    /// Writes a key that expires after `ttl` (rounded up to whole seconds).
    pub fn put_with_ttl(
        &mut self,
        key: &[u8],
        value: &[u8],
        ttl: Duration,
    ) -> Result<Version, ClientError> {
        let request = core::put_request(key, value, Some(core::ttl_seconds(ttl)));
        core::into_written(self.call(&request)?)
    }

    /// Deletes a key; returns the tombstone's version.
    pub fn delete(&mut self, key: &[u8]) -> Result<Version, ClientError> {
        core::into_written(self.call(&core::delete_request(key))?)
    }

    /// Reads many keys; one entry per key, in order.
    pub fn mget<K: AsRef<[u8]>>(
        &mut self,
        keys: &[K],
    ) -> Result<Vec<Option<VersionedValue>>, ClientError> {
        core::into_values(self.call(&core::mget_request(keys))?, keys.len())
    }

    /// Writes many keys; one version per entry, in order.
    pub fn mput<K: AsRef<[u8]>, V: AsRef<[u8]>>(
        &mut self,
        entries: &[(K, V)],
    ) -> Result<Vec<Version>, ClientError> {
        core::into_written_many(self.call(&core::mput_request(entries))?, entries.len())
    }

    /// Round trip to the server.
    pub fn ping(&mut self) -> Result<(), ClientError> {
        core::into_pong(self.call(&Request::Ping)?)
    }

    /// Build information, as JSON.
    pub fn buildinfo(&mut self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::BuildInfo)?)
    }

    /// Cluster information, as JSON.
    pub fn clusterinfo(&mut self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::ClusterInfo)?)
    }

    /// The node's health, as JSON.
    pub fn nodehealth(&mut self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::NodeHealth)?)
    }

    /// Counters, as JSON.
    pub fn stats(&mut self) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::Stats)?)
    }

    /// Runs an operator's command (`xdc status`, …); the answer as JSON.
    pub fn admin(&mut self, command: &str) -> Result<String, ClientError> {
        core::into_info(self.call(&Request::Admin {
            command: command.to_string(),
        })?)
    }
}

/// Reads what the socket has, waiting at most `wait`; `Ok(false)` at EOF.
fn read_some(connection: &mut Connection, wait: Duration) -> std::io::Result<bool> {
    // A zero read timeout means "block forever" to std: never pass it.
    connection
        .stream
        .set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
    let buf = &mut connection.read_buf;
    let start = buf.len();
    let chunk = (buf.capacity() - start).max(READ_CHUNK_BYTES);
    buf.resize(start + chunk, 0);
    let result = connection.stream.read(&mut buf[start..]);
    let read = *result.as_ref().unwrap_or(&0);
    buf.truncate(start + read);
    result.map(|read| read > 0)
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    //! Goal: the blocking client's failover keeps its promises. Method: two
    //! or three fake datacenters on loopback (`super::super::fake`) that are
    //! stopped, restarted on their address, or die on a request; a failback
    //! interval of zero makes every idle send probe, so no test waits.

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

    fn dead_address() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").to_string()
    }

    #[test]
    fn fails_over_when_the_preferred_is_down_and_back_when_it_returns() {
        let mut east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let mut client = Client::connect(config(&[&east, &west])).expect("connect");
        assert_eq!(client.current_datacenter(), "east");
        client.ping().expect("ping east");

        east.stop();
        for _ in 0..3 {
            client.ping().expect("a read goes on to west");
            assert_eq!(client.current_datacenter(), "west");
        }
        client.put(b"k", b"v").expect("a write on west");
        assert_eq!(
            client.server().map(|hello| hello.datacenter.as_str()),
            Some("west")
        );

        east.restart();
        assert_eq!(east.hellos(), 0);
        client.ping().expect("ping after failback");
        assert_eq!(client.current_datacenter(), "east");
        assert_eq!(east.hellos(), 1);
        assert_eq!(east.requests(), 1, "the ping went to east");
    }

    #[test]
    fn a_write_cut_off_is_not_retried_and_the_next_request_fails_over() {
        let east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let mut client = Client::connect(config(&[&east, &west])).expect("connect");
        east.die_on_next_request();
        let error = client
            .put(b"k", b"v")
            .expect_err("east died with the write");
        assert!(error.is_connection_lost(), "{error}");
        assert_eq!(west.requests(), 0, "the write was not sent again");
        assert_eq!(east.requests(), 1);

        client.delete(b"k").expect("the next write goes to west");
        assert_eq!(client.current_datacenter(), "west");
        assert_eq!(west.requests(), 1);
    }

    #[test]
    fn a_read_cut_off_is_retried_on_the_next_datacenter() {
        let east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let mut client = Client::connect(config(&[&east, &west])).expect("connect");
        east.die_on_next_request();
        assert_eq!(client.get(b"k").expect("retried on west"), None);
        assert_eq!(client.current_datacenter(), "west");
        assert_eq!((east.requests(), west.requests()), (1, 1));
    }

    #[test]
    fn other_addresses_of_a_datacenter_come_before_the_next_datacenter() {
        let east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let config = ClientConfig {
            ..ClientConfig::with_datacenters([
                ("east", vec![dead_address(), east.address.clone()]),
                ("west", vec![west.address.clone()]),
            ])
        };
        let mut client = Client::connect(config).expect("connect");
        client.ping().expect("ping");
        assert_eq!(client.current_datacenter(), "east");
        assert_eq!((east.requests(), west.hellos()), (1, 0));
    }

    #[test]
    fn failback_waits_for_requests_in_flight() {
        let mut east = FakeDatacenter::start("east");
        let west = FakeDatacenter::start("west");
        let mut client = Client::connect(config(&[&east, &west])).expect("connect");
        east.stop();
        client.ping().expect("ping, moving to west");
        let first = client.send(&Request::Ping).expect("send on west");
        assert_eq!(client.current_datacenter(), "west");
        east.restart();
        let second = client
            .send(&Request::Ping)
            .expect("send with one in flight");
        assert_eq!(
            client.current_datacenter(),
            "west",
            "no failback mid-flight"
        );
        assert_eq!(east.hellos(), 0);
        for id in [second, first] {
            assert_eq!(client.recv(id).expect("recv on west"), Response::Pong);
        }
        client.ping().expect("ping, now idle");
        assert_eq!(client.current_datacenter(), "east");
    }

    #[test]
    fn when_every_datacenter_is_down_the_error_names_each_address() {
        let (east_1, east_2, west_1) = (dead_address(), dead_address(), dead_address());
        let config = ClientConfig {
            reconnect_attempts_max: 2,
            reconnect_backoff_initial: Duration::from_millis(1),
            ..ClientConfig::with_datacenters([
                ("east", vec![east_1.clone(), east_2.clone()]),
                ("west", vec![west_1.clone()]),
            ])
        };
        let error = Client::connect(config).expect_err("nothing listens");
        let ClientError::Connect { attempts, failures } = &error else {
            panic!("expected a Connect error, got {error:?}");
        };
        assert_eq!(*attempts, 2);
        let tried: Vec<(&str, &str)> = failures
            .iter()
            .map(|failure| (failure.datacenter.as_str(), failure.address.as_str()))
            .collect();
        assert_eq!(
            tried,
            [
                ("east", east_1.as_str()),
                ("east", east_2.as_str()),
                ("west", west_1.as_str())
            ]
        );
        let text = error.to_string();
        for address in [&east_1, &east_2, &west_1] {
            assert!(text.contains(address.as_str()), "{text}");
        }
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn a_bad_datacenter_list_is_refused_before_connecting() {
        let config = ClientConfig::with_datacenters([("east", Vec::<String>::new())]);
        let error = Client::connect(config).expect_err("no address");
        assert!(matches!(error, ClientError::Config { .. }), "{error}");
    }
}
