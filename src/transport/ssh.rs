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

// ---------------------------------------------------------------------------
// Public configuration types
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------
// ~/.ssh/config subset
// ---------------------------------------------------------------------------

/// The parsed subset of an OpenSSH client config.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<ConfigBlock>,
}

#[derive(Debug, Clone)]
struct ConfigBlock {
    /// All must match. More than one only inside an `Include` that sits in a
    /// Host block: as in OpenSSH, the included blocks apply only when the
    /// enclosing block does too.
    conditions: Vec<BlockCondition>,
    entries: Vec<(String, Vec<String>)>,
}

impl ConfigBlock {
    fn matches(&self, host: &str) -> bool {
        self.conditions.iter().all(|c| c.matches(host))
    }
}

#[derive(Debug, Clone)]
enum BlockCondition {
    Always,
    Hosts(Vec<String>),
    /// A `Match` we cannot evaluate: treating it as never matching is the
    /// conservative choice (its settings are usually host-specific).
    Never,
}

impl BlockCondition {
    fn matches(&self, host: &str) -> bool {
        match self {
            BlockCondition::Always => true,
            BlockCondition::Never => false,
            BlockCondition::Hosts(patterns) => {
                let mut positive = false;
                for p in patterns {
                    let p = p.to_ascii_lowercase();
                    if let Some(neg) = p.strip_prefix('!') {
                        if wildcard_match(neg, host) {
                            return false;
                        }
                    } else if wildcard_match(&p, host) {
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

/// The settings that apply to one alias, first value winning as in OpenSSH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Unexpanded, in config order (OpenSSH accumulates IdentityFile).
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
}

impl SshConfig {
    /// Reads and parses a config file, following `Include`.
    pub fn load(path: &Path) -> Result<SshConfig, SshError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        SshConfig::parse(&text, path)
    }

    /// Parses config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<SshConfig, SshError> {
        let mut config = SshConfig::default();
        config.parse_into(text, origin, &[], 0)?;
        Ok(config)
    }

    fn parse_into(
        &mut self,
        text: &str,
        origin: &Path,
        scope: &[BlockCondition],
        depth: usize,
    ) -> Result<(), SshError> {
        // Lines before the first Host line apply to every host in scope.
        self.blocks.push(ConfigBlock {
            conditions: scope.to_vec(),
            entries: Vec::new(),
        });
        let scoped = |c: BlockCondition| {
            let mut all = scope.to_vec();
            all.push(c);
            all
        };
        let err = |line: usize, message: String| SshError::Config {
            path: origin.to_path_buf(),
            line,
            message,
        };
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let keyword = keyword.to_ascii_lowercase();
            let args = split_args(rest).map_err(|m| err(lineno, m))?;
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(err(lineno, "Host needs at least one pattern".into()));
                    }
                    self.blocks.push(ConfigBlock {
                        conditions: scoped(BlockCondition::Hosts(args)),
                        entries: Vec::new(),
                    });
                }
                "match" => {
                    let condition = if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                        BlockCondition::Always
                    } else {
                        tracing::warn!(
                            "{}:{}: `Match {}` is not supported by placard; its settings are ignored",
                            origin.display(),
                            lineno,
                            args.join(" ")
                        );
                        BlockCondition::Never
                    };
                    self.blocks.push(ConfigBlock {
                        conditions: scoped(condition),
                        entries: Vec::new(),
                    });
                }
                "include" => {
                    if depth >= INCLUDE_DEPTH {
                        return Err(err(lineno, "Include nested too deeply (a loop?)".into()));
                    }
                    let parent = self
                        .blocks
                        .last()
                        .map(|b| b.conditions.clone())
                        .unwrap_or_default();
                    for arg in &args {
                        for file in expand_include(arg).map_err(|m| err(lineno, m))? {
                            let text = std::fs::read_to_string(&file).map_err(|source| {
                                SshError::ConfigRead {
                                    path: file.clone(),
                                    source,
                                }
                            })?;
                            self.parse_into(&text, &file, &parent, depth + 1)?;
                        }
                    }
                    // Lines after an Include still belong to the block that
                    // contained it, whatever Host lines the included file had.
                    self.blocks.push(ConfigBlock {
                        conditions: parent,
                        entries: Vec::new(),
                    });
                }
                _ => {
                    if keyword == "port" {
                        let valid = args.first().map(|p| p.parse::<u16>().map(|n| n > 0));
                        if valid != Some(Ok(true)) {
                            return Err(err(lineno, format!("invalid Port `{}`", rest.trim())));
                        }
                    }
                    if args.is_empty() {
                        return Err(err(lineno, format!("`{keyword}` needs a value")));
                    }
                    if let Some(block) = self.blocks.last_mut() {
                        block.entries.push((keyword, args));
                    }
                }
            }
        }
        Ok(())
    }

    /// The settings for `alias`, as `ssh alias` would apply them.
    pub fn lookup(&self, alias: &str) -> HostSettings {
        let host = alias.to_ascii_lowercase();
        let mut s = HostSettings::default();
        for block in self.blocks.iter().filter(|b| b.matches(&host)) {
            for (keyword, args) in &block.entries {
                let first = args.first().cloned();
                match keyword.as_str() {
                    "hostname" if s.host_name.is_none() => s.host_name = first,
                    "user" if s.user.is_none() => s.user = first,
                    "port" if s.port.is_none() => {
                        s.port = first.and_then(|p| p.parse().ok());
                    }
                    "identityfile" => {
                        if let Some(f) = first {
                            if !f.eq_ignore_ascii_case("none") && !s.identity_files.contains(&f) {
                                s.identity_files.push(f);
                            }
                        }
                    }
                    "proxyjump" if s.proxy_jump.is_none() => s.proxy_jump = first,
                    "proxycommand" if s.proxy_command.is_none() => {
                        s.proxy_command = Some(args.join(" "));
                    }
                    _ => {}
                }
            }
        }
        s
    }
}

