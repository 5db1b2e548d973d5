//! Host key verification against OpenSSH known_hosts files: refuse a changed or revoked
//! key, refuse an unknown one unless the admin opted in, and learn it then.

use super::*;

pub(super) fn known_hosts_host(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

pub(super) fn fingerprint(key: &PublicKey) -> String {
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
            // A known host presenting a key of another type is as suspect as a changed
            // key: the client asks for the recorded types first, so a genuine server
            // that still has its recorded key offers that one.
            if changed.is_none() {
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
pub(super) fn revoked_line(path: &Path, key: &PublicKey) -> Option<usize> {
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
pub(super) fn append_known_host(path: &Path, entry: &str, key: &PublicKey) -> io::Result<()> {
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
pub(super) fn host_key_preference(host: &str, port: u16, files: &[PathBuf]) -> Preferred {
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

pub(super) struct ClientHandler {
    pub(super) label: String,
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) known_hosts: Vec<PathBuf>,
    pub(super) accept_new: bool,
    /// russh only lets the handler answer yes/no; the detailed refusal is
    /// parked here for `connect` to report.
    pub(super) verdict: Arc<Mutex<Option<SshError>>>,
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
