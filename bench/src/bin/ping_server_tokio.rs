//! `ping_server_tokio`: the smallest server that speaks Meridian's codec on
//! tokio's current-thread runtime — HELLO, then PING. It is the yardstick
//! for the transport comparison: the same loader drives it and the real
//! server with `meridian-bench --ping`, so the difference is the runtime
//! and the server's connection loop, not the codec.
//!
//! ```text
//! ping_server_tokio [ADDR]        (default 127.0.0.1:7500)
//! ```
//!
//! Any request other than HELLO (first) and PING gets an ERROR frame and
//! the connection closes, as in the real server.

use std::process::ExitCode;

use bytes::BytesMut;
use meridian_net::{Decoder, Encoder, ErrorCode, Request, Response, PROTOCOL_VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const READ_CHUNK_BYTES: usize = 64 * 1024;

async fn serve(mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let (mut decoder, encoder) = (Decoder::default(), Encoder::default());
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut output = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut greeted = false;
    loop {
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut close = false;
        loop {
            let frame = match decoder.decode(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(refused) => {
                    let response = Response::from_decode_error(&refused);
                    let _ = encoder.encode(0, &response, &mut output);
                    close = true;
                    break;
                }
            };
            let response = match (greeted, frame.request(decoder.limits())) {
                (false, Ok(Request::Hello(hello))) => {
                    greeted = true;
                    Response::HelloOk {
                        protocol_version: PROTOCOL_VERSION,
                        node_id: 0,
                        cluster: hello.cluster,
                        datacenter: "ping".to_owned(),
                    }
                }
                (true, Ok(Request::Ping)) => Response::Pong,
                (_, Err(refused)) => {
                    close = true;
                    Response::from_decode_error(&refused)
                }
                (_, Ok(_)) => {
                    close = true;
                    Response::Error {
                        code: ErrorCode::UnknownOpcode,
                        message: "this server answers HELLO, then PING only".to_owned(),
                    }
                }
            };
            if encoder
                .encode(frame.request_id, &response, &mut output)
                .is_err()
            {
                return;
            }
            if close {
                break;
            }
        }
        if !output.is_empty() {
            if stream.write_all(&output).await.is_err() {
                return;
            }
            output.clear();
        }
        if close {
            return;
        }
    }
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(error) => eprintln!("ping_server_tokio: accept: {error}"),
        }
    }
}

fn main() -> ExitCode {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7500".to_owned());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ping_server_tokio: runtime: {error}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let listener = match TcpListener::bind(&address).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("ping_server_tokio: cannot listen on {address}: {error}");
                return ExitCode::from(1);
            }
        };
        println!("ping_server_tokio listening on {address}");
        accept_loop(listener).await;
        ExitCode::SUCCESS
    })
}
