//! The local test bed: real Debian hosts (bullseye, bookworm, trixie) booted with
//! `systemd-nspawn` on this machine and reachable over SSH on a loopback
//! port of their own, so that placard can be run against a host that boots
//! systemd, runs sshd and installs packages with apt exactly like a server.
//!
//! This module owns everything on disk that makes such a host:
//! - the image cache (`image_cache/SUITE-vN`): one debootstrapped base tree
//!   per suite, built once into a temporary directory and renamed into place
//!   when complete, so an interrupted build never leaves a half image;
//! - the state directory (`state_dir`): the sandbox SSH key (`id_ed25519`),
//!   the `known_hosts` file holding each sandbox's host key, and one
//!   directory per sandbox (`NAME/root` the host's tree, `NAME/console.log`,
//!   `NAME/pid` the nspawn pid, `NAME/sandbox.json` its suite and port,
//!   `NAME/cgroups` the host's own cgroups);
//! - the `systemd-nspawn` processes it starts, each in a cgroup of its own (so that
//!   hosts do not share their units' cgroups, see cgroup.rs), and their clean shutdown.
//!
//! By default the hosts share this machine's network namespace (no veth, no NAT): each
//! host's sshd listens on 127.0.0.1:PORT only, and apt inside uses the
//! machine's resolver and mirrors. [`up_in`] instead boots a host inside a network
//! namespace someone else made (a test bed's private networks, see
//! tests/common/network.rs): its sshd listens on PORT on every address of that
//! namespace, and `ssh_argv` enters the namespace (`nsenter --net=…`) to reach it.
//! Everything here needs root.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, Flock, FlockArg};
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{geteuid, Pid};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

/// Bumped whenever `customize_image` changes what an image contains, so a
/// cache built by an older placard is not silently reused.
const IMAGE_FORMAT: u32 = 1;
/// The mirror the machine itself uses; it is the only one reachable here.
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";
/// minbase has no init, no sshd and no D-Bus; these make it a bootable host
/// that placard can reach. ca-certificates lets roles add https sources.
const BASE_PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "openssh-server",
    "dbus",
    "iproute2",
    "ca-certificates",
];
const LOOPBACK: &str = "127.0.0.1";
const PORT_RANGE: std::ops::RangeInclusive<u16> = 2200..=2999;
/// Boot to `running` takes ~15 s here; 90 s leaves room for a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// A clean halt takes ~2 s; after this we SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// debootstrap takes 30-70 s with a good mirror.
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// PATH for the tools we run, and for commands run inside the host: cargo
/// test and sudo environments often lack the sbin directories.
const SANE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A Debian release we know how to build a host of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Suite {
    pub name: &'static str,
    /// It has a `SUITE-security` archive.
    pub has_security: bool,
    /// Its OpenSSH (>= 9.8) has `PerSourcePenaltyExemptList`; older ones refuse to start
    /// with an option they do not know.
    pub sshd_has_penalties: bool,
}

/// Suites we know how to build. bullseye (Debian 11, glibc 2.31) is the old host that
/// only the static agent can serve: the one `capture` is for.
const SUITES: &[Suite] = &[
    Suite {
        name: "bullseye",
        has_security: true,
        sshd_has_penalties: false,
    },
    Suite {
        name: "bookworm",
        has_security: true,
        sshd_has_penalties: false,
    },
    Suite {
        name: "trixie",
        has_security: true,
        sshd_has_penalties: true,
    },
];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{tool} is not installed: apt-get install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("the sandbox needs root (debootstrap, systemd-nspawn and nsenter do): run it as root")]
    NotRoot,
    #[error("invalid sandbox name {0:?}: use 1-32 characters from [a-z0-9-]")]
    InvalidName(String),
    #[error("unsupported suite {0:?}: use bullseye, bookworm or trixie")]
    UnsupportedSuite(String),
    #[error("port {port} is not available: {why}")]
    PortUnavailable { port: u16, why: String },
    #[error("no sandbox named {0:?}")]
    NotFound(String),
    #[error("no free loopback TCP port in 2200..=2999")]
    NoFreePort,
    #[error("sandbox {name} was not ready within {secs} s: {detail} (console: {console})")]
    BootTimeout {
        name: String,
        secs: u64,
        detail: String,
        console: PathBuf,
    },
}

