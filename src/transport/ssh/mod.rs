//! SSH transport for the controller: it owns everything between an inventory
//! entry and an authenticated SSH session on the host. That is resolving the
//! target through the user's `~/.ssh/config` (the subset placard honours:
//! `Host`, `HostName`, `User`, `Port`, `IdentityFile`, `ProxyJump`, `Include`),
//! reaching it directly or through a chain of jump hosts, verifying host keys
//! against OpenSSH `known_hosts` files (refusing changed keys and, unless the
//! operator opted in, unknown ones), authenticating with an identity file or
//! ssh-agent, and running remote commands whose stdin, stdout, stderr and exit
//! status are exposed to the caller. It does not know what the agent protocol
//! on top of those streams is.

use std::borrow::Cow;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use russh::client;
use russh::keys::agent::client::AgentClient;
use russh::keys::{Algorithm, HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Preferred};
use tokio::io::{
    AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, DuplexStream, ReadBuf,
};
use tokio::net::UnixStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Longest jump-host chain we follow; anything deeper is almost certainly a
/// `ProxyJump` loop in the ssh config rather than a real network layout.
const MAX_JUMP_DEPTH: usize = 8;
/// Bounded so a caller that never reads stdout applies backpressure to the
/// remote command instead of growing memory without limit.
const STDOUT_BUFFER: usize = 256 * 1024;
/// stderr is only kept for error reports; a chatty command must not be able
/// to exhaust the controller's memory.
const STDERR_LIMIT: usize = 1024 * 1024;
const INCLUDE_DEPTH: usize = 16;
/// Generous: a first apply that installs packages over a slow line takes minutes, not
/// an hour.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(3600);

mod auth;
mod config;
mod jump;
mod known_hosts;
mod process;

use auth::*;
pub use config::*;
pub use known_hosts::*;
pub use process::*;

/// Where and how to reach a host, as resolved by the controller from the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshTarget {
    /// Inventory name, used in messages.
    pub name: String,
    /// Hostname, IP, or an `~/.ssh/config` Host alias.
    pub address: String,
    /// None: from ssh config, else 22.
    pub port: Option<u16>,
    /// None: from ssh config, else "root".
    pub user: Option<String>,
    /// None: from ssh config IdentityFile, else ssh-agent, else ~/.ssh/id_ed25519, id_rsa.
    pub identity: Option<PathBuf>,
    /// Jump host (ProxyJump); None: from ssh config ProxyJump if set.
    pub via: Option<Box<SshTarget>>,
}

impl SshTarget {
    /// A target with everything else left to the ssh config and defaults.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        SshTarget {
            name: name.into(),
            address: address.into(),
            ..SshTarget::default()
        }
    }
}

/// Connection policy shared by all hosts of one controller run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Files checked in order; the first one is where new keys are learned.
    pub known_hosts: Vec<PathBuf>,
    /// First contact with an unknown host is allowed only when true (the key
    /// is then appended to `known_hosts[0]`).
    pub accept_new_host_keys: bool,
    /// None: `~/.ssh/config` when it exists. An explicit path must exist.
    pub ssh_config: Option<PathBuf>,
    /// Applied to each hop's TCP connect (or forwarded channel) plus SSH
    /// handshake, and again to its authentication.
    pub connect_timeout: Duration,
    /// ssh-agent socket; None: `$SSH_AUTH_SOCK`.
    pub agent_socket: Option<PathBuf>,
    /// The most one host may take from the first connection to the agent's last
    /// event; past it the host fails with the stage it was in, and the others go on.
    pub host_timeout: Duration,
}

impl Default for SshOptions {
    fn default() -> Self {
        let known_hosts = dirs::home_dir()
            .map(|h| vec![h.join(".ssh").join("known_hosts")])
            .unwrap_or_default();
        SshOptions {
            known_hosts,
            accept_new_host_keys: false,
            ssh_config: None,
            connect_timeout: Duration::from_secs(15),
            agent_socket: None,
            host_timeout: DEFAULT_HOST_TIMEOUT,
        }
    }
}

/// A target after applying the ssh config and defaults: exactly what will be
/// dialled, checked in known_hosts and authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedTarget {
    pub name: String,
    /// Real host name or address: dialled, and looked up in known_hosts.
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Explicit identities (inventory or IdentityFile): when present only
    /// these are offered, like OpenSSH's IdentitiesOnly, so a host is never
    /// entered with a surprising key (a passphrase-protected one is used via
    /// ssh-agent). Empty means: every ssh-agent key, then ~/.ssh/id_ed25519
    /// and ~/.ssh/id_rsa.
    pub identities: Vec<PathBuf>,
    pub via: Option<Box<ResolvedTarget>>,
}

