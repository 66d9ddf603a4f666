//! Meridian's wire protocol and client library.
//!
//! - [`format`]: the frame header, body layouts and [`Limits`], in one place.
//! - [`message`]: typed [`Request`]s and [`Response`]s and their [`Opcode`]s.
//! - [`codec`]: the sans-IO [`Decoder`] and [`Encoder`].
//! - [`client`]: a runtime-free core, a blocking client, and (feature
//!   `tokio`) an async client.
//!
//! This crate must stay independent of the server: it knows nothing of
//! `engine`, `ring` or `node`, and it never depends on glommio, so that
//! applications on tokio or plain threads can use the client. The server in
//! `node` drives the same codec from its own executors.
//!
//! How a server drives the codec (the client does the mirror image):
//!
//! ```
//! use bytes::BytesMut;
//! use meridian_net::{Decoder, Encoder, Request, Response};
//!
//! let (mut decoder, encoder) = (Decoder::default(), Encoder::default());
//! let mut input = BytesMut::new(); // bytes read from the socket are appended here
//! encoder.encode(7, &Request::Ping, &mut input).expect("fits the limits");
//! let mut output = BytesMut::new(); // bytes to write back
//! while let Some(frame) = decoder.decode(&mut input).expect("a bad header: answer ERROR, close") {
//!     let response = match frame.request(decoder.limits()) {
//!         Ok(Request::Ping) => Response::Pong,
//!         Ok(other) => Response::Error {
//!             code: meridian_net::ErrorCode::UnknownOpcode,
//!             message: format!("{} is not served here", other.opcode()),
//!         },
//!         // A bad body: answer with the error's code and message, then close.
//!         Err(error) => Response::from_decode_error(&error),
//!     };
//!     encoder.encode(frame.request_id, &response, &mut output).expect("fits");
//! }
//! assert_eq!(output.len(), meridian_net::HEADER_LEN);
//! ```
//!
//! Invariants kept by the whole crate:
//! - Decoding never panics on any input and checks every length against a
//!   limit before it allocates or slices.
//! - No `unsafe`.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod body;
pub mod client;
pub mod codec;
pub mod error;
pub mod format;
pub mod message;
pub mod peer;
mod reader;
pub mod xdc;

pub use codec::{check_header, Decoder, Encode, Encoder, Frame};
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use format::{Limits, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
pub use message::{Hello, Opcode, OpcodeKind, Request, Response, Role, Version, VersionedValue};
