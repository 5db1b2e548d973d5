//! End-to-end tests against real, throwaway OpenSSH servers on 127.0.0.1.

#[path = "common/sshd.rs"]
mod common;

use std::fs;
use std::time::Duration;

use common::{bounded, keygen, options, Agent, Sshd, TempDir};
use placard::transport::ssh::{Connection, SshError, SshTarget};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

struct Fixture {
    dir: TempDir,
    key: std::path::PathBuf,
    sshd: Sshd,
}

/// One server that trusts one fresh ed25519 client key, and a known_hosts
/// that already trusts the server.
fn fixture() -> Fixture {
    let dir = TempDir::new("client");
    let key = dir.join("id_ed25519");
    keygen(&key, "ed25519", "");
    let sshd = Sshd::start(&[&key]);
    fs::write(dir.join("known_hosts"), sshd.known_hosts_line()).expect("known_hosts");
    Fixture { dir, key, sshd }
}

/// A client key, a jump host (with `jump_config` in its sshd_config) and a target that
/// both trust it, and a known_hosts that trusts both.
struct JumpFixture {
    dir: TempDir,
    key: std::path::PathBuf,
    jump: Sshd,
    target_sshd: Sshd,
    /// Both hosts' lines, as written to `dir/known_hosts`.
    known_hosts: String,
}

fn jump_fixture(jump_config: &str) -> JumpFixture {
    let dir = TempDir::new("client");
    let key = dir.join("id_ed25519");
    keygen(&key, "ed25519", "");
    let jump = Sshd::start_with(&[&key], jump_config);
    let target_sshd = Sshd::start(&[&key]);
    let known_hosts = format!(
        "{}{}",
        jump.known_hosts_line(),
        target_sshd.known_hosts_line()
    );
    fs::write(dir.join("known_hosts"), &known_hosts).expect("known_hosts");
    JumpFixture {
        dir,
        key,
        jump,
        target_sshd,
        known_hosts,
    }
}

