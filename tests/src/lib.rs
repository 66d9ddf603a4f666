//! Support for the end-to-end tests: real `meridian` processes on ephemeral
//! loopback ports, stopped by their handles.
//!
//! - [`ServerProcess`] starts `meridian server` with a TOML file built by
//!   [`ServerConfig`], a fresh temporary data directory and `--listen
//!   127.0.0.1:0`, and waits (with a deadline) for the one line `meridian
//!   listening on ADDR` on its stdout. `stop` sends SIGTERM and asserts exit
//!   status 0, `kill` sends SIGKILL, `restart` starts it again on the same
//!   data directory. Dropping the handle kills the process and removes the
//!   directory, so a failing test leaves nothing behind.
//! - [`cluster::TestCluster`] starts several such servers as the members of
//!   one ring, on loopback ports chosen before the first one starts.
//! - [`wait_until`] polls a condition until a deadline: tests wait on
//!   conditions, never on fixed sleeps.
//! - [`raw`] speaks bytes to a server over a plain `TcpStream`, to craft
//!   frames the client library would refuse to send.
//!
//! How the binary is found (the one robust choice we could make): Cargo
//! gives `CARGO_BIN_EXE_meridian` only to tests of the package that owns the
//! binary, and depending on `meridian-node` builds its library only. So the
//! first server start in a test process runs `cargo build -p meridian-node
//! --bin meridian` with the test binary's own profile and target directory
//! (a no-op when it is up to date, and always the current sources), then
//! uses `<target>/<profile>/meridian`. `MERIDIAN_BIN=/path/to/meridian`
//! skips the build (for test binaries run outside Cargo).
//!
//! Invariants:
//! - A `ServerProcess` owns at most one child process; it is reaped before a
//!   new one starts and on drop.
//! - Every wait has a deadline; a missed deadline panics with the server's
//!   log attached.

#![deny(unsafe_code)]

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use meridian_net::client::blocking::Client;
use meridian_net::client::ClientConfig;

/// How long a server may take to print its listening line.
pub const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a `meridian cli` (or a refused `meridian server`) may run.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(20);
/// Lines of the server log shown when a test fails.
const LOG_TAIL_LINES: usize = 40;

/// Polls `condition` until it holds or `deadline` passes; returns whether
/// it held. The pause between polls grows from 1 ms to 50 ms.
pub fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    let mut pause = Duration::from_millis(1);
    loop {
        if condition() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// The `meridian` binary, built once per test process (see the crate doc).
pub fn meridian_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("MERIDIAN_BIN") {
            let path = PathBuf::from(path);
            assert!(
                path.is_file(),
                "MERIDIAN_BIN={} is not a file",
                path.display()
            );
            return path;
        }
        build_meridian_binary()
    })
}

fn build_meridian_binary() -> PathBuf {
    let test_binary = std::env::current_exe().expect("the test binary's path");
    // <target>/[<triple>/]<profile>/deps/<test binary>
    let profile_dir = test_binary
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps");
    let profile_name = profile_dir
        .file_name()
        .and_then(|name| name.to_str())
        .expect("a UTF-8 profile directory name");
    let profile = if profile_name == "debug" {
        "dev"
    } else {
        profile_name
    };
    let above = profile_dir.parent().expect("a target directory");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var_os("CARGO")
        .map(PathBuf::from)
        .or_else(|| option_env!("CARGO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args([
            "-p",
            "meridian-node",
            "--bin",
            "meridian",
            "--profile",
            profile,
        ]);
    // A target directory holds CACHEDIR.TAG; otherwise `above` is a
    // `<triple>` directory of a cross build.
    if above.join("CACHEDIR.TAG").exists() {
        command.arg("--target-dir").arg(above);
    } else {
        let triple = above.file_name().expect("a target triple directory");
        let target_dir = above.parent().expect("a target directory");
        command.arg("--target").arg(triple);
        command.arg("--target-dir").arg(target_dir);
    }
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", cargo.display()));
    assert!(
        output.status.success(),
        "`cargo build -p meridian-node --bin meridian` failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join(format!("meridian{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.is_file(),
        "cargo built meridian but {} does not exist",
        binary.display()
    );
    binary
}

/// A server configuration file, built one `key = value` at a time.
///
/// Starts from small test defaults: 8 partitions, 4 MiB segments, values of
/// at most 1 MiB, frames of at most 2 MiB, one shard.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// section → key → TOML value text, in a stable order.
    sections: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    metrics_listen: String,
    /// The `--listen` argument: an ephemeral port unless [`ServerConfig::listen`] set one.
    listen: String,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            sections: Default::default(),
            metrics_listen: String::new(),
            listen: "127.0.0.1:0".to_string(),
        }
        .set("storage", "partitions", "8")
        .set("storage", "segment_bytes", "4194304")
        // Small journal files: cheap to prepare for every test server, and
        // loads long enough reach checkpoints.
        .set("storage", "journal_file_bytes", "4194304")
        .set("limits", "value_bytes_max", "1048576")
        .set("limits", "frame_bytes_max", "2097152")
        .set("runtime", "shards", "1")
    }
}

