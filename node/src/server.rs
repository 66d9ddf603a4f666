//! Starting and stopping a node: executors, listeners, background tasks.
//!
//! Start-up: the port is resolved once (binding port 0 picks it), every
//! shard executor binds it with SO_REUSEPORT, opens its vnodes and reports
//! ready; then one line `meridian listening on ADDR` goes to stdout.
//!
//! Shutdown (SIGTERM or SIGINT): shards stop accepting, wait until no
//! connection is executing requests (at most `DRAIN_DEADLINE`), wait for each
//! other (a shard may still need another's vnodes), sync and close every
//! store, and the process exits 0.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::{Config, DurabilityMode};
use crate::connection::Connection;
use crate::shard::{Shard, ShardCall};

const INBOX_DEPTH: usize = 1024;
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
const SHUTDOWN_POLL: Duration = Duration::from_millis(20);
const MAINTENANCE_SLICE_BYTES: u64 = 1 << 20;
const MAINTENANCE_IDLE: Duration = Duration::from_millis(200);

/// Reserves the listen address (resolving port 0) without accepting on it.
fn reserve_port(address: SocketAddr) -> std::io::Result<(socket2::Socket, SocketAddr)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(address),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_port(true)?;
    socket.set_reuse_address(true)?;
    socket.bind(&address.into())?;
    let bound = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an IP address"))?;
    Ok((socket, bound))
}