/// A running sandbox host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sandbox {
    pub name: String,
    pub suite: String,
    /// Its sshd listens on 127.0.0.1:port and nowhere else.
    pub port: u16,
    /// The host's tree (its `/`), state_dir/NAME/root.
    pub root: PathBuf,
    /// The pid of the `systemd-nspawn` process that runs it.
    pub pid: u32,
    /// The network namespace it runs in (a file such as /run/netns/NAME); None: this
    /// machine's own, sshd on 127.0.0.1:port.
    #[serde(default)]
    pub network_namespace: Option<PathBuf>,
}

/// Where sandboxes and images live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPaths {
    pub state_dir: PathBuf,
    pub image_cache: PathBuf,
}

impl Default for SandboxPaths {
    fn default() -> Self {
        SandboxPaths {
            state_dir: PathBuf::from("/var/lib/placard/sandbox"),
            image_cache: PathBuf::from("/var/cache/placard/images"),
        }
    }
}

impl SandboxPaths {
    /// The defaults, overridden by PLACARD_SANDBOX_STATE and
    /// PLACARD_SANDBOX_IMAGES (tests use a private state dir but share the
    /// image cache, which is slow to build).
    pub fn from_env() -> Self {
        let mut p = SandboxPaths::default();
        if let Some(v) = std::env::var_os("PLACARD_SANDBOX_STATE") {
            p.state_dir = PathBuf::from(v);
        }
        if let Some(v) = std::env::var_os("PLACARD_SANDBOX_IMAGES") {
            p.image_cache = PathBuf::from(v);
        }
        p
    }

    /// The private key whose public half is root's authorized_keys in every
    /// sandbox.
    pub fn key(&self) -> PathBuf {
        self.state_dir.join("id_ed25519")
    }

    /// Host keys of the sandboxes, as `[127.0.0.1]:PORT ssh-ed25519 AAAA…`.
    pub fn known_hosts(&self) -> PathBuf {
        self.state_dir.join("known_hosts")
    }

    pub fn sandbox_dir(&self, name: &str) -> PathBuf {
        self.state_dir.join(name)
    }

    fn image_dir(&self, suite: &str) -> PathBuf {
        self.image_cache.join(format!("{suite}-v{IMAGE_FORMAT}"))
    }
}

/// What sandbox.json holds. Its presence reserves the port; `complete`
/// says the tree is fully set up.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    suite: String,
    port: u16,
    image: PathBuf,
    created_unix: u64,
    /// False while `up` is still copying and configuring the tree: the port
    /// is already reserved, but the tree is not one to boot again.
    #[serde(default)]
    complete: bool,
    /// See [`Sandbox::network_namespace`].
    #[serde(default)]
    network_namespace: Option<PathBuf>,
}

mod boot;
mod cgroup;
mod host;
mod image;
mod util;

use boot::*;
pub use boot::{init_pid, nspawn_processes};
use host::*;
use image::*;
pub use util::*;

