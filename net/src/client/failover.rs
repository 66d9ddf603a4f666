//! Which datacenter a client talks to: the runtime-free failover plan that
//! both clients share.
//!
//! A client is given datacenters in preference order (the first is its
//! local one), each with the addresses of one or more of its nodes. The
//! blocking and the async client move bytes differently but must agree on
//! where to connect, so the decisions live here and the clients only carry
//! them out: [`Failover::connect_order`] says which addresses one connect
//! round tries, [`Failover::connected`] records where a connection landed,
//! and [`Failover::take_failback`] says when to try the preferred
//! datacenters again. Time is passed in by the caller (`now`), so a test
//! drives the clock and no timer or thread is needed.
//!
//! Why lazy failback: a probe of the preferred datacenter is only worth its
//! cost (a connect, maybe a connect timeout) when the client is used, so
//! the blocking client checks before a request, and needs no thread.
//!
//! Invariants:
//! - There is at least one datacenter, each with at least one address, and
//!   names are unique and non-empty ([`Failover::new`] refuses the rest).
//! - `current` is always a valid index; a failback is scheduled exactly when
//!   `current` is not the preferred datacenter (index 0).
//! - A connect round tries every address once: the current datacenter's
//!   first, then the others in preference order.
//! - A failback probe offers only datacenters preferred over the current
//!   one, and at most one probe is handed out per `failback_interval`.

use std::fmt;
use std::time::{Duration, Instant};

use super::core::ClientConfig;
use super::ClientError;

/// One datacenter of a client's configuration: a name and its nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datacenter {
    /// The datacenter's name, as the client reports it (`current_datacenter`).
    pub name: String,
    /// `host:port` of its nodes, tried in order.
    pub addresses: Vec<String>,
}

impl Datacenter {
    /// A datacenter named `name` with nodes at `addresses`.
    pub fn new<A: Into<String>>(
        name: impl Into<String>,
        addresses: impl IntoIterator<Item = A>,
    ) -> Datacenter {
        Datacenter {
            name: name.into(),
            addresses: addresses.into_iter().map(Into::into).collect(),
        }
    }
}

/// One address to try: its datacenter (an index in preference order) and
/// the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the datacenter in preference order (0 = preferred).
    pub datacenter: usize,
    /// `host:port`.
    pub address: String,
}

/// Why one address did not take a connection, for [`ClientError::Connect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectFailure {
    /// The datacenter's name.
    pub datacenter: String,
    /// The address tried.
    pub address: String,
    /// What went wrong, as text.
    pub reason: String,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.datacenter, self.address, self.reason)
    }
}

/// Formats failures as `dc addr: reason; dc addr: reason`.
pub(crate) fn describe_failures(failures: &[ConnectFailure]) -> String {
    let parts: Vec<String> = failures.iter().map(ToString::to_string).collect();
    parts.join("; ")
}

/// The datacenters, the current one, and when to try the preferred again.
#[derive(Debug, Clone)]
pub struct Failover {
    datacenters: Vec<Datacenter>,
    current: usize,
    failback_interval: Duration,
    /// When the next failback probe is due; `Some` exactly when `current != 0`.
    failback_at: Option<Instant>,
}

impl Failover {
    /// The plan of `config`: its `datacenters`, or, when that is empty, its
    /// `addresses` as one datacenter named after `config.datacenter`.
    pub fn new(config: &ClientConfig) -> Result<Failover, ClientError> {
        let datacenters = if config.datacenters.is_empty() {
            vec![Datacenter::new(
                config.datacenter.clone(),
                config.addresses.clone(),
            )]
        } else {
            config.datacenters.clone()
        };
        validate(&datacenters)?;
        Ok(Failover {
            datacenters,
            current: 0,
            failback_interval: config.failback_interval,
            failback_at: None,
        })
    }

    /// The datacenters in preference order.
    pub fn datacenters(&self) -> &[Datacenter] {
        &self.datacenters
    }

    /// Index of the current datacenter (0 = preferred).
    pub fn current(&self) -> usize {
        self.current
    }

    /// The current datacenter's name.
    pub fn current_name(&self) -> &str {
        &self.datacenters[self.current].name
    }

    /// The name of datacenter `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.datacenters[index].name
    }

    /// Every address once, for one connect round: the current datacenter's
    /// first, then the other datacenters' in preference order.
    pub fn connect_order(&self) -> Vec<Target> {
        let others = (0..self.datacenters.len()).filter(|&index| index != self.current);
        let order: Vec<Target> = std::iter::once(self.current)
            .chain(others)
            .flat_map(|index| self.targets(index))
            .collect();
        debug_assert_eq!(
            order.len(),
            self.datacenters
                .iter()
                .map(|datacenter| datacenter.addresses.len())
                .sum::<usize>()
        );
        order
    }

    fn targets(&self, index: usize) -> impl Iterator<Item = Target> + '_ {
        self.datacenters[index]
            .addresses
            .iter()
            .map(move |address| Target {
                datacenter: index,
                address: address.clone(),
            })
    }

    /// Records a new connection to datacenter `index` at `now`: it becomes
    /// current, and a failback is scheduled unless it is the preferred one.
    pub fn connected(&mut self, index: usize, now: Instant) {
        assert!(
            index < self.datacenters.len(),
            "datacenter {index} of {}",
            self.datacenters.len()
        );
        if index == 0 {
            self.failback_at = None;
        } else if self.current != index || self.failback_at.is_none() {
            self.failback_at = Some(now + self.failback_interval);
        }
        self.current = index;
        debug_assert_eq!(self.failback_at.is_some(), self.current != 0);
    }

    /// Whether a failback probe is due at `now`.
    pub fn failback_due(&self, now: Instant) -> bool {
        self.failback_at.is_some_and(|at| now >= at)
    }

    /// If a failback probe is due at `now`: the addresses of every
    /// datacenter preferred over the current one, in preference order, and
    /// the next probe is scheduled one interval later. `None` otherwise.
    pub fn take_failback(&mut self, now: Instant) -> Option<Vec<Target>> {
        if !self.failback_due(now) {
            return None;
        }
        assert!(
            self.current > 0,
            "a failback is scheduled only off the preferred datacenter"
        );
        self.failback_at = Some(now + self.failback_interval);
        Some(
            (0..self.current)
                .flat_map(|index| self.targets(index))
                .collect(),
        )
    }
}

