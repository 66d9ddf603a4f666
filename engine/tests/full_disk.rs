//! Goal: a store on a full disk refuses writes with the disk's own error and
//! takes them again once there is room, without a reopen, losing nothing it
//! acknowledged.
//!
//! Method: the store lives on a 512 KiB tmpfs mounted for the test (root
//! only, as CI runs). 8 KiB values fill it until a write is refused. The
//! tmpfs then grows by two segments and a filler file takes all the space
//! left but one page, so a rollover can create
//! the next segment (its header fits) but not give it room for the record:
//! the case that once left the new segment's file behind, after which every
//! write failed with "File exists" even with room again. Each of the next
//! writes must say "No space left on device"; once the filler is removed the
//! next write must succeed, and every acknowledged value must read back,
//! before and after a reopen.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use meridian_engine::{Options, Store, Version};

const DISK_BYTES: u64 = 512 << 10;
const PAGE: u64 = 4096;
const VALUE_BYTES: usize = 8 << 10;
const WRITES_MAX: u64 = 1_000;

/// A tmpfs mounted for the test; unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, bytes: u64) -> Tmpfs {
        fs::create_dir_all(path).expect("mount point");
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
}

impl Tmpfs {
    fn resize(&self, bytes: u64) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(status.success(), "resizing the tmpfs failed ({status})");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn options() -> Options {
    Options {
        segment_bytes: 64 << 10,
        value_bytes_max: 16 << 10,
        key_bytes_max: 1024,
        ..Options::default()
    }
}

fn key(index: u64) -> Vec<u8> {
    format!("key-{index:05}").into_bytes()
}

fn value(index: u64) -> Vec<u8> {
    let mut value = format!("value-{index}-").into_bytes();
    value.resize(VALUE_BYTES, b'.');
    value
}

fn version(index: u64) -> Version {
    Version::new((1_700_000_000_000 << 16) + index, 1)
}

/// Fills the disk with `path`, then frees its last page: one page is free.
fn leave_one_free_page(path: &Path) -> File {
    let mut filler = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .expect("create the filler");
    let block = vec![7u8; PAGE as usize];
    let mut written = 0u64;
    while filler.write_all(&block).is_ok() {
        written += PAGE;
    }
    assert!(written >= PAGE, "the disk was already full");
    filler
        .set_len(written - PAGE)
        .expect("free the filler's last page");
    filler
}

fn assert_refused_for_space(store: &mut Store, index: u64) {
    let error = store
        .put(&key(index), &value(index), version(index), 0)
        .expect_err("no room for the record");
    let message = error.to_string();
    assert!(
        message.contains("No space left on device"),
        "write {index} was refused for another reason: {message}"
    );
}

#[test]
fn a_full_disk_refuses_writes_and_takes_them_again_once_there_is_room() {
    let root = tempfile::tempdir().expect("tempdir");
    let disk = Tmpfs::mount(&root.path().join("disk"), DISK_BYTES);
    let directory = root.path().join("disk").join("store");
    let mut store = Store::open(&directory, options()).expect("open");

    let mut acknowledged = Vec::new();
    let mut index = 0;
    while store
        .put(&key(index), &value(index), version(index), 0)
        .is_ok()
    {
        acknowledged.push(index);
        index += 1;
        assert!(
            index < WRITES_MAX,
            "{WRITES_MAX} writes never filled the disk"
        );
    }
    assert!(
        !acknowledged.is_empty(),
        "the disk was full before any write"
    );

    // Some room again (the refusal may have left none), all of it but one
    // page then taken by the filler.
    disk.resize(DISK_BYTES + 2 * options().segment_bytes as u64);
    let filler_path = root.path().join("disk").join("filler");
    let filler = leave_one_free_page(&filler_path);
    for attempt in 0..3 {
        assert_refused_for_space(&mut store, index + attempt);
    }

    drop(filler);
    fs::remove_file(&filler_path).expect("remove the filler");
    for _ in 0..4 {
        index += 1;
        store
            .put(&key(index), &value(index), version(index), 0)
            .unwrap_or_else(|error| panic!("write {index} once there is room: {error}"));
        acknowledged.push(index);
    }

    for pass in ["before the reopen", "after the reopen"] {
        for &index in &acknowledged {
            let found = store
                .get(&key(index))
                .unwrap_or_else(|error| panic!("{pass}: get {index}: {error}"))
                .unwrap_or_else(|| panic!("{pass}: acknowledged write {index} is missing"));
            assert_eq!(found.value, value(index), "{pass}: write {index}");
        }
        drop(store);
        store = Store::open(&directory, options()).expect("reopen");
    }
}
