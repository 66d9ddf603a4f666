//! Cross-datacenter replication (XDC): the runtime-free core.
//!
//! This crate holds the formats and the state machines of XDC; it opens no
//! socket, starts no thread and reads no clock. The server drives it: it
//! tails a vnode's log through a [`Shipper`] (which batches with a
//! [`Batcher`] and encodes BATCH bodies, [`format`]), sends the bodies over
//! its link, feeds each body to the remote [`Receiver`] (which applies the
//! records through the caller's [`Apply`] and answers with an ACK body), and
//! hands the ACKs back to the shipper, which moves its acknowledged
//! position; only then is the position persisted ([`CursorFile`] for one
//! vnode; the server keeps every vnode of a link in one file instead, so a
//! save costs one fsync whatever the ring size).
//!
//! A server whose logs live on other cores drives the shipper in steps
//! ([`Shipper::read_request`], [`Shipper::feed`], [`Shipper::take_due`])
//! and the receiver in two ([`Receiver::open`], apply asynchronously,
//! [`Receiver::close`]). Link negotiation (introductions and HMAC proofs of
//! the secret) is [`handshake`]; fullsync's bodies and bucket comparison
//! are [`fullsync`].
//!
//! Invariants the crate keeps, end to end:
//! - a record is never shipped back to the datacenter that stamped it, and
//!   records of third datacenters cross a link only when it cascades;
//! - the persisted position is always one the remote side acknowledged: a
//!   crash or a broken link replays, never skips;
//! - replay is harmless: applying is last-writer-wins on `(hlc, origin)`;
//! - decoders check every length against a limit before allocating and
//!   never panic on any input.
#![deny(unsafe_code)]

pub mod batcher;
pub mod cursor_file;
mod error;
pub mod format;
pub mod fullsync;
pub mod handshake;
pub mod receiver;
pub mod shipper;

pub use batcher::{datacenter_of, Batcher, BatcherConfig, Due, LinkConfig, Offered};
pub use cursor_file::{CursorFile, CursorState};
pub use error::{Error, Result};
pub use format::{Ack, Batch, BatchLimits, Compression, XdcRecord};
pub use handshake::{Introduction, Side};
pub use receiver::{
    Apply, ClockSkew, Opened, OpenedBatch, ReceiveError, Received, Receiver, ReceiverConfig,
    ReceiverStats,
};
pub use shipper::{
    AckOutcome, Closed, Lag, LogSource, OutgoingBatch, ReadRequest, Shipper, ShipperConfig,
    ShipperStats,
};
