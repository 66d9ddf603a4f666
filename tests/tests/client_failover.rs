//! Goal: a client given datacenters in preference order moves to the next
//! when the one it talks to dies, and back once the preferred one answers
//! again; a write cut off by the death is reported, not sent twice.
//!
//! Method: two single-node `meridian` servers on fixed loopback ports, as
//! datacenters `east` (id 1, `durability = "sync"`) and `west` (id 2), with
//! no XDC link between them. A blocking client prefers east and writes
//! there. East is SIGKILLed: the first request (a PUT, on the dead
//! connection) must fail as a lost connection; the next ones must succeed
//! on west, which `current_datacenter()` and west's HELLO_OK both say.
//! East restarts on its port and data directory; within a deadline, pinging
//! with a short failback interval must bring the client back to east, which
//! still holds the write from before the kill.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;
use meridian_net::client::ClientConfig;
use meridian_tests::{free_loopback_port, wait_until, ServerConfig, ServerProcess};

/// How long the client may take to return to east after its restart.
const FAILBACK_DEADLINE: Duration = Duration::from_secs(20);

fn datacenter(name: &str, datacenter_id: u8) -> ServerConfig {
    let address = SocketAddr::from(([127, 0, 0, 1], free_loopback_port()));
    ServerConfig::default()
        .listen(address)
        .durability("sync")
        .set("node", "datacenter", &format!("{name:?}"))
        .set("node", "datacenter_id", &datacenter_id.to_string())
}

fn served_by(client: &Client) -> Option<String> {
    client.server().map(|hello| hello.datacenter.clone())
}

#[test]
fn client_failover_to_the_next_datacenter_and_back() {
    let mut east = ServerProcess::start(datacenter("east", 1));
    let mut west = ServerProcess::start(datacenter("west", 2));
    let config = ClientConfig {
        request_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(1),
        reconnect_attempts_max: 2,
        failback_interval: Duration::from_millis(100),
        ..ClientConfig::with_datacenters([
            ("east", [east.address().to_string()]),
            ("west", [west.address().to_string()]),
        ])
    };
    let mut client = Client::connect(config).expect("connect to east");
    assert_eq!(client.current_datacenter(), "east");
    assert_eq!(served_by(&client).as_deref(), Some("east"));
    client.put(b"written-in-east", b"1").expect("put on east");

    east.kill();
    let error = client
        .put(b"cut-off", b"x")
        .expect_err("the connection to east died");
    assert!(error.is_connection_lost(), "{error}");
    assert_eq!(client.get(b"written-in-east").expect("get on west"), None);
    assert_eq!(client.current_datacenter(), "west");
    assert_eq!(served_by(&client).as_deref(), Some("west"));
    client.put(b"written-in-west", b"2").expect("put on west");
    let entry = client.get(b"written-in-west").expect("get on west");
    assert_eq!(entry.map(|entry| entry.value.to_vec()), Some(b"2".to_vec()));

    east.restart(); // same port (fixed by the config) and data directory
    let back = wait_until(Instant::now() + FAILBACK_DEADLINE, || {
        client.ping().is_ok() && client.current_datacenter() == "east"
    });
    assert!(
        back,
        "still on {} after east restarted",
        client.current_datacenter()
    );
    assert_eq!(served_by(&client).as_deref(), Some("east"));
    let entry = client.get(b"written-in-east").expect("get on east");
    assert_eq!(entry.map(|entry| entry.value.to_vec()), Some(b"1".to_vec()));
    assert_eq!(client.get(b"written-in-west").expect("get on east"), None);

    drop(client);
    east.stop();
    west.stop();
}
