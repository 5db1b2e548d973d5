//! The inventory: hosts, groups and variables, as one YAML file.
//!
//! ```yaml
//! vars: {base_admin_email: root@club.example} # every host
//! ssh: {known_hosts: ~/.ssh/known_hosts}       # optional
//! groups:
//!   mail: {hosts: [cupboard], roles: [mail], vars: {mail_domain: club.example}}
//! hosts:
//!   cupboard: {address: 192.0.2.10, roles: [base], vars: {base_hostname: cupboard}}
//!   inside:   {via: cupboard, roles: [base]}   # reached through a jump host
//! ```
//! A host without `address` is reached by its name, which may be an `~/.ssh/config`
//! alias. Variables resolve in this order, later winning: role defaults, global `vars`,
//! group `vars` (in file order), host `vars` — see [`vars`].

pub mod vars;

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{Diagnostic, InvalidInput};
use crate::source::SourceFile;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    #[serde(default)]
    pub vars: Map<String, Value>,
    #[serde(default)]
    pub ssh: SshSettings,
    #[serde(default)]
    pub groups: IndexMap<String, GroupEntry>,
    pub hosts: IndexMap<String, HostEntry>,
}

/// SSH settings for every host of the inventory.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSettings {
    /// known_hosts files to verify host keys against; new keys are learned into the
    /// first. Default: ~/.ssh/known_hosts.
    #[serde(default, deserialize_with = "crate::resource::one_or_many")]
    pub known_hosts: Vec<String>,
    /// The identity file for hosts that do not name one.
    #[serde(default)]
    pub identity: Option<String>,
    /// The login for hosts that do not name one (default: from ~/.ssh/config, else root).
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub vars: Map<String, Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub identity: Option<String>,
    /// A jump host: another host of this inventory, or `user@host:port`.
    #[serde(default)]
    pub via: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub vars: Map<String, Value>,
}

/// A loaded inventory, with its source for positions.
#[derive(Debug, Clone)]
pub struct Inventory {
    pub file: InventoryFile,
    pub source: SourceFile,
}

