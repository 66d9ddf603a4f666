//! Cross-datacenter replication on a node: the XDC executor and the
//! receiving end of links.
//!
//! The XDC executor is a glommio executor of its own (its own core when
//! the machine has one to spare: `runtime.shards = 0` leaves one), never a
//! shard's: it runs one task per link (`ship`), answers operators' `xdc`
//! commands that shards forward to it (`Control`), and keeps the link
//! table (`links`) the same on every member. Shards do only what needs
//! their vnodes: log reads, cursor moves, and applying received batches
//! (`receive`, on the shard that accepted the link's connection).
//!
//! Invariants:
//! - the executor never touches a store: every vnode access is a call to
//!   the owning shard over its bounded inbox;
//! - a link's table entry is the only thing that starts or stops its task;
//! - a command's answer says what was done, on which members, or why not.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::partition::Partitioner;
use crate::shard::ShardCall;

pub mod cursors;
pub mod fullsync;
pub mod links;
pub mod receive;
pub mod ship;

use links::{LinkSpec, LinkTable};
use ship::Link;

/// How often each node compares its link table with the other members'.
const TABLE_PULL_INTERVAL: Duration = Duration::from_secs(5);
/// How long a command waits for the other members to take a new table.
const SPREAD_DEADLINE: Duration = Duration::from_secs(3);

/// What a shard holds to reach the XDC executor.
#[derive(Clone, Debug)]
pub struct XdcHandle {
    pub control: flume::Sender<Control>,
    /// Set while some link is synchronous (and not paused): writes then
    /// wait for the remote acknowledgement. Written by the XDC executor
    /// only.
    pub sync_links: Arc<AtomicBool>,
}

impl XdcHandle {
    pub fn new(control: flume::Sender<Control>) -> XdcHandle {
        XdcHandle {
            control,
            sync_links: Arc::new(AtomicBool::new(false)),
        }
    }