impl ResolvedTarget {
    /// `name (user@host:port)`, the form every error message uses.
    pub fn label(&self) -> String {
        format!("{} ({}@{}:{})", self.name, self.user, self.host, self.port)
    }

    /// How OpenSSH writes this host in known_hosts.
    pub fn known_hosts_entry(&self) -> String {
        known_hosts_host(&self.host, self.port)
    }
}

/// Everything that can go wrong reaching or using a host, phrased for the
/// sysadmin running placard.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("ssh config {path}, line {line}: {message}")]
    Config {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("cannot read ssh config {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{target}: {message}")]
    InvalidTarget { target: String, message: String },
    #[error(
        "{target}: cannot connect to {address}: {source}{}",
        connect_hint(source)
    )]
    Connect {
        target: String,
        address: String,
        #[source]
        source: io::Error,
    },
    #[error("{target}: timed out after {:.1}s while {stage}", timeout.as_secs_f64())]
    Timeout {
        target: String,
        stage: String,
        timeout: Duration,
    },
    #[error("{target}: SSH handshake failed: {source}")]
    Handshake {
        target: String,
        #[source]
        source: russh::Error,
    },
    #[error(
        "{target}: the host key of {host_entry} is unknown (not in {}). \
         The server presented the {key}. Verify that fingerprint out of band (for example \
         on the host's console: `ssh-keygen -lf /etc/ssh/ssh_host_{}_key.pub`), then re-run \
         with --accept-new-host-keys to record it in {}",
        join_paths(searched), key.server_key_file(),
        searched.first().map(|p| p.display().to_string()).unwrap_or_default()
    )]
    UnknownHostKey {
        target: String,
        host_entry: String,
        key: Box<HostKeyInfo>,
        /// The known_hosts files consulted; new keys are learned into the first.
        searched: Vec<PathBuf>,
    },
    #[error(
        "{target}: HOST KEY CHANGED for {host_entry}: the server presented the {key}, \
         which does not match the key recorded in {} line {line}. \
         Someone may be intercepting the connection (man-in-the-middle attack), or the host \
         was reinstalled. Refusing to connect. If the change is expected, remove the old key \
         with `ssh-keygen -R '{host_entry}' -f {}` and re-run with --accept-new-host-keys",
        known_hosts.display(), known_hosts.display()
    )]
    HostKeyChanged {
        target: String,
        host_entry: String,
        key: Box<HostKeyInfo>,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error(
        "{target}: the {key} presented by {host_entry} is marked @revoked in {} line {line}; \
         refusing to connect",
        known_hosts.display()
    )]
    HostKeyRevoked {
        target: String,
        host_entry: String,
        key: Box<HostKeyInfo>,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error("known_hosts file {path}: {message}")]
    KnownHosts { path: PathBuf, message: String },
    #[error(
        "{target}: authentication as {user}@{host}:{port} failed; tried: {}",
        if tried.is_empty() { "nothing (no identity available)".to_string() } else { tried.join("; ") }
    )]
    AuthFailed {
        target: String,
        user: String,
        host: String,
        port: u16,
        tried: Vec<String>,
    },
    #[error("{target}: via jump host {jump}: {source}")]
    Jump {
        target: String,
        jump: String,
        #[source]
        source: Box<SshError>,
    },
    #[error(
        "{target}: jump host {jump} refused to forward a connection to {destination} ({reason}); \
         check that the jump host can reach it and allows TCP forwarding (AllowTcpForwarding)"
    )]
    ForwardRefused {
        target: String,
        jump: String,
        destination: String,
        reason: String,
    },
    #[error("{target}: {action} failed: {source}")]
    Channel {
        target: String,
        action: &'static str,
        #[source]
        source: russh::Error,
    },
    #[error("{target}: the server refused to run `{command}`")]
    ExecRefused { target: String, command: String },
    #[error(
        "{target}: the connection closed before the remote command reported an exit status{}",
        if stderr.is_empty() { String::new() } else { format!("; its stderr was: {}", stderr.trim_end()) }
    )]
    ConnectionLost { target: String, stderr: String },
}

/// A server's host key, as shown to the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKeyInfo {
    /// e.g. `ssh-ed25519`.
    pub algorithm: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
}

