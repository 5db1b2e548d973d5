//! The local test bed: real Debian hosts (bookworm, trixie) booted with
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
//!   `NAME/pid` the nspawn pid, `NAME/sandbox.json` its suite and port);
//! - the `systemd-nspawn` processes it starts, and their clean shutdown.
//!
//! The hosts share this machine's network namespace (no veth, no NAT): each
//! host's sshd listens on 127.0.0.1:PORT only, and apt inside uses the
//! machine's resolver and mirrors. Everything here needs root.

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

/// Suites we know how to build, and whether they have a security archive.
const SUITES: &[(&str, bool)] = &[("bookworm", true), ("trixie", true)];

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
    #[error("unsupported suite {0:?}: use bookworm or trixie")]
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
}

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Build (once, cached by suite) the base tree and return its path.
///
/// debootstrap minbase with systemd, sshd, D-Bus, iproute2 and
/// ca-certificates, apt sources for SUITE, SUITE-updates and SUITE-security,
/// and none of the things that must differ per host (SSH host keys,
/// machine-id, hostname). No package lists or .debs are kept: run
/// `apt-get update` in a sandbox before installing.
pub fn ensure_image(paths: &SandboxPaths, suite: &str) -> Result<PathBuf> {
    let has_security = check_suite(suite)?;
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
    configure_host(&root, name, port, suite, &pubkey, fresh)?;
    {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        record_known_host(paths, port, &root)?;
        write_record(&dir, &record(true))?;
    }
    let prepared = started.elapsed();

    let console = dir.join("console.log");
    let pid = spawn_nspawn(&nspawn, &root, name, &console)?;
    write_atomic(&dir.join("pid"), format!("{pid}\n").as_bytes(), 0o644)?;
    let sb = Sandbox {
        name: name.to_string(),
        suite: suite.to_string(),
        port,
        root,
        pid,
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

    // The pid file may be missing if `up` died between spawn and writing
    // it, so also look for any nspawn running this sandbox's tree.
    let mut pids: BTreeSet<u32> = nspawn_pids_for(name, &dir.join("root"));
    if let Some(pid) = read_pid(&dir) {
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

    if !dir.exists() {
        info!(name, "no such sandbox; nothing to delete");
        return Ok(());
    }
    if let Some(rec) = read_record(&dir)? {
        let _state_lock = lock(&paths.state_dir.join(".lock"))?;
        forget_known_host(paths, rec.port)?;
    }
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
/// -o IdentitiesOnly=yes root@127.0.0.1`. Append a command to run one.
pub fn ssh_argv(paths: &SandboxPaths, name: &str) -> Result<Vec<String>> {
    validate_name(name)?;
    let rec = read_record(&paths.sandbox_dir(name))?
        .ok_or_else(|| SandboxError::NotFound(name.to_string()))?;
    Ok(vec![
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
    ])
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

// ---------------------------------------------------------------------------
// Image
// ---------------------------------------------------------------------------

/// Turn a fresh debootstrap tree into a reusable image: settings every host
/// of the suite shares, minus everything that must be unique per host.
fn customize_image(root: &Path, suite: &str, has_security: bool) -> Result<()> {
    // apt sources as a Debian install has them (deb822; debootstrap only
    // writes a one-line sources.list for SUITE main).
    let mut sources = format!(
        "Types: deb\nURIs: {MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    if has_security {
        sources.push_str(&format!(
            "\nTypes: deb\nURIs: {SECURITY_MIRROR}\nSuites: {suite}-security\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ));
    }
    write_in_root(
        root,
        "etc/apt/sources.list.d/debian.sources",
        sources.as_bytes(),
        0o644,
    )?;
    remove_if_exists(&root.join("etc/apt/sources.list"))?;

    // debootstrap generated host keys; copies must not share them.
    for entry in fs::read_dir(root.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }

    // debootstrap also left a machine-id in /etc AND a separate copy in
    // /var/lib/dbus. systemd reads the D-Bus one when /etc/machine-id is
    // empty, so every copy would boot with the same id; Debian normally has
    // a symlink there. Per-host ids are written by `up`.
    write_in_root(root, "etc/machine-id", b"", 0o444)?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    remove_if_exists(&dbus_id)?;
    if let Some(parent) = dbus_id.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)?;

    // debootstrap copied this machine's hostname and resolv.conf; the
    // hostname is set per host, resolv.conf is copied in by nspawn at boot
    // (--resolv-conf=copy-host). trixie's minbase has no /etc/hosts at all.
    write_in_root(root, "etc/hostname", b"localhost\n", 0o644)?;
    write_in_root(root, "etc/hosts", hosts_file("localhost").as_bytes(), 0o644)?;
    remove_if_exists(&root.join("etc/resolv.conf"))?;

    // The apt timers would run `apt-get update`/upgrades at random times and
    // hold the dpkg lock while a test applies a role.
    for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
        remove_if_exists(
            &root
                .join("etc/systemd/system/timers.target.wants")
                .join(timer),
        )?;
    }

    // Nothing pre-downloaded: no .debs, no package lists (they would be
    // stale in a cached image anyway).
    clear_dir_files(&root.join("var/cache/apt/archives"), |n| {
        n.ends_with(".deb")
    })?;
    clear_dir_files(&root.join("var/cache/apt"), |n| n.ends_with(".bin"))?;
    clear_dir_files(&root.join("var/lib/apt/lists"), |n| n != "lock")?;
    Ok(())
}

fn hosts_file(name: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

// ---------------------------------------------------------------------------
// Per-host setup
// ---------------------------------------------------------------------------

/// Make the copied tree into host NAME. `fresh` is false when booting an
/// existing sandbox again: its identity (host keys, machine-id) stays.
fn configure_host(
    root: &Path,
    name: &str,
    port: u16,
    suite: &str,
    pubkey: &str,
    fresh: bool,
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
    let mut dropin = format!(
        "# Written by placard sandbox: this host shares the machine's network,\n\
         # so its sshd must listen on its own loopback port only.\n\
         Port {port}\nListenAddress {LOOPBACK}:{port}\n"
    );
    if suite != "bookworm" {
        // OpenSSH >= 9.8 (trixie) penalises source addresses after failed or
        // aborted logins; every sandbox client is 127.0.0.1, so one test of a
        // wrong key would lock out every later test for a while. bookworm's
        // 9.2 does not know the option and would refuse to start with it.
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
fn ensure_key(paths: &SandboxPaths) -> Result<String> {
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
fn record_known_host(paths: &SandboxPaths, port: u16, root: &Path) -> Result<()> {
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

fn forget_known_host(paths: &SandboxPaths, port: u16) -> Result<()> {
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

fn known_host_pattern(port: u16) -> String {
    format!("[{LOOPBACK}]:{port}")
}

fn known_host_lines_without(paths: &SandboxPaths, port: u16) -> Result<Vec<String>> {
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

fn check_port_available(paths: &SandboxPaths, name: &str, port: u16) -> Result<()> {
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

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

// ---------------------------------------------------------------------------
// Boot, readiness, stop
// ---------------------------------------------------------------------------

fn spawn_nspawn(nspawn: &Path, root: &Path, name: &str, console: &Path) -> Result<u32> {
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
        ])
        .env_clear()
        .env("PATH", SANE_PATH)
        // nspawn passes TERM into the host; a dumb one keeps escape codes
        // out of console.log.
        .env("TERM", "dumb")
        .env("SYSTEMD_COLORS", "0")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // Own session and process group: the host must outlive the process
    // that ran `up` (a test, a shell) and not get its terminal's signals.
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(io::Error::from));
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", nspawn.display()))?;
    // Not waited for here: `down` reaps it if it is still our child,
    // otherwise PID 1 does.
    Ok(child.id())
}

fn wait_ready(paths: &SandboxPaths, sb: &Sandbox, console: &Path) -> Result<()> {
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
            banner = ssh_banner(sb.port);
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
    let out = run_with_timeout(
        Command::new(tool("ssh")?).args(&argv[1..]),
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
fn ssh_banner(port: u16) -> bool {
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
fn find_init(nspawn_pid: u32) -> Option<u32> {
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
fn stop(pid: u32, name: &str) -> Result<()> {
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
fn orphan_inits(root: &Path) -> Vec<u32> {
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
fn stop_orphan(init: u32, name: &str) -> Result<()> {
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
fn wait_exit(pid: u32, timeout: Duration) -> bool {
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
fn pid_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rsplit_once(')') {
            Some((_, rest)) => !matches!(rest.trim_start().chars().next(), Some('Z') | Some('X')),
            None => true,
        },
        Err(_) => false,
    }
}

fn cmdline(pid: u32) -> Vec<String> {
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
fn is_nspawn_for(pid: u32, name: &str) -> bool {
    let argv = cmdline(pid);
    pid_alive(pid)
        && argv.first().is_some_and(|a| a.ends_with("systemd-nspawn"))
        && argv.iter().any(|a| *a == format!("--machine={name}"))
}

fn nspawn_pids_for(name: &str, root: &Path) -> BTreeSet<u32> {
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

fn running(paths: &SandboxPaths, name: &str) -> Result<Option<Sandbox>> {
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
    }))
}

fn read_record(dir: &Path) -> Result<Option<Record>> {
    let path = dir.join("sandbox.json");
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).context(format!("reading {}", path.display())),
    }
}

fn write_record(dir: &Path, rec: &Record) -> Result<()> {
    write_atomic(
        &dir.join("sandbox.json"),
        serde_json::to_string_pretty(rec)?.as_bytes(),
        0o644,
    )
}

fn read_pid(dir: &Path) -> Option<u32> {
    fs::read_to_string(dir.join("pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

pub fn validate_name(name: &str) -> Result<()> {
    let ok = (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SandboxError::InvalidName(name.to_string()).into())
    }
}

/// Returns whether the suite has a security archive.
fn check_suite(suite: &str) -> Result<bool> {
    SUITES
        .iter()
        .find(|(s, _)| *s == suite)
        .map(|(_, sec)| *sec)
        .ok_or_else(|| SandboxError::UnsupportedSuite(suite.to_string()).into())
}

fn require_root() -> Result<()> {
    if geteuid().is_root() {
        Ok(())
    } else {
        Err(SandboxError::NotRoot.into())
    }
}

/// Absolute path of a tool, searched in PATH and the sbin directories.
fn tool(name: &'static str) -> Result<PathBuf> {
    let package = match name {
        "debootstrap" | "systemd-nspawn" => "debootstrap systemd-container",
        "ssh" | "ssh-keygen" => "openssh-client",
        "nsenter" => "util-linux",
        "umount" | "mount" => "mount",
        _ => "coreutils",
    };
    let path = std::env::var("PATH").unwrap_or_default();
    for dir in path.split(':').chain(SANE_PATH.split(':')) {
        if dir.is_empty() {
            continue;
        }
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(SandboxError::MissingTool {
        tool: name,
        package,
    }
    .into())
}

fn lock(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
}

fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write via a temp file and rename, so readers never see half a file.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Check that no directory between root and rel is a symlink: a host that
/// ran roles may have changed its tree, and we write as root from outside
/// it, where a symlink would point into this machine's own files.
fn checked_in_root(root: &Path, rel: &str) -> Result<PathBuf> {
    let mut path = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == ".." || *part == "." {
            bail!("bad path {rel:?} inside a sandbox tree");
        }
        path.push(part);
        if i + 1 < parts.len() {
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("{} is missing in the host tree", path.display()))?;
            if !meta.is_dir() {
                bail!(
                    "{} in the host tree is not a plain directory; refusing to write through it",
                    path.display()
                );
            }
        }
    }
    Ok(path)
}

fn write_in_root(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
    let path = checked_in_root(root, rel)?;
    if fs::symlink_metadata(&path)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false)
    {
        fs::remove_file(&path)?;
    }
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .custom_flags(libc_o_nofollow())
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(data)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

fn ensure_dir_in_root(root: &Path, rel: &str, mode: u32) -> Result<()> {
    let path = checked_in_root(root, rel)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} in the host tree is not a directory", path.display()),
        Err(_) => fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?,
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("removing {}", path.display())),
    }
}

fn clear_dir_files(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<()> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && pred(&name) {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// mountinfo writes space, tab, newline and backslash as \ooo.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// rm -rf that never crosses into a mounted file system. An interrupted
/// debootstrap leaves /proc and /sys mounted in its target; `unmount` says
/// to detach such mounts first (image builds only — for a sandbox tree a
/// mount means something still uses it, so refuse).
fn remove_tree(dir: &Path, unmount: bool) -> Result<()> {
    let mounts = mounts_under(dir);
    if !mounts.is_empty() {
        if !unmount {
            bail!(
                "refusing to delete {}: {} is mounted inside it",
                dir.display(),
                mounts[0].display()
            );
        }
        let umount = tool("umount")?;
        for m in &mounts {
            let _ = run_with_timeout(
                Command::new(&umount).arg("--lazy").arg(m),
                Duration::from_secs(30),
            );
        }
        if let Some(m) = mounts_under(dir).first() {
            bail!(
                "cannot delete {}: {} stays mounted",
                dir.display(),
                m.display()
            );
        }
    }
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    run_checked(
        Command::new(tool("rm")?)
            .arg("-rf")
            .arg("--one-file-system")
            .arg("--")
            .arg(dir),
        Duration::from_secs(300),
    )
    .with_context(|| format!("deleting {}", dir.display()))?;
    Ok(())
}

fn tail_lines(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quote a path for an ssh `-o` value if it has blanks.
fn ssh_option_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s.into_owned()
    }
}

fn describe(cmd: &Command) -> String {
    let prog = Path::new(cmd.get_program())
        .file_name()
        .unwrap_or(OsStr::new("?"))
        .to_string_lossy()
        .into_owned();
    let args: Vec<String> = cmd
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    format!("{prog} {}", args.join(" "))
}

/// Run with stdout/stderr captured; kill it (and its process group) if it
/// outlives `timeout`. Every external command here is bounded this way.
fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = describe(cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("running {what}"))?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let t_out = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            bail!("{what} did not finish within {} s", timeout.as_secs());
        }
        thread::sleep(Duration::from_millis(50));
    };
    Ok(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = describe(cmd);
    let out = run_with_timeout(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// Run with output appended to a log file (long, chatty commands).
fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<ExitStatus> {
    let what = describe(cmd);
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .env("PATH", SANE_PATH)
        .process_group(0);
    let mut child = cmd.spawn().with_context(|| format!("running {what}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            bail!(
                "{what} did not finish within {} s (log: {})",
                timeout.as_secs(),
                log.display()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("Web").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"a".repeat(33)).is_err());
    }

    #[test]
    fn known_hosts_lines_are_replaced() {
        let dir = std::env::temp_dir().join(format!("placard-kh-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let paths = SandboxPaths {
            state_dir: dir.clone(),
            image_cache: dir.clone(),
        };
        fs::write(
            paths.known_hosts(),
            "[127.0.0.1]:2201 ssh-ed25519 OLD\n[127.0.0.1]:22010 ssh-ed25519 KEEP\n",
        )
        .unwrap();
        let lines = known_host_lines_without(&paths, 2201).unwrap();
        assert_eq!(
            lines,
            vec!["[127.0.0.1]:22010 ssh-ed25519 KEEP".to_string()]
        );
        forget_known_host(&paths, 22010).unwrap();
        assert_eq!(
            fs::read_to_string(paths.known_hosts()).unwrap(),
            "[127.0.0.1]:2201 ssh-ed25519 OLD\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn remove_tree_handles_leftover_mounts() {
        if !geteuid().is_root() || tool("mount").is_err() {
            eprintln!("skipping: needs root and mount");
            return;
        }
        let dir = std::env::temp_dir().join(format!("placard-rt-{}", std::process::id()));
        fs::create_dir_all(dir.join("proc")).unwrap();
        fs::write(dir.join("file"), "x").unwrap();
        let status = Command::new(tool("mount").unwrap())
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(dir.join("proc"))
            .status()
            .unwrap();
        assert!(status.success());
        let err = remove_tree(&dir, false).unwrap_err();
        assert!(
            format!("{err:#}").contains("is mounted inside it"),
            "{err:#}"
        );
        assert!(dir.join("file").exists());
        remove_tree(&dir, true).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn free_port_is_in_range() {
        let p = free_port().unwrap();
        assert!(PORT_RANGE.contains(&p));
    }
}
