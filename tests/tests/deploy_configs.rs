//! Goal: the example deployment in `deploy/` stays a configuration the
//! server accepts, and stays two datacenters of three nodes that can be
//! linked.
//!
//! Method: parse every `deploy/**/*.toml` with the server's own
//! `Config::from_toml` (unknown fields refused, values validated), then
//! check what the files must agree on: within a datacenter one name, id,
//! cluster, ring size, member list and `xdc.secret`, distinct node ids, each
//! node listening on its own member address; between datacenters distinct
//! names and ids (an XDC link between equal ones is refused).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meridian_node::config::Config;

fn toml_files(directory: &Path, found: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(directory).unwrap_or_else(|e| panic!("{}: {e}", directory.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            toml_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "toml") {
            found.push(path);
        }
    }
}

fn deploy_configs() -> Vec<(PathBuf, Config)> {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let mut paths = Vec::new();
    toml_files(&deploy, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let config = Config::from_toml(&text)
                .unwrap_or_else(|e| panic!("{} is refused: {e}", path.display()));
            (path, config)
        })
        .collect()
}

#[test]
fn deploy_configs_are_all_accepted_by_the_server() {
    let configs = deploy_configs();
    assert_eq!(
        configs.len(),
        6,
        "deploy/ should hold two datacenters of three nodes: {:?}",
        configs.iter().map(|(path, _)| path).collect::<Vec<_>>()
    );
}

#[test]
fn deploy_configs_make_two_consistent_distinct_datacenters() {
    let mut by_datacenter: BTreeMap<String, Vec<(PathBuf, Config)>> = BTreeMap::new();
    for (path, config) in deploy_configs() {
        by_datacenter
            .entry(config.node.datacenter.clone())
            .or_default()
            .push((path, config));
    }
    assert_eq!(by_datacenter.len(), 2, "two datacenters");
    let mut datacenter_ids = BTreeSet::new();
    for (datacenter, nodes) in &by_datacenter {
        let (first_path, first) = &nodes[0];
        assert_eq!(nodes.len(), 3, "{datacenter}: three nodes");
        assert!(
            datacenter_ids.insert(first.node.datacenter_id),
            "{datacenter}: datacenter_id {} is used by another datacenter",
            first.node.datacenter_id
        );
        let members = first.cluster.parsed_members().expect("members parse");
        assert_eq!(members.len(), 3, "{}: three members", first_path.display());
        let mut node_ids = BTreeSet::new();
        for (path, config) in nodes {
            let shown = path.display();
            assert_eq!(
                config.node.datacenter_id, first.node.datacenter_id,
                "{shown}"
            );
            assert_eq!(config.node.cluster, first.node.cluster, "{shown}");
            assert_eq!(config.node.secret, first.node.secret, "{shown}");
            assert_eq!(
                config.storage.partitions, first.storage.partitions,
                "{shown}"
            );
            assert_eq!(config.cluster.members, first.cluster.members, "{shown}");
            assert_eq!(
                config.storage.data_dir,
                Path::new("/var/lib/meridian"),
                "{shown}"
            );
            assert!(
                !config.xdc.secret.is_empty() && !config.xdc.secret.contains(char::is_whitespace),
                "{shown}: xdc.secret must be set (and usable as --link-secret)"
            );
            assert_eq!(config.xdc.secret, first.xdc.secret, "{shown}");
            assert!(
                node_ids.insert(config.node.node_id),
                "{shown}: node_id repeated"
            );
            let own = members
                .iter()
                .find(|member| member.id == config.node.node_id)
                .unwrap_or_else(|| panic!("{shown}: not in its own member list"));
            assert_eq!(own.address, config.node.listen.to_string(), "{shown}");
            let metrics: std::net::SocketAddr =
                config.node.metrics_listen.parse().expect("metrics address");
            assert_eq!(metrics.ip(), config.node.listen.ip(), "{shown}");
        }
    }
    let secrets: BTreeSet<&str> = by_datacenter
        .values()
        .map(|nodes| nodes[0].1.xdc.secret.as_str())
        .collect();
    assert_eq!(secrets.len(), 2, "each datacenter has its own xdc.secret");
}
