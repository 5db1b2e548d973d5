//! Booting a host with systemd-nspawn, waiting until it is ready (sshd answers, systemd
//! is running), and stopping it cleanly, leftovers included.

use super::*;

pub(super) fn spawn_nspawn(
    nspawn: &Path,
    root: &Path,
    name: &str,
    console: &Path,
    network_namespace: Option<&Path>,
) -> Result<u32> {
    let log = File::create(console).with_context(|| format!("creating {}", console.display()))?;
    let mut cmd = Command::new(nspawn);
    cmd.arg("--directory")
        .arg(root)
        .arg(format!("--machine={name}"))
        .args([
            // This machine's PID 1 is not systemd: there is no system bus to
            // register with or to create a scope on.
            "--register=no",
            "--keep-unit",
            "--boot",
            // Boot messages go to console.log; nobody types on the console.
            "--console=read-only",
            // The host has no resolver of its own; give it this machine's.
            "--resolv-conf=copy-host",
            // Do not touch /var/log/journal on the machine.
            "--link-journal=no",
            // Ignore any /etc/systemd/nspawn/NAME.nspawn lying around.
            "--settings=no",
        ]);
    if let Some(namespace) = network_namespace {
        cmd.arg(format!("--network-namespace-path={}", namespace.display()));
    }
    cmd.env_clear()
        .env("PATH", SANE_PATH)
        // nspawn passes TERM into the host; a dumb one keeps escape codes
        // out of console.log.
        .env("TERM", "dumb")
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // A cgroup of its own (see cgroup.rs): open in the parent, entered in the child.
    let procs = root
        .parent()
        .map_or_else(Vec::new, |dir| cgroup::prepare(name, dir));
    let fds: Vec<std::os::fd::RawFd> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    // Own session and process group: the host must outlive the process
    // that ran `up` (a test, a shell) and not get its terminal's signals.
    // SAFETY: setsid and write are async-signal-safe; `fds` was built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            cgroup::enter(&fds);
            nix::unistd::setsid().map(|_| ()).map_err(io::Error::from)
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", nspawn.display()))?;
    drop(procs);
    // Not waited for here: `down` reaps it if it is still our child,
    // otherwise PID 1 does.
    Ok(child.id())
}

