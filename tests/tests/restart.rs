//! Goal: data written before a clean stop is there after a restart.
//!
//! Method: a server with two shards takes puts, batch puts, overwrites and
//! deletes; SIGTERM must make it exit 0; a new process on the same data
//! directory must answer every key with its last value and every deleted
//! key with nothing. Twice, so the second run's recovery starts from a
//! directory that a recovered process wrote to.

use meridian_net::client::blocking::Client;
use meridian_tests::{ServerConfig, ServerProcess};

const KEYS: usize = 300;

fn key(index: usize) -> String {
    format!("restart-key-{index}")
}

/// The expected value of key `index` after `generation` rounds of writes;
/// `None` when the round deleted it.
fn expected(index: usize, generation: usize) -> Option<String> {
    if index % 10 == generation {
        return None;
    }
    Some(format!("value-{index}-generation-{generation}"))
}

fn write_generation(client: &mut Client, generation: usize) {
    // Half the keys one by one, half in batches, then delete a tenth.
    for index in 0..KEYS / 2 {
        let value = format!("value-{index}-generation-{generation}");
        client
            .put(key(index).as_bytes(), value.as_bytes())
            .expect("put");
    }
    let batch: Vec<(String, String)> = (KEYS / 2..KEYS)
        .map(|index| (key(index), format!("value-{index}-generation-{generation}")))
        .collect();
    for chunk in batch.chunks(50) {
        client.mput(chunk).expect("mput");
    }
    for index in (0..KEYS).filter(|index| index % 10 == generation) {
        client.delete(key(index).as_bytes()).expect("delete");
    }
}

fn check_generation(client: &mut Client, generation: usize) {
    let keys: Vec<String> = (0..KEYS).map(key).collect();
    let found = client.mget(&keys).expect("mget");
    for (index, entry) in found.iter().enumerate() {
        let value = entry
            .as_ref()
            .map(|entry| String::from_utf8_lossy(&entry.value).into_owned());
        assert_eq!(value, expected(index, generation), "{}", key(index));
    }
}

#[test]
fn restart_after_sigterm_keeps_the_data() {
    let mut server = ServerProcess::start(ServerConfig::default().shards(2));
    for generation in 1..=2 {
        let mut client = server.client();
        write_generation(&mut client, generation);
        check_generation(&mut client, generation);
        drop(client);
        server.restart(); // SIGTERM, asserts exit 0, starts again
        let mut client = server.client();
        check_generation(&mut client, generation);
        let stats: serde_json::Value =
            serde_json::from_str(&client.stats().expect("stats")).expect("JSON");
        assert_eq!(stats["shards"].as_array().expect("shards").len(), 2);
    }
    server.stop();
}
