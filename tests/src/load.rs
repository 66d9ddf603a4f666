//! A write load whose every acknowledged write is recorded, and the
//! check that those writes read back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;
use meridian_net::client::core::put_request;
use meridian_net::client::ClientConfig;
use meridian_net::Response;

/// Requests each writer keeps in flight.
pub const WINDOW: usize = 8;
/// Keys per MGET when verifying.
const VERIFY_BATCH: usize = 500;

/// What one writer saw: the writes acknowledged, and any error answer
/// (with no fault but the end of the process, there must be none).
#[derive(Debug, Default)]
pub struct WriterReport {
    /// `(key, value)` of every write the server acknowledged.
    pub acknowledged: Vec<(String, Vec<u8>)>,
    /// Answers other than WRITTEN, as text.
    pub error_answers: Vec<String>,
}

/// The value written under `key`: its key, then filler; mostly small,
/// every 64th one 20 KiB so records span pages.
pub fn value_for(key: &str, sequence: usize) -> Vec<u8> {
    let length = if sequence % 64 == 63 {
        20 << 10
    } else {
        16 + sequence % 200
    };
    let mut value = key.as_bytes().to_vec();
    value.extend((0..length).map(|offset| b'a' + ((offset + sequence) % 26) as u8));
    value
}

/// Pipelines PUTs of keys `{prefix}-{n}` (WINDOW in flight) until the
/// connection breaks or `limit` passes; counts acknowledgements in
/// `acknowledged_count` as they arrive.
pub fn write_until_disconnected(
    config: ClientConfig,
    prefix: String,
    acknowledged_count: Arc<AtomicUsize>,
    limit: Duration,
) -> WriterReport {
    let mut report = WriterReport::default();
    let Ok(mut client) = Client::connect(config) else {
        return report;
    };
    let mut pending: HashMap<u32, (String, Vec<u8>)> = HashMap::new();
    let deadline = Instant::now() + limit;
    let mut sequence = 0;
    while Instant::now() < deadline {
        while pending.len() < WINDOW {
            let key = format!("{prefix}-{sequence}");
            let value = value_for(&key, sequence);
            sequence += 1;
            match client.send(&put_request(key.as_bytes(), &value, None)) {
                Ok(id) => pending.insert(id, (key, value)),
                Err(_) => return report,
            };
        }
        let Ok((id, response)) = client.recv_any() else {
            return report;
        };
        let Some(write) = pending.remove(&id) else {
            report
                .error_answers
                .push(format!("answer to unknown request {id}"));
            continue;
        };
        match response {
            Response::Written { .. } => {
                report.acknowledged.push(write);
                acknowledged_count.fetch_add(1, Ordering::SeqCst);
            }
            other => report.error_answers.push(format!("{}: {other:?}", write.0)),
        }
    }
    report
}

/// Asserts every acknowledged write reads back with its value.
pub fn verify_acknowledged(client: &mut Client, acknowledged: &[(String, Vec<u8>)], context: &str) {
    for chunk in acknowledged.chunks(VERIFY_BATCH) {
        let keys: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
        let found = client.mget(&keys).expect("mget of acknowledged keys");
        for ((key, value), entry) in chunk.iter().zip(found) {
            let entry =
                entry.unwrap_or_else(|| panic!("{context}: acknowledged write {key} is missing"));
            assert!(
                entry.value[..] == value[..],
                "{context}: {key} came back with {} bytes, {} written",
                entry.value.len(),
                value.len()
            );
        }
    }
}

/// Pipelines PUTs of keys `{prefix}-{n}` (WINDOW in flight) until `stop` is
/// set or `limit` passes, then waits for the answers still in flight, so
/// the cluster is quiet when it returns. Unlike
/// [`write_until_disconnected`], a broken connection is recorded as an
/// error answer: a writer whose server keeps running must not lose it.
pub fn write_until_stopped(
    config: ClientConfig,
    prefix: String,
    acknowledged_count: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut client = match Client::connect(config) {
        Ok(client) => client,
        Err(error) => {
            report.error_answers.push(format!("connect: {error}"));
            return report;
        }
    };
    let mut pending: HashMap<u32, (String, Vec<u8>)> = HashMap::new();
    let deadline = Instant::now() + limit;
    let mut sequence = 0;
    loop {
        let writing = !stop.load(Ordering::SeqCst) && Instant::now() < deadline;
        if !writing && pending.is_empty() {
            return report;
        }
        while writing && pending.len() < WINDOW {
            let key = format!("{prefix}-{sequence}");
            let value = value_for(&key, sequence);
            sequence += 1;
            match client.send(&put_request(key.as_bytes(), &value, None)) {
                Ok(id) => pending.insert(id, (key, value)),
                Err(error) => {
                    report.error_answers.push(format!("send {key}: {error}"));
                    return report;
                }
            };
        }
        let (id, response) = match client.recv_any() {
            Ok(answer) => answer,
            Err(error) => {
                report.error_answers.push(format!(
                    "connection lost with {} writes in flight: {error}",
                    pending.len()
                ));
                return report;
            }
        };
        let Some(write) = pending.remove(&id) else {
            report
                .error_answers
                .push(format!("answer to unknown request {id}"));
            continue;
        };
        match response {
            Response::Written { .. } => {
                report.acknowledged.push(write);
                acknowledged_count.fetch_add(1, Ordering::SeqCst);
            }
            other => report.error_answers.push(format!("{}: {other:?}", write.0)),
        }
    }
}