/// Build (once, cached by suite) the base tree and return its path.
///
/// debootstrap minbase with systemd, sshd, D-Bus, iproute2 and
/// ca-certificates, apt sources for SUITE, SUITE-updates and SUITE-security,
/// and none of the things that must differ per host (SSH host keys,
/// machine-id, hostname). No package lists or .debs are kept: run
/// `apt-get update` in a sandbox before installing.
pub fn ensure_image(paths: &SandboxPaths, suite: &str) -> Result<PathBuf> {
    let has_security = check_suite(suite)?.has_security;
    let image = paths.image_dir(suite);
    // The rename below is atomic, so an existing directory is a complete one.
    if image.is_dir() {
        return Ok(image);
    }
    require_root()?;
    let debootstrap = tool("debootstrap")?;
    create_dir_all_mode(&paths.image_cache, 0o755)?;

    // Two tests may ask for the same image at once: one builds, the other
    // waits and then finds it.
    let build_lock = lock(&paths.image_cache.join(format!(".{suite}.lock")))?;
    if image.is_dir() {
        return Ok(image);
    }

    // Leftovers of interrupted builds (ours hold the lock, so these are dead).
    let tmp_prefix = format!(".{suite}-v{IMAGE_FORMAT}.tmp-");
    for entry in fs::read_dir(&paths.image_cache)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&tmp_prefix) {
            warn!(path = %entry.path().display(), "removing an interrupted image build");
            remove_tree(&entry.path(), true)?;
        }
    }

    let tmp = paths
        .image_cache
        .join(format!("{tmp_prefix}{}", std::process::id()));
    let log_path = paths.image_cache.join(format!("{suite}.build.log"));
    let started = Instant::now();
    info!(
        suite,
        "building sandbox image with debootstrap (about a minute)"
    );
    let mut cmd = Command::new(&debootstrap);
    cmd.arg("--variant=minbase")
        .arg(format!("--include={}", BASE_PACKAGES.join(",")))
        .arg("--components=main")
        .arg(suite)
        .arg(&tmp)
        .arg(MIRROR);
    let lock_fd = build_lock.as_raw_fd();
    // SAFETY: only async-signal-safe calls (fcntl, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // debootstrap and everything it starts inherit the lock, so even
            // if we die, no later build sweeps a tree still being written.
            nix::fcntl::fcntl(lock_fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            // And it does not outlive us (Ctrl-C, a killed test) for long.
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)?;
            Ok(())
        });
    }
    let status = run_logged(&mut cmd, &log_path, DEBOOTSTRAP_TIMEOUT)
        .with_context(|| format!("debootstrap of {suite}"))?;
    if !status.success() {
        let tail = tail_lines(&log_path, 15);
        // Leave tmp for the next build to sweep: debootstrap may still have
        // /proc mounted in it, which remove_tree handles under the lock.
        let _ = remove_tree(&tmp, true);
        bail!(
            "debootstrap {suite} failed ({status}); last lines of {}:\n{tail}",
            log_path.display()
        );
    }
    customize_image(&tmp, suite, has_security)
        .with_context(|| format!("preparing the {suite} image in {}", tmp.display()))?;
    fs::rename(&tmp, &image)
        .with_context(|| format!("renaming {} to {}", tmp.display(), image.display()))?;
    info!(suite, secs = started.elapsed().as_secs_f32(), path = %image.display(), "sandbox image ready");
    drop(build_lock);
    Ok(image)
}

/// Start sandbox NAME from the SUITE image with sshd on 127.0.0.1:PORT and
/// wait until it accepts SSH and systemd reports `running` (or `degraded`).
///
/// If NAME already runs, it is returned as it is (a warning is logged when
/// its suite or port differ from the ones asked for). A stopped sandbox of
/// the same suite (e.g. after the machine rebooted) is booted again from its
/// existing tree.
pub fn up(paths: &SandboxPaths, name: &str, suite: &str, port: u16) -> Result<Sandbox> {
    up_in(paths, name, suite, port, None)
}