impl HostKeyInfo {
    fn of(key: &PublicKey) -> HostKeyInfo {
        HostKeyInfo {
            algorithm: key.algorithm().as_str().to_string(),
            fingerprint: fingerprint(key),
        }
    }

    /// Which `/etc/ssh/ssh_host_*_key.pub` holds this key on a stock server.
    fn server_key_file(&self) -> &'static str {
        if self.algorithm.contains("rsa") {
            "rsa"
        } else if self.algorithm.starts_with("ecdsa") {
            "ecdsa"
        } else {
            "ed25519"
        }
    }
}

impl fmt::Display for HostKeyInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} key {}", self.algorithm, self.fingerprint)
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => " (is sshd running and listening on that port?)",
        _ => "",
    }
}

fn open_failure_reason(reason: &russh::ChannelOpenFailure) -> &'static str {
    match reason {
        russh::ChannelOpenFailure::AdministrativelyProhibited => "administratively prohibited",
        russh::ChannelOpenFailure::ConnectFailed => "the jump host could not connect",
        russh::ChannelOpenFailure::UnknownChannelType => "channel type not supported",
        russh::ChannelOpenFailure::ResourceShortage => "resource shortage",
        _ => "unknown reason",
    }
}

/// An authenticated SSH session with one host (possibly tunnelled through
/// jump hosts, which it keeps alive).
pub struct Connection {
    handle: client::Handle<ClientHandler>,
    target: ResolvedTarget,
    // Declared after `handle` so the tunnelled session is dropped before the
    // session carrying it.
    _jump: Option<Box<Connection>>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("target", &self.target.label())
            .finish()
    }
}

impl Connection {
    /// Resolves `target` through the ssh config and connects.
    pub async fn connect(target: &SshTarget, options: &SshOptions) -> Result<Connection, SshError> {
        let config = load_config(options)?;
        let resolved = resolve_target(target, &config)?;
        Connection::connect_resolved(&resolved, options).await
    }

    /// Connects to an already resolved target (jump hosts first).
    pub fn connect_resolved<'a>(
        target: &'a ResolvedTarget,
        options: &'a SshOptions,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Connection, SshError>> + Send + 'a>> {
        Box::pin(async move {
            let label = target.label();
            match &target.via {
                None => {
                    let deadline = Instant::now() + options.connect_timeout;
                    let address = format!("{}:{}", target.host, target.port);
                    let tcp = tokio::time::timeout_at(
                        deadline,
                        tokio::net::TcpStream::connect((target.host.as_str(), target.port)),
                    )
                    .await
                    .map_err(|_| SshError::Timeout {
                        target: label.clone(),
                        stage: format!("connecting to {address}"),
                        timeout: options.connect_timeout,
                    })?
                    .map_err(|source| SshError::Connect {
                        target: label.clone(),
                        address,
                        source,
                    })?;
                    if let Err(e) = tcp.set_nodelay(true) {
                        tracing::debug!("{label}: cannot set TCP_NODELAY: {e}");
                    }
                    Connection::establish(target, options, tcp, deadline, None).await
                }
                Some(via) => {
                    let jump = Connection::connect_resolved(via, options)
                        .await
                        .map_err(|e| SshError::Jump {
                            target: label.clone(),
                            jump: via.label(),
                            source: Box::new(e),
                        })?;
                    let deadline = Instant::now() + options.connect_timeout;
                    let destination = format!("{}:{}", target.host, target.port);
                    let channel = tokio::time::timeout_at(
                        deadline,
                        jump.handle.channel_open_direct_tcpip(
                            target.host.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        ),
                    )
                    .await
                    .map_err(|_| SshError::Timeout {
                        target: label.clone(),
                        stage: format!(
                            "asking jump host {} to connect to {destination}",
                            via.label()
                        ),
                        timeout: options.connect_timeout,
                    })?
                    .map_err(|e| match e {
                        russh::Error::ChannelOpenFailure(reason) => SshError::ForwardRefused {
                            target: label.clone(),
                            jump: via.label(),
                            destination: destination.clone(),
                            reason: open_failure_reason(&reason).to_string(),
                        },
                        source => SshError::Channel {
                            target: label.clone(),
                            action: "opening a forwarded connection through the jump host",
                            source,
                        },
                    })?;
                    // Not russh's ChannelStream: see jump.rs for the hang it caused.
                    let stream = jump::jump_stream(channel);
                    Connection::establish(target, options, stream, deadline, Some(Box::new(jump)))
                        .await
                }
            }
        })
    }

