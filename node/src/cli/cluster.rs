//! `meridian cli cluster join | leave | status`: membership from a shell.
//!
//! `join` and `leave` are peer operations (MEMBERSHIP), so the CLI opens a
//! peer connection to the node (HELLO of role `peer`, with the cluster's
//! secret when it has one) and sends one request; the node passes a change
//! on to the claimant and answers the ring it holds afterwards. `status`
//! reads CLUSTERINFO, and when the node is not the claimant, the claimant's
//! CLUSTERINFO too for the handoff's progress (only the claimant gathers it).
//!
//! - `cluster join SEED` is run against the node that joins (like Riak's
//!   `riak-admin cluster join`), naming the peer address of any member.
//! - `cluster leave [--node ID]` plans node ID (default: the node `--addr`
//!   names) out; its partitions stream to the others, then it is `removed`
//!   and can be stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Subcommand;
use meridian_net::client::blocking::Client;
use meridian_net::client::ClientConfig;
use meridian_net::message::Hello;
use meridian_net::peer::{Membership, MembershipCommand, PeerRequest, PeerResponse};
use meridian_net::{
    Decoder, Encoder, Frame, Limits, Opcode, Request, Response, Role, PROTOCOL_VERSION,
};
use serde_json::Value;

use super::CliArgs;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Join the cluster of the member at SEED (run against the joining node).
    Join {
        /// Peer address (HOST:PORT) of any member of the cluster.
        seed: String,
    },
    /// Plan a node out of the ring (default: the node --addr names).
    Leave {
        #[arg(long)]
        node: Option<u16>,
    },
    /// Members, status, ring epoch, partitions per node, pending handoffs.
    Status {
        /// Print the CLUSTERINFO JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a cluster command; returns the process exit status.
pub fn run(args: &CliArgs, command: &ClusterCommand) -> Result<i32, String> {
    let timeout = Duration::from_secs(args.timeout_s);
    match command {
        ClusterCommand::Join { seed } => {
            let mut link = PeerLink::open(args, &args.addr, timeout)?;
            let ring = link.membership(MembershipCommand::JoinVia, link.node_id, seed)?;
            let member = ring.member(link.node_id).map(|m| m.status);
            println!(
                "node {} is in cluster {:?} at ring epoch {} as {:?}; {} transfers pending",
                link.node_id,
                ring.cluster(),
                ring.epoch(),
                member,
                ring.transfers().len()
            );
            Ok(0)
        }
        ClusterCommand::Leave { node } => {
            let mut link = PeerLink::open(args, &args.addr, timeout)?;
            let node = node.unwrap_or(link.node_id);
            let ring = link.membership(MembershipCommand::Leave, node, "")?;
            let status = ring.member(node).map(|m| m.status);
            println!(
                "node {node} is {status:?} at ring epoch {}; {} transfers pending",
                ring.epoch(),
                ring.transfers().len()
            );
            Ok(0)
        }
        ClusterCommand::Status { json } => {
            let info = cluster_info(args, &args.addr)?;
            let info = with_claimant_progress(args, info);
            if *json {
                println!("{info}");
            } else {
                print!("{}", status_table(&info));
            }
            Ok(0)
        }
    }
}

fn cluster_info(args: &CliArgs, address: &str) -> Result<Value, String> {
    let mut config = ClientConfig::new(address.to_string());
    config.cluster = args.cluster.clone();
    config.credentials = args
        .secret
        .as_ref()
        .map(|s| Bytes::from(s.clone().into_bytes()));
    config.request_timeout = Duration::from_secs(args.timeout_s);
    config.connect_timeout = Duration::from_secs(args.timeout_s);
    let mut client = Client::connect(config).map_err(|e| format!("{address}: {e}"))?;
    let text = client
        .clusterinfo()
        .map_err(|e| format!("{address}: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{address} answered CLUSTERINFO that is not JSON: {e}"))
}

/// Takes the handoff progress from the claimant when `info` comes from
/// another node (best effort: the local view stays if it cannot be had).
fn with_claimant_progress(args: &CliArgs, mut info: Value) -> Value {
    let known = info["handoff"]["progress_known"].as_bool().unwrap_or(true);
    if known {
        return info;
    }
    let claimant = info["claimant"].as_u64();
    let address = info["members"].as_array().and_then(|members| {
        members
            .iter()
            .find(|m| m["node_id"].as_u64() == claimant)
            .and_then(|m| m["address"].as_str().map(str::to_string))
    });
    if let Some(Ok(remote)) = address.map(|address| cluster_info(args, &address)) {
        if remote["handoff"]["plan"] == info["handoff"]["plan"] {
            info["handoff"] = remote["handoff"].clone();
        }
    }
    info
}

/// The human form of a CLUSTERINFO document.
pub fn status_table(info: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "cluster {}  ring epoch {}  claimant {}  partitions {}  N={} R={} W={}\n",
        info["cluster"],
        info["ring_epoch"],
        info["claimant"],
        info["partitions"],
        info["replicas"],
        info["read_quorum"],
        info["write_quorum"]
    ));
    out.push_str(&format!(
        "{:<6} {:<22} {:<12} {:<6} {:<8} {:>6} {:>14} {:>11}\n",
        "node", "address", "rack", "status", "ring", "owned", "after handoff", "replicated"
    ));
    // Value's Display ignores widths: every cell becomes a String first.
    let cell = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    for member in info["members"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{:<6} {:<22} {:<12} {:<6} {:<8} {:>6} {:>14} {:>11}\n",
            cell(&member["node_id"]),
            cell(&member["address"]),
            cell(&member["rack"]),
            cell(&member["status"]),
            cell(&member["ring_status"]),
            cell(&member["partitions_owned"]),
            cell(&member["partitions_owned_after_handoff"]),
            cell(&member["partitions_replicated"])
        ));
    }
    match (
        info["racks"].as_u64(),
        info["partitions_with_replicas_sharing_a_rack"].as_u64(),
    ) {
        (Some(racks), Some(0)) if racks > 0 => out.push_str(&format!(
            "racks {racks}: every partition's replicas on distinct racks\n"
        )),
        (Some(racks), Some(sharing)) if racks > 0 => out.push_str(&format!(
            "racks {racks}: {sharing} partitions have two replicas or more in one rack\n"
        )),
        _ => {}
    }
    let handoff = &info["handoff"];
    if handoff.is_null() {
        out.push_str("no handoff pending\n");
    } else {
        let progress = if handoff["progress_known"].as_bool() == Some(true) {
            format!(
                "{} of {} partition copies streamed",
                handoff["partition_copies_reported"], handoff["partition_copies_needed"]
            )
        } else {
            "progress known to the claimant only (unreachable)".to_string()
        };
        out.push_str(&format!(
            "handoff pending: {} transfers, {progress}\n",
            info["pending_handoffs"]
        ));
    }
    out
}