/// `Keyword value`, `Keyword=value` and `Keyword = value` are all valid.
fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (kw, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    (kw, rest.trim())
}

fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    args.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if has_token {
        args.push(cur);
    }
    Ok(args)
}

/// OpenSSH-style glob: `*` any run, `?` one character.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn home_dir() -> PathBuf {
    dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"))
}

fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        home_dir()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home_dir().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Include paths are relative to ~/.ssh for the user config, as in OpenSSH;
/// wildcards are honoured in the file name only.
fn expand_include(arg: &str) -> Result<Vec<PathBuf>, String> {
    let path = expand_tilde(arg);
    let path = if path.is_absolute() {
        path
    } else {
        home_dir().join(".ssh").join(path)
    };
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "Include `{arg}`: wildcards are only supported in the file name"
        ));
    }
    if !file_name.contains(['*', '?']) {
        return Ok(if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        });
    }
    let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| wildcard_match(&file_name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    Ok(found)
}

/// The few `%` tokens that make sense in IdentityFile and HostName.
fn expand_tokens(value: &str, alias: &str, host: &str, user: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(alias),
            Some('r') => out.push_str(user),
            Some('d') => out.push_str(&home_dir().to_string_lossy()),
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_default()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// One hop of a ProxyJump value: `[ssh://][user@]host[:port]`, host possibly
/// `[v6]`.
pub fn parse_jump_spec(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let s = spec.trim();
    let s = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, hostport) = match s.rfind('@') {
        Some(i) => (Some(s[..i].to_string()), &s[i + 1..]),
        None => (None, s),
    };
    let bad_port = |p: &str| format!("invalid port `{p}` in ProxyJump `{spec}`");
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("unbalanced `[` in ProxyJump `{spec}`"))?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad_port(p))?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` in ProxyJump `{spec}`")),
        };
        (host.to_string(), port)
    } else if hostport.matches(':').count() == 1 {
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
        (
            h.to_string(),
            Some(p.parse::<u16>().map_err(|_| bad_port(p))?),
        )
    } else {
        (hostport.to_string(), None)
    };
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(format!("invalid ProxyJump `{spec}`"));
    }
    Ok((user, host, port))
}

/// Applies the ssh config to an inventory target. Inventory values win.
pub fn resolve_target(target: &SshTarget, config: &SshConfig) -> Result<ResolvedTarget, SshError> {
    resolve_depth(target, config, 0)
}

fn resolve_depth(
    target: &SshTarget,
    config: &SshConfig,
    depth: usize,
) -> Result<ResolvedTarget, SshError> {
    let invalid = |message: String| SshError::InvalidTarget {
        target: target.name.clone(),
        message,
    };
    if depth > MAX_JUMP_DEPTH {
        return Err(invalid(format!(
            "more than {MAX_JUMP_DEPTH} jump hosts in a row; is there a ProxyJump loop in the ssh config?"
        )));
    }
    let alias = target.address.trim();
    if alias.is_empty() {
        return Err(invalid("no address to connect to".into()));
    }
    let s = config.lookup(alias);
    let host = match &s.host_name {
        Some(h) => expand_tokens(h, alias, alias, ""),
        None => alias.to_string(),
    };
    let port = target.port.or(s.port).unwrap_or(22);
    if port == 0 {
        return Err(invalid("port 0 is not a valid SSH port".into()));
    }
    let user = target
        .user
        .clone()
        .or(s.user.clone())
        .unwrap_or_else(|| "root".to_string());
    let identities = match &target.identity {
        Some(p) => vec![expand_tilde(&p.to_string_lossy())],
        None => s
            .identity_files
            .iter()
            .map(|f| expand_tilde(&expand_tokens(f, alias, &host, &user)))
            .collect(),
    };
    if let (Some(cmd), None, None) = (&s.proxy_command, &s.proxy_jump, &target.via) {
        tracing::warn!(
            "{}: ssh config sets `ProxyCommand {cmd}`, which placard does not support; connecting directly (use ProxyJump instead)",
            target.name
        );
    }
    let via = match (&target.via, s.proxy_jump.as_deref()) {
        (Some(v), _) => Some(Box::new(resolve_depth(v, config, depth + 1)?)),
        (None, None) => None,
        (None, Some(spec)) if spec.eq_ignore_ascii_case("none") => None,
        (None, Some(spec)) => match jump_chain(spec, alias).map_err(invalid)? {
            Some(hop) => Some(Box::new(resolve_depth(&hop, config, depth + 1)?)),
            None => None,
        },
    };
    Ok(ResolvedTarget {
        name: target.name.clone(),
        host,
        port,
        user,
        identities,
        via,
    })
}

/// Turns `a,b,c` into c-via-b-via-a. Hops from the first mention of the
/// alias being resolved are dropped, so the usual `Host * / ProxyJump
/// bastion` does not make the bastion jump through itself.
fn jump_chain(spec: &str, alias: &str) -> Result<Option<SshTarget>, String> {
    let mut chain: Option<SshTarget> = None;
    for hop in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (user, host, port) = parse_jump_spec(hop)?;
        if host.eq_ignore_ascii_case(alias) {
            break;
        }
        chain = Some(SshTarget {
            name: hop.to_string(),
            address: host,
            port,
            user,
            identity: None,
            via: chain.map(Box::new),
        });
    }
    Ok(chain)
}