    /// After a client's write was acknowledged here: when some link is
    /// synchronous, waits until every synchronous link's datacenter has
    /// `record`, at most `timeout`. `Err` names the datacenter and why.
    pub async fn wait_shipped(
        &self,
        record: meridian_xdc::XdcRecord,
        timeout: Duration,
    ) -> Result<(), String> {
        if !self.sync_links.load(Ordering::Relaxed) {
            return Ok(());
        }
        let (reply, answer) = flume::bounded(1);
        self.control
            .send_async(Control::SyncShip { record, reply })
            .await
            .map_err(|_| "the xdc executor stopped".to_string())?;
        let wait = async {
            Some(
                answer
                    .recv_async()
                    .await
                    .unwrap_or_else(|_| Err("the xdc executor stopped".to_string())),
            )
        };
        let expired = async {
            glommio::timer::sleep(timeout).await;
            None
        };
        match futures_lite::future::or(wait, expired).await {
            Some(outcome) => outcome,
            None => Err(format!(
                "not acknowledged by the synchronous link(s) within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

/// A request to the XDC executor.
#[derive(Debug)]
pub enum Control {
    /// An operator's `xdc …` command (the words after `xdc`); the answer is
    /// JSON, or an error message.
    Admin {
        words: Vec<String>,
        /// The rest of the line after the first two words (for `adopt`).
        rest: String,
        reply: flume::Sender<Result<String, String>>,
    },
    /// Per-link metrics in the Prometheus text format.
    Metrics { reply: flume::Sender<String> },
    /// Ship one record on every synchronous link now; answer when all of
    /// them acknowledged it.
    SyncShip {
        record: meridian_xdc::XdcRecord,
        reply: flume::Sender<Result<(), String>>,
    },
}

/// The XDC executor's state.
pub struct Executor {
    pub config: Arc<Config>,
    pub inboxes: Vec<flume::Sender<ShardCall>>,
    pub partitioner: Partitioner,
    shutdown: Arc<AtomicBool>,
    sync_links: Arc<AtomicBool>,
    table: RefCell<LinkTable>,
    links: RefCell<BTreeMap<String, Rc<Link>>>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("links", &self.links.borrow().len())
            .finish()
    }
}

impl Executor {
    pub fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::Relaxed)
    }

    /// Sends shard `shard` the call `make` builds around a reply channel
    /// and waits for the answer.
    pub async fn ask<T>(
        &self,
        shard: usize,
        make: impl FnOnce(flume::Sender<T>) -> ShardCall,
    ) -> Result<T, String> {
        let stopped = || format!("shard {shard} stopped");
        let (reply, answer) = flume::bounded(1);
        self.inboxes[shard]
            .send_async(make(reply))
            .await
            .map_err(|_| stopped())?;
        answer.recv_async().await.map_err(|_| stopped())
    }

    /// [`Executor::ask`] of the shard that owns `partition`.
    pub async fn ask_owner<T>(
        &self,
        partition: u32,
        make: impl FnOnce(flume::Sender<T>) -> ShardCall,
    ) -> Result<T, String> {
        self.ask(self.partitioner.shard_of_partition(partition), make)
            .await
    }

    /// The partitions this node ships (asked of shard 0).
    pub async fn shipped_partitions(&self) -> Result<Vec<u32>, String> {
        self.ask(0, |reply| ShardCall::ShippedPartitions { reply })
            .await
    }

    /// Starts tasks for new links, stops removed ones (their cursors and
    /// files go too), and lets paused ones see the flag.
    async fn reconcile(self: &Rc<Self>) {
        let specs = self.table.borrow().links.clone();
        let removed: Vec<String> = self
            .links
            .borrow()
            .keys()
            .filter(|name| !specs.iter().any(|spec| &spec.name == *name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(link) = self.links.borrow_mut().remove(&name) {
                link.stop.set(true);
            }
            for inbox in &self.inboxes {
                let _ = inbox
                    .send_async(ShardCall::RemoveCursors {
                        name: ship::cursor_name(&name),
                    })
                    .await;
            }
            let directory = cursors::LinkCursors::directory(&self.config.storage.data_dir, &name);
            if let Err(error) = std::fs::remove_dir_all(&directory) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %directory.display(), %error, "xdc cursors not removed");
                }
            }
        }
        self.sync_links.store(
            specs.iter().any(|spec| spec.sync && !spec.paused),
            Ordering::Relaxed,
        );
        for spec in specs {
            let existing = self.links.borrow().get(&spec.name).cloned();
            match existing {
                Some(link) => *link.spec.borrow_mut() = spec,
                None => {
                    let link = Rc::new(Link::new(spec.clone()));
                    self.links
                        .borrow_mut()
                        .insert(spec.name.clone(), Rc::clone(&link));
                    glommio::spawn_local(ship::run_link(Rc::clone(self), link)).detach();
                }
            }
        }
    }

    /// Saves and applies a new table, then passes it to the other members.
    async fn commit(self: &Rc<Self>, table: LinkTable) -> Result<Vec<String>, String> {
        table.save(&self.config.storage.data_dir)?;
        *self.table.borrow_mut() = table.clone();
        self.reconcile().await;
        Ok(self.spread(&table).await)
    }

