//! End-to-end tests: start real `meridian` processes on ephemeral loopback
//! ports and talk to them through the client library.
//!
//! Skeleton: the scenarios arrive with the server (the "one node" issue).
