//! The client library: a runtime-free core, a blocking client and an async one.
//!
//! - [`core`]: configuration, the reconnect backoff and the mapping from
//!   [`Response`](crate::Response)s to typed results. No I/O, no runtime.
//! - [`failover`]: the datacenters in preference order, which one is
//!   current, the order of a connect round and when to fail back. No I/O,
//!   no runtime; the caller passes the time.
//! - [`blocking`]: [`blocking::Client`] on `std::net::TcpStream`, with a
//!   low-level pipelined API (`send` many, `recv` in any order).
//! - [`asynchronous`] (feature `tokio`): [`asynchronous::Client`], a cheap
//!   `Clone` handle that many tasks share; their requests are pipelined on
//!   one connection.
//!
//! Both clients speak HELLO first on every connection, match responses to
//! requests by `request_id` (responses may come back out of order), give
//! every request its own deadline, and after a broken connection connect
//! again on the next request with a bounded exponential backoff.
//!
//! Failover across datacenters (both clients, same rules):
//! - A connect round tries every address once: the current datacenter's
//!   first, then the other datacenters' in preference order; the first that
//!   takes a HELLO becomes the connection and its datacenter the current
//!   one (`current_datacenter()`). A HELLO refusal ends the connect at once
//!   (credentials and cluster name are the same everywhere).
//! - A request that is not idempotent (PUT, DELETE, MPUT, admin) is never
//!   sent twice: if the connection breaks after it may have left, the call
//!   fails with a lost-connection error and the *next* request connects
//!   (to the fallback if the current datacenter is down). A read is retried
//!   once, on a new connection, which may be in the next datacenter.
//! - Off the preferred datacenter, at most once per `failback_interval`,
//!   the client tries the datacenters preferred over the current one and
//!   moves to the first that answers a HELLO: the blocking client before a
//!   request with nothing in flight, the async one in a spawned task.
//! - When no address answers after `reconnect_attempts_max` rounds, the
//!   error ([`ClientError::Connect`]) names each address of the last round
//!   and why it failed.
//!
//! Routing by the ring (the plain clients talk to the first address that
//! answers, and that node coordinates any key):
//! - [`ring`]: the ring read from CLUSTERINFO. No I/O, no runtime.
//! - [`routing`]: [`routing::Router`], the runtime-free rules both
//!   ring-aware clients share (a key's targets, its replicas then a seed
//!   client on the whole configuration; when to read the ring again; the
//!   epoch only rises; which failures go on to the next target), and
//!   [`RoutingClient`], the blocking ring-aware client.
//! - [`async_routing`] (feature `tokio`): [`AsyncRoutingClient`], the async
//!   one, a `Clone` handle with one pipelined connection per node; its
//!   periodic refresh runs in a spawned task. Its seed client keeps the
//!   datacenter failover above.

pub mod blocking;
pub mod core;
pub mod failover;
pub mod ring;
pub mod routing;

#[cfg(test)]
mod fake;

#[cfg(feature = "tokio")]
pub mod async_routing;
#[cfg(feature = "tokio")]
pub mod asynchronous;

pub use self::core::{ClientConfig, ServerHello};
pub use self::failover::{ConnectFailure, Datacenter};
pub use self::routing::RoutingClient;

#[cfg(feature = "tokio")]
pub use self::async_routing::AsyncRoutingClient;

use std::time::Duration;

use thiserror::Error;

use crate::error::{DecodeError, EncodeError, ErrorCode};
use crate::message::Opcode;

/// Why a client call failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No configured address accepted a connection and a HELLO.
    #[error(
        "cannot connect to any datacenter after {attempts} rounds: {}",
        failover::describe_failures(.failures)
    )]
    Connect {
        /// Rounds over all addresses.
        attempts: u32,
        /// Each address of the last round, in the order tried, and why it failed.
        failures: Vec<ConnectFailure>,
    },
    /// The configuration cannot be used (no address, a datacenter twice, …).
    #[error("bad client configuration: {reason}")]
    Config {
        /// What is wrong.
        reason: String,
    },
    /// The server refused the HELLO (credentials, cluster name, version).
    #[error("server refused HELLO with {code}: {message}")]
    HelloRefused {
        /// The server's code.
        code: ErrorCode,
        /// The server's reason.
        message: String,
    },
    /// The server answered the request with an ERROR frame.
    #[error("server error {code}: {message}")]
    Server {
        /// The server's code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// Reading or writing the socket failed; the connection was dropped.
    #[error("connection i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The server closed the connection (or it was lost) with the request in flight.
    #[error("connection closed with the request in flight")]
    ConnectionClosed,
    /// No response before the request's deadline.
    #[error("request {request_id} timed out after {timeout:?}")]
    Timeout {
        /// The request that timed out.
        request_id: u32,
        /// The per-request timeout in force.
        timeout: Duration,
    },
    /// The server sent bytes that do not decode; the connection was dropped.
    #[error("server sent an undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    /// The request breaks a limit and was not sent.
    #[error("request not sent: {0}")]
    Encode(#[from] EncodeError),
    /// The server answered with a response of the wrong kind.
    #[error("expected {expected}, server answered opcode {opcode}")]
    UnexpectedResponse {
        /// What the request called for.
        expected: &'static str,
        /// What came back.
        opcode: Opcode,
    },
    /// A batch response does not hold one entry per request entry.
    #[error("expected {expected} batch entries, server answered {found}")]
    BatchMismatch {
        /// Entries in the request.
        expected: usize,
        /// Entries in the response.
        found: usize,
    },
    /// `recv` was asked for an id that is not in flight (never sent, already
    /// received, timed out, or lost with a broken connection).
    #[error("request {request_id} is not in flight")]
    NotInFlight {
        /// The id asked for.
        request_id: u32,
    },
    /// `recv` was called with nothing in flight.
    #[error("no request is in flight")]
    NothingInFlight,
    /// A node's CLUSTERINFO does not describe a ring a client can route by.
    #[error("cannot route by the node's ring: {reason}")]
    Ring {
        /// What did not check out.
        reason: String,
    },
    /// Too many requests are in flight on this client.
    #[error("{in_flight} requests in flight, the limit is {in_flight_max}")]
    TooManyInFlight {
        /// Requests in flight.
        in_flight: usize,
        /// The configured limit.
        in_flight_max: usize,
    },
}

impl ClientError {
    /// The server's error code, if the server sent one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } | ClientError::HelloRefused { code, .. } => {
                Some(*code)
            }
            _ => None,
        }
    }

    /// Whether the connection was lost (a read may be retried on a new one).
    pub fn is_connection_lost(&self) -> bool {
        matches!(self, ClientError::Io(_) | ClientError::ConnectionClosed)
    }
}