    /// Sends `table` to every other member; returns the members that took
    /// it (the others get it at their next pull).
    async fn spread(&self, table: &LinkTable) -> Vec<String> {
        let members = self.other_members().await;
        if members.is_empty() {
            return Vec::new();
        }
        if self.config.node.secret.is_empty() {
            tracing::warn!("xdc links are not passed to the other members: node.secret is not set; run the command on each member");
            return Vec::new();
        }
        let json = match serde_json::to_string(table) {
            Ok(json) => json,
            Err(_) => return Vec::new(),
        };
        let (sender, results) = flume::unbounded();
        for address in members {
            let (config, json, sender) = (Arc::clone(&self.config), json.clone(), sender.clone());
            std::thread::spawn(move || {
                let outcome = admin_call(&config, &address, &format!("xdc adopt {json}"));
                let _ = sender.send((address, outcome));
            });
        }
        drop(sender);
        let mut taken = Vec::new();
        let deadline = std::time::Instant::now() + SPREAD_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let next = async { results.recv_async().await.ok() };
            let expired = async {
                glommio::timer::sleep(left).await;
                None
            };
            match futures_lite::future::or(next, expired).await {
                Some((address, Ok(_))) => taken.push(address),
                Some((address, Err(error))) => {
                    tracing::warn!(%address, %error, "xdc link table not passed on; the member pulls it later")
                }
                None => break,
            }
        }
        taken
    }

    /// The other members of this datacenter's ring (as shard 0 sees it:
    /// joined members included, removed ones not).
    async fn other_members(&self) -> Vec<String> {
        self.ask(0, |reply| ShardCall::PeerAddresses { reply })
            .await
            .unwrap_or_default()
    }

    /// Adopts `table` if it is newer than ours.
    async fn adopt(self: &Rc<Self>, table: LinkTable) -> Result<bool, String> {
        if table.version <= self.table.borrow().version {
            return Ok(false);
        }
        table.save(&self.config.storage.data_dir)?;
        *self.table.borrow_mut() = table;
        self.reconcile().await;
        Ok(true)
    }

    async fn command(self: &Rc<Self>, words: &[String], rest: &str) -> Result<String, String> {
        let word = |index: usize, what: &str| {
            words
                .get(index)
                .cloned()
                .ok_or_else(|| format!("missing {what}: {}", usage()))
        };
        let verb = word(0, "command")?;
        if matches!(verb.as_str(), "table" | "adopt") && self.config.node.secret.is_empty() {
            return Err(format!(
                "xdc {verb} is refused: the link table holds link secrets, so members pass it only when node.secret is set on every member"
            ));
        }
        match verb.as_str() {
            "status" => Ok(self.status().await),
            "table" => serde_json::to_string(&*self.table.borrow()).map_err(|e| e.to_string()),
            "adopt" => {
                let table: LinkTable =
                    serde_json::from_str(rest).map_err(|e| format!("not a link table: {e}"))?;
                let adopted = self.adopt(table).await?;
                Ok(serde_json::json!({ "adopted": adopted }).to_string())
            }
            "connect" => {
                let name = word(1, "link name")?;
                let address = word(2, "remote address")?;
                let secret = word(3, "link secret")?;
                let (mut cascade, mut sync) = (false, false);
                for option in &words[4..] {
                    match option.as_str() {
                        "cascade" => cascade = true,
                        "sync" => sync = true,
                        other => return Err(format!("unknown option {other:?}: {}", usage())),
                    }
                }
                links::check_name(&name)?;
                let spec = LinkSpec {
                    name: name.clone(),
                    address,
                    secret,
                    cascade,
                    paused: false,
                    sync,
                };
                // Prove the link now so the operator hears a refusal at once.
                let open = ship::open_link(self, &spec).await?;
                let remote = open.remote.clone();
                drop(open);
                let mut table = self.table.borrow().clone();
                table.upsert(spec);
                let members = self.commit(table).await?;
                Ok(serde_json::json!({
                    "link": name,
                    "remote_datacenter": remote.datacenter,
                    "remote_cluster": remote.cluster,
                    "remote_partitions": remote.partitions,
                    "members_updated": members,
                })
                .to_string())
            }
            "fullsync" => {
                let name = word(1, "link name")?;
                let (mut both_ways, mut here_only) = (false, false);
                for option in &words[2..] {
                    match option.as_str() {
                        "both" => both_ways = true,
                        // Passed on by the member that took the command.
                        "local" => here_only = true,
                        other => return Err(format!("unknown option {other:?}: {}", usage())),
                    }
                }
                let link = self
                    .links
                    .borrow()
                    .get(&name)
                    .cloned()
                    .ok_or_else(|| format!("no xdc link named {name:?}"))?;
                if link.fullsync.borrow().running {
                    return Err(format!("a fullsync of link {name:?} is already running"));
                }
                link.fullsync.borrow_mut().running = true;
                glommio::spawn_local(fullsync::run(Rc::clone(self), link, both_ways)).detach();
                // Each member compares the vnodes it ships: start the others.
                let mut started_on = Vec::new();
                if !here_only && !self.config.node.secret.is_empty() {
                    let command = format!(
                        "xdc fullsync {name}{} local",
                        if both_ways { " both" } else { "" }
                    );
                    let (sender, results) = flume::unbounded();
                    for address in self.other_members().await {
                        let (config, command, sender) =
                            (Arc::clone(&self.config), command.clone(), sender.clone());
                        std::thread::spawn(move || {
                            let _ = sender
                                .send((address.clone(), admin_call(&config, &address, &command)));
                        });
                    }
                    drop(sender);
                    while let Ok((address, outcome)) = results.recv_async().await {
                        match outcome {
                            Ok(_) => started_on.push(address),
                            Err(error) => {
                                tracing::warn!(%address, %error, "fullsync not started on a member")
                            }
                        }
                    }
                }
                Ok(serde_json::json!({
                    "link": name,
                    "fullsync": "started",
                    "both_ways": both_ways,
                    "members_started": started_on,
                })
                .to_string())
            }
            "disconnect" | "pause" | "resume" => {
                let name = word(1, "link name")?;
                let mut table = self.table.borrow().clone();
                let found = match verb.as_str() {
                    "disconnect" => table.remove(&name),
                    "pause" => table.set_paused(&name, true),
                    _ => table.set_paused(&name, false),
                };
                if !found {
                    return Err(format!("no xdc link named {name:?}"));
                }
                let members = self.commit(table).await?;
                Ok(
                    serde_json::json!({ "link": name, "done": verb, "members_updated": members })
                        .to_string(),
                )
            }
            other => Err(format!("unknown xdc command {other:?}: {}", usage())),
        }
    }

    async fn status(&self) -> String {
        let links: Vec<Rc<Link>> = self.links.borrow().values().cloned().collect();
        let now = ship_now_ms();
        let mut shown = Vec::new();
        for link in links {
            let (mut positions, records_in_flight, bytes_in_flight) = link.in_flight();
            if positions.is_empty() {
                // Not connected since the start: the backlog is what lies
                // past the saved positions.
                let name = link.spec.borrow().name.clone();
                let saved = cursors::LinkCursors::peek(&self.config.storage.data_dir, &name)
                    .unwrap_or_default();
                positions = self
                    .shipped_partitions()
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .map(|partition| (partition, saved.position(partition)))
                    .collect();
            }
            let mut by_shard: Vec<Vec<(u32, meridian_engine::LogPosition)>> =
                vec![Vec::new(); self.inboxes.len()];
            for &(partition, position) in &positions {
                by_shard[self.partitioner.shard_of_partition(partition)]
                    .push((partition, position));
            }
            let mut bytes_behind = 0u64;
            let mut oldest: Option<u64> = None;
            for (shard, positions) in by_shard.into_iter().enumerate() {
                if positions.is_empty() {
                    continue;
                }
                let lags = self
                    .ask(shard, |reply| ShardCall::CursorLags { positions, reply })
                    .await
                    .unwrap_or_default();
                for (_, lag) in lags {
                    bytes_behind += lag.bytes_behind;
                    if let Some(hlc) = lag.oldest_unshipped_hlc {
                        oldest = Some(oldest.map_or(hlc, |o| o.min(hlc)));
                    }
                }
            }
            let oldest_ms = oldest.map(meridian_xdc::shipper::hlc_ms);
            let spec = link.spec.borrow().clone();
            let status = link.status.borrow().clone();
            shown.push(serde_json::json!({
                "name": spec.name,
                "address": spec.address,
                "cascade": spec.cascade,
                "sync": spec.sync,
                "paused": spec.paused,
                "state": status.state,
                "last_error": status.last_error,
                "remote_datacenter": status.remote_datacenter,
                "remote_partitions": status.remote_partitions,
                "connects": status.connects,
                "vnodes_shipped": positions.len(),
                "batches_sent": status.batches_sent,
                "batches_acknowledged": status.batches_acknowledged,
                "records_sent": status.records_sent,
                "bytes_sent": status.bytes_sent,
                "records_applied_remote": status.records_applied_remote,
                "records_stale_remote": status.records_stale_remote,
                "records_coalesced": status.records_coalesced,
                "rewinds": status.rewinds,
                "records_in_flight": records_in_flight,
                "bytes_in_flight": bytes_in_flight,
                "log_bytes_behind": bytes_behind,
                "oldest_unacknowledged_age_ms": oldest_ms.map(|ms| now.saturating_sub(ms)),
                "watermark_ms": oldest_ms.map_or(now, |ms| ms.min(now)),
                "needs_fullsync": status.needs_fullsync,
                "fullsync": *link.fullsync.borrow(),
            }));
        }
        serde_json::json!({
            "datacenter": self.config.node.datacenter,
            "datacenter_id": self.config.node.datacenter_id,
            "accepts_links": !self.config.xdc.secret.is_empty(),
            "table_version": self.table.borrow().version,
            "links": shown,
        })
        .to_string()
    }
}

