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
//!   in flight; the next send connects again (HELLO first), with backoff.
//! - Typed reads (GET, MGET, PING, info) are retried once on a new connection
//!   if the old one broke; writes are not, so a write is never applied twice
//!   by this client.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::core::{self, Backoff, ClientConfig, ServerHello};
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
            .field("in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects (HELLO included) to the first address that answers.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let mut client = Client {
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
            let last_error = match self.connect_round() {
                Ok(connection) => {
                    self.connection = Some(connection);
                    return Ok(());
                }
                Err(error @ ClientError::HelloRefused { .. }) => return Err(error),
                Err(error) => error.to_string(),
            };
            match backoff.next_attempt() {
                Some(wait) => std::thread::sleep(wait),
                None => {
                    return Err(ClientError::Connect {
                        addresses: self.config.addresses.clone(),
                        attempts,
                        last_error,
                    })
                }
            }
        }
    }

    /// One pass over every address; the first that takes a HELLO wins.
    fn connect_round(&mut self) -> Result<Connection, ClientError> {
        let mut last_error = ClientError::ConnectionClosed;
        for address in self.config.addresses.clone() {
            match self.connect_one(&address) {
                Ok(connection) => return Ok(connection),
                Err(error @ ClientError::HelloRefused { .. }) => return Err(error),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
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