/// A host as the controller needs it: how to reach it, its roles, its variables.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Roles in the order they apply: the host's groups' roles first, then its own.
    pub roles: Vec<String>,
    /// The groups the host belongs to, in file order.
    pub groups: Vec<String>,
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Inventory, InvalidInput> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Diagnostic::new(path, format!("cannot read the inventory: {e}"))
                .help("name an inventory file with -i FILE")
        })?;
        let source = SourceFile::new(path, text);
        source.check_structure()?;
        let file: InventoryFile =
            serde_yaml::from_str(&source.text).map_err(|e| Diagnostic::from_yaml(&source, &e))?;
        let inventory = Inventory { file, source };
        inventory.check()?;
        Ok(inventory)
    }

    /// The folder relative paths in the inventory are relative to.
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// A path from the inventory: `~/` is the admin's home, relative paths start at the
    /// inventory's folder.
    pub fn resolve_path(&self, path: &str) -> PathBuf {
        if let Some(rest) = path.strip_prefix("~/") {
            return dirs::home_dir().unwrap_or_default().join(rest);
        }
        let path = Path::new(path);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir().join(path)
        }
    }

    fn check(&self) -> Result<(), InvalidInput> {
        let mut problems = InvalidInput::default();
        let source = &self.source;
        if self.file.hosts.is_empty() {
            problems.push(Diagnostic::at_key(
                source,
                "hosts",
                "the inventory has no hosts",
            ));
        }
        for (group, entry) in &self.file.groups {
            if self.file.hosts.contains_key(group) {
                problems.push(Diagnostic::at_key(
                    source,
                    &format!("groups.{group}"),
                    format!("`{group}` is both a group and a host; rename one"),
                ));
            }
            check_role_names(
                source,
                &format!("groups.{group}"),
                &entry.roles,
                &mut problems,
            );
            for (index, member) in entry.hosts.iter().enumerate() {
                if !self.file.hosts.contains_key(member) {
                    problems.push(
                        Diagnostic::at(source, &format!("groups.{group}.hosts[{index}]"), format!("group `{group}` lists `{member}`, which is not a host of this inventory"))
                            .help("add it under `hosts:`, or remove it from the group"),
                    );
                }
            }
        }
        for (name, host) in &self.file.hosts {
            if let Err(message) = check_host_name(name) {
                problems.push(Diagnostic::at_key(
                    source,
                    &format!("hosts.{name}"),
                    message,
                ));
            }
            check_role_names(source, &format!("hosts.{name}"), &host.roles, &mut problems);
            if host.port == Some(0) {
                problems.push(
                    Diagnostic::at(
                        source,
                        &format!("hosts.{name}.port"),
                        "port 0 is not a port one can connect to",
                    )
                    .help("give the host's SSH port (1-65535), or leave `port` out for 22"),
                );
            }
            if let Some(via) = &host.via {
                if via == name {
                    problems.push(Diagnostic::at(
                        source,
                        &format!("hosts.{name}.via"),
                        "a host cannot be its own jump host",
                    ));
                } else if !self.file.hosts.contains_key(via)
                    && via.rsplit_once(':').is_some_and(|(_, port)| port == "0")
                {
                    problems.push(
                        Diagnostic::at(
                            source,
                            &format!("hosts.{name}.via"),
                            "port 0 is not a port one can connect to",
                        )
                        .help("write the jump host as user@host:port with a port of 1-65535, or leave the port out for 22"),
                    );
                } else if !self.file.hosts.contains_key(via) && !via.contains(['@', '.', ':']) {
                    problems.push(
                        Diagnostic::at(
                            source,
                            &format!("hosts.{name}.via"),
                            format!("jump host `{via}` is not a host of this inventory"),
                        )
                        .help("name a host of the inventory, or write it as user@host:port"),
                    );
                }
            }
            if self.jump_chain(name).is_none() {
                problems.push(Diagnostic::at(
                    source,
                    &format!("hosts.{name}.via"),
                    "the `via` jump hosts form a loop",
                ));
            }
        }
        problems.into_result()
    }

    /// The chain of inventory jump hosts of `name`, or None on a loop.
    fn jump_chain(&self, name: &str) -> Option<Vec<String>> {
        let mut chain = Vec::new();
        let mut current = self.file.hosts.get(name)?.via.clone();
        while let Some(via) = current {
            if via == name || chain.contains(&via) {
                return None;
            }
            current = self.file.hosts.get(&via).and_then(|h| h.via.clone());
            chain.push(via);
        }
        Some(chain)
    }

    /// The hosts named by `targets` (host or group names); all hosts when empty.
    pub fn select(&self, targets: &[String]) -> Result<Vec<Host>, InvalidInput> {
        let mut names: Vec<&str> = Vec::new();
        if targets.is_empty() {
            names.extend(self.file.hosts.keys().map(String::as_str));
        }
        let mut problems = InvalidInput::default();
        for target in targets {
            if self.file.hosts.contains_key(target) {
                names.push(target);
            } else if let Some(group) = self.file.groups.get(target) {
                names.extend(group.hosts.iter().map(String::as_str));
            } else {
                let known: Vec<&str> = self
                    .file
                    .hosts
                    .keys()
                    .chain(self.file.groups.keys())
                    .map(String::as_str)
                    .collect();
                problems.push(
                    Diagnostic::new(
                        &self.source.path,
                        format!("`{target}` is neither a host nor a group of this inventory"),
                    )
                    .help(format!("hosts and groups: {}", known.join(", "))),
                );
            }
        }
        problems.into_result()?;
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(*n));
        Ok(names.into_iter().map(|name| self.host(name)).collect())
    }

    fn host(&self, name: &str) -> Host {
        let groups: Vec<String> = self
            .file
            .groups
            .iter()
            .filter(|(_, g)| g.hosts.iter().any(|h| h == name))
            .map(|(n, _)| n.clone())
            .collect();
        let mut roles: Vec<String> = Vec::new();
        for group in &groups {
            roles.extend(self.file.groups[group].roles.iter().cloned());
        }
        roles.extend(self.file.hosts[name].roles.iter().cloned());
        let mut seen = std::collections::BTreeSet::new();
        roles.retain(|r| seen.insert(r.clone()));
        Host {
            name: name.to_string(),
            roles,
            groups,
        }
    }

    pub fn entry(&self, host: &str) -> &HostEntry {
        &self.file.hosts[host]
    }
}

/// Role names become file names under roles/: `../web` must not reach outside it.
fn check_role_names(source: &SourceFile, at: &str, roles: &[String], problems: &mut InvalidInput) {
    for (index, role) in roles.iter().enumerate() {
        if let Err(message) = crate::role::check_role_name(role) {
            problems.push(
                Diagnostic::at(source, &format!("{at}.roles[{index}]"), message)
                    .help("name a file of the roles folder, without its `.yml`"),
            );
        }
    }
}

fn check_host_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a host name: letters, digits, `.`, `_` and `-`"
        ))
    }
}