fn load_config(options: &SshOptions) -> Result<SshConfig, SshError> {
    match &options.ssh_config {
        Some(path) => SshConfig::load(path),
        None => {
            let path = home_dir().join(".ssh").join("config");
            if path.is_file() {
                SshConfig::load(&path)
            } else {
                Ok(SshConfig::default())
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Host keys
// ---------------------------------------------------------------------------

fn known_hosts_host(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// What known_hosts says about the key a server presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    Known { path: PathBuf, line: usize },
    Learned { path: PathBuf },
}

/// Checks `key` for `host:port` against `files` in order, learning it into
/// the first file when unknown and `accept_new`. Exposed so a controller can
/// pre-seed or audit known_hosts with the same rules.
pub fn verify_host_key(
    label: &str,
    host: &str,
    port: u16,
    key: &PublicKey,
    files: &[PathBuf],
    accept_new: bool,
) -> Result<HostKeyStatus, SshError> {
    // OpenSSH canonicalises host names to lower case before lookups.
    let host = host.to_ascii_lowercase();
    let entry = known_hosts_host(&host, port);
    let mut changed: Option<(PathBuf, usize)> = None;
    for path in files {
        if let Some(line) = revoked_line(path, key) {
            return Err(SshError::HostKeyRevoked {
                target: label.to_string(),
                host_entry: entry,
                key: Box::new(HostKeyInfo::of(key)),
                known_hosts: path.clone(),
                line,
            });
        }
    }
    for path in files {
        let recorded =
            russh::keys::known_hosts::known_host_keys_path(&host, port, path).map_err(|e| {
                SshError::KnownHosts {
                    path: path.clone(),
                    message: format!("cannot read the entries for {entry}: {e}"),
                }
            })?;
        for (line, known) in recorded {
            if known.key_data() == key.key_data() {
                return Ok(HostKeyStatus::Known {
                    path: path.clone(),
                    line,
                });
            }
            if known.algorithm() == key.algorithm() && changed.is_none() {
                changed = Some((path.clone(), line));
            }
        }
    }
    if let Some((known_hosts, line)) = changed {
        return Err(SshError::HostKeyChanged {
            target: label.to_string(),
            host_entry: entry,
            key: Box::new(HostKeyInfo::of(key)),
            known_hosts,
            line,
        });
    }
    let Some(first) = files.first() else {
        return Err(SshError::KnownHosts {
            path: PathBuf::new(),
            message: format!(
                "no known_hosts file is configured, so the key of {entry} ({}) cannot be checked",
                fingerprint(key)
            ),
        });
    };
    if !accept_new {
        return Err(SshError::UnknownHostKey {
            target: label.to_string(),
            host_entry: entry,
            key: Box::new(HostKeyInfo::of(key)),
            searched: files.to_vec(),
        });
    }
    append_known_host(first, &entry, key).map_err(|e| SshError::KnownHosts {
        path: first.clone(),
        message: format!("cannot record the host key of {entry}: {e}"),
    })?;
    tracing::info!(
        "{label}: recorded new {} host key {} for {entry} in {}",
        key.algorithm().as_str(),
        fingerprint(key),
        first.display()
    );
    Ok(HostKeyStatus::Learned {
        path: first.clone(),
    })
}

/// russh's reader skips `@revoked` lines. A revoked key is refused for every
/// host, so the host field is not even consulted.
fn revoked_line(path: &Path, key: &PublicKey) -> Option<usize> {
    use russh::keys::PublicKeyBase64;
    let text = std::fs::read_to_string(path).ok()?;
    let encoded = key.public_key_base64();
    text.lines().enumerate().find_map(|(idx, line)| {
        let mut fields = line.split_whitespace();
        let marker = fields.next()?;
        let b64 = fields.nth(2)?;
        (marker == "@revoked" && b64 == encoded).then_some(idx + 1)
    })
}

/// Our own writer rather than russh's: it emits one `write` per entry (so
/// hosts learned concurrently do not interleave under O_APPEND) and does not
/// start a new file with a blank line.
fn append_known_host(path: &Path, entry: &str, key: &PublicKey) -> io::Result<()> {
    use russh::keys::PublicKeyBase64;
    use std::io::{Read, Seek, SeekFrom, Write};
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)?;
    let mut separator = "";
    if file.metadata()?.len() > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            separator = "\n";
        }
    }
    let line = format!(
        "{separator}{entry} {} {}\n",
        key.algorithm().as_str(),
        key.public_key_base64()
    );
    file.write_all(line.as_bytes())
}

/// Puts the key types already recorded for the host first, as OpenSSH does,
/// so a host known by its RSA key is not reported unknown just because it
/// also offers ed25519.
fn host_key_preference(host: &str, port: u16, files: &[PathBuf]) -> Preferred {
    let host = host.to_ascii_lowercase();
    let known: Vec<Algorithm> = files
        .iter()
        .filter_map(|f| russh::keys::known_hosts::known_host_keys_path(&host, port, f).ok())
        .flatten()
        .map(|(_, k)| k.algorithm())
        .collect();
    let mut preferred = Preferred::default();
    let rsa = |a: &Algorithm| matches!(a, Algorithm::Rsa { .. });
    let is_known = |a: &Algorithm| known.iter().any(|k| k == a || (rsa(k) && rsa(a)));
    let (mut first, rest): (Vec<Algorithm>, Vec<Algorithm>) =
        preferred.key.iter().cloned().partition(|a| is_known(a));
    first.extend(rest);
    preferred.key = Cow::Owned(first);
    preferred
}

struct ClientHandler {
    label: String,
    host: String,
    port: u16,
    known_hosts: Vec<PathBuf>,
    accept_new: bool,
    /// russh only lets the handler answer yes/no; the detailed refusal is
    /// parked here for `connect` to report.
    verdict: Arc<Mutex<Option<SshError>>>,
}

impl client::Handler for ClientHandler {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        match verify_host_key(
            &self.label,
            &self.host,
            self.port,
            key,
            &self.known_hosts,
            self.accept_new,
        ) {
            Ok(status) => {
                tracing::debug!(
                    "{}: host key {} accepted ({status:?})",
                    self.label,
                    fingerprint(key)
                );
                Ok(true)
            }
            Err(e) => {
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                Ok(false)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Connection
// ---------------------------------------------------------------------------

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
                    let stream = channel.into_stream();
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
            inner: Box::pin(write.make_writer()),
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

// ---------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------

enum KeyFile {
    Plain(Box<PrivateKey>),
    Encrypted(Option<PublicKey>),
}

fn load_key_file(path: &Path) -> Result<KeyFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => "file not found".to_string(),
        _ => format!("cannot read it: {e}"),
    })?;
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(KeyFile::Plain(Box::new(key))),
        Err(e) => {
            let encrypted =
                matches!(e, russh::keys::Error::KeyIsEncrypted) || text.contains("ENCRYPTED");
            if !encrypted {
                return Err(format!("not a usable private key: {e}"));
            }
            // The public half of an encrypted OpenSSH key is stored in the
            // clear, which lets us find the matching key in ssh-agent.
            let public = PrivateKey::from_openssh(&text)
                .map(|k| k.public_key().clone())
                .ok()
                .or_else(|| {
                    let mut pub_path = path.as_os_str().to_owned();
                    pub_path.push(".pub");
                    russh::keys::load_public_key(PathBuf::from(pub_path)).ok()
                });
            Ok(KeyFile::Encrypted(public))
        }
    }
}

