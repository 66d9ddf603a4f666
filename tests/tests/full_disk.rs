//! Goal: a full disk loses nothing that was acknowledged, and every write it
//! refuses gets an error naming the full disk; the server keeps serving
//! reads, and once there is room again (after a restart) it takes writes.
//!
//! Method: the data directory is a 16 MiB tmpfs mounted for the test (the
//! test needs root, as CI has, to mount it). A client writes 4 KiB values
//! under `sync` until the disk is full and then some more. Each write is
//! either acknowledged (and must then read back, at once and after the
//! restart) or refused with a StorageError whose message says the device
//! has no space left, coming from a vnode that cannot allocate its next
//! segment or from the journal that cannot take a batch (after which the
//! shard refuses writes until restarted). The server must stay up through
//! it all, answer reads of every acknowledged write, and stop cleanly. Then the tmpfs
//! grows to 64 MiB, the server restarts, every acknowledged write reads
//! back with its value, and new writes are acknowledged.

use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_net::client::blocking::Client;
use meridian_net::client::ClientError;
use meridian_net::ErrorCode;
use meridian_tests::{ServerConfig, ServerProcess};

const DISK_BYTES: u64 = 16 << 20;
const GROWN_DISK_BYTES: u64 = 64 << 20;
const VALUE_BYTES: usize = 4096;
/// Enough 4 KiB writes to fill the disk several times over.
const WRITES_MAX: usize = 8_000;
/// Writes tried after the first refusal: all must be answered.
const WRITES_AFTER_FULL: usize = 200;

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Tmpfs {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(path)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {bytes}-byte tmpfs on {} failed ({status}): this test needs root",
            path.display()
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    fn grow(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "growing the tmpfs failed ({status})");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn value_of(index: usize) -> Vec<u8> {
    let mut value = format!("value-{index}-").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

fn key_of(index: usize) -> Vec<u8> {
    format!("full-disk-{index:05}").into_bytes()
}

fn assert_reads_back(client: &mut Client, acknowledged: &[usize], when: &str) {
    for &index in acknowledged {
        let found = client
            .get(&key_of(index))
            .unwrap_or_else(|error| panic!("{when}: get of write {index}: {error}"))
            .unwrap_or_else(|| panic!("{when}: acknowledged write {index} is missing"));
        assert_eq!(
            found.value,
            value_of(index),
            "{when}: write {index} reads back another value"
        );
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_loses_nothing_acknowledged() {
    let mut disk = None;
    let config = ServerConfig::default()
        .durability("sync")
        .set("storage", "segment_bytes", "1048576")
        .set("storage", "journal_file_bytes", "1048576")
        .set("limits", "value_bytes_max", "65536")
        .set("limits", "frame_bytes_max", "262144");
    let mut server = ServerProcess::start_prepared(config, |data_dir| {
        disk = Some(Tmpfs::mount(data_dir, DISK_BYTES));
    });
    let disk = disk.expect("mounted");
    let mut client = server.client();

    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    for index in 0..WRITES_MAX {
        match client.put(&key_of(index), &value_of(index)) {
            Ok(_) => acknowledged.push(index),
            Err(ClientError::Server { code, message }) => refusals.push((index, code, message)),
            Err(other) => {
                panic!("write {index}: {other} (the server must answer, not drop the connection)")
            }
        }
        if refusals.len() >= WRITES_AFTER_FULL {
            break;
        }
    }
    eprintln!(
        "{} writes acknowledged, {} refused; first refusal: {:?}",
        acknowledged.len(),
        refusals.len(),
        refusals.first()
    );
    assert!(
        !refusals.is_empty(),
        "{WRITES_MAX} writes of {VALUE_BYTES} bytes never filled a {DISK_BYTES}-byte disk"
    );
    assert!(
        !acknowledged.is_empty(),
        "the disk was full before any write"
    );
    for (index, code, message) in &refusals {
        assert_eq!(*code, ErrorCode::StorageError, "write {index}: {message}");
        assert!(
            message.contains("No space left on device"),
            "write {index}: the refusal does not say the disk is full: {message:?}"
        );
    }
    // A full disk meets a write in two places: a vnode's next segment cannot
    // be allocated (that vnode refuses), or the journal cannot take a batch
    // (the shard refuses every write until restarted). Which comes first
    // depends on how the space ran out; each refusal must name one.
    for (index, _, message) in &refusals {
        assert!(
            message.contains("segment") || message.contains("journal"),
            "write {index}: the refusal names neither a segment nor the journal: {message:?}"
        );
    }

    // Still serving: every acknowledged write reads back.
    client.ping().expect("ping while the disk is full");
    assert_reads_back(&mut client, &acknowledged, "while the disk is full");

    server.stop();
    disk.grow(GROWN_DISK_BYTES);
    server.restart();
    let mut client = server.client();
    assert_reads_back(&mut client, &acknowledged, "after the restart");
    for index in WRITES_MAX..WRITES_MAX + 50 {
        client
            .put(&key_of(index), &value_of(index))
            .unwrap_or_else(|error| panic!("write {index} once there is room: {error}"));
    }
    server.stop();
}
