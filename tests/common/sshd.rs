//! Throwaway OpenSSH servers and agents for the integration tests. Every
//! resource lives under a temp directory and is torn down by a Drop guard.
#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use placard::transport::ssh::{SshOptions, SshTarget};

pub const SSHD: &str = "/usr/sbin/sshd";

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("placard-ssh-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Generates a key pair; `passphrase` "" for an unencrypted key.
pub fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let _ = fs::remove_file(path);
    let _ = fs::remove_file(pub_path(path));
    let mut cmd = Command::new("ssh-keygen");
    cmd.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "placard-test",
        "-f",
    ])
    .arg(path);
    if kind == "rsa" {
        cmd.args(["-b", "2048"]);
    }
    run(&mut cmd);
}

pub fn pub_path(key: &Path) -> PathBuf {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    PathBuf::from(p)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct Sshd {
    pub dir: TempDir,
    pub port: u16,
    child: Option<Child>,
    extra_config: String,
}

impl Sshd {
    /// Starts sshd on a free port; `authorized` public keys may log in as root.
    pub fn start(authorized: &[&Path]) -> Sshd {
        Sshd::start_with(authorized, "")
    }

    pub fn start_with(authorized: &[&Path], extra_config: &str) -> Sshd {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} missing: apt-get install openssh-server"
        );
        // sshd refuses to start without its privilege separation directory,
        // which normally only the init system creates.
        let _ = fs::create_dir_all("/run/sshd");
        let dir = TempDir::new("sshd");
        keygen(&dir.join("host_ed25519"), "ed25519", "");
        let mut keys = String::new();
        for k in authorized {
            keys.push_str(&fs::read_to_string(pub_path(k)).expect("read public key"));
        }
        fs::write(dir.join("authorized_keys"), keys).expect("write authorized_keys");
        let mut sshd = Sshd {
            dir,
            port: free_port(),
            child: None,
            extra_config: extra_config.to_string(),
        };
        sshd.spawn();
        sshd
    }

    fn spawn(&mut self) {
        let d = self.dir.path();
        let config = format!(
            // sshd keeps the first value it reads, so extras go first.
            "{extra}\nPort {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin yes\nPidFile none\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             LogLevel VERBOSE\n",
            port = self.port,
            d = d.display(),
            extra = self.extra_config
        );
        fs::write(d.join("sshd_config"), config).expect("write sshd_config");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("sshd.log"))
            .expect("sshd log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("sshd exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Same port, brand new host key: what a reinstall (or an attacker) looks like.
    pub fn restart_with_new_host_key(&mut self) {
        self.stop();
        keygen(&self.dir.join("host_ed25519"), "ed25519", "");
        self.spawn();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Gives the server a second (RSA) host key besides ed25519.
    pub fn add_rsa_host_key(&mut self) {
        self.stop();
        keygen(&self.dir.join("host_rsa"), "rsa", "");
        self.extra_config.push_str(&format!(
            "\nHostKey {}/host_rsa\n",
            self.dir.path().display()
        ));
        self.spawn();
    }

    /// The line OpenSSH would write in known_hosts for this server.
    pub fn known_hosts_line(&self) -> String {
        self.known_hosts_line_for("host_ed25519.pub")
    }

    pub fn known_hosts_line_for(&self, pub_file: &str) -> String {
        let public = fs::read_to_string(self.dir.join(pub_file)).expect("host pub");
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap_or(""), fields.next().unwrap_or(""));
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    pub fn target(&self, name: &str, identity: Option<&Path>) -> SshTarget {
        SshTarget {
            name: name.into(),
            address: "127.0.0.1".into(),
            port: Some(self.port),
            user: Some("root".into()),
            identity: identity.map(Path::to_path_buf),
            via: None,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private ssh-agent on its own socket.
pub struct Agent {
    pub dir: TempDir,
    pub socket: PathBuf,
    child: Child,
}

impl Agent {
    pub fn start() -> Agent {
        let dir = TempDir::new("agent");
        let socket = dir.join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ssh-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent { dir, socket, child }
    }

    /// Loads a key; `passphrase` is fed through SSH_ASKPASS for encrypted keys.
    pub fn add(&self, key: &Path, passphrase: &str) {
        let askpass = self.dir.join("askpass.sh");
        let mut f = fs::File::create(&askpass).expect("askpass");
        writeln!(f, "#!/bin/sh\necho '{passphrase}'").expect("askpass");
        drop(f);
        run(Command::new("chmod").arg("700").arg(&askpass));
        run(Command::new("ssh-add")
            .arg("-q")
            .arg(key)
            .env("SSH_AUTH_SOCK", &self.socket)
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .stdin(Stdio::null()));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Options isolated from the user's real ~/.ssh: own known_hosts, an empty
/// ssh config and no inherited agent.
pub fn options(dir: &TempDir) -> SshOptions {
    let config = dir.join("ssh_config");
    if !config.exists() {
        fs::write(&config, "").expect("write ssh_config");
    }
    SshOptions {
        known_hosts: vec![dir.join("known_hosts")],
        accept_new_host_keys: false,
        ssh_config: Some(config),
        connect_timeout: Duration::from_secs(10),
        agent_socket: Some(dir.join("no-agent.sock")),
        host_timeout: Duration::from_secs(60),
    }
}

/// Bounds every test so a hang fails instead of stalling the suite.
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}
