//! End-to-end: boot real Debian hosts with systemd-nspawn, reach them with
//! the OpenSSH client verifying the recorded host key, install a package
//! with apt, and take them down again without leaving a process behind.
//!
//! Needs root, debootstrap and systemd-container; without them the tests fail
//! saying what is missing.
//! The image cache is shared (default /var/cache/placard/images, or
//! PLACARD_SANDBOX_IMAGES); sandbox state goes to a private temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use placard::sandbox::{self as sbx, SandboxPaths};

/// Whole-test budget: a cold image build is ~1 min, up ~2 s, apt ~5 s.
const BUDGET: Duration = Duration::from_secs(600);

fn prerequisites() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("not root".into());
    }
    for tool in [
        "/usr/sbin/debootstrap",
        "/usr/bin/systemd-nspawn",
        "/usr/bin/ssh",
    ] {
        if !Path::new(tool).exists() {
            return Err(format!(
                "{tool} missing: apt-get install debootstrap systemd-container openssh-client"
            ));
        }
    }
    Ok(())
}

fn skip_unless_possible(test: &str) -> bool {
    match prerequisites() {
        Ok(()) => false,
        // A test that cannot run fails: passing without running would hide a broken bed.
        Err(why) => panic!("{test} needs a sandbox host and cannot have one: {why}"),
    }
}

fn test_paths(tag: &str) -> SandboxPaths {
    let mut paths = SandboxPaths::from_env();
    paths.state_dir =
        std::env::temp_dir().join(format!("placard-sandbox-{tag}-{}", std::process::id()));
    paths
}

/// Run `body` on a thread; if it is not done within BUDGET, down the
/// sandboxes and fail, so the test always ends by itself.
fn bounded(paths: &SandboxPaths, names: &[String], body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    let outcome = rx.recv_timeout(BUDGET);
    let panicked = if outcome.is_ok() {
        handle.join().is_err()
    } else {
        false
    };
    // Always clean up, whatever happened in the body.
    for name in names {
        if let Err(e) = sbx::down(paths, name) {
            eprintln!("cleanup: down {name}: {e:#}");
        }
    }
    let _ = std::fs::remove_dir_all(&paths.state_dir);
    match outcome {
        Err(_) => panic!("test did not finish within {} s", BUDGET.as_secs()),
        Ok(()) if panicked => panic!("test body failed (see above)"),
        Ok(()) => {}
    }
}

/// The OpenSSH client, spelled out rather than taken from ssh_argv, so the
/// test checks that the recorded host key is what gets verified.
fn ssh(paths: &SandboxPaths, port: u16, known_hosts: &Path, remote: &str) -> Output {
    Command::new("timeout")
        .args(["--kill-after=5", "180", "ssh"])
        .arg("-i")
        .arg(paths.key())
        .args(["-p", &port.to_string()])
        .arg(format!("-oUserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-oStrictHostKeyChecking=yes",
            "-oGlobalKnownHostsFile=/dev/null",
            "-oBatchMode=yes",
            "-oIdentitiesOnly=yes",
            "-oConnectTimeout=10",
            "root@127.0.0.1",
            remote,
        ])
        .output()
        .expect("running ssh")
}

fn ok(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// sshd inside must listen on 127.0.0.1:PORT only (the network is shared).
fn assert_only_own_port(paths: &SandboxPaths, port: u16) {
    let listeners = ok(
        &ssh(paths, port, &paths.known_hosts(), "ss -Htlnp"),
        "ss -tlnp",
    );
    let sshd: Vec<&str> = listeners
        .lines()
        .filter(|l| l.contains("\"sshd\""))
        .collect();
    assert!(!sshd.is_empty(), "no sshd listener visible:\n{listeners}");
    for line in sshd {
        assert!(
            line.contains(&format!("127.0.0.1:{port} ")),
            "sshd listens elsewhere: {line}"
        );
    }
}

/// Exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|st| {
            !matches!(
                st.rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next()),
                Some('Z' | 'X')
            )
        })
        .unwrap_or(false)
}

