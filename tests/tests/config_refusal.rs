//! Goal: a configuration the server cannot run with stops it at start-up
//! with a non-zero exit and a message naming the field.
//!
//! Method: for each bad file (unknown field or section, value out of range,
//! wrong type, unparsable text), run `meridian server --config FILE` to
//! completion under a deadline and check the exit status, stderr, that it
//! never printed its listening line and that it created no data directory.

use std::process::Command;

use meridian_tests::{meridian_binary, run_with_deadline, COMMAND_DEADLINE};

/// (file text, text the error must contain)
const CASES: &[(&str, &str)] = &[
    ("[storage]\nparttions = 8\n", "parttions"),
    ("[nodes]\nlisten = \"127.0.0.1:0\"\n", "nodes"),
    ("[storage]\npartitions = 100\n", "storage.partitions"),
    ("[storage]\ndurability = \"always\"\n", "durability"),
    ("[storage]\nsegment_bytes = 1024\n", "storage.segment_bytes"),
    (
        "[storage]\ncompaction_dead_fraction = 0.0\n",
        "storage.compaction_dead_fraction",
    ),
    (
        "[node]\nmetrics_listen = \"nowhere\"\n",
        "node.metrics_listen",
    ),
    ("[node]\ncluster = \"\"\n", "node.cluster"),
    (
        "[limits]\nvalue_bytes_max = 33554432\n",
        "limits.value_bytes_max",
    ),
    ("[limits]\nkey_bytes_max = \"big\"\n", "key_bytes_max"),
    (
        "[limits]\nframe_bytes_max = 1000\n",
        "limits.frame_bytes_max",
    ),
    ("[runtime]\nshards = -1\n", "shards"),
    ("[storage\npartitions = 8\n", "meridian.toml"),
    ("[node]\nrack = \"rack one\"\n", "node.rack"),
    (
        "[cluster]\nmembers = [\"1@127.0.0.1:7411/\", \"2@127.0.0.1:7421\"]\n",
        "cluster.members",
    ),
    (
        "[node]\nrack = \"a\"\n[cluster]\nmembers = [\"1@127.0.0.1:7411/b\", \"2@127.0.0.1:7421/a\"]\n",
        "cluster.members",
    ),
];

#[test]
fn bad_configuration_is_refused_naming_the_field() {
    let root = tempfile::tempdir().expect("a temporary directory");
    let config = root.path().join("meridian.toml");
    let data_dir = root.path().join("data");
    for (text, names) in CASES {
        std::fs::write(&config, text).expect("write the config");
        let mut command = Command::new(meridian_binary());
        command
            .arg("server")
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", ""])
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--config")
            .arg(&config);
        let output = run_with_deadline(command, COMMAND_DEADLINE);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(!output.status.success(), "{text:?} was accepted: {stdout}");
        assert!(
            stderr.contains(names),
            "{text:?}: {stderr:?} does not name {names:?}"
        );
        assert!(!stdout.contains("listening"), "{text:?}: {stdout}");
        assert!(
            !data_dir.exists(),
            "{text:?}: the data directory was created"
        );
    }

    let missing = root.path().join("absent.toml");
    let mut command = Command::new(meridian_binary());
    command.arg("server").arg("--config").arg(&missing);
    let output = run_with_deadline(command, COMMAND_DEADLINE);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("absent.toml"));
}
