//! Turning a copy of the image into one host: its own SSH host keys, machine-id,
//! hostname, sshd port and root's authorized key.

use super::*;

/// Make the copied tree into host NAME. `fresh` is false when booting an
/// existing sandbox again: its identity (host keys, machine-id) stays.
pub(super) fn configure_host(
    root: &Path,
    name: &str,
    port: u16,
    suite: &str,
    pubkey: &str,
    fresh: bool,
    shared_network: bool,
) -> Result<()> {
    if fresh {
        // -A with -f writes the missing default host keys under ROOT/etc/ssh.
        run_checked(
            Command::new(tool("ssh-keygen")?)
                .arg("-A")
                .arg("-f")
                .arg(root),
            Duration::from_secs(60),
        )
        .context("generating SSH host keys")?;
        let mut id = [0u8; 16];
        File::open("/dev/urandom")?.read_exact(&mut id)?;
        // A random id written by us rather than an empty file: an empty
        // one makes systemd treat the boot as a first boot
        // (systemd-firstboot, preset-all), which a server never sees.
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        write_in_root(root, "etc/machine-id", format!("{hex}\n").as_bytes(), 0o444)?;
    }
    write_in_root(root, "etc/hostname", format!("{name}\n").as_bytes(), 0o644)?;
    write_in_root(root, "etc/hosts", hosts_file(name).as_bytes(), 0o644)?;

    // sshd reads sshd_config.d/*.conf first (the Include is at the top of
    // sshd_config); Port and ListenAddress accumulate rather than first-wins,
    // and Debian's sshd_config has no Port line, so this is the only socket:
    // 127.0.0.1:PORT, never *:22 (all sandboxes share this machine's network).
    let mut dropin = if shared_network {
        format!(
            "# Written by placard sandbox: this host shares the machine's network,\n\
             # so its sshd must listen on its own loopback port only.\n\
             Port {port}\nListenAddress {LOOPBACK}:{port}\n"
        )
    } else {
        format!(
            "# Written by placard sandbox: this host has a network of its own\n\
             # (a test bed's namespace); its sshd listens on every address there.\n\
             Port {port}\n"
        )
    };
    if check_suite(suite)?.sshd_has_penalties && !shared_network {
        // On a private network clients come from test bed addresses, and a test
        // that is refused on purpose must not lock out the next one.
        dropin.push_str("PerSourcePenaltyExemptList 0.0.0.0/0,::/0\n");
    } else if check_suite(suite)?.sshd_has_penalties {
        // OpenSSH >= 9.8 (trixie) penalises source addresses after failed or
        // aborted logins; every sandbox client is 127.0.0.1, so one test of a
        // wrong key would lock out every later test for a while. bookworm's
        // 9.2 and bullseye's 8.4 do not know the option and would refuse to
        // start with it.
        dropin.push_str(&format!("PerSourcePenaltyExemptList {LOOPBACK}\n"));
    }
    write_in_root(
        root,
        "etc/ssh/sshd_config.d/00-placard-sandbox.conf",
        dropin.as_bytes(),
        0o644,
    )?;

    ensure_dir_in_root(root, "root/.ssh", 0o700)?;
    write_in_root(
        root,
        "root/.ssh/authorized_keys",
        format!("{pubkey}\n").as_bytes(),
        0o600,
    )?;
    Ok(())
}

/// The sandbox key pair, generated once. Returns the public key line.
pub(super) fn ensure_key(paths: &SandboxPaths) -> Result<String> {
    let key = paths.key();
    let pubkey = key.with_extension("pub");
    if !(key.is_file() && pubkey.is_file()) {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        if !(key.is_file() && pubkey.is_file()) {
            let tmp = paths
                .state_dir
                .join(format!(".id_ed25519.tmp-{}", std::process::id()));
            let tmp_pub = paths
                .state_dir
                .join(format!(".id_ed25519.tmp-{}.pub", std::process::id()));
            // ssh-keygen asks before overwriting; a leftover would hang it.
            remove_if_exists(&tmp)?;
            remove_if_exists(&tmp_pub)?;
            run_checked(
                Command::new(tool("ssh-keygen")?)
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        "placard-sandbox",
                        "-f",
                    ])
                    .arg(&tmp),
                Duration::from_secs(30),
            )
            .context("generating the sandbox SSH key")?;
            // Public half first: the fast path above needs both.
            fs::rename(&tmp_pub, &pubkey)?;
            fs::rename(&tmp, &key)?;
        }
    }
    let line =
        fs::read_to_string(&pubkey).with_context(|| format!("reading {}", pubkey.display()))?;
    Ok(line.trim().to_string())
}

/// Replace any line for [127.0.0.1]:PORT with the host's ed25519 key.
pub(super) fn record_known_host(paths: &SandboxPaths, port: u16, root: &Path) -> Result<()> {
    let pubfile = root.join("etc/ssh/ssh_host_ed25519_key.pub");
    let text =
        fs::read_to_string(&pubfile).with_context(|| format!("reading {}", pubfile.display()))?;
    let mut fields = text.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        bail!("{} is not an SSH public key", pubfile.display());
    };
    let mut lines = known_host_lines_without(paths, port)?;
    lines.push(format!("{} {kind} {blob}", known_host_pattern(port)));
    write_atomic(
        &paths.known_hosts(),
        (lines.join("\n") + "\n").as_bytes(),
        0o644,
    )
}

pub(super) fn forget_known_host(paths: &SandboxPaths, port: u16) -> Result<()> {
    if !paths.known_hosts().exists() {
        return Ok(());
    }
    let lines = known_host_lines_without(paths, port)?;
    let text = if lines.is_empty() {
        String::new()
    } else {
        lines.join("\n") + "\n"
    };
    write_atomic(&paths.known_hosts(), text.as_bytes(), 0o644)
}

pub(super) fn known_host_pattern(port: u16) -> String {
    format!("[{LOOPBACK}]:{port}")
}

pub(super) fn known_host_lines_without(paths: &SandboxPaths, port: u16) -> Result<Vec<String>> {
    let pattern = known_host_pattern(port);
    let text = match fs::read_to_string(paths.known_hosts()) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).context("reading known_hosts"),
    };
    Ok(text
        .lines()
        .filter(|l| {
            let hosts = l.split_whitespace().next().unwrap_or("");
            !l.trim().is_empty() && !hosts.split(',').any(|h| h == pattern)
        })
        .map(str::to_string)
        .collect())
}

pub(super) fn check_port_available(paths: &SandboxPaths, name: &str, port: u16) -> Result<()> {
    // A recorded port stays reserved even while its sandbox is stopped or
    // still booting, so two `up`s cannot race for it.
    if let Ok(entries) = fs::read_dir(&paths.state_dir) {
        for entry in entries.flatten() {
            let other = entry.file_name().to_string_lossy().into_owned();
            if other == name || validate_name(&other).is_err() {
                continue;
            }
            if let Ok(Some(rec)) = read_record(&entry.path()) {
                if rec.port == port {
                    let state = if running(paths, &other)?.is_some() {
                        "running"
                    } else {
                        "stopped"
                    };
                    bail!(SandboxError::PortUnavailable {
                        port,
                        why: format!("sandbox {other} ({state}) has it; `down {other}` frees it"),
                    });
                }
            }
        }
    }
    if !port_is_free(port) {
        bail!(SandboxError::PortUnavailable {
            port,
            why: format!("something already listens on {LOOPBACK}:{port}"),
        });
    }
    Ok(())
}

pub(super) fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}
