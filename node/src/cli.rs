//! `meridian cli`: talk to a node from a shell.
//!
//! Info commands print the server's JSON; `get` prints the value's bytes
//! followed by a newline, or nothing with exit status 1 when the key is
//! absent; any error prints the server's (or the connection's) message on
//! stderr and exits 2.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

mod cluster;
use meridian_net::client::blocking::Client;
use meridian_net::client::ClientConfig;

#[derive(Debug, Args)]
pub struct CliArgs {
    /// Address of any node.
    #[arg(long, default_value = "127.0.0.1:7411")]
    pub addr: String,
    /// Cluster name to expect.
    #[arg(long, default_value = "meridian")]
    pub cluster: String,
    /// Shared secret, when the node requires one.
    #[arg(long)]
    pub secret: Option<String>,
    /// Seconds to wait for each request.
    #[arg(long, default_value_t = 10)]
    pub timeout_s: u64,
    #[command(subcommand)]
    pub command: CliCommand,
}

#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Write a value.
    Put {
        key: String,
        value: String,
        /// Expire after this many seconds.
        #[arg(long)]
        ttl: Option<u32>,
    },
    /// Read a value (exit 1 when absent).
    Get {
        key: String,
    },
    /// Delete a key.
    Del {
        key: String,
    },
    Ping,
    Buildinfo,
    Clusterinfo,
    Nodehealth,
    Stats,
    /// Membership: join, leave, status.
    Cluster {
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
    /// Cross-datacenter links.
    Xdc {
        #[command(subcommand)]
        command: XdcCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum XdcCommand {
    /// Open a link to another datacenter and ship every write there.
    Connect {
        /// The link's name (letters, digits, '-', '_').
        name: String,
        /// Any node of the remote datacenter, HOST:PORT.
        address: String,
        /// The remote datacenter's `xdc.secret` (proven, never sent).
        #[arg(long)]
        link_secret: String,
        /// Also ship writes that came from third datacenters (chains, rings).
        #[arg(long)]
        cascade: bool,
        /// Synchronous: answer a client's write only once this datacenter
        /// has it too (fails after xdc.sync_timeout_ms).
        #[arg(long)]
        sync: bool,
    },
    /// Remove a link (its cursors go too).
    Disconnect { name: String },
    /// Stop shipping on a link, keeping its place.
    Pause { name: String },
    /// Ship again from where the link stopped.
    Resume { name: String },
    /// Compare with the remote datacenter and ship only what differs.
    Fullsync {
        name: String,
        /// Also fetch what the remote holds newer (for two-way links).
        #[arg(long)]
        both: bool,
    },
    /// Every link's state, lag and counters.
    Status,
}

impl XdcCommand {
    /// The ADMIN command line.
    fn command_line(&self) -> Result<String, String> {
        Ok(match self {
            XdcCommand::Connect {
                name,
                address,
                link_secret,
                cascade,
                sync,
            } => {
                if link_secret.is_empty() || link_secret.chars().any(char::is_whitespace) {
                    return Err(
                        "--link-secret must be non-empty and hold no whitespace".to_string()
                    );
                }
                let mut line = format!("xdc connect {name} {address} {link_secret}");
                if *cascade {
                    line.push_str(" cascade");
                }
                if *sync {
                    line.push_str(" sync");
                }
                line
            }
            XdcCommand::Disconnect { name } => format!("xdc disconnect {name}"),
            XdcCommand::Pause { name } => format!("xdc pause {name}"),
            XdcCommand::Resume { name } => format!("xdc resume {name}"),
            XdcCommand::Fullsync { name, both } => {
                format!("xdc fullsync {name}{}", if *both { " both" } else { "" })
            }
            XdcCommand::Status => "xdc status".to_string(),
        })
    }
}

/// Runs a CLI command; returns the process exit status.
pub fn run(args: CliArgs) -> i32 {
    if let CliCommand::Cluster { command } = &args.command {
        return match cluster::run(&args, command) {
            Ok(status) => status,
            Err(error) => {
                eprintln!("meridian cli: {error}");
                2
            }
        };
    }
    let mut config = ClientConfig::new(args.addr.clone());
    config.cluster = args.cluster.clone();
    config.credentials = args
        .secret
        .as_ref()
        .map(|s| bytes::Bytes::from(s.clone().into_bytes()));
    config.request_timeout = Duration::from_secs(args.timeout_s);
    config.connect_timeout = Duration::from_secs(args.timeout_s);
    let mut client = match Client::connect(config) {
        Ok(client) => client,
        Err(error) => {
            eprintln!("meridian cli: {error}");
            return 2;
        }
    };
    let mut stdout = std::io::stdout().lock();
    let outcome = match args.command {
        CliCommand::Put { key, value, ttl } => match ttl {
            Some(ttl) => client.put_with_ttl(
                key.as_bytes(),
                value.as_bytes(),
                Duration::from_secs(ttl as u64),
            ),
            None => client.put(key.as_bytes(), value.as_bytes()),
        }
        .map(|version| {
            let _ = writeln!(
                stdout,
                "{{\"hlc\":{},\"origin\":{}}}",
                version.hlc, version.origin
            );
            0
        }),
        CliCommand::Get { key } => client.get(key.as_bytes()).map(|found| match found {
            Some(entry) => {
                let _ = stdout.write_all(&entry.value);
                let _ = stdout.write_all(b"\n");
                0
            }
            None => 1,
        }),
        CliCommand::Del { key } => client.delete(key.as_bytes()).map(|version| {
            let _ = writeln!(
                stdout,
                "{{\"hlc\":{},\"origin\":{}}}",
                version.hlc, version.origin
            );
            0
        }),
        CliCommand::Ping => client.ping().map(|()| {
            let _ = writeln!(stdout, "PONG");
            0
        }),
        CliCommand::Buildinfo => client
            .buildinfo()
            .map(|json| print_json(&mut stdout, &json)),
        CliCommand::Clusterinfo => client
            .clusterinfo()
            .map(|json| print_json(&mut stdout, &json)),
        CliCommand::Nodehealth => client
            .nodehealth()
            .map(|json| print_json(&mut stdout, &json)),
        CliCommand::Stats => client.stats().map(|json| print_json(&mut stdout, &json)),
        CliCommand::Cluster { .. } => unreachable!("run before connecting"),
        CliCommand::Xdc { command } => match command.command_line() {
            Ok(line) => client
                .admin(&line)
                .map(|json| print_json(&mut stdout, &json)),
            Err(reason) => {
                eprintln!("meridian cli: {reason}");
                return 2;
            }
        },
    };
    match outcome {
        Ok(status) => status,
        Err(error) => {
            eprintln!("meridian cli: {error}");
            2
        }
    }
}

fn print_json(out: &mut impl Write, json: &str) -> i32 {
    let _ = writeln!(out, "{json}");
    0
}