pub(super) fn wait_ready(paths: &SandboxPaths, sb: &Sandbox, console: &Path) -> Result<()> {
    let deadline = Instant::now() + BOOT_TIMEOUT;
    let timeout = |detail: String| -> anyhow::Error {
        SandboxError::BootTimeout {
            name: sb.name.clone(),
            secs: BOOT_TIMEOUT.as_secs(),
            detail,
            console: console.to_path_buf(),
        }
        .into()
    };
    let mut init: Option<u32> = None;
    let mut banner = false;
    while !(banner && init.is_some()) {
        if !pid_alive(sb.pid) {
            bail!(
                "systemd-nspawn for {} exited during boot; last lines of {}:\n{}",
                sb.name,
                console.display(),
                tail_lines(console, 20)
            );
        }
        if init.is_none() {
            init = find_init(sb.pid);
        }
        if !banner {
            banner = match &sb.network_namespace {
                None => ssh_banner(sb.port),
                Some(namespace) => {
                    let port = sb.port;
                    in_network_namespace(namespace, move || ssh_banner(port)).unwrap_or(false)
                }
            };
        }
        if Instant::now() >= deadline {
            let what = if banner {
                "its init process was not found"
            } else {
                "sshd did not answer on the port"
            };
            return Err(timeout(what.into()));
        }
        if !(banner && init.is_some()) {
            thread::sleep(Duration::from_millis(250));
        }
    }
    let init = init.expect("loop ends with init found");

    // `--wait` blocks until boot finished; `timeout` inside bounds it even
    // if we are killed and nsenter's child is orphaned.
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(5);
    let out = run_with_timeout(
        Command::new(tool("nsenter")?)
            .arg("--target")
            .arg(init.to_string())
            .arg("--all")
            .args(["/usr/bin/timeout", "--kill-after=5"])
            .arg(left.to_string())
            .args(["/usr/bin/systemctl", "is-system-running", "--wait"])
            .env_clear()
            .env("PATH", SANE_PATH)
            .env("LANG", "C"),
        Duration::from_secs(left + 10),
    )?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match state.as_str() {
        "running" => {}
        "degraded" => {
            let failed = run_with_timeout(
                Command::new(tool("nsenter")?)
                    .arg("--target")
                    .arg(init.to_string())
                    .arg("--all")
                    .args(["/usr/bin/systemctl", "--failed", "--no-legend", "--plain"])
                    .env_clear()
                    .env("PATH", SANE_PATH),
                Duration::from_secs(15),
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
            warn!(name = %sb.name, failed = %failed, "sandbox booted degraded");
        }
        other => {
            return Err(timeout(format!(
                "systemctl is-system-running says {other:?} ({})",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    // Finally the path placard will use: key auth and the recorded host key.
    let mut argv = ssh_argv(paths, &sb.name)?;
    let host = argv.pop().expect("ssh_argv ends with the destination");
    argv.extend([
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
    ]);
    argv.extend([host, "true".into()]);
    // argv[0] is `ssh`, or `nsenter` for a host in a namespace of its own.
    let program = if argv[0] == "nsenter" {
        tool("nsenter")?
    } else {
        tool("ssh")?
    };
    let out = run_with_timeout(
        Command::new(program).args(&argv[1..]),
        Duration::from_secs(30),
    )?;
    if !out.status.success() {
        bail!(
            "sandbox {} booted but `ssh … true` failed ({}): {}",
            sb.name,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// True once something on the port speaks SSH-2.0.
pub(super) fn ssh_banner(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 256 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"SSH-2.0-")
}

/// The container's init: the child of nspawn that lives in another pid
/// namespace (nspawn is a subreaper, so it ends up as nspawn's child).
pub(super) fn find_init(nspawn_pid: u32) -> Option<u32> {
    let own_ns = fs::read_link(format!("/proc/{nspawn_pid}/ns/pid")).ok()?;
    let tasks = fs::read_dir(format!("/proc/{nspawn_pid}/task")).ok()?;
    for task in tasks.flatten() {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            match fs::read_link(format!("/proc/{child}/ns/pid")) {
                Ok(ns) if ns != own_ns => return Some(child),
                _ => {}
            }
        }
    }
    None
}

/// SIGTERM to nspawn makes it halt the host cleanly (SIGRTMIN+3 to its
/// systemd); if that takes too long, SIGKILL the host's init (which kills
/// the whole pid namespace) and nspawn's process group.
pub(super) fn stop(pid: u32, name: &str) -> Result<()> {
    let init = find_init(pid);
    info!(name, pid, "stopping sandbox");
    match kill(Pid::from_raw(pid as i32), Signal::SIGTERM) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => return Err(e).context(format!("sending SIGTERM to systemd-nspawn {pid}")),
    }
    if wait_exit(pid, STOP_TIMEOUT) && init.is_none_or(|i| wait_exit(i, Duration::from_secs(5))) {
        return Ok(());
    }
    warn!(
        name,
        pid,
        "sandbox did not halt within {} s; killing it",
        STOP_TIMEOUT.as_secs()
    );
    if let Some(init) = init {
        let _ = kill(Pid::from_raw(init as i32), Signal::SIGKILL);
    }
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    if wait_exit(pid, Duration::from_secs(10))
        && init.is_none_or(|i| wait_exit(i, Duration::from_secs(5)))
    {
        return Ok(());
    }
    bail!("could not stop sandbox {name}: systemd-nspawn {pid} survives SIGKILL")
}

/// The init of a host whose systemd-nspawn is gone. SIGKILL to nspawn (or
/// nspawn crashing) does not stop the host: its init is reparented to PID 1
/// and keeps running, with sshd on the port. nspawn passed the host's
/// machine-id, which `up` wrote, as $container_uuid; that identifies it.
pub(super) fn orphan_inits(root: &Path) -> Vec<u32> {
    let Ok(id) = fs::read_to_string(root.join("etc/machine-id")) else {
        return Vec::new();
    };
    let id = id.trim();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Vec::new();
    }
    let uuid = format!(
        "container_uuid={}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Only the init of a nested pid namespace ("NSpid: 27326 1").
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let is_ns_init = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .is_some_and(|v| {
                let ids: Vec<&str> = v.split_whitespace().collect();
                ids.len() >= 2 && ids.last() == Some(&"1")
            });
        if !is_ns_init || !pid_alive(pid) {
            continue;
        }
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let parent_is_nspawn = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|st| st.rsplit_once(')').map(|(_, r)| r.to_string()))
            .and_then(|r| {
                r.split_whitespace()
                    .nth(1)
                    .and_then(|pp| pp.parse::<u32>().ok())
            })
            .is_some_and(|ppid| {
                cmdline(ppid)
                    .first()
                    .is_some_and(|a| a.ends_with("systemd-nspawn"))
            });
        if !parent_is_nspawn && environ.split(|c| *c == 0).any(|kv| kv == uuid.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Power off an orphaned host: SIGRTMIN+4 asks its systemd for a clean
/// poweroff (what `systemctl poweroff` does); SIGKILL to a pid namespace's
/// init ends every process in it.
pub(super) fn stop_orphan(init: u32, name: &str) -> Result<()> {
    info!(
        name,
        init, "powering off a host whose systemd-nspawn is gone"
    );
    // SAFETY: plain kill(2); nix's Signal has no real-time signals.
    unsafe {
        nix::libc::kill(init as i32, nix::libc::SIGRTMIN() + 4);
    }
    if wait_exit(init, STOP_TIMEOUT) {
        return Ok(());
    }
    let _ = kill(Pid::from_raw(init as i32), Signal::SIGKILL);
    if wait_exit(init, Duration::from_secs(10)) {
        return Ok(());
    }
    bail!("could not stop sandbox {name}: its init {init} survives SIGKILL")
}

/// Wait for pid to be gone, reaping it if it is our child (a test that ran
/// both `up` and `down` is nspawn's parent).
pub(super) fn wait_exit(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => return true,
            Err(Errno::ECHILD) if !pid_alive(pid) => return true,
            _ => {}
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Exists and is not a zombie.
pub(super) fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
            None => true,
        },
        Err(_) => false,
    }
}

pub(super) fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Guards against a recycled pid in a stale pid file.
pub(super) fn is_nspawn_for(pid: u32, name: &str) -> bool {
    let argv = cmdline(pid);
    pid_alive(pid)
        && argv.first().is_some_and(|a| a.ends_with("systemd-nspawn"))
        && argv.iter().any(|a| *a == format!("--machine={name}"))
}

pub(super) fn nspawn_pids_for(name: &str, root: &Path) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let root = root.to_string_lossy();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if is_nspawn_for(pid, name) && cmdline(pid).iter().any(|a| *a == *root) {
                out.insert(pid);
            }
        }
    }
    out
}

/// The pid (in this machine's namespace) of the host's systemd, e.g. for
/// `nsenter --target PID --all …` into it without SSH.
pub fn init_pid(sb: &Sandbox) -> Option<u32> {
    if is_nspawn_for(sb.pid, &sb.name) {
        find_init(sb.pid)
    } else {
        None
    }
}

/// Every live systemd-nspawn process for sandbox NAME (for tests that
/// assert `down` left nothing behind).
pub fn nspawn_processes(name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            {
                if is_nspawn_for(pid, name) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

pub(super) fn running(paths: &SandboxPaths, name: &str) -> Result<Option<Sandbox>> {
    let dir = paths.sandbox_dir(name);
    let Some(rec) = read_record(&dir)? else {
        return Ok(None);
    };
    let Some(pid) = read_pid(&dir) else {
        return Ok(None);
    };
    if !is_nspawn_for(pid, name) {
        return Ok(None);
    }
    Ok(Some(Sandbox {
        name: rec.name,
        suite: rec.suite,
        port: rec.port,
        root: dir.join("root"),
        pid,
        network_namespace: rec.network_namespace,
    }))
}

pub(super) fn read_record(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join("sandbox.json");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("reading {}", path.display())),
    }
}

pub(super) fn write_record(dir: &Path, rec: &Record) -> Result<()> {
    write_atomic(
        &dir.join("sandbox.json"),
        serde_json::to_string_pretty(rec)?.as_bytes(),
        0o644,
    )
}

pub(super) fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}