fn default_identity_files() -> Vec<PathBuf> {
    let ssh = home_dir().join(".ssh");
    vec![ssh.join("id_ed25519"), ssh.join("id_rsa")]
}

struct Agent {
    client: Option<AgentClient<UnixStream>>,
    identities: Vec<PublicKey>,
    problem: Option<String>,
}

impl Agent {
    async fn open(options: &SshOptions) -> Agent {
        let socket = options.agent_socket.clone().or_else(|| {
            std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        });
        let Some(socket) = socket else {
            return Agent::unavailable("SSH_AUTH_SOCK is not set".into());
        };
        let mut client = match AgentClient::connect_uds(&socket).await {
            Ok(c) => c,
            Err(e) => {
                return Agent::unavailable(format!("cannot connect to {}: {e}", socket.display()))
            }
        };
        match client.request_identities().await {
            Ok(identities) => Agent {
                client: Some(client),
                identities,
                problem: None,
            },
            Err(e) => Agent::unavailable(format!("cannot list its keys: {e}")),
        }
    }

    fn unavailable(problem: String) -> Agent {
        Agent {
            client: None,
            identities: Vec::new(),
            problem: Some(problem),
        }
    }
}

/// Negotiating the RSA signature hash costs a round trip (up to a second when
/// the server sends no extension info), so it is only asked once, and only
/// when an RSA key is actually offered.
struct RsaHash(Option<Option<HashAlg>>);