impl ServerConfig {
    /// Sets `[section] key = value`; `value` is TOML text (quote strings).
    pub fn set(mut self, section: &str, key: &str, value: &str) -> ServerConfig {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        self
    }

    /// `runtime.shards`.
    pub fn shards(self, shards: usize) -> ServerConfig {
        self.set("runtime", "shards", &shards.to_string())
    }

    /// `storage.durability`: "none", "periodic" or "sync".
    pub fn durability(self, durability: &str) -> ServerConfig {
        self.set("storage", "durability", &format!("{durability:?}"))
    }

    /// `node.secret`.
    pub fn secret(self, secret: &str) -> ServerConfig {
        self.set("node", "secret", &format!("{secret:?}"))
    }

    /// The `--metrics-listen` argument ("" disables the endpoint).
    pub fn metrics_listen(mut self, address: &str) -> ServerConfig {
        self.metrics_listen = address.to_string();
        self
    }

    /// A fixed client and peer address (`--listen` and `node.listen`), for
    /// cluster members whose addresses every member's config must name up
    /// front. Without it a server listens on an ephemeral port.
    pub fn listen(mut self, address: SocketAddr) -> ServerConfig {
        self.listen = address.to_string();
        self.set("node", "listen", &format!("\"{address}\""))
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut text = String::new();
        for (section, entries) in &self.sections {
            text.push_str(&format!("[{section}]\n"));
            for (key, value) in entries {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        text
    }
}

/// A running (or stopped) `meridian server` with its own data directory.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    address: SocketAddr,
    config: ServerConfig,
    /// Holds the config file, the data directory and the server log.
    root: tempfile::TempDir,
}

impl ServerProcess {
    /// Starts a server and waits until it listens.
    pub fn start(config: ServerConfig) -> ServerProcess {
        ServerProcess::start_prepared(config, |_| {})
    }

    /// Starts a server once `prepare` has set up its (empty, existing) data
    /// directory: a test mounts a small filesystem there, say.
    pub fn start_prepared(config: ServerConfig, prepare: impl FnOnce(&Path)) -> ServerProcess {
        let root = tempfile::Builder::new()
            .prefix("meridian-test-")
            .tempdir()
            .expect("a temporary directory");
        let mut server = ServerProcess {
            child: None,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            config,
            root,
        };
        fs::create_dir_all(server.data_dir()).expect("create the data directory");
        prepare(&server.data_dir());
        server.launch();
        server
    }

