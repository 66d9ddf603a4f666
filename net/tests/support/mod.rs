//! A tiny in-test server: a std listener on 127.0.0.1:0, one thread per
//! connection, decoding with the crate's codec and answering from a map.
//!
//! It answers the frames that arrived together in reverse order, so clients
//! must match responses by id. Special keys drive failures:
//! - `silent`: never answered (timeouts);
//! - `close-once`: the first request for it closes the connection unanswered;
//! - `close-always`: every request for it closes the connection unanswered;
//! - `fail`: answered with `StorageError` "disk on fire".
//!
//! HELLO must come first and name cluster `test`; credentials `bad` are
//! refused. Dropping the server stops every thread (bounded by the 50 ms
//! poll interval) and leaves nothing behind.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meridian_net::{
    Decoder, Encoder, ErrorCode, Frame, Limits, Request, Response, Version, VersionedValue,
};

pub const CLUSTER: &str = "test";
const POLL: Duration = Duration::from_millis(50);

#[derive(Default)]
struct State {
    store: Mutex<HashMap<Bytes, VersionedValue>>,
    hlc: AtomicU64,
    closed_once: AtomicBool,
    connections: AtomicUsize,
    stop: AtomicBool,
}

pub struct FakeServer {
    pub address: String,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeServer {
    pub fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let acceptor = std::thread::spawn(move || accept_loop(listener, accept_state));
        FakeServer {
            address,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Connections accepted so far (HELLO or not).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so it sees the stop flag.
        let _ = std::net::TcpStream::connect(&self.address);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut workers = Vec::new();
    while !state.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                if state.stop.load(Ordering::SeqCst) {
                    break;
                }
                state.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&state);
                workers.push(std::thread::spawn(move || {
                    let _ = serve(stream, &state);
                }));
            }
            Err(_) => continue,
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
}

enum Outcome {
    Answer(Response),
    Silent,
    Close,
}

fn serve(mut stream: TcpStream, state: &State) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    let limits = Limits::default();
    let mut decoder = Decoder::new(limits);
    let encoder = Encoder::new(limits);
    let mut input = BytesMut::new();
    let mut greeted = false;
    let mut chunk = vec![0u8; 64 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        let read = match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => read,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) => return Err(error),
        };
        input.extend_from_slice(&chunk[..read]);
        let mut frames: Vec<Frame> = Vec::new();
        let mut fatal = None;
        loop {
            match decoder.decode(&mut input) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(error) => {
                    fatal = Some((0, Response::from_decode_error(&error)));
                    break;
                }
            }
        }
        let mut output = BytesMut::new();
        let mut close = false;
        // Answer what arrived together in reverse order.
        for frame in frames.iter().rev() {
            let outcome = match frame.request(&limits) {
                Err(error) => {
                    fatal = Some((frame.request_id, Response::from_decode_error(&error)));
                    continue;
                }
                Ok(Request::Hello(hello)) => {
                    let (outcome, ok) = answer_hello(&hello);
                    greeted = ok;
                    close |= !ok;
                    outcome
                }
                Ok(_) if !greeted => {
                    close = true;
                    Outcome::Answer(error(ErrorCode::NotHelloFirst, "send HELLO first"))
                }
                Ok(request) => answer(request, state),
            };
            match outcome {
                Outcome::Answer(response) => {
                    encoder
                        .encode(frame.request_id, &response, &mut output)
                        .expect("encode");
                }
                Outcome::Silent => {}
                Outcome::Close => return Ok(()),
            }
        }
        if let Some((request_id, response)) = fatal {
            encoder
                .encode(request_id, &response, &mut output)
                .expect("encode");
            close = true;
        }
        stream.write_all(&output)?;
        if close {
            return Ok(());
        }
    }
    Ok(())
}

fn error(code: ErrorCode, message: &str) -> Response {
    Response::Error {
        code,
        message: message.to_owned(),
    }
}

fn answer_hello(hello: &meridian_net::Hello) -> (Outcome, bool) {
    if hello.cluster != CLUSTER {
        let message = format!("cluster is {CLUSTER:?}, not {:?}", hello.cluster);
        return (
            Outcome::Answer(error(ErrorCode::ClusterMismatch, &message)),
            false,
        );
    }
    if hello.credentials.as_deref() == Some(b"bad".as_slice()) {
        return (
            Outcome::Answer(error(ErrorCode::AuthFailed, "bad credentials")),
            false,
        );
    }
    let response = Response::HelloOk {
        protocol_version: meridian_net::PROTOCOL_VERSION,
        node_id: 42,
        cluster: CLUSTER.to_owned(),
        datacenter: hello.datacenter.clone(),
    };
    (Outcome::Answer(response), true)
}

fn special(key: &[u8], state: &State) -> Option<Outcome> {
    match key {
        b"silent" => Some(Outcome::Silent),
        b"close-always" => Some(Outcome::Close),
        b"close-once" if !state.closed_once.swap(true, Ordering::SeqCst) => Some(Outcome::Close),
        b"fail" => Some(Outcome::Answer(error(
            ErrorCode::StorageError,
            "disk on fire",
        ))),
        _ => None,
    }
}

fn next_version(state: &State) -> Version {
    Version {
        hlc: state.hlc.fetch_add(1, Ordering::SeqCst) + 1,
        origin: 7,
    }
}

fn answer(request: Request, state: &State) -> Outcome {
    if let Request::Get { key, .. } | Request::Delete { key, .. } | Request::Put { key, .. } =
        &request
    {
        if let Some(outcome) = special(key, state) {
            return outcome;
        }
    }
    let mut store = state.store.lock().expect("store lock");
    let response = match request {
        Request::Get { key, .. } => match store.get(&key) {
            Some(entry) => Response::Value(entry.clone()),
            None => Response::NotFound,
        },
        Request::Put { key, value, .. } => {
            let version = next_version(state);
            store.insert(key, VersionedValue { version, value });
            Response::Written { version }
        }
        Request::Delete { key, .. } => {
            store.remove(&key);
            Response::Written {
                version: next_version(state),
            }
        }
        Request::MultiGet { keys } => Response::Values {
            entries: keys.iter().map(|key| store.get(key).cloned()).collect(),
        },
        Request::MultiPut { entries, .. } => {
            let mut versions = Vec::new();
            for (key, value) in entries {
                let version = next_version(state);
                store.insert(key, VersionedValue { version, value });
                versions.push(version);
            }
            Response::WrittenMany { versions }
        }
        Request::Ping => Response::Pong,
        Request::BuildInfo => Response::Info {
            json: r#"{"info":"build"}"#.to_owned(),
        },
        Request::ClusterInfo => Response::Info {
            json: r#"{"info":"cluster"}"#.to_owned(),
        },
        Request::NodeHealth => Response::Info {
            json: r#"{"info":"health"}"#.to_owned(),
        },
        Request::Stats => Response::Info {
            json: r#"{"info":"stats"}"#.to_owned(),
        },
        other => error(ErrorCode::UnknownOpcode, &format!("not served: {other:?}")),
    };
    Outcome::Answer(response)
}