impl Executor {
    /// Queues `record` on every synchronous link; `reply` gets `Ok` once
    /// all acknowledged it, or the first refusal.
    fn sync_ship(&self, record: meridian_xdc::XdcRecord, reply: flume::Sender<Result<(), String>>) {
        let links: Vec<Rc<Link>> = self
            .links
            .borrow()
            .values()
            .filter(|link| {
                let spec = link.spec.borrow();
                spec.sync && !spec.paused
            })
            .cloned()
            .collect();
        let mut waits = Vec::new();
        for link in links {
            match link.queue_sync(record.clone()) {
                Ok(wait) => waits.push(wait),
                Err(refusal) => {
                    let _ = reply.send(Err(refusal));
                    return;
                }
            }
        }
        glommio::spawn_local(async move {
            for wait in waits {
                let outcome = wait
                    .recv_async()
                    .await
                    .unwrap_or_else(|_| Err("the link stopped".to_string()));
                if outcome.is_err() {
                    let _ = reply.send(outcome);
                    return;
                }
            }
            let _ = reply.send(Ok(()));
        })
        .detach();
    }

    /// Per-link gauges and counters, from the same figures as `xdc status`.
    async fn metrics(&self) -> String {
        use std::fmt::Write;
        let status: serde_json::Value =
            serde_json::from_str(&self.status().await).unwrap_or_default();
        let links = status["links"].as_array().cloned().unwrap_or_default();
        type Field = fn(&serde_json::Value) -> u64;
        let fields: [(&str, &str, &str, Field); 8] = [
            ("meridian_xdc_link_up", "gauge", "1 while the link is open", |l| u64::from(l["state"] == "open")),
            ("meridian_xdc_records_sent_total", "counter", "Records shipped on the link", |l| l["records_sent"].as_u64().unwrap_or(0)),
            ("meridian_xdc_bytes_sent_total", "counter", "Batch bytes shipped on the link", |l| l["bytes_sent"].as_u64().unwrap_or(0)),
            ("meridian_xdc_records_in_flight", "gauge", "Records sent and not yet acknowledged", |l| l["records_in_flight"].as_u64().unwrap_or(0)),
            ("meridian_xdc_log_bytes_behind", "gauge", "Log bytes not yet acknowledged by the remote datacenter", |l| l["log_bytes_behind"].as_u64().unwrap_or(0)),
            ("meridian_xdc_lag_ms", "gauge", "Age of the oldest write not yet acknowledged by the remote datacenter (0 when caught up)", |l| l["oldest_unacknowledged_age_ms"].as_u64().unwrap_or(0)),
            ("meridian_xdc_watermark_ms", "gauge", "Every write accepted here before this time (Unix ms) is applied there", |l| l["watermark_ms"].as_u64().unwrap_or(0)),
            ("meridian_xdc_needs_fullsync", "gauge", "1 when the link fell past the log's retention", |l| u64::from(l["needs_fullsync"] == true)),
        ];
        let mut out = String::new();
        for (name, kind, help, field) in fields {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for link in &links {
                let label = link["name"].as_str().unwrap_or("");
                let _ = writeln!(out, "{name}{{link=\"{label}\"}} {}", field(link));
            }
        }
        out
    }
}