impl RsaHash {
    async fn get(&mut self, handle: &client::Handle<ClientHandler>) -> Option<HashAlg> {
        if let Some(h) = self.0 {
            return h;
        }
        // Servers that do not say are assumed modern: OpenSSH has refused
        // SHA-1 RSA signatures by default since 8.8.
        let h = match handle.best_supported_rsa_hash().await {
            Ok(Some(h)) => h,
            _ => Some(HashAlg::Sha256),
        };
        self.0 = Some(h);
        h
    }
}

fn describe_failure(result: &client::AuthResult) -> Option<String> {
    match result {
        client::AuthResult::Success => None,
        client::AuthResult::Failure {
            partial_success: true,
            remaining_methods,
        } => Some(format!(
            "accepted, but the server also requires {} (not supported)",
            method_names(remaining_methods)
        )),
        client::AuthResult::Failure {
            remaining_methods, ..
        } => {
            if remaining_methods
                .iter()
                .any(|m| matches!(m, russh::MethodKind::PublicKey))
            {
                Some("rejected (not in the user's authorized_keys?)".into())
            } else {
                Some(format!(
                    "rejected: the server does not accept public keys (it offers: {})",
                    method_names(remaining_methods)
                ))
            }
        }
    }
}

fn method_names(methods: &russh::MethodSet) -> String {
    let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

fn key_name(key: &PublicKey) -> String {
    let comment = key.comment();
    if comment.is_empty() {
        format!("{} {}", key.algorithm().as_str(), fingerprint(key))
    } else {
        format!(
            "{} {} ({comment})",
            key.algorithm().as_str(),
            fingerprint(key)
        )
    }
}

async fn authenticate(
    handle: &mut client::Handle<ClientHandler>,
    target: &ResolvedTarget,
    options: &SshOptions,
) -> Result<(), SshError> {
    let mut tried: Vec<String> = Vec::new();
    let mut rsa = RsaHash(None);
    let mut agent: Option<Agent> = None;
    let user = target.user.as_str();

    let explicit = !target.identities.is_empty();
    let files = if explicit {
        target.identities.clone()
    } else {
        // No identity configured: agent keys first, as OpenSSH does.
        let a = agent.insert(Agent::open(options).await);
        match &a.problem {
            Some(p) => tried.push(format!("ssh-agent: {p}")),
            None if a.identities.is_empty() => tried.push("ssh-agent: it holds no keys".into()),
            None => {}
        }
        let keys = a.identities.clone();
        for key in keys {
            let Some(client) = a.client.as_mut() else {
                break;
            };
            let hash = if key.algorithm().is_rsa() {
                rsa.get(handle).await
            } else {
                None
            };
            let name = format!("ssh-agent key {}", key_name(&key));
            match handle
                .authenticate_publickey_with(user, key, hash, client)
                .await
            {
                Ok(r) => match describe_failure(&r) {
                    None => return Ok(()),
                    Some(why) => tried.push(format!("{name}: {why}")),
                },
                Err(e) => tried.push(format!("{name}: {e}")),
            }
            if handle.is_closed() {
                break;
            }
        }
        default_identity_files()
            .into_iter()
            .filter(|p| p.exists())
            .collect()
    };

    for path in files {
        if handle.is_closed() {
            tried.push(
                "the server closed the connection (too many authentication failures?)".into(),
            );
            break;
        }
        let name = format!("identity file {}", path.display());
        match load_key_file(&path) {
            Err(why) => tried.push(format!("{name}: {why}")),
            Ok(KeyFile::Plain(key)) => {
                let key = Arc::new(*key);
                let hash = if key.algorithm().is_rsa() {
                    rsa.get(handle).await
                } else {
                    None
                };
                match handle
                    .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                    .await
                {
                    Ok(r) => match describe_failure(&r) {
                        None => return Ok(()),
                        Some(why) => tried.push(format!("{name}: {why}")),
                    },
                    Err(e) => tried.push(format!("{name}: {e}")),
                }
            }
            Ok(KeyFile::Encrypted(public)) => {
                let hint = format!(
                    "{name}: it is passphrase-protected and placard cannot ask for passphrases; \
                     load it into ssh-agent (`ssh-add {}`) and make sure SSH_AUTH_SOCK is set",
                    path.display()
                );
                let Some(public) = public else {
                    tried.push(hint);
                    continue;
                };
                if agent.is_none() {
                    agent = Some(Agent::open(options).await);
                }
                let in_agent = agent.as_mut().and_then(|a| {
                    let found = a
                        .identities
                        .iter()
                        .any(|k| k.key_data() == public.key_data());
                    a.client.as_mut().filter(|_| found)
                });
                let Some(client) = in_agent else {
                    tried.push(hint);
                    continue;
                };
                let hash = if public.algorithm().is_rsa() {
                    rsa.get(handle).await
                } else {
                    None
                };
                match handle
                    .authenticate_publickey_with(user, public, hash, client)
                    .await
                {
                    Ok(r) => match describe_failure(&r) {
                        None => return Ok(()),
                        Some(why) => tried.push(format!("{name} (via ssh-agent): {why}")),
                    },
                    Err(e) => tried.push(format!("{name} (via ssh-agent): {e}")),
                }
            }
        }
    }
    if !explicit && tried.iter().all(|t| t.starts_with("ssh-agent:")) {
        tried.push("no ~/.ssh/id_ed25519 or ~/.ssh/id_rsa".into());
    }
    Err(SshError::AuthFailed {
        target: target.label(),
        user: target.user.clone(),
        host: target.host.clone(),
        port: target.port,
        tried,
    })
}

// ---------------------------------------------------------------------------
// Remote processes
// ---------------------------------------------------------------------------

/// A command running on the remote host.
///
/// Take the fields apart to use them concurrently: write `stdin` (shut it
/// down, or drop it, to send EOF), read `stdout`, then `exit.wait()`.
pub struct RemoteProcess {
    pub stdin: RemoteStdin,
    pub stdout: RemoteStdout,
    pub exit: RemoteExit,
}

impl fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteProcess").finish_non_exhaustive()
    }
}