fn assert_gone(paths: &SandboxPaths, name: &str, port: u16) {
    assert!(
        sbx::nspawn_processes(name).is_empty(),
        "an nspawn for {name} survived down"
    );
    assert!(
        !paths.sandbox_dir(name).exists(),
        "{name}'s directory survived down"
    );
    let kh = std::fs::read_to_string(paths.known_hosts()).unwrap_or_default();
    assert!(
        !kh.contains(&format!("[127.0.0.1]:{port} ")),
        "known_hosts still has {port}: {kh}"
    );
    assert!(sbx::list(paths).unwrap().iter().all(|s| s.name != name));
}

#[test]
fn bookworm_host_up_ssh_apt_down() {
    if skip_unless_possible("bookworm_host_up_ssh_apt_down") {
        return;
    }
    let paths = test_paths("bw");
    let name = format!("it-bw-{}", std::process::id());
    let (p, n) = (paths.clone(), name.clone());
    bounded(&paths, std::slice::from_ref(&name), move || {
        let (paths, name) = (p, n);

        let t = Instant::now();
        let image: PathBuf = sbx::ensure_image(&paths, "bookworm").expect("image");
        eprintln!(
            "timing: ensure_image(bookworm) {:.1} s ({})",
            t.elapsed().as_secs_f32(),
            image.display()
        );

        let port = sbx::free_port().expect("free port");
        let t = Instant::now();
        let sb = sbx::up(&paths, &name, "bookworm", port).expect("up");
        eprintln!(
            "timing: up {:.1} s (port {port}, nspawn pid {})",
            t.elapsed().as_secs_f32(),
            sb.pid
        );
        assert_eq!(sb.port, port);
        assert_eq!(sbx::list(&paths).unwrap(), vec![sb.clone()]);

        // A second up of the same name returns the running one.
        let again = sbx::up(&paths, &name, "bookworm", port).expect("up again");
        assert_eq!(again.pid, sb.pid);

        let argv = sbx::ssh_argv(&paths, &name).unwrap();
        assert!(
            argv.contains(&"StrictHostKeyChecking=yes".to_string()),
            "{argv:?}"
        );

        let state = ok(
            &ssh(
                &paths,
                port,
                &paths.known_hosts(),
                "systemctl is-system-running",
            ),
            "is-system-running",
        );
        assert_eq!(state.trim(), "running");

        // The verification is real: a wrong recorded key is refused.
        let wrong = paths.state_dir.join("wrong_known_hosts");
        let client_pub = std::fs::read_to_string(paths.key().with_extension("pub")).unwrap();
        let blob: Vec<&str> = client_pub.split_whitespace().take(2).collect();
        std::fs::write(
            &wrong,
            format!("[127.0.0.1]:{port} {} {}\n", blob[0], blob[1]),
        )
        .unwrap();
        let refused = ssh(&paths, port, &wrong, "true");
        assert!(
            !refused.status.success(),
            "ssh accepted a host key that is not the host's"
        );
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("Host key verification failed"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );

        assert_only_own_port(&paths, port);

        let t = Instant::now();
        ok(
            &ssh(
                &paths,
                port,
                &paths.known_hosts(),
                "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello",
            ),
            "apt-get install hello",
        );
        eprintln!(
            "timing: apt-get update + install hello {:.1} s",
            t.elapsed().as_secs_f32()
        );
        let hello = ok(&ssh(&paths, port, &paths.known_hosts(), "hello"), "hello");
        assert_eq!(hello.trim(), "Hello, world!");

        let init = sbx::init_pid(&sb).expect("the host's init pid");
        let t = Instant::now();
        sbx::down(&paths, &name).expect("down");
        eprintln!("timing: down {:.1} s", t.elapsed().as_secs_f32());
        assert_gone(&paths, &name, port);
        assert!(!alive(init), "the host's systemd ({init}) survived down");
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} still taken"
        );
        // Idempotent.
        sbx::down(&paths, &name).expect("second down");
    });
}