fn validate(datacenters: &[Datacenter]) -> Result<(), ClientError> {
    let refuse = |reason: String| Err(ClientError::Config { reason });
    if datacenters.is_empty() {
        return refuse("no datacenter is configured".to_owned());
    }
    for (index, datacenter) in datacenters.iter().enumerate() {
        if datacenter.name.is_empty() {
            return refuse(format!("datacenter {index} has an empty name"));
        }
        if datacenter.addresses.is_empty() {
            return refuse(format!("datacenter {:?} has no address", datacenter.name));
        }
        if datacenters[..index]
            .iter()
            .any(|earlier| earlier.name == datacenter.name)
        {
            return refuse(format!("datacenter {:?} is listed twice", datacenter.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> ClientConfig {
        ClientConfig {
            failback_interval: Duration::from_secs(5),
            ..ClientConfig::with_datacenters([
                ("east", vec!["e1:1", "e2:1"]),
                ("west", vec!["w1:1"]),
                ("north", vec!["n1:1"]),
            ])
        }
    }

    fn addresses(targets: &[Target]) -> Vec<&str> {
        targets
            .iter()
            .map(|target| target.address.as_str())
            .collect()
    }

    #[test]
    fn a_single_address_config_is_one_datacenter() {
        let failover = Failover::new(&ClientConfig::new("h:1")).expect("valid");
        assert_eq!(failover.datacenters().len(), 1);
        assert_eq!(failover.current_name(), "dc1");
        assert_eq!(addresses(&failover.connect_order()), ["h:1"]);
    }

    #[test]
    fn connect_order_starts_at_the_current_datacenter() {
        let mut failover = Failover::new(&three()).expect("valid");
        assert_eq!(failover.current_name(), "east");
        assert_eq!(
            addresses(&failover.connect_order()),
            ["e1:1", "e2:1", "w1:1", "n1:1"]
        );
        failover.connected(2, Instant::now());
        assert_eq!(failover.current_name(), "north");
        assert_eq!(
            addresses(&failover.connect_order()),
            ["n1:1", "e1:1", "e2:1", "w1:1"]
        );
        let order = failover.connect_order();
        assert_eq!(order[0].datacenter, 2);
        assert_eq!(order[1].datacenter, 0);
    }

    #[test]
    fn failback_is_offered_once_per_interval_and_only_to_preferred_datacenters() {
        let start = Instant::now();
        let interval = Duration::from_secs(5);
        let mut failover = Failover::new(&three()).expect("valid");
        assert!(failover.take_failback(start + interval * 10).is_none());

        failover.connected(2, start);
        assert!(failover.take_failback(start).is_none());
        assert!(failover.take_failback(start + interval / 2).is_none());
        let probe = failover.take_failback(start + interval).expect("due");
        assert_eq!(addresses(&probe), ["e1:1", "e2:1", "w1:1"]);
        assert!(failover.take_failback(start + interval).is_none());
        assert!(failover.take_failback(start + interval * 2).is_some());

        // A reconnect to the same fallback keeps the schedule; the preferred
        // datacenter ends it.
        failover.connected(1, start + interval * 2);
        let probe = failover.take_failback(start + interval * 3).expect("due");
        assert_eq!(addresses(&probe), ["e1:1", "e2:1"]);
        failover.connected(1, start + interval * 3);
        assert!(!failover.failback_due(start + interval * 3));
        failover.connected(0, start + interval * 3);
        assert!(failover.take_failback(start + interval * 100).is_none());
    }

    #[test]
    fn bad_plans_are_refused() {
        let cases = [
            (
                ClientConfig::with_datacenters([("a", Vec::<&str>::new())]),
                "no address",
            ),
            (
                ClientConfig::with_datacenters([("", vec!["h:1"])]),
                "empty name",
            ),
            (
                ClientConfig::with_datacenters([("a", vec!["h:1"]), ("a", vec!["h:2"])]),
                "twice",
            ),
            (
                ClientConfig {
                    addresses: Vec::new(),
                    ..ClientConfig::default()
                },
                "no address",
            ),
        ];
        for (config, expected) in cases {
            let error = Failover::new(&config).expect_err("refused");
            assert!(matches!(error, ClientError::Config { .. }), "{error}");
            assert!(error.to_string().contains(expected), "{error}");
        }
    }

    #[test]
    fn connect_errors_name_every_address_and_reason() {
        let error = ClientError::Connect {
            attempts: 2,
            failures: vec![
                ConnectFailure {
                    datacenter: "east".into(),
                    address: "e1:1".into(),
                    reason: "connection refused".into(),
                },
                ConnectFailure {
                    datacenter: "west".into(),
                    address: "w1:1".into(),
                    reason: "timed out".into(),
                },
            ],
        };
        let text = error.to_string();
        assert!(text.contains("east e1:1: connection refused"), "{text}");
        assert!(text.contains("west w1:1: timed out"), "{text}");
        assert!(text.contains("2 rounds"), "{text}");
    }
}
