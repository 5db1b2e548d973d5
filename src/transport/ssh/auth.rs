//! Authentication: identity files (only those, when the inventory or ssh config names
//! some, like OpenSSH's IdentitiesOnly) and ssh-agent keys.

use super::*;

pub(super) enum KeyFile {
    Plain(Box<PrivateKey>),
    Encrypted(Option<PublicKey>),
}

pub(super) fn load_key_file(path: &Path) -> Result<KeyFile, String> {
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

pub(super) fn default_identity_files() -> Vec<PathBuf> {
    let ssh = home_dir().join(".ssh");
    vec![ssh.join("id_ed25519"), ssh.join("id_rsa")]
}

pub(super) struct Agent {
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
pub(super) struct RsaHash(Option<Option<HashAlg>>);

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

pub(super) fn describe_failure(result: &client::AuthResult) -> Option<String> {
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

pub(super) fn method_names(methods: &russh::MethodSet) -> String {
    let names: Vec<&str> = methods.iter().map(<&str>::from).collect();
    if names.is_empty() {
        "nothing".into()
    } else {
        names.join(", ")
    }
}

pub(super) fn key_name(key: &PublicKey) -> String {
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

pub(super) async fn authenticate(
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
