//! Goal: a journal damaged where no crash can have torn it stops the server
//! at start-up with a message naming the file and offset, and changes
//! nothing on disk; once the operator removed what follows the damage, the
//! server starts, cuts the damaged batch as a torn one and serves every
//! acknowledged write.
//!
//! Method: a server under `durability = "sync"` takes 200 writes and is
//! SIGKILLed, leaving its journal (a SIGKILL keeps the page cache, so the
//! vnode logs hold the writes too). A byte of the journal's first entry is
//! flipped and a newer journal file with one valid entry is forged with the
//! engine's journal writer: the damaged file is then not the newest a batch
//! reached, so the damage cannot be a torn batch. The server must refuse to
//! start, naming the file; the journal files must be left as they were.
//! Then the forged file goes and the server must start and read back all 200.

use std::process::Command;

use meridian_engine::format::{RecordFields, RecordKind, Version};
use meridian_engine::journal::{journal_files, JournalWriter, PreparedFile};
use meridian_tests::{
    meridian_binary, run_with_deadline, ServerConfig, ServerProcess, COMMAND_DEADLINE,
};

const WRITES: usize = 200;

#[test]
fn damage_before_the_newest_batch_refuses_start_naming_the_file() {
    let config = ServerConfig::default().durability("sync");
    let mut server = ServerProcess::start(config.clone());
    let mut client = server.client();
    for index in 0..WRITES {
        client
            .put(
                format!("key-{index}").as_bytes(),
                format!("value-{index}").as_bytes(),
            )
            .expect("acknowledged put");
    }
    drop(client);
    server.kill();

    let journal = server.data_dir().join("journal").join("shard-000");
    let files = journal_files(&journal).expect("list the journal");
    let (damaged_sequence, damaged) = files
        .iter()
        .find(|(_, path)| {
            let bytes = std::fs::read(path).expect("read a journal file");
            bytes[32..44].iter().any(|&byte| byte != 0)
        })
        .cloned()
        .expect("a journal file with entries after a SIGKILL");
    let mut bytes = std::fs::read(&damaged).expect("read the journal file");
    // Inside the first entry's record (header 32 bytes, entry header 12,
    // partition 4, then the record).
    bytes[32 + 12 + 4 + 40] ^= 0x40;
    std::fs::write(&damaged, &bytes).expect("damage the journal file");
    let newest = files
        .last()
        .map_or(damaged_sequence, |(sequence, _)| *sequence)
        + 1;
    let forged = PreparedFile::create(&journal, newest, 1 << 20).expect("forge a newer file");
    let mut writer = JournalWriter::new(&journal, forged, 1 << 20);
    writer.append(
        0,
        &RecordFields {
            kind: RecordKind::Put,
            key: b"forged",
            value: b"after the damage",
            version: Version::new(1 << 20, 1),
            expires_at: 0,
        },
    );
    writer
        .take_batch()
        .expect("a batch")
        .write()
        .expect("write it");
    let before = journal_files(&journal).expect("list the journal");

    let root = tempfile::tempdir().expect("a temporary directory");
    let config_path = root.path().join("meridian.toml");
    std::fs::write(&config_path, config.to_toml()).expect("write the config");
    let mut command = Command::new(meridian_binary());
    command
        .arg("server")
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", ""])
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("--config")
        .arg(&config_path);
    let output = run_with_deadline(command, COMMAND_DEADLINE);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started on a damaged journal: {stderr}"
    );
    let name = damaged
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .to_string();
    assert!(
        stderr.contains(&name) && stderr.contains("corrupt"),
        "the refusal does not name {name} as corrupt: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "it listened"
    );
    assert_eq!(
        journal_files(&journal).expect("list the journal"),
        before,
        "a refused start changed the journal"
    );

    std::fs::remove_file(&before.last().expect("the forged file").1)
        .expect("remove the forged file");
    server.restart();
    let mut client = server.client();
    for index in 0..WRITES {
        let value = client
            .get(format!("key-{index}").as_bytes())
            .expect("get")
            .unwrap_or_else(|| panic!("key-{index} lost"));
        assert_eq!(&value.value[..], format!("value-{index}").as_bytes());
    }
    assert!(
        client.get(b"forged").expect("get").is_none(),
        "the forged entry was replayed"
    );
    assert!(
        server.log().contains("torn batch cut"),
        "the damaged batch was not reported as cut"
    );
    server.stop();
}