/// Two hosts at once, bookworm and trixie, each on its own port (the trixie image is
/// built anyway, for the Debian 13 tests of the roles).
#[test]
fn bookworm_and_trixie_side_by_side() {
    if skip_unless_possible("bookworm_and_trixie_side_by_side") {
        return;
    }
    let paths = test_paths("two");
    let names = vec![
        format!("it-two-bw-{}", std::process::id()),
        format!("it-two-tx-{}", std::process::id()),
    ];
    let (p, n) = (paths.clone(), names.clone());
    bounded(&paths, &names, move || {
        let (paths, names) = (p, n);
        let mut hosts = Vec::new();
        for (name, suite) in names.iter().zip(["bookworm", "trixie"]) {
            sbx::ensure_image(&paths, suite).expect("image");
            let port = sbx::free_port().expect("port");
            let t = Instant::now();
            let sb = sbx::up(&paths, name, suite, port).expect("up");
            eprintln!("timing: up {suite} {:.1} s", t.elapsed().as_secs_f32());
            hosts.push(sb);
        }
        assert_eq!(sbx::list(&paths).unwrap().len(), 2);
        // A port that another sandbox holds is refused with a clear error.
        let err = sbx::up(&paths, "it-clash", "bookworm", hosts[0].port).unwrap_err();
        assert!(format!("{err:#}").contains("has it"), "{err:#}");

        for sb in &hosts {
            let out = ok(
                &ssh(&paths, sb.port, &paths.known_hosts(), "hostname; . /etc/os-release; echo $VERSION_CODENAME; cat /etc/machine-id; systemctl is-system-running"),
                "facts",
            );
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines[0], sb.name);
            assert_eq!(lines[1], sb.suite);
            assert_eq!(lines[3], "running");
            assert_only_own_port(&paths, sb.port);
        }
        let ids: Vec<String> = hosts
            .iter()
            .map(|sb| std::fs::read_to_string(sb.root.join("etc/machine-id")).unwrap())
            .collect();
        assert_ne!(ids[0], ids[1], "machine-ids must differ");
        let keys: Vec<String> = hosts
            .iter()
            .map(|sb| {
                std::fs::read_to_string(sb.root.join("etc/ssh/ssh_host_ed25519_key.pub")).unwrap()
            })
            .collect();
        assert_ne!(keys[0], keys[1], "host keys must differ");
        // Each host's systemd has a cgroup tree of its own: sharing one, a host's unit
        // (dbus.service…) would share its cgroup with the other host's, and a stop
        // would wait for the other host's processes.
        let cgroups: Vec<String> = hosts
            .iter()
            .map(|sb| {
                let init = sbx::init_pid(sb).expect("the host's systemd");
                std::fs::read_to_string(format!("/proc/{init}/cgroup")).expect("its cgroups")
            })
            .collect();
        assert_ne!(cgroups[0], cgroups[1], "the hosts share a cgroup");
        let folders: Vec<String> = hosts
            .iter()
            .flat_map(|sb| {
                let list = std::fs::read_to_string(paths.sandbox_dir(&sb.name).join("cgroups"))
                    .unwrap_or_default();
                list.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect();

        let out = ok(
            &ssh(&paths, hosts[1].port, &paths.known_hosts(), "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q hello && hello"),
            "trixie apt",
        );
        assert!(out.contains("Hello, world!"));

        for sb in &hosts {
            let t = Instant::now();
            sbx::down(&paths, &sb.name).expect("down");
            eprintln!(
                "timing: down {} {:.1} s",
                sb.suite,
                t.elapsed().as_secs_f32()
            );
            assert_gone(&paths, &sb.name, sb.port);
        }
        for folder in &folders {
            assert!(
                !std::path::Path::new(folder).exists(),
                "{folder} survived down"
            );
        }
    });
}
