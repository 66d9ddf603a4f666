//! Goal: a record is never shipped back to the datacenter that stamped it;
//! a record from a third datacenter crosses a link only when it cascades.
//!
//! Method: a real store holding writes stamped by the local, the remote and
//! a third datacenter; a shipper per cascade setting pumps the whole log;
//! the batches are decoded and their origins inspected.

use meridian_engine::{Options, Store, Version};
use meridian_xdc::format::decode_batch;
use meridian_xdc::{datacenter_of, BatchLimits, LinkConfig, Shipper, ShipperConfig};

const LOCAL: u8 = 1;
const REMOTE: u8 = 2;
const THIRD: u8 = 3;

fn origin(datacenter: u8) -> u32 {
    (datacenter as u32) << 24 | 0x0203
}

fn shipped_datacenters(cascade: bool) -> Vec<u8> {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(directory.path(), Options::default()).expect("open");
    let mut hlc = 1u64 << 32;
    for (index, datacenter) in [LOCAL, REMOTE, THIRD, REMOTE, LOCAL, THIRD]
        .iter()
        .enumerate()
    {
        hlc += 1 << 16;
        let key = format!("key-{index}");
        store
            .put(
                key.as_bytes(),
                b"value",
                Version::new(hlc, origin(*datacenter)),
                0,
            )
            .expect("put");
    }
    let link = LinkConfig {
        link_id: 1,
        local_datacenter: LOCAL,
        remote_datacenter: REMOTE,
        cascade,
    };
    let mut shipper = Shipper::new(link, ShipperConfig::default(), store.log_start(), 1);
    let mut shipped = Vec::new();
    // The first pump reads the log and starts the delay; `poll` names the
    // time the batch is due; the window holds 8 batches.
    assert!(shipper.pump(&store, 0).expect("pump").is_none());
    let due_ms = shipper.poll(0).expect("a batch is being built");
    assert_eq!(due_ms, ShipperConfig::default().batcher.batch_delay_ms);
    while let Some(batch) = shipper.pump(&store, due_ms).expect("pump") {
        let decoded = decode_batch(&batch.body, &BatchLimits::default()).expect("decode");
        shipped.extend(
            decoded
                .records
                .iter()
                .map(|r| datacenter_of(r.version.origin)),
        );
    }
    assert_eq!(shipper.read_position(), store.written_position());
    shipped
}

#[test]
fn remote_records_never_go_back() {
    assert_eq!(shipped_datacenters(false), vec![LOCAL, LOCAL]);
}

#[test]
fn third_datacenter_records_cascade_when_the_link_says_so() {
    assert_eq!(shipped_datacenters(true), vec![LOCAL, THIRD, LOCAL, THIRD]);
}

#[test]
fn only_foreign_records_acknowledge_without_sending() {
    let directory = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(directory.path(), Options::default()).expect("open");
    store
        .put(b"key", b"value", Version::new(1 << 32, origin(REMOTE)), 0)
        .expect("put");
    let link = LinkConfig {
        link_id: 1,
        local_datacenter: LOCAL,
        remote_datacenter: REMOTE,
        cascade: true,
    };
    let mut shipper = Shipper::new(link, ShipperConfig::default(), store.log_start(), 1);
    assert!(shipper.pump(&store, 0).expect("pump").is_none());
    assert_eq!(shipper.acknowledged(), store.written_position());
}