/// Everything a finished command produced, for callers that do not stream.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub stdout: Vec<u8>,
    pub status: RemoteExitStatus,
}

impl RemoteProcess {
    /// Sends `input` as stdin, closes it, and collects stdout and the exit
    /// status.
    pub async fn output(self, input: &[u8]) -> Result<RemoteOutput, SshError> {
        use tokio::io::AsyncReadExt;
        let RemoteProcess {
            mut stdin,
            mut stdout,
            exit,
        } = self;
        let writer = async move {
            // A remote command that exits without reading its stdin makes
            // these writes fail; its exit status is what matters then.
            if !input.is_empty() {
                let _ = stdin.write_all(input).await;
            }
            let _ = stdin.shutdown().await;
        };
        let mut out = Vec::new();
        let reader = stdout.read_to_end(&mut out);
        let ((), read) = tokio::join!(writer, reader);
        let status = exit.wait().await?;
        // A read error here means the pump stopped early; the status above
        // already explains why.
        let _ = read;
        Ok(RemoteOutput {
            stdout: out,
            status,
        })
    }
}

/// The remote command's stdin. `shutdown()` (or dropping it) sends EOF.
pub struct RemoteStdin {
    inner: Pin<Box<dyn AsyncWrite + Send>>,
    eof_on_drop: Option<oneshot::Sender<()>>,
}

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // russh's writer rejects empty writes; an empty write is a no-op.
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.inner.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.inner.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.eof_on_drop.is_none() {
            return Poll::Ready(Ok(()));
        }
        let r = self.inner.as_mut().poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = r {
            // EOF went out; dropping the sender tells the pump not to send
            // another one.
            self.eof_on_drop = None;
        }
        r
    }
}

