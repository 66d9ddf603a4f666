//! Fullsync: datacenters compared bucket by bucket, only what differs
//! shipped (or fetched, with `--both`).

use std::time::{Duration, Instant};

use meridian_tests::xdc::{
    connect, digests, secret_of, start_datacenter, status, wait_for_equal_digests,
};
use meridian_tests::{wait_until, ServerProcess};

const CONVERGE: Duration = Duration::from_secs(90);

fn fill(server: &ServerProcess, prefix: &str, count: usize) {
    let mut client = server.client();
    let keys: Vec<String> = (0..count)
        .map(|index| format!("{prefix}-{index:07}"))
        .collect();
    for chunk in keys.chunks(500) {
        let entries: Vec<(&str, &[u8])> = chunk
            .iter()
            .map(|key| (key.as_str(), key.as_bytes()))
            .collect();
        client.mput(&entries).expect("mput");
    }
}

fn fullsync(server: &ServerProcess, link: &str, both: bool) -> serde_json::Value {
    let mut args = vec!["xdc", "fullsync", link];
    if both {
        args.push("--both");
    }
    let output = server.cli(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        wait_until(Instant::now() + CONVERGE, || status(server)["links"][0]
            ["fullsync"]["running"]
            == false),
        "fullsync did not finish: {}",
        status(server)
    );
    let progress = status(server)["links"][0]["fullsync"].clone();
    assert!(progress["error"].is_null(), "fullsync failed: {progress}");
    progress
}

#[test]
fn a_wiped_datacenter_is_rebuilt_by_fullsync_shipping_only_what_differs() {
    let east = start_datacenter("east", 1);
    let mut west = start_datacenter("west", 2);
    fill(&east, "key", 100_000);
    connect(&east, "west", west.address(), &secret_of("west"), false);
    assert!(
        wait_for_equal_digests(&[&east, &west], Instant::now() + CONVERGE),
        "the link never caught up"
    );
    // Identical datacenters: every bucket compared, nothing shipped.
    let identical = fullsync(&east, "west", false);
    assert_eq!(identical["records_pushed"], 0, "{identical}");
    assert_eq!(identical["buckets_differing"], 0, "{identical}");
    assert_eq!(identical["buckets_compared"], 65536);
    // West loses everything; the link's cursor is past it all, so only a
    // fullsync brings it back.
    west.stop();
    std::fs::remove_dir_all(west.data_dir()).expect("wipe west");
    west.restart();
    assert!(digests(&west).is_some_and(|d| d.is_empty()));
    let rebuilt = fullsync(&east, "west", false);
    assert_eq!(rebuilt["records_pushed"], 100_000, "{rebuilt}");
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
    // 1% differs (written at east while the link is paused): only that
    // crosses.
    assert!(east.cli(&["xdc", "pause", "west"]).status.success());
    assert!(wait_until(Instant::now() + CONVERGE, || status(&east)
        ["links"][0]["state"]
        == "paused"));
    let mut client = east.client();
    for index in (0..100_000).step_by(100) {
        let key = format!("key-{index:07}");
        client.put(key.as_bytes(), b"changed").expect("put at east");
    }
    let repaired = fullsync(&east, "west", false);
    assert_eq!(repaired["records_pushed"], 1_000, "{repaired}");
    let bytes = repaired["bytes_sent"].as_u64().unwrap_or(u64::MAX);
    assert!(bytes < 2_000_000, "{bytes} bytes sent to repair 1,000 keys");
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
    assert!(east.cli(&["xdc", "resume", "west"]).status.success());
}

#[test]
fn fullsync_both_ways_brings_each_side_what_the_other_has_newer() {
    let east = start_datacenter("east", 1);
    let west = start_datacenter("west", 2);
    connect(&east, "west", west.address(), &secret_of("west"), false);
    // Written while the link is paused, then the pause is skipped over by
    // a fullsync instead of the log: west's own keys come to east.
    fill(&west, "west-own", 2_000);
    fill(&east, "east-own", 2_000);
    let progress = fullsync(&east, "west", true);
    assert_eq!(progress["records_pulled"], 2_000, "{progress}");
    assert!(wait_for_equal_digests(
        &[&east, &west],
        Instant::now() + CONVERGE
    ));
}
