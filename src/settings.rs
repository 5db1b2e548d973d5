//! The arguments of a run, resolved once into what it uses: the inventory and site
//! loaded, the operator named, the SSH options (host keys, timeouts) settled. The
//! command line as typed is [`crate::cli`]; everything that picks a default or reads the
//! environment for a run that contacts hosts is here, and nowhere else.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use crate::cli::Common;
use crate::error::{Diagnostic, InvalidInput};
use crate::inventory::Inventory;
use crate::report::Format;
use crate::role::Site;
use crate::transport::ssh::SshOptions;

/// Connecting and the SSH handshake, per hop (README: "15 s per hop").
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What a run that contacts hosts uses, resolved from [`Common`].
pub struct Settings {
    pub inventory: Inventory,
    pub site: Site,
    /// `user@machine`, recorded in the host's lock and commits.
    pub operator: String,
    /// Run in-process on this machine instead of over SSH.
    pub local: bool,
    pub ssh: SshOptions,
    pub format: Format,
}

impl Settings {
    /// Loads the inventory (exit 3 on a problem, before any host is contacted) and
    /// settles every default.
    pub fn resolve(common: &Common) -> Result<Settings> {
        let inventory = Inventory::load(&common.inventory)?;
        let site = Site::new(&site_root(common.site.as_deref(), &inventory));
        let ssh = SshOptions {
            known_hosts: known_hosts(&common.known_hosts, &inventory),
            accept_new_host_keys: common.accept_new_host_keys,
            ssh_config: dirs::home_dir()
                .map(|h| h.join(".ssh/config"))
                .filter(|p| p.exists()),
            connect_timeout: CONNECT_TIMEOUT,
            agent_socket: None,
            host_timeout: Duration::from_secs(common.host_timeout),
        };
        Ok(Settings {
            inventory,
            site,
            operator: operator(),
            local: common.local,
            ssh,
            format: common.format,
        })
    }

    /// A problem with the command line, reported against the inventory (exit 3).
    pub fn invalid(&self, message: impl Into<String>, help: impl Into<String>) -> anyhow::Error {
        InvalidInput::from(Diagnostic::new(&self.inventory.source.path, message).help(help)).into()
    }
}

/// `--known-hosts` when given, else the inventory's, else ~/.ssh/known_hosts.
fn known_hosts(given: &[PathBuf], inventory: &Inventory) -> Vec<PathBuf> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let from_inventory: Vec<PathBuf> = inventory
        .file
        .ssh
        .known_hosts
        .iter()
        .map(|p| inventory.resolve_path(p))
        .collect();
    if !from_inventory.is_empty() {
        return from_inventory;
    }
    dirs::home_dir()
        .map(|h| vec![h.join(".ssh/known_hosts")])
        .unwrap_or_default()
}

/// The folder with roles/ and templates/: given, or the inventory folder's parent (a
/// site repository keeps inventories in inventory/), or the inventory's folder, or here.
fn site_root(given: Option<&Path>, inventory: &Inventory) -> PathBuf {
    if let Some(given) = given {
        return given.to_path_buf();
    }
    let folder = inventory.base_dir();
    let candidates = [folder.parent().map(Path::to_path_buf), Some(folder.clone())];
    candidates
        .into_iter()
        .flatten()
        .find(|c| c.join("roles").is_dir())
        .unwrap_or_else(|| PathBuf::from("."))
}

fn operator() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "root".into());
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{host}")
}