async fn connect(f: &Fixture) -> Connection {
    let target = f.sshd.target("web1", Some(&f.key));
    match Connection::connect(&target, &options(&f.dir)).await {
        Ok(c) => c,
        Err(e) => panic!("connect failed: {e}\nsshd log:\n{}", f.sshd.log()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_echo_reads_stdout_and_exit_code() {
    bounded(async {
        let f = fixture();
        let conn = connect(&f).await;
        let mut p = conn.exec("echo hello").await.expect("exec");
        let mut line = String::new();
        p.stdout.read_line(&mut line).await.expect("read");
        assert_eq!(line, "hello\n");
        let mut rest = Vec::new();
        p.stdout.read_to_end(&mut rest).await.expect("read to end");
        assert!(rest.is_empty());
        let status = p.exit.wait().await.expect("status");
        assert_eq!(status.code, Some(0));
        assert!(status.success());
        assert_eq!(status.stderr, "");
        conn.disconnect().await.expect("disconnect");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips_one_mebibyte_through_cat() {
    bounded(async {
        let f = fixture();
        let conn = connect(&f).await;
        // Not compressible and not periodic, so a dropped or reordered chunk shows.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let data: Vec<u8> = (0..1024 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let p = conn.exec("cat").await.expect("exec");
        let (mut stdin, mut stdout, exit) = (p.stdin, p.stdout, p.exit);
        let input = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in input.chunks(7777) {
                stdin.write_all(chunk).await.expect("write stdin");
            }
            stdin.shutdown().await.expect("eof");
        });
        let mut out = Vec::new();
        stdout.read_to_end(&mut out).await.expect("read stdout");
        writer.await.expect("writer task");
        assert_eq!(out.len(), data.len());
        assert!(out == data, "output differs from input");
        assert_eq!(exit.wait().await.expect("status").code, Some(0));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_stdin_sends_eof() {
    bounded(async {
        let f = fixture();
        let conn = connect(&f).await;
        let mut p = conn.exec("cat; echo done").await.expect("exec");
        p.stdin.write_all(b"abc\n").await.expect("write");
        drop(p.stdin);
        let mut lines = p.stdout.lines();
        assert_eq!(
            lines.next_line().await.expect("line").as_deref(),
            Some("abc")
        );
        assert_eq!(
            lines.next_line().await.expect("line").as_deref(),
            Some("done")
        );
        assert_eq!(lines.next_line().await.expect("eof"), None);
        assert!(p.exit.wait().await.expect("status").success());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonzero_exit_code_and_stderr_are_reported() {
    bounded(async {
        let f = fixture();
        let conn = connect(&f).await;
        let out = conn
            .exec("echo out; echo 'something broke' >&2; exit 3")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.status.code, Some(3));
        assert!(!out.status.success());
        assert_eq!(out.status.stderr, "something broke\n");

        // Several channels on one connection, including a signal death.
        let killed = conn
            .exec("kill -KILL $$")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(killed.status.code, None);
        assert_eq!(killed.status.signal.as_deref(), Some("KILL"));
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_refused_then_learned_with_the_flag() {
    bounded(async {
        let f = fixture();
        let known_hosts = f.dir.join("known_hosts");
        fs::remove_file(&known_hosts).expect("start without known_hosts");
        let target = f.sshd.target("web1", Some(&f.key));
        let mut opts = options(&f.dir);

        let err = Connection::connect(&target, &opts)
            .await
            .expect_err("unknown host must be refused");
        let msg = err.to_string();
        eprintln!("error shown: {msg}");
        assert!(matches!(err, SshError::UnknownHostKey { .. }), "{msg}");
        let expected_fp = fingerprint_of(&f.sshd.dir.join("host_ed25519.pub"));
        assert!(
            msg.contains(&expected_fp),
            "message lacks fingerprint {expected_fp}: {msg}"
        );
        assert!(msg.contains("--accept-new-host-keys"), "{msg}");
        assert!(
            msg.contains(&format!("[127.0.0.1]:{}", f.sshd.port)),
            "{msg}"
        );
        assert!(
            !known_hosts.exists(),
            "nothing may be written without the flag"
        );

        opts.accept_new_host_keys = true;
        let conn = Connection::connect(&target, &opts).await.expect("learn");
        drop(conn);
        let recorded = fs::read_to_string(&known_hosts).expect("known_hosts written");
        assert_eq!(
            recorded,
            f.sshd.known_hosts_line(),
            "learned entry must match the server key"
        );

        opts.accept_new_host_keys = false;
        let conn = Connection::connect(&target, &opts)
            .await
            .expect("second connect without flag");
        assert!(conn
            .exec("true")
            .await
            .expect("exec")
            .exit
            .wait()
            .await
            .expect("status")
            .success());
    })
    .await
}

fn fingerprint_of(pub_file: &std::path::Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-E", "sha256", "-lf"])
        .arg(pub_file)
        .output()
        .expect("ssh-keygen -l");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_host_key_is_refused_with_file_and_line() {
    bounded(async {
        let mut f = fixture();
        let known_hosts = f.dir.join("known_hosts");
        // The entry sits on line 2, after an unrelated host.
        let line = f.sshd.known_hosts_line();
        fs::write(
            &known_hosts,
            format!("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n{line}"),
        )
        .expect("known_hosts");
        drop(connect(&f).await);

        f.sshd.restart_with_new_host_key();
        let mut opts = options(&f.dir);
        // Even the accept-new flag must not override a changed key.
        opts.accept_new_host_keys = true;
        let target = f.sshd.target("web1", Some(&f.key));
        let err = Connection::connect(&target, &opts).await.expect_err("changed key must be refused");
        let msg = err.to_string();
        eprintln!("error shown: {msg}");
        match &err {
            SshError::HostKeyChanged { known_hosts: path, line, .. } => {
                assert_eq!(path, &known_hosts);
                assert_eq!(*line, 2);
            }
            other => panic!("wrong error: {other}"),
        }
        assert!(msg.contains("man-in-the-middle"), "{msg}");
        assert!(msg.contains(&format!("ssh-keygen -R '[127.0.0.1]:{}'", f.sshd.port)), "{msg}");
        assert!(msg.contains(&format!("{} line 2", known_hosts.display())), "{msg}");
        assert!(msg.contains(&fingerprint_of(&f.sshd.dir.join("host_ed25519.pub"))), "{msg}");
        let after = fs::read_to_string(&known_hosts).expect("known_hosts");
        assert_eq!(after.lines().count(), 2, "known_hosts must not be modified");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_known_hosts_entries_are_honoured() {
    bounded(async {
        let f = fixture();
        let known_hosts = f.dir.join("known_hosts");
        common::run(
            std::process::Command::new("ssh-keygen")
                .arg("-H")
                .arg("-f")
                .arg(&known_hosts),
        );
        let hashed = fs::read_to_string(&known_hosts).expect("known_hosts");
        assert!(
            hashed.starts_with("|1|"),
            "ssh-keygen -H did not hash: {hashed}"
        );
        drop(connect(&f).await);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_key_type_is_preferred_and_revoked_keys_refused() {
    bounded(async {
        let mut f = fixture();
        f.sshd.add_rsa_host_key();
        let known_hosts = f.dir.join("known_hosts");
        // Only the RSA key is known; the server would otherwise pick ed25519
        // and look like an unknown host.
        fs::write(&known_hosts, f.sshd.known_hosts_line_for("host_rsa.pub")).expect("known_hosts");
        drop(connect(&f).await);

        // Same key, marked revoked on line 2 (with a wildcard host).
        let rsa_line = f.sshd.known_hosts_line_for("host_rsa.pub");
        let key_part = rsa_line.split_once(' ').map(|(_, k)| k).unwrap_or("");
        let revoked = format!("@revoked * {key_part}");
        fs::write(
            &known_hosts,
            format!("{}{revoked}", f.sshd.known_hosts_line_for("host_rsa.pub")),
        )
        .expect("known_hosts");
        let target = f.sshd.target("web1", Some(&f.key));
        let err = Connection::connect(&target, &options(&f.dir))
            .await
            .expect_err("revoked");
        let msg = err.to_string();
        eprintln!("error shown: {msg}");
        assert!(
            matches!(err, SshError::HostKeyRevoked { line: 2, .. }),
            "{msg}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_known_hosts_file_is_consulted() {
    bounded(async {
        let f = fixture();
        let global = f.dir.join("ssh_known_hosts");
        fs::rename(f.dir.join("known_hosts"), &global).expect("move");
        let mut opts = options(&f.dir);
        opts.known_hosts.push(global);
        let target = f.sshd.target("web1", Some(&f.key));
        Connection::connect(&target, &opts)
            .await
            .expect("key found in the second file");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_identity_file_authenticates() {
    bounded(async {
        let dir = TempDir::new("client");
        let key = dir.join("id_rsa");
        keygen(&key, "rsa", "");
        let sshd = Sshd::start(&[&key]);
        fs::write(dir.join("known_hosts"), sshd.known_hosts_line()).expect("known_hosts");
        let conn = Connection::connect(&sshd.target("web1", Some(&key)), &options(&dir))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        let out = conn
            .exec("whoami")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(out.stdout, b"root\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_encrypted_identity_fails_clearly() {
    bounded(async {
        let f = fixture();
        let stranger = f.dir.join("id_stranger");
        keygen(&stranger, "ed25519", "");
        let target = f.sshd.target("web1", Some(&stranger));
        let err = Connection::connect(&target, &options(&f.dir))
            .await
            .expect_err("must fail");
        let msg = err.to_string();
        eprintln!("error shown: {msg}");
        assert!(matches!(err, SshError::AuthFailed { .. }), "{msg}");
        assert!(
            msg.contains(&format!("root@127.0.0.1:{}", f.sshd.port)),
            "{msg}"
        );
        assert!(msg.contains(&stranger.display().to_string()), "{msg}");

        let locked = f.dir.join("id_locked");
        keygen(&locked, "ed25519", "correct horse");
        let target = f.sshd.target("web1", Some(&locked));
        let err = Connection::connect(&target, &options(&f.dir))
            .await
            .expect_err("must fail");
        let msg = err.to_string();
        eprintln!("error shown: {msg}");
        assert!(msg.contains("passphrase"), "{msg}");
        assert!(
            msg.contains(&format!("ssh-add {}", locked.display())),
            "{msg}"
        );

        let missing = f.dir.join("id_missing");
        let err = Connection::connect(&f.sshd.target("web1", Some(&missing)), &options(&f.dir))
            .await
            .expect_err("must fail");
        eprintln!("error shown: {err}");
        assert!(err.to_string().contains("file not found"), "{err}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_agent_authenticates_and_unlocks_encrypted_identity() {
    bounded(async {
        let dir = TempDir::new("client");
        let plain = dir.join("id_agent");
        keygen(&plain, "ed25519", "");
        let locked = dir.join("id_locked");
        keygen(&locked, "rsa", "s3cret");
        let decoy = dir.join("id_decoy");
        keygen(&decoy, "ed25519", "");
        let sshd = Sshd::start(&[&plain, &locked]);
        fs::write(dir.join("known_hosts"), sshd.known_hosts_line()).expect("known_hosts");
        let agent = Agent::start();
        // The first agent key is not authorized: every identity must be tried.
        agent.add(&decoy, "");
        agent.add(&plain, "");
        let mut opts = options(&dir);
        opts.agent_socket = Some(agent.socket.clone());

        let conn = Connection::connect(&sshd.target("web1", None), &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));
        assert!(conn
            .exec("true")
            .await
            .expect("exec")
            .exit
            .wait()
            .await
            .expect("status")
            .success());

        // An explicit passphrase-protected identity is used through the agent.
        let err = Connection::connect(&sshd.target("web1", Some(&locked)), &opts)
            .await
            .expect_err("not in the agent yet");
        eprintln!("error shown: {err}");
        assert!(err.to_string().contains("ssh-add"), "{err}");
        agent.add(&locked, "s3cret");
        Connection::connect(&sshd.target("web1", Some(&locked)), &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", sshd.log()));

        // Without any agent and no identity, the error says what was tried.
        let mut no_agent = options(&dir);
        no_agent.agent_socket = Some(dir.join("nothing-here.sock"));
        let err = Connection::connect(&sshd.target("web1", None), &no_agent)
            .await
            .expect_err("no agent");
        eprintln!("error shown: {err}");
        assert!(
            err.to_string().contains("ssh-agent: cannot connect"),
            "{err}"
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_tunnels_to_the_target() {
    bounded(async {
        // DEBUG1 makes the jump host log each forwarding request (and would
        // leak debug lines into sessions on it, which this test does not run).
        let JumpFixture {
            dir,
            key,
            jump,
            target_sshd,
            ..
        } = jump_fixture("LogLevel DEBUG1");
        let opts = options(&dir);

        let mut target = target_sshd.target("db1", Some(&key));
        target.via = Some(Box::new(jump.target("bastion", Some(&key))));
        let conn = Connection::connect(&target, &opts)
            .await
            .unwrap_or_else(|e| panic!("{e}\njump log:\n{}", jump.log()));
        let out = conn
            .exec("echo through")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(out.stdout, b"through\n");
        assert!(
            jump.log()
                .contains(&format!("127.0.0.1 port {}", target_sshd.port)),
            "the jump host did not forward to the target:\n{}",
            jump.log()
        );

        // Nested: bastion reached through bastion itself, then the target.
        let mut nested = target_sshd.target("db1", Some(&key));
        let mut hop2 = jump.target("bastion-inner", Some(&key));
        hop2.via = Some(Box::new(jump.target("bastion-outer", Some(&key))));
        nested.via = Some(Box::new(hop2));
        let conn = Connection::connect(&nested, &opts)
            .await
            .expect("nested jump");
        let out = conn
            .exec("echo nested")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(out.stdout, b"nested\n");
    })
    .await
}

/// Issue 12: the agent's upload through a jump host hung. While the tunnelled session
/// writes, the host keeps talking (here: stderr, as a chatty program would); russh's
/// own channel stream can stop draining the jump channel, and then the jump session
/// never sees the window adjustment the upload waits for (src/transport/ssh/jump.rs).
/// 30 MB go up while the host floods stderr; it must finish (bounded: a hang fails the
/// test). The old stream passed this test too on this machine: the cycle needs a slow
/// link to close, so this guards the path, it does not reproduce the hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_through_a_jump_host_does_not_stall_while_the_host_talks() {
    bounded(async {
        let JumpFixture {
            dir,
            key,
            jump,
            target_sshd,
            ..
        } = jump_fixture("");
        let mut target = target_sshd.target("db1", Some(&key));
        target.via = Some(Box::new(jump.target("bastion", Some(&key))));
        let conn = Connection::connect(&target, &options(&dir))
            .await
            .expect("connect through the jump host");
        let size = 30 * 1024 * 1024;
        let process = conn
            .exec(&format!(
                "yes talking >&2 & talker=$!; head -c {size} | wc -c; kill $talker"
            ))
            .await
            .expect("exec");
        let (mut stdin, mut stdout, exit) = (process.stdin, process.stdout, process.exit);
        // Like the agent's upload: all of stdin first, stdout only afterwards.
        let chunk = vec![7u8; 1024 * 1024];
        for _ in 0..size / chunk.len() {
            stdin.write_all(&chunk).await.expect("upload");
        }
        stdin.shutdown().await.expect("eof");
        let mut out = String::new();
        stdout.read_to_string(&mut out).await.expect("read stdout");
        assert_eq!(out.trim(), size.to_string());
        let status = exit.wait().await.expect("status");
        assert!(
            status.stderr.starts_with("talking"),
            "{}",
            status.stderr.len()
        );
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jump_host_failures_name_the_jump_host() {
    bounded(async {
        let JumpFixture {
            dir,
            key,
            jump,
            target_sshd,
            known_hosts,
        } = jump_fixture("AllowTcpForwarding no");
        fs::write(dir.join("known_hosts"), target_sshd.known_hosts_line()).expect("known_hosts");
        let mut target = target_sshd.target("db1", Some(&key));
        target.via = Some(Box::new(jump.target("bastion", Some(&key))));

        // The jump host itself is verified against known_hosts.
        let err = Connection::connect(&target, &options(&dir))
            .await
            .expect_err("unknown jump host");
        eprintln!("error shown: {err}");
        match &err {
            SshError::Jump { source, .. } => {
                assert!(matches!(**source, SshError::UnknownHostKey { .. }), "{err}")
            }
            other => panic!("wrong error: {other}"),
        }
        assert!(err.to_string().contains("bastion"), "{err}");

        // Forwarding disabled on the jump host: proves the tunnel is really used.
        fs::write(dir.join("known_hosts"), &known_hosts).expect("known_hosts");
        let err = Connection::connect(&target, &options(&dir))
            .await
            .expect_err("forwarding refused");
        eprintln!("error shown: {err}");
        assert!(matches!(err, SshError::ForwardRefused { .. }), "{err}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_alias_with_proxy_jump_connects() {
    bounded(async {
        let JumpFixture {
            dir,
            key,
            jump,
            target_sshd,
            ..
        } = jump_fixture("");
        fs::write(
            dir.join("ssh_config"),
            format!(
                "Host bastion\n  HostName 127.0.0.1\n  Port {jp}\n\n\
                 Host db-*\n  HostName 127.0.0.1\n  Port {tp}\n  ProxyJump bastion\n\n\
                 Host *\n  User root\n  IdentityFile {key}\n  Port 1\n",
                jp = jump.port,
                tp = target_sshd.port,
                key = key.display()
            ),
        )
        .expect("ssh_config");
        let conn = Connection::connect(&SshTarget::new("db1", "db-main"), &options(&dir))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let resolved = conn.target();
        assert_eq!(resolved.port, target_sshd.port);
        assert_eq!(resolved.via.as_ref().map(|v| v.port), Some(jump.port));
        let out = conn
            .exec("echo aliased")
            .await
            .expect("exec")
            .output(b"")
            .await
            .expect("output");
        assert_eq!(out.stdout, b"aliased\n");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_server_times_out_and_closed_port_is_reported() {
    bounded(async {
        let dir = TempDir::new("client");
        let mut opts = options(&dir);
        opts.connect_timeout = Duration::from_millis(700);
        // Accepts TCP but never speaks SSH.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let _keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let target = SshTarget {
            port: Some(port),
            ..SshTarget::new("mute", "127.0.0.1")
        };
        let started = std::time::Instant::now();
        let err = Connection::connect(&target, &opts)
            .await
            .expect_err("must time out");
        eprintln!("error shown: {err}");
        assert!(matches!(err, SshError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("handshake"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let closed = SshTarget {
            port: Some(common::free_port()),
            ..SshTarget::new("down", "127.0.0.1")
        };
        let err = Connection::connect(&closed, &opts)
            .await
            .expect_err("must be refused");
        eprintln!("error shown: {err}");
        assert!(matches!(err, SshError::Connect { .. }), "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_host_offering_a_key_of_another_type_is_refused() {
    bounded(async {
        let f = fixture();
        // known_hosts records an RSA key for the host; the server only has ed25519.
        let other = f.dir.join("other_rsa");
        keygen(&other, "rsa", "");
        let rsa = fs::read_to_string(other.with_extension("pub")).expect("rsa public key");
        let key: Vec<&str> = rsa.split_whitespace().take(2).collect();
        let known_hosts = f.dir.join("known_hosts");
        fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{} {}\n", f.sshd.port, key.join(" ")),
        )
        .expect("known_hosts");
        let mut opts = options(&f.dir);
        opts.accept_new_host_keys = true;
        let target = f.sshd.target("web1", Some(&f.key));
        let err = Connection::connect(&target, &opts)
            .await
            .expect_err("a key of another type must be refused");
        assert!(
            matches!(err, SshError::HostKeyChanged { .. }),
            "wrong error: {err}"
        );
        let after = fs::read_to_string(&known_hosts).expect("known_hosts");
        assert_eq!(after.lines().count(), 1, "nothing was learned");
    })
    .await
}
