//! Bytes over a plain `TcpStream`: frames the client library would
//! refuse to send, and the server's answers read until it closes.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use meridian_net::format::Header;
use meridian_net::message::Hello;
use meridian_net::{
    Decoder, Encoder, ErrorCode, Opcode, Request, Response, Role, PROTOCOL_VERSION,
};

/// The encoded HELLO of a client.
pub fn hello(request_id: u32, cluster: &str, credentials: Option<&[u8]>) -> Vec<u8> {
    request(
        request_id,
        &Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Client,
            cluster: cluster.to_string(),
            datacenter: "dc1".to_string(),
            credentials: credentials.map(Bytes::copy_from_slice),
        }),
    )
}

/// An encoded request under default limits.
pub fn request(request_id: u32, request: &Request) -> Vec<u8> {
    let mut out = BytesMut::new();
    Encoder::default()
        .encode(request_id, request, &mut out)
        .expect("the request fits the default limits");
    out.to_vec()
}

/// A frame with any header fields and body (nothing is checked).
pub fn frame(version: u8, opcode: Opcode, request_id: u32, body: &[u8]) -> Vec<u8> {
    let header = Header {
        version,
        opcode: opcode.0,
        request_id,
        flags: 0,
        body_len: body.len() as u32,
    };
    let mut out = header.to_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// What a server answered to bytes sent on a fresh connection.
#[derive(Debug)]
pub struct Exchange {
    /// `(request_id, response)` in arrival order.
    pub responses: Vec<(u32, Response)>,
    /// Whether the server closed the connection before the deadline.
    pub closed: bool,
}

impl Exchange {
    /// The last response, which must be an ERROR: its id, code and message.
    pub fn final_error(&self) -> (u32, ErrorCode, String) {
        match self.responses.last() {
            Some((id, Response::Error { code, message })) => (*id, *code, message.clone()),
            other => panic!("expected a final ERROR, got {other:?} in {self:?}"),
        }
    }
}

/// Connects, writes `bytes`, and reads responses until the server
/// closes the connection or `deadline` passes.
pub fn exchange(address: SocketAddr, bytes: &[u8], deadline: Instant) -> Exchange {
    exchange_inner(address, bytes, false, deadline)
}

/// As [`exchange`], but shuts down the sending side after `bytes`, as a
/// client that stops in the middle of a frame would.
pub fn exchange_then_shutdown(address: SocketAddr, bytes: &[u8], deadline: Instant) -> Exchange {
    exchange_inner(address, bytes, true, deadline)
}

fn exchange_inner(
    address: SocketAddr,
    bytes: &[u8],
    shutdown: bool,
    deadline: Instant,
) -> Exchange {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.write_all(bytes).expect("write the frames");
    if shutdown {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down the sending side");
    }
    let mut input = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break false;
        }
        stream
            .set_read_timeout(Some(remaining))
            .expect("set a read timeout");
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(read) => input.extend_from_slice(&chunk[..read]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break true,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                break false
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => panic!("read from the server: {error}"),
        }
    };
    let mut decoder = Decoder::default();
    let mut responses = Vec::new();
    while let Some(frame) = decoder
        .decode(&mut input)
        .expect("the server's frames decode")
    {
        let response = frame
            .response(decoder.limits())
            .expect("the server's bodies decode");
        responses.push((frame.request_id, response));
    }
    assert!(input.is_empty(), "the server sent a partial frame");
    Exchange { responses, closed }
}