/// Runs a node until SIGTERM or SIGINT.
pub fn run(mut config: Config) -> Result<(), String> {
    config.validate().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&config.storage.data_dir).map_err(|e| {
        format!(
            "cannot create data directory {}: {e}",
            config.storage.data_dir.display()
        )
    })?;
    crate::journal::recover(&config)?;
    let (reservation, address) = reserve_port(config.node.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.node.listen))?;
    config.node.listen = address;
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let shards = config.shard_count();
    let config = Arc::new(config);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| flume::bounded(INBOX_DEPTH)).unzip();
    let (ready_sender, ready) = std::sync::mpsc::channel::<Result<(), String>>();
    let drained = Arc::new(AtomicUsize::new(0));
    let (xdc_control, xdc_inbox) = flume::bounded(1024);
    let xdc_handle = crate::xdc::XdcHandle::new(xdc_control);
    let mut handles = Vec::new();
    for (index, inbox) in receivers.into_iter().enumerate() {
        let placement = if config.runtime.pin {
            Placement::Fixed(config.runtime.first_cpu + index)
        } else {
            Placement::Unbound
        };
        let (config, senders, shutdown, xdc) = (
            Arc::clone(&config),
            senders.clone(),
            Arc::clone(&shutdown),
            xdc_handle.clone(),
        );
        let (ready_sender, drained) = (ready_sender.clone(), Arc::clone(&drained));
        let builder = LocalExecutorBuilder::new(placement)
            .name(&format!("shard-{index}"))
            .io_memory(config.runtime.io_memory_bytes);
        let handle = builder
            .spawn(move || async move {
                match Shard::new(index, config, senders, shutdown, xdc) {
                    Ok(shard) => run_shard(Rc::new(shard), inbox, ready_sender, drained).await,
                    Err(reason) => {
                        let _ = ready_sender.send(Err(format!("shard {index}: {reason}")));
                    }
                }
            })
            .map_err(|e| format!("cannot start shard {index}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_sender);
    for _ in 0..shards {
        match ready.recv() {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => {
                shutdown.store(true, Ordering::SeqCst);
                for handle in handles {
                    let _ = handle.join();
                }
                return Err(reason);
            }
            Err(_) => return Err("a shard stopped during start-up".to_string()),
        }
    }
    drop(reservation);
    // The XDC executor: on the core after the shards' when pinned and one
    // is there, else wherever the kernel puts it (never on a shard's core
    // by choice).
    let xdc_placement = if config.runtime.pin {
        let cpu = config.runtime.first_cpu + shards;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cpu < cpus {
            Placement::Fixed(cpu)
        } else {
            Placement::Unbound
        }
    } else {
        Placement::Unbound
    };
    let xdc_thread = {
        let (config, senders, shutdown, sync_links) = (
            Arc::clone(&config),
            senders.clone(),
            Arc::clone(&shutdown),
            Arc::clone(&xdc_handle.sync_links),
        );
        LocalExecutorBuilder::new(xdc_placement)
            .name("xdc")
            .io_memory(config.runtime.io_memory_bytes)
            .spawn(move || crate::xdc::run(config, senders, xdc_inbox, shutdown, sync_links))
            .map_err(|e| format!("cannot start the xdc executor: {e}"))?
    };
    drop(senders);
    drop(xdc_handle);
    println!("meridian listening on {address}");
    if !config.node.metrics_listen.is_empty() {
        println!(
            "meridian metrics on http://{}/metrics",
            config.node.metrics_listen
        );
    }
    tracing::info!(%address, shards, "serving");
    let mut failed = false;
    for handle in handles {
        failed |= handle.join().is_err();
    }
    failed |= xdc_thread.join().is_err();
    if failed {
        return Err("a shard panicked".to_string());
    }
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn run_shard(
    shard: Rc<Shard>,
    inbox: flume::Receiver<ShardCall>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    drained: Arc<AtomicUsize>,
) {
    if let Err(error) = shard.open_existing() {
        let _ = ready.send(Err(format!(
            "shard {}: cannot open its vnodes: {error}",
            shard.index
        )));
        return;
    }
    let listener = match TcpListener::bind(shard.config.node.listen) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = ready.send(Err(format!(
                "shard {}: cannot listen on {}: {error}",
                shard.index, shard.config.node.listen
            )));
            return;
        }
    };
    if let (0, Some(cluster)) = (shard.index, shard.cluster.as_ref()) {
        // The founding (or not yet joined) ring is persisted at first start.
        if let Err(error) = cluster.persist() {
            let _ = ready.send(Err(error));
            return;
        }
    }
    let inbox_task = glommio::spawn_local(run_inbox(Rc::clone(&shard), inbox));
    let sync_task = glommio::spawn_local(Rc::clone(&shard).run_sync_loop());
    let periodic_task = glommio::spawn_local(run_periodic_sync(Rc::clone(&shard)));
    let maintenance_task = glommio::spawn_local(run_maintenance(Rc::clone(&shard)));
    let cluster_tasks = shard.cluster.is_some().then(|| {
        use crate::cluster::background;
        [
            glommio::spawn_local(background::run_heartbeats(Rc::clone(&shard))),
            glommio::spawn_local(background::run_hint_delivery(Rc::clone(&shard))),
            glommio::spawn_local(background::run_anti_entropy(Rc::clone(&shard))),
            glommio::spawn_local(crate::cluster::handoff::run_handoff(Rc::clone(&shard))),
            glommio::spawn_local(crate::cluster::membership::run_membership(Rc::clone(
                &shard,
            ))),
        ]
    });
    let metrics_task = (shard.index == 0 && !shard.config.node.metrics_listen.is_empty())
        .then(|| glommio::spawn_local(crate::server::serve_metrics(Rc::clone(&shard))));
    let _ = ready.send(Ok(()));

    let connections: Rc<OpenConnections> = Rc::default();
    let accept_task = glommio::spawn_local(accept_loop(
        Rc::clone(&shard),
        listener,
        Rc::clone(&connections),
    ));
    while !shard.shutdown.load(Ordering::Relaxed) {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    drop(accept_task);
    let deadline = Instant::now() + DRAIN_DEADLINE;
    while connections.borrow().values().any(|(_, busy)| busy.get()) && Instant::now() < deadline {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    for (handle, _) in connections.borrow_mut().drain().map(|(_, open)| open) {
        handle.cancel();
    }
    drained.fetch_add(1, Ordering::SeqCst);
    let shards = shard.inboxes.len();
    while drained.load(Ordering::SeqCst) < shards && Instant::now() < deadline + DRAIN_DEADLINE {
        glommio::timer::sleep(SHUTDOWN_POLL).await;
    }
    drop((metrics_task, maintenance_task, periodic_task, cluster_tasks));
    if shard.has_unsynced() {
        shard.sync_cycle().await;
    }
    shard.request_sync();
    let _ = sync_task.await;
    drop(inbox_task);
    shard.close_all();
}

/// Open connections of a shard by id: the task (to cancel at shutdown) and
/// whether it is executing requests. A connection removes itself on exit.
type OpenConnections =
    std::cell::RefCell<HashMap<u64, (glommio::task::JoinHandle<()>, Rc<Cell<bool>>)>>;

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, connections: Rc<OpenConnections>) {
    let per_shard_max = (shard.config.limits.connections_max / shard.inboxes.len()).max(1);
    let mut next_id = 0u64;
    loop {
        let Ok(stream) = listener.accept().await else {
            continue;
        };
        if connections.borrow().len() >= per_shard_max {
            glommio::spawn_local(refuse(shard.clone(), stream)).detach();
            continue;
        }
        next_id += 1;
        let id = next_id;
        let busy = Rc::new(Cell::new(false));
        let connection = Connection::new(Rc::clone(&shard), Rc::clone(&busy));
        let (owner, registry) = (Rc::clone(&shard), Rc::clone(&connections));
        let handle = glommio::spawn_local(async move {
            let counter = &owner.counters.connections;
            counter.set(counter.get() + 1);
            connection.serve(stream).await;
            counter.set(counter.get() - 1);
            registry.borrow_mut().remove(&id);
        })
        .detach();
        connections.borrow_mut().insert(id, (handle, busy));
    }
}

/// Answers a connection over the limit with an error frame, then closes it.
async fn refuse(shard: Rc<Shard>, mut stream: glommio::net::TcpStream) {
    let encoder = meridian_net::Encoder::new(crate::connection::net_limits(&shard));
    let mut output = bytes::BytesMut::new();
    let response = meridian_net::Response::Error {
        code: meridian_net::ErrorCode::Overloaded,
        message: format!(
            "too many connections (limits.connections_max = {})",
            shard.config.limits.connections_max
        ),
    };
    if encoder.encode(0, &response, &mut output).is_ok() {
        let _ = stream.write_all(&output).await;
    }
    let _ = stream.close().await;
}

async fn run_inbox(shard: Rc<Shard>, inbox: flume::Receiver<ShardCall>) {
    while let Ok(call) = inbox.recv_async().await {
        match call {
            ShardCall::Op {
                partition,
                op,
                reply,
            } => {
                let (response, epoch) = shard.apply(partition, op);
                match epoch {
                    None => {
                        let _ = reply.send(response);
                    }
                    Some(epoch) => {
                        let shard = Rc::clone(&shard);
                        glommio::spawn_local(async move {
                            let answer = match shard.wait_synced(epoch).await {
                                Ok(()) => response,
                                Err(reason) => meridian_net::Response::Error {
                                    code: meridian_net::ErrorCode::StorageError,
                                    message: format!("write not durable: {reason}"),
                                },
                            };
                            let _ = reply.send(answer);
                        })
                        .detach();
                    }
                }
            }
            ShardCall::Peer {
                partition,
                op,
                reply,
            } => {
                let (result, epoch) = shard.apply_peer(partition, op);
                match epoch {
                    None => {
                        let _ = reply.send(result);
                    }
                    Some(epoch) => {
                        let shard = Rc::clone(&shard);
                        glommio::spawn_local(async move {
                            let answer = match shard.wait_synced(epoch).await {
                                Ok(()) => result,
                                Err(reason) => Err((
                                    meridian_net::ErrorCode::StorageError,
                                    format!("write not durable: {reason}"),
                                )),
                            };
                            let _ = reply.send(answer);
                        })
                        .detach();
                    }
                }
            }
            ShardCall::Stats { reply } => {
                let _ = reply.send(shard.report());
            }
            ShardCall::Ring { ring } => {
                shard.adopt_ring(*ring, false);
            }
            ShardCall::Membership { request, reply } => {
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move {
                    let answer = crate::cluster::membership::handle(shard, request).await;
                    let _ = reply.send(answer);
                })
                .detach();
            }
            ShardCall::ClusterInfo { reply } => {
                let _ = reply.send(crate::info::cluster_info_here(&shard));
            }
            ShardCall::TailReads { reads, reply } => {
                let _ = reply.send(shard.tail_reads(&reads));
            }
            ShardCall::MoveCursors {
                name,
                moves,
                register,
            } => shard.move_cursors(&name, &moves, register),
            ShardCall::RemoveCursors { name } => shard.remove_cursors(&name),
            ShardCall::CursorLags { positions, reply } => {
                let _ = reply.send(shard.cursor_lags(&positions));
            }
            ShardCall::XdcApply { records, reply } => {
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move {
                    let outcome = crate::xdc::receive::apply_records(&shard, &records)
                        .await
                        .map_err(|refusal| format!("{refusal:?}"));
                    let _ = reply.send(outcome);
                })
                .detach();
            }
            ShardCall::ReadRecords {
                partition,
                keys,
                reply,
            } => {
                let _ = reply.send(shard.read_records(partition, keys));
            }
            ShardCall::PeerAddresses { reply } => {
                let addresses = shard.cluster.as_ref().map_or_else(Vec::new, |cluster| {
                    cluster
                        .peers()
                        .into_iter()
                        .filter_map(|node| cluster.address(node).map(|a| a.to_string()))
                        .collect()
                });
                let _ = reply.send(addresses);
            }
            ShardCall::ShippedPartitions { reply } => {
                let _ = reply.send(shard.shipped_partitions());
            }
        }
    }
}