fn ship_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn usage() -> &'static str {
    "xdc connect NAME ADDR SECRET [cascade] [sync] | disconnect NAME | pause NAME | resume NAME | fullsync NAME [both] | status"
}

/// One ADMIN command to another member, over a client connection.
fn admin_call(config: &Config, address: &str, command: &str) -> Result<String, String> {
    use meridian_net::client::blocking::Client;
    use meridian_net::client::ClientConfig;
    let mut client_config = ClientConfig::new(address.to_string());
    client_config.cluster = config.node.cluster.clone();
    client_config.credentials = (!config.node.secret.is_empty())
        .then(|| bytes::Bytes::from(config.node.secret.clone().into_bytes()));
    client_config.connect_timeout = Duration::from_secs(2);
    client_config.request_timeout = Duration::from_secs(5);
    let mut client = Client::connect(client_config).map_err(|e| e.to_string())?;
    client.admin(command).map_err(|e| e.to_string())
}

/// Runs the XDC executor until shutdown.
pub async fn run(
    config: Arc<Config>,
    inboxes: Vec<flume::Sender<ShardCall>>,
    control: flume::Receiver<Control>,
    shutdown: Arc<AtomicBool>,
    sync_links: Arc<AtomicBool>,
) {
    let table = match LinkTable::load(&config.storage.data_dir) {
        Ok(table) => table,
        Err(error) => {
            tracing::error!(%error, "xdc link table unreadable: no links run until it is fixed or replaced by `xdc connect`");
            LinkTable::default()
        }
    };
    let executor = Rc::new(Executor {
        partitioner: Partitioner::new(config.storage.partitions, inboxes.len()),
        config,
        inboxes,
        shutdown,
        sync_links,
        table: RefCell::new(table),
        links: RefCell::default(),
    });
    executor.reconcile().await;
    let puller = glommio::spawn_local(pull_tables(Rc::clone(&executor)));
    loop {
        let next = async { Some(control.recv_async().await) };
        let tick = async {
            glommio::timer::sleep(Duration::from_millis(50)).await;
            None
        };
        match futures_lite::future::or(next, tick).await {
            Some(Ok(Control::Metrics { reply })) => {
                let executor = Rc::clone(&executor);
                glommio::spawn_local(async move {
                    let _ = reply.send(executor.metrics().await);
                })
                .detach();
            }
            Some(Ok(Control::SyncShip { record, reply })) => executor.sync_ship(record, reply),
            Some(Ok(Control::Admin { words, rest, reply })) => {
                let executor = Rc::clone(&executor);
                glommio::spawn_local(async move {
                    let _ = reply.send(executor.command(&words, &rest).await);
                })
                .detach();
            }
            Some(Err(_)) => break,
            None => {}
        }
        if executor.stopping() {
            break;
        }
    }
    for link in executor.links.borrow().values() {
        link.stop.set(true);
    }
    drop(puller);
    // Let link tasks save their cursors.
    glommio::timer::sleep(Duration::from_millis(100)).await;
}

/// Every few seconds, asks the other members for their link tables and
/// adopts a newer one (a member that was down when a command ran).
async fn pull_tables(executor: Rc<Executor>) {
    if executor.config.node.secret.is_empty() {
        return;
    }
    loop {
        glommio::timer::sleep(TABLE_PULL_INTERVAL).await;
        let members = executor.other_members().await;
        if members.is_empty() {
            return;
        }
        let (sender, tables) = flume::unbounded();
        let config = Arc::clone(&executor.config);
        std::thread::spawn(move || {
            for address in members {
                if let Ok(json) = admin_call(&config, &address, "xdc table") {
                    let _ = sender.send(json);
                }
            }
        });
        while let Ok(json) = tables.recv_async().await {
            if let Ok(table) = serde_json::from_str::<LinkTable>(&json) {
                if let Err(error) = executor.adopt(table).await {
                    tracing::warn!(%error, "xdc link table not adopted");
                }
            }
        }
    }
}
