//! The runtime-free part of the clients: configuration, backoff, and the
//! mapping from responses to typed results. (Which datacenter to talk to,
//! also runtime-free, is [`super::failover`].)
//!
//! Both the blocking and the async client build the same requests and read
//! the same responses; only how bytes move differs. Keeping the mapping
//! here means the two cannot disagree on what a response means.
//!
//! Invariants:
//! - An ERROR response always becomes [`ClientError::Server`] with the
//!   server's code and message; a response of the wrong kind always becomes
//!   [`ClientError::UnexpectedResponse`], never a panic.
//! - A backoff never waits longer than `reconnect_backoff_max` and never
//!   tries more than `reconnect_attempts_max` rounds.

use std::time::Duration;

use bytes::Bytes;

use super::failover::Datacenter;
use super::ClientError;
use crate::format::{Limits, PROTOCOL_VERSION};
use crate::message::{Hello, Request, Response, Role, Version, VersionedValue};

/// How a client connects and how long it waits.
///
/// Where to connect is given one of two ways: `addresses` alone (one
/// datacenter, named `datacenter`; what [`ClientConfig::new`] builds), or
/// `datacenters` in preference order (what [`ClientConfig::with_datacenters`]
/// builds). When `datacenters` is not empty, `addresses` is ignored.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `host:port` addresses of one datacenter, tried in order; used only
    /// when `datacenters` is empty.
    pub addresses: Vec<String>,
    /// Datacenters in preference order, the first being the local one: the
    /// client fails over to the next when the current cannot be reached,
    /// and back to a preferred one when it answers again.
    pub datacenters: Vec<Datacenter>,
    /// While on a fallback datacenter, how often (at most) to try the
    /// preferred ones again; checked before a request, not by a timer.
    pub failback_interval: Duration,
    /// The cluster name sent in HELLO.
    pub cluster: String,
    /// The client's datacenter, sent in HELLO.
    pub datacenter: String,
    /// Credentials sent in HELLO.
    pub credentials: Option<Bytes>,
    /// Longest wait for one TCP connect.
    pub connect_timeout: Duration,
    /// Longest wait for the response to one request.
    pub request_timeout: Duration,
    /// Rounds over all addresses before a connect gives up (at least 1).
    pub reconnect_attempts_max: u32,
    /// First wait between rounds; doubles each round.
    pub reconnect_backoff_initial: Duration,
    /// Longest wait between rounds.
    pub reconnect_backoff_max: Duration,
    /// Most requests in flight on one client.
    pub in_flight_max: usize,
    /// Codec limits.
    pub limits: Limits,
}

impl ClientConfig {
    /// A configuration for one address with every other field defaulted.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            addresses: vec![address.into()],
            ..Self::default()
        }
    }

    /// A configuration for datacenters in preference order, each a name and
    /// its nodes' addresses, with every other field defaulted. The HELLO's
    /// `datacenter` (the client's own) is the first, preferred, one.
    pub fn with_datacenters<N, I, A>(datacenters: impl IntoIterator<Item = (N, I)>) -> Self
    where
        N: Into<String>,
        I: IntoIterator<Item = A>,
        A: Into<String>,
    {
        let datacenters: Vec<Datacenter> = datacenters
            .into_iter()
            .map(|(name, addresses)| Datacenter::new(name, addresses))
            .collect();
        let defaults = Self::default();
        Self {
            addresses: Vec::new(),
            datacenter: datacenters
                .first()
                .map_or(defaults.datacenter.clone(), |first| first.name.clone()),
            datacenters,
            ..defaults
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            addresses: vec!["127.0.0.1:7700".to_owned()],
            datacenters: Vec::new(),
            failback_interval: Duration::from_secs(5),
            cluster: "meridian".to_owned(),
            datacenter: "dc1".to_owned(),
            credentials: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            reconnect_attempts_max: 5,
            reconnect_backoff_initial: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_secs(1),
            in_flight_max: 16 * 1024,
            limits: Limits::default(),
        }
    }
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("addresses", &self.addresses)
            .field("datacenters", &self.datacenters)
            .field("failback_interval", &self.failback_interval)
            .field("cluster", &self.cluster)
            .field("datacenter", &self.datacenter)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<redacted>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("reconnect_attempts_max", &self.reconnect_attempts_max)
            .field("in_flight_max", &self.in_flight_max)
            .finish_non_exhaustive()
    }
}