async fn run_periodic_sync(shard: Rc<Shard>) {
    if shard.config.storage.durability != DurabilityMode::Periodic {
        return;
    }
    let interval = Duration::from_millis(shard.config.storage.sync_interval_ms as u64);
    loop {
        glommio::timer::sleep(interval).await;
        if shard.has_unsynced() {
            shard.request_sync();
        }
    }
}

async fn run_maintenance(shard: Rc<Shard>) {
    loop {
        if shard.maintenance_slice(MAINTENANCE_SLICE_BYTES) {
            glommio::yield_if_needed().await;
            glommio::timer::sleep(Duration::from_millis(1)).await;
        } else {
            glommio::timer::sleep(MAINTENANCE_IDLE).await;
        }
    }
}

/// A minimal HTTP endpoint: any GET answers the Prometheus text.
pub async fn serve_metrics(shard: Rc<Shard>) {
    let address = shard.config.node.metrics_listen.clone();
    let listener = match TcpListener::bind(address.as_str()) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%address, %error, "metrics endpoint not started");
            return;
        }
    };
    loop {
        let Ok(mut stream) = listener.accept().await else {
            continue;
        };
        let shard = Rc::clone(&shard);
        glommio::spawn_local(async move {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request).await;
            let mut body = crate::metrics::render_prometheus(&crate::info::gather_reports(&shard).await);
            let (reply, links) = flume::bounded(1);
            if shard
                .xdc
                .control
                .try_send(crate::xdc::Control::Metrics { reply })
                .is_ok()
            {
                if let Ok(text) = links.recv_async().await {
                    body.push_str(&text);
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.close().await;
        })
        .detach();
    }
}