impl Drop for RemoteStdin {
    fn drop(&mut self) {
        if let Some(tx) = self.eof_on_drop.take() {
            let _ = tx.send(());
        }
    }
}

/// The remote command's stdout, buffered (use `AsyncBufReadExt::lines`).
/// EOF when the remote side closes stdout.
pub struct RemoteStdout {
    inner: BufReader<DuplexStream>,
}

impl AsyncRead for RemoteStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncBufRead for RemoteStdout {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.inner).consume(amt)
    }
}

/// Resolves when the remote command has finished.
pub struct RemoteExit {
    task: tokio::task::JoinHandle<Result<RemoteExitStatus, SshError>>,
    label: String,
}

impl RemoteExit {
    /// Waits for the exit status (and the collected stderr). Returns
    /// `ConnectionLost` if the session died first.
    pub async fn wait(self) -> Result<RemoteExitStatus, SshError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(SshError::ConnectionLost {
                target: self.label,
                stderr: format!("(placard's output task failed: {e})"),
            }),
        }
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteExitStatus {
    /// Exit code, when the command exited normally.
    pub code: Option<u32>,
    /// Signal name (e.g. `KILL`), when the command was killed.
    pub signal: Option<String>,
    pub core_dumped: bool,
    /// stderr, lossily decoded, capped at 1 MiB.
    pub stderr: String,
    pub stderr_truncated: bool,
}