/// What the server said in its HELLO_OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHello {
    /// The protocol version the server speaks.
    pub protocol_version: u8,
    /// The node that answered.
    pub node_id: u32,
    /// The server's cluster.
    pub cluster: String,
    /// The server's datacenter.
    pub datacenter: String,
}

/// The HELLO a client sends first.
pub fn hello_request(config: &ClientConfig) -> Request {
    Request::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        role: Role::Client,
        cluster: config.cluster.clone(),
        datacenter: config.datacenter.clone(),
        credentials: config.credentials.clone(),
    })
}

/// Bounded exponential backoff between connect rounds.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts_left: u32,
}

impl Backoff {
    /// A backoff following `config`.
    pub fn new(config: &ClientConfig) -> Self {
        Self {
            next: config.reconnect_backoff_initial,
            max: config.reconnect_backoff_max,
            attempts_left: config.reconnect_attempts_max.max(1),
        }
    }

    /// Takes one attempt; returns the wait to apply after it fails, or
    /// `None` when this was the last attempt.
    pub fn next_attempt(&mut self) -> Option<Duration> {
        assert!(
            self.attempts_left > 0,
            "next_attempt called after the last attempt"
        );
        self.attempts_left -= 1;
        if self.attempts_left == 0 {
            return None;
        }
        let wait = self.next.min(self.max);
        self.next = self.next.saturating_mul(2).min(self.max);
        Some(wait)
    }
}

fn unexpected(expected: &'static str, response: Response) -> ClientError {
    match response {
        Response::Error { code, message } => ClientError::Server { code, message },
        other => ClientError::UnexpectedResponse {
            expected,
            opcode: other.opcode(),
        },
    }
}

/// HELLO_OK, or the refusal.
pub fn into_hello(response: Response) -> Result<ServerHello, ClientError> {
    match response {
        Response::HelloOk {
            protocol_version,
            node_id,
            cluster,
            datacenter,
        } => Ok(ServerHello {
            protocol_version,
            node_id,
            cluster,
            datacenter,
        }),
        Response::Error { code, message } => Err(ClientError::HelloRefused { code, message }),
        other => Err(unexpected("HELLO_OK", other)),
    }
}

/// GET: the value, `None` if not found.
pub fn into_value(response: Response) -> Result<Option<VersionedValue>, ClientError> {
    match response {
        Response::Value(entry) => Ok(Some(entry)),
        Response::NotFound => Ok(None),
        other => Err(unexpected("VALUE or NOT_FOUND", other)),
    }
}

/// PUT or DELETE: the version written.
pub fn into_written(response: Response) -> Result<Version, ClientError> {
    match response {
        Response::Written { version } => Ok(version),
        other => Err(unexpected("WRITTEN", other)),
    }
}

/// MGET: one entry per key.
pub fn into_values(
    response: Response,
    expected: usize,
) -> Result<Vec<Option<VersionedValue>>, ClientError> {
    match response {
        Response::Values { entries } if entries.len() == expected => Ok(entries),
        Response::Values { entries } => Err(ClientError::BatchMismatch {
            expected,
            found: entries.len(),
        }),
        other => Err(unexpected("VALUES", other)),
    }
}

/// MPUT: one version per entry.
pub fn into_written_many(response: Response, expected: usize) -> Result<Vec<Version>, ClientError> {
    match response {
        Response::WrittenMany { versions } if versions.len() == expected => Ok(versions),
        Response::WrittenMany { versions } => Err(ClientError::BatchMismatch {
            expected,
            found: versions.len(),
        }),
        other => Err(unexpected("WRITTEN_MANY", other)),
    }
}

