//! Real Debian hosts for end-to-end tests: a sandbox (systemd-nspawn) per test, with its
//! own state folder, SSH key and known_hosts, and a site (this repository's roles and
//! templates) with an inventory naming it. Dropping the bed stops and deletes the host.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::fcntl::{Flock, FlockArg};
use placard::sandbox::{self, Sandbox, SandboxPaths};

pub struct Testbed {
    pub paths: SandboxPaths,
    pub host: Sandbox,
    /// Holds inventory.yml; the site (roles, templates) is the repository.
    pub dir: tempfile::TempDir,
    /// The host's SSH port, reserved for as long as the bed lives (a reboot included).
    _port: Flock<fs::File>,
}

impl Testbed {
    /// Boots a Debian host named `name` (unique per test) with the given suite.
    pub fn up(name: &str, suite: &str) -> Testbed {
        Testbed::up_in(name, suite, None)
    }

    /// [`Testbed::up`] in the network namespace at `namespace` (see
    /// tests/common/network.rs); None: this machine's, sshd on a loopback port.
    pub fn up_in(name: &str, suite: &str, namespace: Option<&Path>) -> Testbed {
        assert!(
            nix::unistd::geteuid().is_root(),
            "end-to-end tests boot hosts with systemd-nspawn and must run as root"
        );
        let paths = SandboxPaths {
            state_dir: std::env::temp_dir()
                .join(format!("placard-e2e-{name}-{}", std::process::id())),
            ..SandboxPaths::default()
        };
        let (port, reservation) = reserve_port();
        let host = sandbox::up_in(&paths, name, suite, port, namespace)
            .unwrap_or_else(|e| panic!("cannot boot sandbox {name}: {e:#}"));
        let dir = tempfile::tempdir().expect("a temporary folder");
        let bed = Testbed {
            paths,
            host,
            dir,
            _port: reservation,
        };
        bed.write_inventory("roles: [base]\n    vars:\n      base_hostname: e2e-host\n");
        bed
    }

    /// Restarts the host: a clean halt, then a boot of the same tree (same host keys,
    /// port and network), waiting until it is ready again.
    pub fn restart(&mut self) {
        sandbox::halt(&self.paths, &self.host.name)
            .unwrap_or_else(|e| panic!("cannot halt {}: {e:#}", self.host.name));
        self.host = sandbox::up_in(
            &self.paths,
            &self.host.name,
            &self.host.suite,
            self.host.port,
            self.host.network_namespace.as_deref(),
        )
        .unwrap_or_else(|e| panic!("cannot boot {} again: {e:#}", self.host.name));
    }

    /// Writes the inventory with `extra` appended to the host's entry (indented 4).
    pub fn write_inventory(&self, extra: &str) {
        let text = format!(
            "ssh:\n  known_hosts: {}\n  identity: {}\nhosts:\n  {}:\n    address: 127.0.0.1\n    port: {}\n    user: root\n    {extra}",
            self.paths.known_hosts().display(),
            self.paths.key().display(),
            self.host.name,
            self.host.port,
        );
        fs::write(self.inventory(), text).expect("write the inventory");
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.yml")
    }

    /// Runs `placard ARGS -i inventory --site REPO`.
    pub fn placard(&self, args: &[&str]) -> Output {
        self.placard_from(None, args)
    }

    /// [`Testbed::placard`] run inside the network namespace at `namespace` (the
    /// controller's end of a private network), or in this machine's when None.
    pub fn placard_from(&self, namespace: Option<&Path>, args: &[&str]) -> Output {
        placard_at(namespace, &self.inventory(), args)
    }

