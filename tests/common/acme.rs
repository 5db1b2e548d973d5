//! Shared pieces of the end-to-end tests of roles served over HTTPS (web, certs and the
//! roles behind them): pebble (Let's Encrypt's test ACME server, Debian's `pebble`
//! package) on loopback, a web host whose nginx listens on free high ports, and clients
//! that trust only pebble's root.
//!
//! How the pieces meet: the test hosts share this machine's network, so the host's
//! nginx listens on free high ports (`web_http_port`, `web_https_port`), and pebble is
//! told to validate HTTP-01 on that port (`httpPort`). certbot on the host reaches
//! pebble at https://127.0.0.1:PORT/dir and trusts its HTTPS through a CA made here
//! (REQUESTS_CA_BUNDLE, via `certs_ca_bundle`).
//!
//! Names: pebble resolves through BIND (`named`, Debian's bind9, run here on a free
//! loopback port with a temporary configuration: [`Pebble::dns_port`]), the real
//! authoritative server of the DNS-01 challenge. It holds one zone,
//! [`DNS_ZONE`] (alice.members.club.example, each of its names 127.0.0.1), which takes
//! RFC 2136 updates of TXT records signed with the TSIG key the certs role generated on
//! the host ([`Pebble::trust_key`] restarts named knowing it). Every other name — the
//! HTTP-01 names — named forwards to pebble-challtestsrv, which answers 127.0.0.1 for
//! all of them (the host's nginx) and can make one fail ([`Pebble::servfail`]): kept,
//! rather than a second zone, so that a test can break one name's resolution.
//!
//! Every child process is killed when its guard drops, and every wait has a deadline.
//! Use with `#[path = "common/testbed.rs"] mod testbed;` next to it.
#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::testbed::{exclusive, stdout, Testbed};

/// A loopback address of this test's own (127.0.0.N, N from 2), whose port `port` is
/// free: held with a file lock until dropped, so that tests running at once (in other
/// worktrees too) never pick the same one.
pub struct Loopback {
    pub address: String,
    _lock: Flock<File>,
}

