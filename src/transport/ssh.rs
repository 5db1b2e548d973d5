//! Placeholder until the russh transport lands.
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct SshTarget {
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub identity: Option<PathBuf>,
    pub via: Option<Box<SshTarget>>,
}

#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: Vec<PathBuf>,
    pub accept_new_host_keys: bool,
    pub ssh_config: Option<PathBuf>,
    pub connect_timeout: Duration,
}

pub struct Connection;
pub struct RemoteProcess {
    pub stdin: tokio::io::Sink,
    pub stdout: tokio::io::Empty,
    pub exit: Exit,
}
pub struct Exit;
impl Exit {
    pub async fn wait(self) -> (Option<u32>, String) {
        (None, String::new())
    }
}
impl Connection {
    pub async fn connect(_: &SshTarget, _: &SshOptions) -> anyhow::Result<Connection> {
        anyhow::bail!("not yet")
    }
    pub fn user(&self) -> &str {
        "root"
    }
    pub async fn exec(&self, _: &str) -> anyhow::Result<RemoteProcess> {
        anyhow::bail!("not yet")
    }
}