    /// The address clients connect to (a new port after each restart,
    /// unless the config fixed one with [`ServerConfig::listen`]).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The data directory (kept across restarts).
    pub fn data_dir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// The process id while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's stderr, all runs appended.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.root.path().join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "a server process is already running");
        let config_path = self.root.path().join("meridian.toml");
        fs::write(&config_path, self.config.to_toml()).expect("write the config file");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let mut child = Command::new(meridian_binary())
            .arg("server")
            .arg("--listen")
            .arg(&self.config.listen)
            .arg("--metrics-listen")
            .arg(&self.config.metrics_listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn meridian server");
        let lines = forward_lines(child.stdout.take().expect("piped stdout"));
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(line) => {
                    if let Some(address) = line.strip_prefix("meridian listening on ") {
                        self.address = address
                            .trim()
                            .parse()
                            .unwrap_or_else(|error| panic!("bad listening line {line:?}: {error}"));
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "meridian did not listen within {START_DEADLINE:?}; log:\n{}",
                        self.log_tail()
                    )
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.reap(Instant::now() + STOP_DEADLINE);
                    panic!(
                        "meridian exited ({status:?}) before listening; log:\n{}",
                        self.log_tail()
                    )
                }
            }
        }
    }

    /// Waits for the child to exit; None if it still runs at `deadline`.
    fn reap(&mut self, deadline: Instant) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait_until(deadline, || {
            status = child.try_wait().expect("wait for meridian");
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// SIGTERM; waits for the exit and asserts it is status 0.
    pub fn stop(&mut self) {
        let pid = self.pid().expect("stop: the server is not running");
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
        let Some(status) = self.reap(Instant::now() + STOP_DEADLINE) else {
            panic!(
                "meridian did not exit within {STOP_DEADLINE:?} of SIGTERM; log:\n{}",
                self.log_tail()
            )
        };
        assert_eq!(
            status.code(),
            Some(0),
            "meridian exited with {status} after SIGTERM; log:\n{}",
            self.log_tail()
        );
    }

    /// SIGSTOP: the process stays, its sockets stay open, and it answers
    /// nothing until [`ServerProcess::thaw`] (or `kill`, or drop). Returns
    /// once every thread of the process is stopped (the signal reaches
    /// them asynchronously; Linux `/proc` tells).
    pub fn freeze(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let pid = self.pid().expect("freeze: the server is not running");
        let stopped = wait_until(Instant::now() + STOP_DEADLINE, || all_threads_stopped(pid));
        assert!(
            stopped,
            "meridian (pid {pid}) not stopped within {STOP_DEADLINE:?} of SIGSTOP"
        );
    }

    /// SIGCONT after [`ServerProcess::freeze`].
    pub fn thaw(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = self.pid().expect("signal: the server is not running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|error| panic!("send {signal}: {error}"));
    }

    /// SIGKILL; waits for the process to be gone.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("kill: the server is not running");
        child.kill().expect("send SIGKILL");
        child.wait().expect("reap meridian");
    }

    /// Stops the server if it runs (SIGTERM, exit 0), then starts it again on
    /// the same data directory and configuration, on a new ephemeral port.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.launch();
    }

    /// A client configuration for this server.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new(self.address.to_string());
        config.request_timeout = Duration::from_secs(10);
        config.reconnect_attempts_max = 2;
        config
    }

    /// A connected blocking client.
    pub fn client(&self) -> Client {
        Client::connect(self.client_config()).unwrap_or_else(|error| {
            panic!(
                "cannot connect to {}: {error}; log:\n{}",
                self.address,
                self.log_tail()
            )
        })
    }

    /// This server's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Runs the stopped server once with `config` instead of its own, on its
    /// data directory, to its exit (under [`COMMAND_DEADLINE`]): for a start
    /// the server must refuse. Its own configuration stays for restarts.
    pub fn run_once_with(&self, config: &ServerConfig) -> Output {
        assert!(self.child.is_none(), "run_once_with: the server is running");
        let config_path = self.root.path().join("meridian-once.toml");
        fs::write(&config_path, config.to_toml()).expect("write the config file");
        let mut command = Command::new(meridian_binary());
        command
            .arg("server")
            .arg("--listen")
            .arg(&config.listen)
            .arg("--metrics-listen")
            .arg(&config.metrics_listen)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--config")
            .arg(&config_path);
        run_with_deadline(command, COMMAND_DEADLINE)
    }

    /// Runs `meridian cli --addr ADDR ARGS…` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut command = Command::new(meridian_binary());
        command
            .arg("cli")
            .arg("--addr")
            .arg(self.address.to_string())
            .args(["--timeout-s", "10"])
            .args(args);
        run_with_deadline(command, COMMAND_DEADLINE)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- meridian server log (tail) ---\n{}", self.log_tail());
        }
    }
}

/// True when every thread of process `pid` is in state T (stopped) or t
/// (traced), as `/proc/PID/task/*/stat` says.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(Result::ok).all(|task| {
        let stat = fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // "TID (COMM) STATE …": COMM may hold spaces and parentheses.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        matches!(state, Some('T' | 't'))
    })
}

/// Sends each line of `stdout` to the returned channel until EOF. Reading
/// on after the first line keeps the server's later prints from failing.
fn forward_lines(stdout: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = sender.send(line);
        }
    });
    receiver
}

/// Runs a command to completion with piped output; kills it and panics if
/// it runs past `limit`.
pub fn run_with_deadline(mut command: Command, limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot spawn {command:?}: {error}"));
    let stdout = read_all_in_background(child.stdout.take().expect("piped stdout"));
    let stderr = read_all_in_background(child.stderr.take().expect("piped stderr"));
    let mut status = None;
    wait_until(Instant::now() + limit, || {
        status = child.try_wait().expect("wait for the command");
        status.is_some()
    });
    let Some(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} ran past {limit:?}");
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_all_in_background(
    mut pipe: impl Read + Send + 'static,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Picks a loopback port that was free a moment ago (bind port 0, close).
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

pub mod raw;

pub mod load;

pub mod cluster;

pub mod proxy;

pub mod xdc;