/// PING.
pub fn into_pong(response: Response) -> Result<(), ClientError> {
    match response {
        Response::Pong => Ok(()),
        other => Err(unexpected("PONG", other)),
    }
}

/// BUILDINFO, CLUSTERINFO, NODEHEALTH, STATS: the JSON text.
pub fn into_info(response: Response) -> Result<String, ClientError> {
    match response {
        Response::Info { json } => Ok(json),
        other => Err(unexpected("INFO", other)),
    }
}

/// Builds a GET.
pub fn get_request(key: &[u8]) -> Request {
    Request::Get {
        key: Bytes::copy_from_slice(key),
        read_quorum: None,
    }
}

/// Builds a PUT.
pub fn put_request(key: &[u8], value: &[u8], ttl_seconds: Option<u32>) -> Request {
    Request::Put {
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        ttl_seconds,
        write_quorum: None,
    }
}

/// Builds a DELETE.
pub fn delete_request(key: &[u8]) -> Request {
    Request::Delete {
        key: Bytes::copy_from_slice(key),
        write_quorum: None,
    }
}

/// Builds an MGET.
pub fn mget_request<K: AsRef<[u8]>>(keys: &[K]) -> Request {
    Request::MultiGet {
        keys: keys
            .iter()
            .map(|key| Bytes::copy_from_slice(key.as_ref()))
            .collect(),
    }
}

/// Builds an MPUT.
pub fn mput_request<K: AsRef<[u8]>, V: AsRef<[u8]>>(entries: &[(K, V)]) -> Request {
    Request::MultiPut {
        entries: entries
            .iter()
            .map(|(key, value)| {
                (
                    Bytes::copy_from_slice(key.as_ref()),
                    Bytes::copy_from_slice(value.as_ref()),
                )
            })
            .collect(),
        ttl_seconds: None,
        write_quorum: None,
    }
}

/// TTL in whole seconds, rounded up, saturating at `u32::MAX`.
pub fn ttl_seconds(ttl: Duration) -> u32 {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    u32::try_from(seconds).unwrap_or(u32::MAX)
}

/// Whether a request may be sent again after a lost connection: reads only.
pub fn is_idempotent(request: &Request) -> bool {
    matches!(
        request,
        Request::Get { .. }
            | Request::MultiGet { .. }
            | Request::Ping
            | Request::BuildInfo
            | Request::ClusterInfo
            | Request::NodeHealth
            | Request::Stats
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_stops() {
        let config = ClientConfig {
            reconnect_attempts_max: 5,
            reconnect_backoff_initial: Duration::from_millis(10),
            reconnect_backoff_max: Duration::from_millis(25),
            ..ClientConfig::default()
        };
        let mut backoff = Backoff::new(&config);
        let waits: Vec<_> = std::iter::from_fn(|| backoff.next_attempt()).collect();
        let expected = [10, 20, 25, 25].map(Duration::from_millis);
        assert_eq!(waits, expected);
    }

    #[test]
    fn error_responses_carry_code_and_message() {
        let response = Response::Error {
            code: ErrorCode::Overloaded,
            message: "busy".into(),
        };
        let error = into_value(response).expect_err("error");
        assert_eq!(error.code(), Some(ErrorCode::Overloaded));
        assert!(error.to_string().contains("busy"));
        let error = into_written(Response::Pong).expect_err("wrong kind");
        assert!(matches!(
            error,
            ClientError::UnexpectedResponse {
                expected: "WRITTEN",
                ..
            }
        ));
        let error = into_values(
            Response::Values {
                entries: vec![None],
            },
            2,
        )
        .expect_err("short");
        assert!(matches!(
            error,
            ClientError::BatchMismatch {
                expected: 2,
                found: 1
            }
        ));
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(3)), 3);
        assert_eq!(ttl_seconds(Duration::from_secs(u64::MAX)), u32::MAX);
    }
}
