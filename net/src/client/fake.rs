//! A fake one-node datacenter for the clients' failover unit tests.
//!
//! A std listener on loopback, one thread per connection, answering with
//! the crate's codec: HELLO_OK naming the datacenter, PONG, WRITTEN for
//! writes, NOT_FOUND for reads. It can be stopped (listener and every
//! connection closed, as a killed process would) and started again on the
//! same address, and told to die on the next request it reads (the request
//! reached it, no answer left), which is how a client learns that a write
//! may have been applied.
//!
//! Invariants: `stop` and drop join every thread (each polls its stop flag
//! every `POLL`), so a test leaves no thread or socket behind; the counters
//! count requests read, whatever became of them.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::BytesMut;

use crate::codec::{Decoder, Encoder};
use crate::format::{Limits, PROTOCOL_VERSION};
use crate::message::{Request, Response, Version};
use crate::ErrorCode;

const POLL: Duration = Duration::from_millis(10);

#[derive(Default)]
struct State {
    stop: AtomicBool,
    die_on_request: AtomicBool,
    hellos: AtomicUsize,
    requests: AtomicUsize,
}

pub(crate) struct FakeDatacenter {
    pub(crate) name: String,
    pub(crate) address: String,
    state: Arc<State>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeDatacenter {
    /// Starts on an ephemeral loopback port.
    pub(crate) fn start(name: &str) -> FakeDatacenter {
        FakeDatacenter::start_at(name, "127.0.0.1:0")
    }

    /// Starts on `address` (std sets SO_REUSEADDR, so a stopped fake's
    /// address can be taken again at once).
    pub(crate) fn start_at(name: &str, address: &str) -> FakeDatacenter {
        let listener = TcpListener::bind(address).expect("bind the fake datacenter");
        let address = listener.local_addr().expect("local address").to_string();
        let state = Arc::new(State::default());
        let accept_state = Arc::clone(&state);
        let accept_name = name.to_owned();
        let acceptor =
            std::thread::spawn(move || accept_loop(&listener, &accept_state, &accept_name));
        FakeDatacenter {
            name: name.to_owned(),
            address,
            state,
            acceptor: Some(acceptor),
        }
    }

    /// Closes the listener and every connection; joins every thread.
    pub(crate) fn stop(&mut self) {
        if let Some(acceptor) = self.acceptor.take() {
            self.state.stop.store(true, Ordering::SeqCst);
            // Wake the blocking accept (refused if it has already ended).
            let _ = TcpStream::connect(&self.address);
            acceptor.join().expect("the fake's acceptor");
        }
    }

    /// Starts again on the same address, counters reset.
    pub(crate) fn restart(&mut self) {
        self.stop();
        *self = FakeDatacenter::start_at(&self.name.clone(), &self.address.clone());
    }

    /// The next request read closes its connection unanswered and stops
    /// the fake (new connects are refused).
    pub(crate) fn die_on_next_request(&self) {
        self.state.die_on_request.store(true, Ordering::SeqCst);
    }

    /// HELLOs answered since the start.
    pub(crate) fn hellos(&self) -> usize {
        self.state.hellos.load(Ordering::SeqCst)
    }

    /// Requests other than HELLO read since the start.
    pub(crate) fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDatacenter {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(listener: &TcpListener, state: &Arc<State>, name: &str) {
    let mut workers = Vec::new();
    while let Ok((stream, _)) = listener.accept() {
        if state.stop.load(Ordering::SeqCst) {
            break;
        }
        let state = Arc::clone(state);
        let name = name.to_owned();
        workers.push(std::thread::spawn(move || {
            let _ = serve(stream, &state, &name);
        }));
    }
    for worker in workers {
        let _ = worker.join();
    }
}

fn serve(mut stream: TcpStream, state: &State, name: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    let limits = Limits::default();
    let mut decoder = Decoder::new(limits);
    let encoder = Encoder::new(limits);
    let mut input = BytesMut::new();
    let mut chunk = vec![0u8; 64 * 1024];
    while !state.stop.load(Ordering::SeqCst) {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(read) => input.extend_from_slice(&chunk[..read]),
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(error) => return Err(error),
        }
        let mut output = BytesMut::new();
        while let Some(frame) = decoder.decode(&mut input).expect("a frame from the client") {
            let request = frame.request(&limits).expect("a request from the client");
            if !matches!(request, Request::Hello(_)) {
                state.requests.fetch_add(1, Ordering::SeqCst);
                if state.die_on_request.load(Ordering::SeqCst) {
                    state.stop.store(true, Ordering::SeqCst);
                    // Wake the acceptor so it closes the listener.
                    let _ = TcpStream::connect(stream.local_addr()?);
                    return Ok(());
                }
            }
            let response = answer(request, state, name);
            encoder
                .encode(frame.request_id, &response, &mut output)
                .expect("encode a response");
        }
        stream.write_all(&output)?;
    }
    Ok(())
}

fn answer(request: Request, state: &State, name: &str) -> Response {
    let version = Version { hlc: 1, origin: 1 };
    match request {
        Request::Hello(_) => {
            state.hellos.fetch_add(1, Ordering::SeqCst);
            Response::HelloOk {
                protocol_version: PROTOCOL_VERSION,
                node_id: 1,
                cluster: "meridian".to_owned(),
                datacenter: name.to_owned(),
            }
        }
        Request::Ping => Response::Pong,
        Request::Get { .. } => Response::NotFound,
        Request::Put { .. } | Request::Delete { .. } => Response::Written { version },
        other => Response::Error {
            code: ErrorCode::UnknownOpcode,
            message: format!("the fake does not serve {other:?}"),
        },
    }
}
