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

pub use codec::{check_header, Decoder, Encode, Encoder, Frame};
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use format::{Limits, HEADER_LEN, MAGIC, PROTOCOL_VERSION};
pub use message::{Hello, Opcode, OpcodeKind, Request, Response, Role, Version, VersionedValue};