/// One peer connection from the CLI, for MEMBERSHIP requests.
struct PeerLink {
    stream: TcpStream,
    limits: Limits,
    decoder: Decoder,
    input: BytesMut,
    node_id: u16,
}

impl PeerLink {
    fn open(args: &CliArgs, address: &str, timeout: Duration) -> Result<PeerLink, String> {
        let failed = |e: std::io::Error| format!("cannot reach {address}: {e}");
        let socket_address = std::net::ToSocketAddrs::to_socket_addrs(address)
            .map_err(failed)?
            .next()
            .ok_or_else(|| format!("{address} resolves to nothing"))?;
        let stream = TcpStream::connect_timeout(&socket_address, timeout).map_err(failed)?;
        stream.set_read_timeout(Some(timeout)).map_err(failed)?;
        stream.set_write_timeout(Some(timeout)).map_err(failed)?;
        let limits = Limits::default();
        let mut link = PeerLink {
            stream,
            decoder: Decoder::new(limits),
            limits,
            input: BytesMut::new(),
            node_id: 0,
        };
        let hello = Request::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            role: Role::Peer,
            cluster: args.cluster.clone(),
            datacenter: String::new(),
            credentials: args
                .secret
                .as_ref()
                .map(|s| Bytes::from(s.clone().into_bytes())),
        });
        let mut frame = BytesMut::new();
        Encoder::new(limits)
            .encode(0, &hello, &mut frame)
            .map_err(|e| e.to_string())?;
        let answer = link.exchange(&frame)?;
        match answer.response(&limits) {
            Ok(Response::HelloOk { node_id, .. }) => {
                link.node_id = u16::try_from(node_id)
                    .map_err(|_| format!("{address} answered node id {node_id}"))?;
                Ok(link)
            }
            Ok(Response::Error { code, message }) => Err(format!("{address}: {code}: {message}")),
            other => Err(format!("{address} answered HELLO with {other:?}")),
        }
    }

    fn exchange(&mut self, frame: &[u8]) -> Result<Frame, String> {
        self.stream
            .write_all(frame)
            .map_err(|e| format!("send failed: {e}"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some(frame) = self
                .decoder
                .decode(&mut self.input)
                .map_err(|e| e.to_string())?
            {
                return Ok(frame);
            }
            let read = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("no answer: {e}"))?;
            if read == 0 {
                return Err("the node closed the connection".to_string());
            }
            self.input.extend_from_slice(&chunk[..read]);
        }
    }

    fn membership(
        &mut self,
        command: MembershipCommand,
        node_id: u16,
        address: &str,
    ) -> Result<meridian_ring::Ring, String> {
        let request = PeerRequest::Membership(Membership {
            command,
            forwarded: false,
            node_id,
            plan: 0,
            address: Bytes::copy_from_slice(address.as_bytes()),
            rack: Bytes::new(),
            partitions: Vec::new(),
        });
        let mut frame = BytesMut::new();
        request
            .encode(1, &self.limits, &mut frame)
            .map_err(|e| e.to_string())?;
        let answer = self.exchange(&frame)?;
        if answer.opcode == Opcode::ERROR {
            return match answer.response(&self.limits) {
                Ok(Response::Error { code, message }) => Err(format!("{code}: {message}")),
                _ => Err("an unreadable ERROR frame".to_string()),
            };
        }
        match PeerResponse::decode(&answer, &self.limits).map_err(|e| e.to_string())? {
            PeerResponse::MembershipReply { ring } => {
                meridian_ring::decode(&ring).map_err(|e| format!("the answered ring: {e}"))
            }
            other => Err(format!("unexpected answer {other:?}")),
        }
    }
}
