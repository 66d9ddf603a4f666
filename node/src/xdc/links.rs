//! The XDC links this datacenter ships to, as operators made them with
//! `meridian cli xdc connect`: a small versioned table kept in
//! `<data_dir>/xdc/links.json`.
//!
//! Every node of the datacenter holds the table: the node that takes a
//! command applies it, then passes the new table to the other members
//! (`xdc adopt`); a node adopts a table only if its version is higher, so
//! copies converge whatever order they arrive in.
//!
//! Invariants:
//! - the file is replaced atomically (write, fsync, rename, fsync the
//!   directory), so a crash leaves the old table or the new one;
//! - link names are unique and made of `[A-Za-z0-9_-]` (they name
//!   directories and engine cursors);
//! - `version` only grows.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One link to a remote datacenter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    /// The operator's name for the link (usually the remote datacenter's).
    pub name: String,
    /// Nodes of the remote datacenter, `HOST:PORT[,HOST:PORT…]`: the link
    /// opens to the first that answers.
    pub address: String,
    /// The remote datacenter's `xdc.secret`, proven at every connection.
    pub secret: String,
    /// Ship records written in third datacenters too (chains, rings).
    pub cascade: bool,
    /// Shipping stopped by `xdc pause` (cursors kept: `xdc resume` goes on
    /// where it stopped).
    pub paused: bool,
}

/// The table of links.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTable {
    /// Grows with every change (milliseconds since the Unix epoch, or one
    /// more than the previous version if the clock went back).
    pub version: u64,
    pub links: Vec<LinkSpec>,
}

/// Why a link name is refused, if it is.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("link name {name:?} must be 1 to 64 characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!(
            "link name {name:?} may hold only letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

impl LinkTable {
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("xdc").join("links.json")
    }

    /// The table on disk, or an empty one if there is none yet.
    pub fn load(data_dir: &Path) -> Result<LinkTable, String> {
        let path = LinkTable::path(data_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a link table: {e}", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(LinkTable::default()),
            Err(error) => Err(format!("{}: {error}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), String> {
        let path = LinkTable::path(data_dir);
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory)
                .map_err(|e| format!("{}: {e}", directory.display()))?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        meridian_engine::replace_file(&path, &bytes).map_err(|e| e.to_string())
    }

    pub fn get(&self, name: &str) -> Option<&LinkSpec> {
        self.links.iter().find(|link| link.name == name)
    }

    /// The next version: now, or one more than the current if the clock
    /// is behind it.
    pub fn next_version(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        now.max(self.version + 1)
    }

    /// Adds or replaces a link.
    pub fn upsert(&mut self, link: LinkSpec) {
        self.version = self.next_version();
        match self.links.iter_mut().find(|l| l.name == link.name) {
            Some(existing) => *existing = link,
            None => self.links.push(link),
        }
    }

    /// Removes a link; false if there was none of that name.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.links.len();
        self.links.retain(|link| link.name != name);
        if self.links.len() == before {
            return false;
        }
        self.version = self.next_version();
        true
    }

    /// Pauses or resumes a link; false if there is none of that name.
    pub fn set_paused(&mut self, name: &str, paused: bool) -> bool {
        let version = self.next_version();
        match self.links.iter_mut().find(|link| link.name == name) {
            Some(link) => {
                link.paused = paused;
                self.version = version;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str) -> LinkSpec {
        LinkSpec {
            name: name.to_string(),
            address: "127.0.0.1:7411".to_string(),
            secret: "s".to_string(),
            cascade: false,
            paused: false,
        }
    }

    #[test]
    fn a_table_survives_a_save_and_load_and_versions_grow() {
        let directory = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            LinkTable::load(directory.path()).expect("empty"),
            LinkTable::default()
        );
        let mut table = LinkTable::default();
        table.upsert(link("west"));
        let first = table.version;
        assert!(table.set_paused("west", true));
        assert!(table.version > first);
        assert!(!table.set_paused("east", true));
        table.save(directory.path()).expect("saved");
        assert_eq!(LinkTable::load(directory.path()).expect("loaded"), table);
        assert!(table.remove("west"));
        assert!(!table.remove("west"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("dc-2_b").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("../etc").is_err());
        assert!(check_name("a b").is_err());
    }
}