impl Loopback {
    pub fn take(port: u16) -> Loopback {
        for n in 2..=254u8 {
            let address = format!("127.0.0.{n}");
            let Ok(file) = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(format!("/run/placard-e2e-loopback-{address}.lock"))
            else {
                continue;
            };
            let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if TcpListener::bind((address.as_str(), port)).is_ok() {
                return Loopback {
                    address,
                    _lock: lock,
                };
            }
        }
        panic!("no loopback address 127.0.0.N has port {port} free");
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on loopback right now, and not handed out before by this test program:
/// the kernel may give the same free port to two binds in a row (a host's HTTP and
/// HTTPS ports once came out equal, and nginx refused two default servers on one port).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Runs a program here with a deadline (coreutils' timeout).
pub fn run(seconds: u32, argv: &[&str]) -> Output {
    Command::new("timeout")
        .arg("--kill-after=5")
        .arg(seconds.to_string())
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

fn output_has(output: &Output, wanted: &str) -> bool {
    output.status.success() && String::from_utf8_lossy(&output.stdout).contains(wanted)
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The zone the authoritative DNS server (BIND) holds and takes updates for.
pub const DNS_ZONE: &str = "alice.members.club.example";

/// pebble, BIND and pebble-challtestsrv, on free loopback ports, with their own HTTPS CA.
pub struct Pebble {
    pub dir: tempfile::TempDir,
    pub directory_port: u16,
    pub management_port: u16,
    pub dns_management_port: u16,
    /// BIND's port (UDP and TCP on 127.0.0.1): the server of the dns challenge.
    pub dns_port: u16,
    /// challtestsrv's DNS port, where BIND forwards the names outside its zone.
    challtestsrv_port: u16,
    /// The network namespace pebble, BIND and challtestsrv run in (None: this
    /// machine's), and the address there of pebble's ACME API.
    namespace: Option<PathBuf>,
    pub address: String,
    named: Mutex<Option<Killed>>,
    _processes: Vec<Killed>,
}

impl Pebble {
    pub fn start(http_port: u16) -> Pebble {
        Pebble::start_for(http_port, "127.0.0.1")
    }

    /// pebble whose DNS answers `address` for every name: HTTP-01 challenges are
    /// validated at `address`:`http_port`.
    pub fn start_for(http_port: u16, address: &str) -> Pebble {
        Pebble::start_in(None, "127.0.0.1", http_port, address)
    }

    /// pebble, BIND and challtestsrv in the network namespace `namespace` (a path such
    /// as /run/netns/NAME; see tests/common/network.rs), the ACME API on `listen` there
    /// (an address hosts on that network reach), HTTP-01 validated at
    /// `resolve_to`:`http_port` (every name resolves to `resolve_to`).
    pub fn start_in(
        namespace: Option<&Path>,
        listen: &str,
        http_port: u16,
        address: &str,
    ) -> Pebble {
        let dir = tempfile::tempdir().expect("a folder for pebble");
        let path = |name: &str| dir.path().join(name).display().to_string();
        // The CA of pebble's own HTTPS (the ACME API): Debian's package ships no test
        // certificates, so make them, as pebble's minica would.
        for argv in [
            vec![
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=e2e pebble minica",
                "-keyout",
                &path("ca.key"),
                "-out",
                &path("minica.pem"),
            ],
            vec![
                "openssl",
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                &path("key.pem"),
                "-out",
                &path("cert.csr"),
            ],
        ] {
            let output = run(60, &argv);
            assert!(output.status.success(), "{argv:?}: {}", text(&output));
        }
        std::fs::write(
            dir.path().join("san.ext"),
            format!("subjectAltName=IP:127.0.0.1,IP:{listen},DNS:localhost\n"),
        )
        .expect("write the extension");
        let output = run(
            60,
            &[
                "openssl",
                "x509",
                "-req",
                "-in",
                &path("cert.csr"),
                "-CA",
                &path("minica.pem"),
                "-CAkey",
                &path("ca.key"),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &path("san.ext"),
                "-out",
                &path("cert.pem"),
            ],
        );
        assert!(
            output.status.success(),
            "sign pebble's cert: {}",
            text(&output)
        );

        let directory_port = free_port();
        let management_port = free_port();
        let challtestsrv_port = free_port();
        let dns_port = free_port();
        let dns_management_port = free_port();
        let tls_port = free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("{listen}:{directory_port}"),
            "managementListenAddress": format!("{listen}:{management_port}"),
            "certificate": path("cert.pem"),
            "privateKey": path("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).expect("config");

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let dns = in_namespace(namespace, "pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{challtestsrv_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", address, "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv (apt-get install pebble)");
        let dns = Killed(dns);
        let pebble = in_namespace(namespace, "pebble")
            .args(["-config", &path("pebble.json")])
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env("PEBBLE_AUTHZREUSE", "0")
            .stdout(log("pebble.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble (apt-get install pebble)");
        let pebble = Pebble {
            directory_port,
            management_port,
            dns_management_port,
            dns_port,
            challtestsrv_port,
            namespace: namespace.map(Path::to_path_buf),
            address: listen.to_string(),
            named: Mutex::new(None),
            _processes: vec![Killed(pebble), dns],
            dir,
        };
        pebble.start_named(None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while pebble.root().is_none() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                pebble.log()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
        std::fs::write(
            pebble.dir.path().join("root.pem"),
            pebble.root().unwrap_or_default(),
        )
        .expect("write pebble's root");
        pebble
    }

    /// (Re)starts BIND on `dns_port`: authoritative for [`DNS_ZONE`], forwarding the
    /// rest to challtestsrv, and, given `key` (name, base64 secret), taking updates of
    /// the zone's TXT records signed with it (hmac-sha256).
    fn start_named(&self, key: Option<(&str, &str)>) {
        let mut named = self.named.lock().unwrap_or_else(|e| e.into_inner());
        named.take();
        let dir = self.dir.path().join("named");
        std::fs::create_dir_all(&dir).expect("named's folder");
        let zone_file = dir.join("zone.db");
        if !zone_file.exists() {
            std::fs::write(
                &zone_file,
                format!(
                    "$TTL 5\n@ IN SOA ns.{DNS_ZONE}. admin.club.example. 1 60 60 600 5\n\
                     @ IN NS ns.{DNS_ZONE}.\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
                ),
            )
            .expect("write the zone");
        }
        let (key_statement, updates) = match key {
            Some((name, secret)) => (
                format!("key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n"),
                format!("update-policy {{ grant \"{name}\" zonesub TXT; }};"),
            ),
            None => (String::new(), "allow-update { none; };".to_string()),
        };
        let config = format!(
            "options {{\n  directory \"{dir}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  \
             listen-on-v6 {{ none; }};\n  pid-file none;\n  session-keyfile none;\n  \
             recursion yes;\n  allow-recursion {{ 127.0.0.0/8; }};\n  dnssec-validation no;\n  \
             forward only;\n  forwarders {{ 127.0.0.1 port {forward}; }};\n}};\ncontrols {{ }};\n\
             {key_statement}zone \"{DNS_ZONE}\" {{\n  type primary;\n  file \"{zone}\";\n  {updates}\n}};\n",
            dir = dir.display(),
            port = self.dns_port,
            forward = self.challtestsrv_port,
            zone = zone_file.display(),
        );
        let config_file = dir.join("named.conf");
        std::fs::write(&config_file, config).expect("write named.conf");
        let child = in_namespace(self.namespace.as_deref(), "named")
            .args(["-g", "-4", "-c"])
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("named.log")).expect("named's log"))
            .spawn()
            .expect("start named (apt-get install bind9)");
        *named = Some(Killed(child));
        let port = self.dns_port.to_string();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = self.run(
                10,
                &[
                    "dig",
                    "+short",
                    "+time=2",
                    "+tries=1",
                    "@127.0.0.1",
                    "-p",
                    &port,
                    DNS_ZONE,
                    "SOA",
                ],
            );
            if output_has(&answer, "admin.club.example") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "named did not start: {}",
                std::fs::read_to_string(dir.join("named.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// [`run`] in pebble's network namespace.
    fn run(&self, seconds: u32, argv: &[&str]) -> Output {
        match &self.namespace {
            None => run(seconds, argv),
            Some(path) => {
                let net = format!("--net={}", path.display());
                let all: Vec<&str> = ["nsenter", net.as_str()]
                    .into_iter()
                    .chain(argv.iter().copied())
                    .collect();
                run(seconds, &all)
            }
        }
    }

    /// The ACME directory URL, as certbot on a host asks it.
    pub fn directory_url(&self) -> String {
        format!("https://{}:{}/dir", self.address, self.directory_port)
    }

    /// Restarts BIND taking updates signed with the TSIG key `name` whose base64
    /// secret is `secret` (the one the certs role generated on the host).
    pub fn trust_key(&self, name: &str, secret: &str) {
        self.start_named(Some((name, secret)));
    }

    /// What BIND logged (its updates, its refusals).
    pub fn named_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("named/named.log")).unwrap_or_default()
    }

    pub fn minica(&self) -> PathBuf {
        self.dir.path().join("minica.pem")
    }

    /// The root pebble issues under; the only root the clients trust.
    pub fn root_path(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    pub fn root(&self) -> Option<String> {
        let url = format!("https://{}:{}/roots/0", self.address, self.management_port);
        let minica = self.minica().display().to_string();
        let output = self.run(
            10,
            &["curl", "--silent", "--fail", "--cacert", &minica, &url],
        );
        let pem = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && pem.contains("BEGIN CERTIFICATE")).then_some(pem)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// How many orders pebble has taken (new-order requests in its log).
    pub fn orders(&self) -> usize {
        self.log()
            .matches("/order-plz -> calling handler()")
            .count()
    }

    /// Makes every DNS lookup of `host` fail (SERVFAIL), so its challenge cannot succeed.
    pub fn servfail(&self, host: &str) {
        let url = format!("http://127.0.0.1:{}/set-servfail", self.dns_management_port);
        let body = serde_json::json!({ "host": host }).to_string();
        let output = self.run(10, &["curl", "--silent", "--fail", "--data", &body, &url]);
        assert!(output.status.success(), "set-servfail: {}", text(&output));
    }
}

/// `PROGRAM`, or `nsenter --net=NAMESPACE PROGRAM` in a network namespace.
fn in_namespace(namespace: Option<&Path>, program: &str) -> Command {
    match namespace {
        None => Command::new(program),
        Some(path) => {
            let mut command = Command::new("nsenter");
            command
                .arg(format!("--net={}", path.display()))
                .arg(program);
            command
        }
    }
}

/// A local upstream for the reverse-proxy site: answers every request with `body`,
/// until the test ends (the thread stops with the process).
pub fn upstream(body: &'static str) -> u16 {
    serve(body.as_bytes().to_vec())
}

/// An HTTP server on loopback answering every request with `body` (text or bytes),
/// until the test ends.
pub fn serve(body: Vec<u8>) -> u16 {
    serve_files(vec![(String::new(), body)])
}

/// An HTTP server on loopback serving `files` (path, body) — a path "" answers every
/// request — and 404 for any other path, until the test ends.
pub fn serve_files(files: Vec<(String, Vec<u8>)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let port = listener.local_addr().expect("upstream address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 4096];
            let read = stream.read(&mut buffer).unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..read]);
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let found = files
                .iter()
                .find(|(name, _)| name.is_empty() || name == path);
            let (status, body) = match found {
                Some((_, body)) => ("200 OK", body.as_slice()),
                None => ("404 Not Found", &b"not here\n"[..]),
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(body);
        }
    });
    port
}

/// A Debian host with pebble beside it, ready for the web and certs roles (and any role
/// whose sites they serve).
pub struct WebHost {
    pub bed: Testbed,
    /// The loopback address nginx listens on (127.0.0.1 unless `up_on` said otherwise).
    pub address: String,
    pub http_port: u16,
    pub https_port: u16,
    pub pebble: Pebble,
    /// Held from the host's boot until the first apply that succeeds: nginx's first
    /// start (the package's postinst) listens on port 80, which every test host shares;
    /// after that apply nginx listens on this host's own ports.
    first_start: Mutex<Option<Flock<File>>>,
}

impl WebHost {
    pub fn up(name: &str, suite: &str) -> WebHost {
        WebHost::up_on(name, suite, "127.0.0.1", free_port())
    }

    /// A web host whose nginx listens on `address` only (a loopback address of its own,
    /// 127.0.0.N, so that hosts sharing this network can each have port 443 there),
    /// HTTPS on `https_port`; its pebble resolves every name to `address`.
    pub fn up_on(name: &str, suite: &str, address: &str, https_port: u16) -> WebHost {
        let http_port = free_port();
        let pebble = Pebble::start_for(http_port, address);
        let first_start = exclusive("nginx-first-start");
        let bed = Testbed::up(name, suite);
        std::fs::copy(pebble.minica(), bed.root_path("/root/pebble-minica.pem"))
            .expect("copy pebble's HTTPS CA onto the host");
        WebHost {
            bed,
            address: address.to_string(),
            http_port,
            https_port,
            pebble,
            first_start: Mutex::new(Some(first_start)),
        }
    }

    /// The inventory: the web and certs roles, with `sites` and `certificates` as YAML
    /// flow lists.
    pub fn inventory(&self, sites: &str, certificates: &str) {
        self.inventory_with(&[], sites, certificates, "");
    }

    /// The inventory: the web and certs roles, then `roles`, with `sites` and
    /// `certificates` as YAML flow lists and `vars` (lines `name: value`) added.
    pub fn inventory_with(&self, roles: &[&str], sites: &str, certificates: &str, vars: &str) {
        let roles = ["web", "certs"]
            .iter()
            .chain(roles)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        let vars: String = vars
            .lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| format!("      {}\n", line.trim()))
            .collect();
        let vars = if self.address == "127.0.0.1" {
            vars
        } else {
            format!(
                "      web_listen_address: {}\n      web_ipv6: false\n{vars}",
                self.address
            )
        };
        self.bed.write_inventory(&format!(
            "roles: [{roles}]\n    vars:\n      web_http_port: {}\n      web_https_port: {}\n      \
             web_sites: {sites}\n      certs_email: admin@club.example\n      \
             certs_acme_server: https://127.0.0.1:{}/dir\n      certs_ca_bundle: /root/pebble-minica.pem\n      \
             certs_certificates: {certificates}\n{vars}",
            self.http_port, self.https_port, self.pebble.directory_port
        ));
    }

    pub fn apply(&self) -> (Output, u64) {
        let output = self.bed.placard(&["apply", "--format", "json"]);
        let last = stdout(&output)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let summary: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
        let changed = summary["summary"][0]["changed"]
            .as_u64()
            .unwrap_or(u64::MAX);
        (output, changed)
    }

    pub fn apply_ok(&self, what: &str) -> u64 {
        self.apply_ok_output(what).1
    }

    /// As [`WebHost::apply_ok`], with the report (to check what it does not show).
    pub fn apply_ok_output(&self, what: &str) -> (Output, u64) {
        let (output, changed) = self.apply();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{what}:\n{}",
            stdout(&output)
        );
        self.release_first_start();
        (output, changed)
    }

    /// After an apply that succeeded: nginx now listens on this host's own ports, so the
    /// next host may start its nginx.
    pub fn release_first_start(&self) {
        self.first_start
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// GET https://NAME:PORT/PATH, trusting only pebble's root: (status, headers+body).
    pub fn https(&self, name: &str, path: &str) -> (bool, String) {
        let resolve = format!("{name}:{}:{}", self.https_port, self.address);
        let url = format!("https://{name}:{}{path}", self.https_port);
        let root = self.pebble.root_path().display().to_string();
        let output = run(
            20,
            &[
                "curl",
                "--silent",
                "--show-error",
                "--include",
                "--cacert",
                &root,
                "--resolve",
                &resolve,
                &url,
            ],
        );
        (output.status.success(), text(&output))
    }

    pub fn http(&self, name: &str, path: &str) -> String {
        let resolve = format!("{name}:{}:{}", self.http_port, self.address);
        let url = format!("http://{name}:{}{path}", self.http_port);
        text(&run(
            20,
            &["curl", "--silent", "--include", "--resolve", &resolve, &url],
        ))
    }

    /// The certificate nginx presents for `name`, verified by openssl against pebble's
    /// root and the name: its serial and its names.
    pub fn presented(&self, name: &str) -> (String, String) {
        self.presented_by(&format!("{}:{}", self.address, self.https_port), name, None)
    }

    /// The certificate the server at `connect` (ADDRESS:PORT) presents for `name`,
    /// after `starttls` (`smtp`, `imap`) when given, verified by openssl against
    /// pebble's root and the name: its serial and its names. For Postfix and Dovecot
    /// as for nginx.
    pub fn presented_by(
        &self,
        connect: &str,
        name: &str,
        starttls: Option<&str>,
    ) -> (String, String) {
        self.try_presented_by(connect, name, starttls)
            .unwrap_or_else(|message| panic!("{message}"))
    }

    /// [`presented_by`](Self::presented_by), or why it could not verify it.
    fn try_presented_by(
        &self,
        connect: &str,
        name: &str,
        starttls: Option<&str>,
    ) -> Result<(String, String), String> {
        let root = self.pebble.root_path().display().to_string();
        let mut s_client = Command::new("timeout")
            .args([
                "20",
                "openssl",
                "s_client",
                "-connect",
                connect,
                "-servername",
                name,
            ])
            .args(
                starttls
                    .map(|protocol| ["-starttls", protocol])
                    .iter()
                    .flatten(),
            )
            .args([
                "-CAfile",
                &root,
                "-verify_return_error",
                "-verify_hostname",
                name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run openssl s_client");
        let mut pem = String::new();
        let _ = s_client
            .stdout
            .take()
            .map(|mut out| out.read_to_string(&mut pem));
        let status = s_client.wait().expect("wait for s_client");
        if !status.success() || !pem.contains("Verify return code: 0 (ok)") {
            return Err(format!(
                "s_client -verify_return_error for {name} at {connect} failed:\n{pem}"
            ));
        }
        let certificate_file = self
            .pebble
            .dir
            .path()
            .join(format!("presented-{connect}.pem"));
        std::fs::write(&certificate_file, &pem).expect("write the presented certificate");
        let file = certificate_file.display().to_string();
        let details = run(
            10,
            &[
                "openssl",
                "x509",
                "-in",
                &file,
                "-noout",
                "-serial",
                "-ext",
                "subjectAltName",
            ],
        );
        let details = text(&details);
        let serial = details
            .lines()
            .find_map(|l| l.strip_prefix("serial="))
            .expect("a serial")
            .to_string();
        Ok((serial, details))
    }

    /// The certificate presented for `name` once `wanted(serial, details)` holds, or
    /// after 20 s: nginx's reload returns before its new workers answer.
    pub fn presented_when(
        &self,
        name: &str,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> (String, String) {
        self.presented_by_when(
            &format!("{}:{}", self.address, self.https_port),
            name,
            None,
            wanted,
        )
    }

    /// [`presented_by`](Self::presented_by) once `wanted(serial, details)` holds, or
    /// after 20 s.
    pub fn presented_by_when(
        &self,
        connect: &str,
        name: &str,
        starttls: Option<&str>,
        wanted: impl Fn(&str, &str) -> bool,
    ) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            // Until the deadline, a certificate that does not verify (the placeholder
            // nginx's old workers still present) is waited out too.
            let (serial, details) = match self.try_presented_by(connect, name, starttls) {
                Ok(presented) => presented,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(500));
                    continue;
                }
                Err(message) => panic!("{message}"),
            };
            if wanted(&serial, &details) || Instant::now() > deadline {
                return (serial, details);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    pub fn lineages(&self) -> Vec<String> {
        self.entries("/etc/letsencrypt/renewal")
    }

    /// The names in a folder of the host, sorted; none when it does not exist.
    pub fn entries(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.bed.root_path(folder))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The files of /etc's git history, in any commit, that hold `text` (a secret that
    /// must never be there): `git grep -F` over every revision.
    pub fn etc_history_holding(&self, text: &str) -> String {
        let etc = self.bed.root_path("/etc").display().to_string();
        let revisions = run(30, &["git", "-C", &etc, "rev-list", "--all"]);
        String::from_utf8_lossy(&revisions.stdout)
            .lines()
            .map(|revision| {
                let found = run(30, &["git", "-C", &etc, "grep", "-l", "-F", text, revision]);
                String::from_utf8_lossy(&found.stdout).into_owned()
            })
            .collect()
    }
}