    /// Runs a command on the host with the OpenSSH client (independent of placard's own
    /// transport), checking the host key; panics when it fails.
    pub fn ssh(&self, command: &str) -> String {
        let output = self.ssh_output(command);
        assert!(
            output.status.success(),
            "`{command}` failed on the host: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn ssh_output(&self, command: &str) -> Output {
        let argv = sandbox::ssh_argv(&self.paths, &self.host.name).expect("ssh argv");
        Command::new(&argv[0])
            .args(&argv[1..])
            .args(["-o", "BatchMode=yes", "--", command])
            .output()
            .expect("run ssh")
    }

    /// Reboots the host as a server reboots: `systemctl reboot` inside it. Its
    /// systemd-nspawn exits when the host reboots (nothing here restarts it), so the
    /// same tree is booted again on the same port, as `sandbox::up` does for a stopped
    /// sandbox; returns once the host runs and answers SSH again.
    ///
    /// The host has [`REBOOT_WAIT`] to go down. When it does not, the panic shows the
    /// jobs its systemd is still running and the end of its console (systemd's "A stop
    /// job is running for …" lines); when it goes down but slowly (over
    /// [`SLOW_SHUTDOWN`], or always with PLACARD_E2E_SHUTDOWN_LOG set), the previous
    /// boot's journal of the shutdown is printed after the host is up again.
    pub fn reboot(&mut self) {
        let pid = self.host.pid;
        let init = sandbox::init_pid(&self.host);
        let asked = std::time::Instant::now();
        let asked_at = std::time::SystemTime::now();
        let _ = self.ssh_output("systemctl --no-block reboot");
        loop {
            // Reap it when it is this process's child; then it is gone from /proc.
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            let state = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let gone = state
                .rsplit_once(')')
                .is_none_or(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']));
            if gone {
                break;
            }
            if asked.elapsed() > REBOOT_WAIT {
                panic!(
                    "host {} did not go down within {} s of `systemctl reboot`.\n\
                     Jobs its systemd still runs:\n{}\nEnd of its console:\n{}",
                    self.host.name,
                    REBOOT_WAIT.as_secs(),
                    init.map_or_else(
                        || "(its systemd is gone)".into(),
                        |init| in_host(init, &["systemctl", "list-jobs", "--no-pager", "--full"])
                    ),
                    self.console_tail(40),
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let took = asked.elapsed();
        eprintln!(
            "host {} went down {:.1} s after `systemctl reboot`",
            self.host.name,
            took.as_secs_f64()
        );
        let (name, suite, port) = (
            self.host.name.clone(),
            self.host.suite.clone(),
            self.host.port,
        );
        self.host = sandbox::up(&self.paths, &name, &suite, port)
            .unwrap_or_else(|e| panic!("cannot boot sandbox {name} again: {e:#}"));
        assert_ne!(self.host.pid, pid, "a new systemd-nspawn runs the host");
        if took > SLOW_SHUTDOWN || std::env::var_os("PLACARD_E2E_SHUTDOWN_LOG").is_some() {
            eprintln!(
                "the shutdown took {:.1} s; what stopped when (the previous boot's journal):\n{}",
                took.as_secs_f64(),
                self.shutdown_journal(asked_at)
            );
        }
    }

    /// The previous boot's journal from `since` (when the reboot was asked for, a
    /// second earlier) to its end: which units were stopping, and when each stopped
    /// (the host keeps a persistent journal in /var/log/journal; its clock is this
    /// machine's).
    pub fn shutdown_journal(&self, since: std::time::SystemTime) -> String {
        let since = since
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs().saturating_sub(1));
        let output = self.ssh_output(&format!(
            "journalctl -b -1 --since @{since} -o short-monotonic --no-pager --no-hostname | tail -n 300"
        ));
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    }

    /// The last `lines` lines of the host's console (what systemd prints on it).
    fn console_tail(&self, lines: usize) -> String {
        let console = self.paths.sandbox_dir(&self.host.name).join("console.log");
        let text = fs::read_to_string(&console).unwrap_or_else(|e| format!("({e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The `drift` object of `placard etc drift HOST --format json ARGS`; panics unless
    /// the run succeeds.
    pub fn etc_drift(&self, args: &[&str]) -> serde_json::Value {
        let mut argv = vec!["etc", "drift", &self.host.name, "--format", "json"];
        argv.extend_from_slice(args);
        let output = self.placard(&argv);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        output_event(&stdout(&output), "drift")
    }

    /// `placard etc migrate --from DRAFT HOST --format json`.
    pub fn etc_migrate(&self, draft: &Path) -> Output {
        self.placard(&[
            "etc",
            "migrate",
            "--from",
            &draft.to_string_lossy(),
            &self.host.name,
            "--format",
            "json",
        ])
    }

    /// A file in the host's tree, read from this machine.
    pub fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.root_path(path)).ok()
    }

    pub fn root_path(&self, path: &str) -> PathBuf {
        self.host.root.join(path.trim_start_matches('/'))
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if let Err(error) = sandbox::down(&self.paths, &self.host.name) {
            eprintln!("cannot stop sandbox {}: {error:#}", self.host.name);
        }
        let _ = fs::remove_dir_all(&self.paths.state_dir);
    }
}

/// How long a host may take to go down after `systemctl reboot`: systemd's own stop
/// timeout (DefaultTimeoutStopSec, 90 s) and a margin, so that a unit that runs into it
/// is named by its systemd (and in the panic) rather than by this wait.
const REBOOT_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// A shutdown slower than this prints its journal: a clean one takes a few seconds.
const SLOW_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(30);

/// Runs `argv` in the host whose systemd has pid `init` (in this machine's namespace),
/// without SSH (which a shutting-down host no longer answers); what it printed, or why
/// it could not run.
fn in_host(init: u32, argv: &[&str]) -> String {
    let target = init.to_string();
    match Command::new("timeout")
        .args(["10", "nsenter", "--target", &target, "--all", "--"])
        .args(argv)
        .output()
    {
        Ok(output) => format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(e) => format!("(cannot run nsenter: {e})"),
    }
}

/// A free loopback port for a host's sshd, reserved with a file lock that test programs
/// running at once respect: between the choice and sshd's bind, or while a host reboots,
/// another program's host could take the same port, and its sshd would answer for ours.
fn reserve_port() -> (u16, Flock<fs::File>) {
    for _ in 0..100 {
        let port = sandbox::free_port().expect("a free loopback port");
        let file = fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(format!("/run/placard-e2e-port-{port}.lock"))
            .expect("open a port's lock");
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            return (port, lock);
        }
    }
    panic!("no loopback port could be reserved for a test host");
}

/// A lock on something every test host shares (a port of this machine's network), held
/// until dropped: test threads and test binaries running at once take turns. `what`
/// names the resource, e.g. "mail-daemons".
pub fn exclusive(what: &str) -> Flock<fs::File> {
    let file = fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("/run/placard-e2e-{what}.lock"))
        .unwrap_or_else(|e| panic!("open the lock of {what}: {e}"));
    Flock::lock(file, FlockArg::LockExclusive).unwrap_or_else(|(_, e)| panic!("lock {what}: {e}"))
}

/// Runs `placard ARGS -i INVENTORY --site REPO` and shows what it printed. In a network
/// namespace (`nsenter --net=…`) it runs under `timeout` too: a hang there would
/// otherwise hold the test bed's namespaces for ever.
pub fn placard_at(namespace: Option<&Path>, inventory: &Path, args: &[&str]) -> Output {
    placard_with_site(
        namespace,
        inventory,
        Path::new(env!("CARGO_MANIFEST_DIR")),
        args,
    )
}

/// [`placard_at`] with the roles and templates of `site` (a test's own roles) instead of
/// this repository's.
pub fn placard_with_site(
    namespace: Option<&Path>,
    inventory: &Path,
    site: &Path,
    args: &[&str],
) -> Output {
    let mut command = match namespace {
        Some(namespace) => {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", namespace.display())).args([
                "timeout",
                "1800",
                env!("CARGO_BIN_EXE_placard"),
            ]);
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_placard")),
    };
    let output = command
        .args(args)
        .arg("-i")
        .arg(inventory)
        .arg("--site")
        .arg(site)
        .env("NO_COLOR", "1")
        .output()
        .expect("run placard");
    eprintln!(
        "$ placard {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The `data.KEY` of the output event in a `--format json` report.
pub fn output_event(text: &str, key: &str) -> serde_json::Value {
    let line = text
        .lines()
        .find(|l| l.contains("\"event\":\"output\""))
        .unwrap_or_else(|| panic!("no output event in {text}"));
    let event: serde_json::Value = serde_json::from_str(line).expect("a JSON event");
    event["data"][key].clone()
}

/// The paths a drift report puts in `class` (site, generated, modified…).
pub fn drift_class(drift: &serde_json::Value, class: &str) -> std::collections::BTreeSet<String> {
    drift["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter(|f| f["class"] == class)
        .filter_map(|f| f["path"].as_str().map(str::to_string))
        .collect()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The summary line of a human report, e.g. "1 host: 1 unchanged, 0 changed, 0 failed".
pub fn summary(output: &Output) -> String {
    stdout(output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}