/// [`up`], but the host runs in the network namespace `network_namespace` (a path such
/// as /run/netns/NAME, made and removed by the caller) instead of sharing this
/// machine's: its sshd listens on PORT on every address there, and readiness is
/// checked from inside that namespace.
pub fn up_in(
    paths: &SandboxPaths,
    name: &str,
    suite: &str,
    port: u16,
    network_namespace: Option<&Path>,
) -> Result<Sandbox> {
    validate_name(name)?;
    check_suite(suite)?;
    if port == 0 {
        bail!(SandboxError::PortUnavailable {
            port,
            why: "port 0 is not a port sshd can listen on".into()
        });
    }
    require_root()?;
    let nspawn = tool("systemd-nspawn")?;
    tool("nsenter")?;
    tool("ssh")?;
    tool("ssh-keygen")?;
    create_dir_all_mode(&paths.state_dir, 0o700)?;

    // Held for the whole up so that two `up NAME` cannot set up one tree
    // twice; a different name proceeds in parallel.
    let _name_lock = lock(&paths.state_dir.join(format!("{name}.lock")))?;
    if let Some(sb) = running(paths, name)? {
        info!(name, port = sb.port, "sandbox is already running");
        if sb.suite != suite || sb.port != port {
            warn!(
                name,
                running_suite = %sb.suite, running_port = sb.port,
                asked_suite = suite, asked_port = port,
                "sandbox already runs with another suite or port; returning it unchanged"
            );
        }
        return Ok(sb);
    }

    let image = ensure_image(paths, suite)?;
    let pubkey = ensure_key(paths)?;
    let dir = paths.sandbox_dir(name);
    // A host whose nspawn was killed still runs on this tree and holds the
    // port; booting a second one on the same tree would corrupt it.
    for init in orphan_inits(&dir.join("root")) {
        warn!(
            name,
            init, "the host is running without its systemd-nspawn; powering it off first"
        );
        stop_orphan(init, name)?;
    }
    let root = dir.join("root");
    let started = Instant::now();

    let record = |complete: bool| Record {
        name: name.to_string(),
        suite: suite.to_string(),
        port,
        image: image.clone(),
        created_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        complete,
        network_namespace: network_namespace.map(Path::to_path_buf),
    };

    // Reserve the port under the state lock (which also serialises
    // known_hosts edits), but copy the image outside it, so that parallel
    // `up`s of different names do not queue behind each other's copy.
    let fresh = {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        check_port_available(paths, name, port)?;
        match read_record(&dir)? {
            Some(rec) if rec.complete && rec.suite != suite => bail!(
                "sandbox {name} exists (stopped) with suite {}, not {suite}: run `down {name}` first",
                rec.suite
            ),
            Some(rec) if rec.complete => {
                info!(name, "booting the stopped sandbox again from its existing tree");
                if rec.port != port {
                    forget_known_host(paths, rec.port)?;
                }
                write_record(&dir, &record(true))?;
                false
            }
            _ => {
                if dir.exists() {
                    // An `up` died half way (copy or setup); start over.
                    warn!(name, "removing an incomplete sandbox directory");
                    remove_tree(&dir, false)?;
                }
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                write_record(&dir, &record(false))?;
                true
            }
        }
    };
    if fresh {
        run_checked(
            Command::new(tool("cp")?)
                .arg("-a")
                .arg("--reflink=auto")
                .arg(&image)
                .arg(&root),
            Duration::from_secs(600),
        )
        .context("copying the image")?;
    }
    configure_host(
        &root,
        name,
        port,
        suite,
        &pubkey,
        fresh,
        network_namespace.is_none(),
    )?;
    {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        record_known_host(paths, port, &root)?;
        write_record(&dir, &record(true))?;
    }
    let prepared = started.elapsed();

    let console = dir.join("console.log");
    let pid = spawn_nspawn(&nspawn, &root, name, &console, network_namespace)?;
    write_atomic(&dir.join("pid"), format!("{pid}\n").as_bytes(), 0o644)?;
    let sb = Sandbox {
        name: name.to_string(),
        suite: suite.to_string(),
        port,
        root,
        pid,
        network_namespace: network_namespace.map(Path::to_path_buf),
    };
    if let Err(e) = wait_ready(paths, &sb, &console) {
        // Do not leave a half-booted host holding the port; keep the tree
        // and console.log for a look, `down` removes them.
        if let Err(stop_err) = stop(pid, name) {
            warn!(name, error = %stop_err, "could not stop the sandbox that failed to boot");
        }
        return Err(e);
    }
    info!(
        name,
        suite,
        port,
        pid,
        prepare_secs = prepared.as_secs_f32(),
        total_secs = started.elapsed().as_secs_f32(),
        "sandbox is up"
    );
    Ok(sb)
}

/// Stop sandbox NAME cleanly (SIGTERM to nspawn, which halts the host;
/// SIGKILL after 30 s) and delete its directory and known_hosts line.
/// Downing a sandbox that does not exist is not an error.
pub fn down(paths: &SandboxPaths, name: &str) -> Result<()> {
    validate_name(name)?;
    require_root()?;
    let dir = paths.sandbox_dir(name);
    if !paths.state_dir.is_dir() {
        info!(name, "no sandbox state directory; nothing to stop");
        return Ok(());
    }
    let _name_lock = lock(&paths.state_dir.join(format!("{name}.lock")))?;
    let started = Instant::now();
    stop_host(&dir, name)?;

    if !dir.exists() {
        info!(name, "no such sandbox; nothing to delete");
        return Ok(());
    }
    if let Some(rec) = read_record(&dir)? {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        forget_known_host(paths, rec.port)?;
    }
    cgroup::remove(&dir);
    remove_tree(&dir, false)?;
    // nspawn 252 leaves this empty directory behind ("Attempted to remove
    // disk file system under …"); it is ours, so tidy it.
    let _ = fs::remove_dir(Path::new("/run/systemd/nspawn/propagate").join(name));
    info!(
        name,
        secs = started.elapsed().as_secs_f32(),
        "sandbox is down"
    );
    Ok(())
}