impl RemoteExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for RemoteExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(
                f,
                "killed by signal {s}{}",
                if self.core_dumped {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

struct PumpState {
    stdout: Option<DuplexStream>,
    stderr: Vec<u8>,
    status: RemoteExitStatus,
    got_status: bool,
}

impl PumpState {
    async fn handle(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(out) = self.stdout.as_mut() {
                    // The caller dropped stdout: keep draining so the remote
                    // side is not blocked and the exit status still arrives.
                    if out.write_all(&data).await.is_err() {
                        self.stdout = None;
                    }
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let room = STDERR_LIMIT.saturating_sub(self.stderr.len());
                if data.len() > room {
                    self.status.stderr_truncated = true;
                }
                self.stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            ChannelMsg::Eof => {
                self.stdout = None;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.status.code = Some(exit_status);
                self.got_status = true;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                self.status.signal = Some(match signal_name {
                    russh::Sig::Custom(s) => s,
                    other => format!("{other:?}"),
                });
                self.status.core_dumped = core_dumped;
                self.got_status = true;
            }
            _ => {}
        }
    }
}

/// Owns the channel's read side: routes stdout into the caller's pipe,
/// collects stderr, records the exit status, and sends EOF if stdin is
/// dropped without being shut down.
async fn pump(
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<client::Msg>,
    early: Vec<ChannelMsg>,
    stdout: DuplexStream,
    mut eof_on_drop: oneshot::Receiver<()>,
    label: String,
) -> Result<RemoteExitStatus, SshError> {
    let mut state = PumpState {
        stdout: Some(stdout),
        stderr: Vec::new(),
        status: RemoteExitStatus::default(),
        got_status: false,
    };
    for msg in early {
        state.handle(msg).await;
    }
    let mut stdin_open = true;
    loop {
        let msg = tokio::select! {
            msg = read.wait() => msg,
            dropped = &mut eof_on_drop, if stdin_open => {
                stdin_open = false;
                if dropped.is_ok() {
                    let _ = write.eof().await;
                }
                continue;
            }
        };
        match msg {
            None | Some(ChannelMsg::Close) => break,
            Some(msg) => state.handle(msg).await,
        }
    }
    drop(state.stdout.take());
    let stderr = String::from_utf8_lossy(&state.stderr).into_owned();
    if !state.got_status {
        return Err(SshError::ConnectionLost {
            target: label,
            stderr,
        });
    }
    state.status.stderr = stderr;
    Ok(state.status)
}
