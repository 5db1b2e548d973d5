//! Small helpers: names, ports, locks, and running programs.

use super::*;

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

/// The suite of that name, when we know how to build it.
pub(super) fn check_suite(suite: &str) -> Result<&'static Suite> {
    SUITES
        .iter()
        .find(|known| known.name == suite)
        .ok_or_else(|| SandboxError::UnsupportedSuite(suite.to_string()).into())
}

pub(super) fn require_root() -> Result<()> {
    if geteuid().is_root() {
        Ok(())
    } else {
        Err(SandboxError::NotRoot.into())
    }
}

/// Absolute path of a tool, searched in PATH and the sbin directories.
pub(super) fn tool(name: &'static str) -> Result<PathBuf> {
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

/// Runs `work` on a thread of its own that has joined the network namespace at
/// `namespace` (e.g. /run/netns/NAME): sockets it opens live in that namespace and keep
/// living there when handed back. The calling thread's namespace does not change (a
/// network namespace belongs to a thread, not to the process).
pub fn in_network_namespace<T: Send>(
    namespace: &Path,
    work: impl FnOnce() -> T + Send,
) -> Result<T> {
    let file = File::open(namespace)
        .with_context(|| format!("opening the network namespace {}", namespace.display()))?;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).with_context(
                    || format!("entering the network namespace {}", namespace.display()),
                )?;
                Ok(work())
            })
            .join()
            .map_err(|_| anyhow!("a thread in {} panicked", namespace.display()))?
    })
}

pub(super) fn lock(path: &Path) -> Result<Flock<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| anyhow!("locking {}: {e}", path.display()))
}

pub(super) fn create_dir_all_mode(dir: &Path, mode: u32) -> Result<()> {
    if !dir.is_dir() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Write via a temp file and rename, so readers never see half a file.
pub(super) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    crate::system::atomic::write_atomic(
        path,
        data,
        crate::system::atomic::Attributes::mode(mode),
        None,
    )
}

/// Check that no directory between root and rel is a symlink: a host that
/// ran roles may have changed its tree, and we write as root from outside
/// it, where a symlink would point into this machine's own files.
pub(super) fn checked_in_root(root: &Path, rel: &str) -> Result<PathBuf> {
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

pub(super) fn write_in_root(root: &Path, rel: &str, data: &[u8], mode: u32) -> Result<()> {
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

pub(super) fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

pub(super) fn ensure_dir_in_root(root: &Path, rel: &str, mode: u32) -> Result<()> {
    let path = checked_in_root(root, rel)?;
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} in the host tree is not a directory", path.display()),
        Err(_) => fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?,
    }
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

pub(super) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context(format!("removing {}", path.display())),
    }
}

pub(super) fn clear_dir_files(dir: &Path, pred: impl Fn(&str) -> bool) -> Result<()> {
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
pub(super) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
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
pub(super) fn unescape_mountinfo(s: &str) -> String {
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
pub(super) fn remove_tree(dir: &Path, unmount: bool) -> Result<()> {
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

pub(super) fn tail_lines(path: &Path, n: usize) -> String {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quote a path for an ssh `-o` value if it has blanks.
pub(super) fn ssh_option_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s.into_owned()
    }
}

pub(super) fn describe(cmd: &Command) -> String {
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
pub(super) fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let what = describe(cmd);
    let prepared = std::mem::replace(cmd, Command::new(cmd.get_program()));
    let output = crate::system::command::execute(prepared, None, timeout, &what)?;
    Ok(Output {
        status: output.status,
        stdout: output.stdout,
        stderr: output.stderr,
    })
}

pub(super) fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<Output> {
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
pub(super) fn run_logged(cmd: &mut Command, log: &Path, timeout: Duration) -> Result<ExitStatus> {
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