/// Halt sandbox NAME cleanly, as a reboot or a power cut with a clean shutdown would,
/// and keep everything else: its tree, host keys and port. `up` (or `up_in`) boots it
/// again as it was. Halting a sandbox that does not run is not an error.
pub fn halt(paths: &SandboxPaths, name: &str) -> Result<()> {
    validate_name(name)?;
    require_root()?;
    if !paths.state_dir.is_dir() {
        return Ok(());
    }
    let _name_lock = lock(&paths.state_dir.join(format!("{name}.lock")))?;
    stop_host(&paths.sandbox_dir(name), name)
}

/// Stops every systemd-nspawn running the tree in `dir`, and a host left running
/// without its nspawn. The pid file may be missing if `up` died between spawn and
/// writing it, so nspawn processes are also looked for by their arguments.
fn stop_host(dir: &Path, name: &str) -> Result<()> {
    let mut pids: BTreeSet<u32> = nspawn_pids_for(name, &dir.join("root"));
    if let Some(pid) = read_pid(dir) {
        if is_nspawn_for(pid, name) {
            pids.insert(pid);
        }
    }
    for pid in pids {
        stop(pid, name)?;
    }
    for init in orphan_inits(&dir.join("root")) {
        stop_orphan(init, name)?;
    }
    Ok(())
}

/// The running sandboxes, sorted by name. Stopped leftovers are skipped
/// (with a log line): `down` removes them, `up` boots them again.
pub fn list(paths: &SandboxPaths) -> Result<Vec<Sandbox>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(&paths.state_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).context(format!("reading {}", paths.state_dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if validate_name(&name).is_err() || !entry.path().is_dir() {
            continue;
        }
        match running(paths, &name)? {
            Some(sb) => out.push(sb),
            None => debug!(name, "sandbox directory without a running host"),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// argv for an interactive ssh to NAME that verifies the recorded host key:
/// `ssh -i KEY -p PORT -o UserKnownHostsFile=… -o StrictHostKeyChecking=yes
/// -o IdentitiesOnly=yes root@127.0.0.1`, after `nsenter --net=NAMESPACE` for a host
/// in a network namespace of its own. Append a command to run one.
pub fn ssh_argv(paths: &SandboxPaths, name: &str) -> Result<Vec<String>> {
    validate_name(name)?;
    let rec = read_record(&paths.sandbox_dir(name))?
        .ok_or_else(|| SandboxError::NotFound(name.to_string()))?;
    // A host in a namespace of its own is reached from inside that namespace.
    let enter = match &rec.network_namespace {
        Some(namespace) => vec![
            "nsenter".to_string(),
            format!("--net={}", namespace.display()),
        ],
        None => Vec::new(),
    };
    Ok([
        enter,
        vec![
            "ssh".into(),
            "-i".into(),
            paths.key().to_string_lossy().into_owned(),
            "-p".into(),
            rec.port.to_string(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                ssh_option_path(&paths.known_hosts())
            ),
            // The key was recorded at `up`; anything else is a real mismatch.
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            // An agent with many keys would otherwise hit MaxAuthTries first.
            "-o".into(),
            "IdentitiesOnly=yes".into(),
            format!("root@{LOOPBACK}"),
        ],
    ]
    .concat())
}

/// A loopback TCP port in 2200..=2999 that nothing listens on right now.
/// The search starts at a per-process pseudo-random offset so that tests
/// running in parallel rarely pick the same one; `up` still refuses a port
/// that is taken.
pub fn free_port() -> Result<u16> {
    let span = (*PORT_RANGE.end() - *PORT_RANGE.start()) as u32 + 1;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id().wrapping_mul(2_654_435_761) ^ nanos) % span;
    for i in 0..span {
        let port = *PORT_RANGE.start() + ((start + i) % span) as u16;
        if port_is_free(port) {
            return Ok(port);
        }
    }
    Err(SandboxError::NoFreePort.into())
}