    async fn establish<S>(
        target: &ResolvedTarget,
        options: &SshOptions,
        stream: S,
        deadline: Instant,
        jump: Option<Box<Connection>>,
    ) -> Result<Connection, SshError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let label = target.label();
        let verdict = Arc::new(Mutex::new(None));
        let handler = ClientHandler {
            label: label.clone(),
            host: target.host.clone(),
            port: target.port,
            known_hosts: options.known_hosts.clone(),
            accept_new: options.accept_new_host_keys,
            verdict: verdict.clone(),
        };
        let config = client::Config {
            preferred: host_key_preference(&target.host, target.port, &options.known_hosts),
            // Long agent runs must notice a dead peer instead of hanging.
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 4,
            nodelay: true,
            ..client::Config::default()
        };
        let result = tokio::time::timeout_at(
            deadline,
            client::connect_stream(Arc::new(config), stream, handler),
        )
        .await;
        let refused = verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = refused {
            return Err(e);
        }
        let mut handle = result
            .map_err(|_| SshError::Timeout {
                target: label.clone(),
                stage: "performing the SSH handshake".into(),
                timeout: options.connect_timeout,
            })?
            .map_err(|source| SshError::Handshake {
                target: label.clone(),
                source,
            })?;
        tokio::time::timeout(
            options.connect_timeout,
            authenticate(&mut handle, target, options),
        )
        .await
        .map_err(|_| SshError::Timeout {
            target: label.clone(),
            stage: "authenticating".into(),
            timeout: options.connect_timeout,
        })??;
        tracing::debug!("{label}: connected and authenticated");
        Ok(Connection {
            handle,
            target: target.clone(),
            _jump: jump,
        })
    }

    /// The resolved target this session is connected to.
    pub fn target(&self) -> &ResolvedTarget {
        &self.target
    }

    /// True once the session has ended (remote disconnect, keepalive failure).
    pub fn is_closed(&self) -> bool {
        self.handle.is_closed()
    }

    /// Politely ends the session (and any jump sessions under it).
    pub async fn disconnect(self) -> Result<(), SshError> {
        self.handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await
            .map_err(|source| SshError::Channel {
                target: self.target.label(),
                action: "disconnecting",
                source,
            })
    }

    /// Starts `command` on one exec channel. The caller must keep reading
    /// stdout while it writes stdin: the output buffer is bounded and a full
    /// buffer stalls the whole session.
    pub async fn exec(&self, command: &str) -> Result<RemoteProcess, SshError> {
        let label = self.target.label();
        let channel =
            self.handle
                .channel_open_session()
                .await
                .map_err(|source| SshError::Channel {
                    target: label.clone(),
                    action: "opening a session channel",
                    source,
                })?;
        channel
            .exec(true, command)
            .await
            .map_err(|source| SshError::Channel {
                target: label.clone(),
                action: "sending the command",
                source,
            })?;
        let (mut read, write) = channel.split();
        let mut early = Vec::new();
        loop {
            match read.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    return Err(SshError::ExecRefused {
                        target: label,
                        command: command.to_string(),
                    })
                }
                Some(ChannelMsg::WindowAdjusted { .. }) => {}
                Some(msg @ (ChannelMsg::Close | ChannelMsg::OpenFailure(_))) => {
                    tracing::debug!("{label}: channel ended before exec reply: {msg:?}");
                    return Err(SshError::ExecRefused {
                        target: label,
                        command: command.to_string(),
                    });
                }
                // Output racing ahead of the reply is kept, not lost.
                Some(msg) => early.push(msg),
                None => {
                    return Err(SshError::ConnectionLost {
                        target: label,
                        stderr: String::new(),
                    })
                }
            }
        }
        let (stdout_reader, stdout_writer) = tokio::io::duplex(STDOUT_BUFFER);
        let (eof_tx, eof_rx) = oneshot::channel();
        let stdin = RemoteStdin {
            inner: ChannelWriter(Box::pin(write.make_writer())),
            eof_on_drop: Some(eof_tx),
        };
        let task = tokio::spawn(pump(
            read,
            write,
            early,
            stdout_writer,
            eof_rx,
            label.clone(),
        ));
        Ok(RemoteProcess {
            stdin,
            stdout: RemoteStdout {
                inner: BufReader::new(stdout_reader),
            },
            exit: RemoteExit { task, label },
        })
    }
}
