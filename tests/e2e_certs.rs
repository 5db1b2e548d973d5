//! The web and certs roles (issue 8), end to end: a real Debian host (systemd-nspawn)
//! with nginx and certbot from Debian, ordering real certificates from pebble, Let's
//! Encrypt's test ACME server (Debian's `pebble` package), run here on loopback.
//!
//! How the pieces meet: the test hosts share this machine's network, so the host's
//! nginx listens on free high ports (`web_http_port`, `web_https_port`), and pebble is
//! told to validate HTTP-01 on that port (`httpPort`). pebble resolves every name
//! through pebble-challtestsrv, which answers 127.0.0.1 for all of them: the host's
//! nginx. certbot on the host reaches pebble at https://127.0.0.1:PORT/dir and trusts
//! its HTTPS through a CA made here (REQUESTS_CA_BUNDLE, via `certs_ca_bundle`). The
//! clients (curl, openssl s_client) run here and trust only pebble's issuing root,
//! fetched from pebble's management API.
//!
//! Every child process is killed when its guard drops, and every wait has a deadline.

#[path = "common/testbed.rs"]
mod testbed;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use testbed::{stdout, Testbed};

/// One web host at a time: nginx's first start on Debian tries port 80, shared by all.
static WEB_HOSTS: Mutex<()> = Mutex::new(());

/// A child process killed (and reaped) when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on loopback right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Runs a program here with a deadline (coreutils' timeout).
fn run(seconds: u32, argv: &[&str]) -> Output {
    Command::new("timeout")
        .arg("--kill-after=5")
        .arg(seconds.to_string())
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// pebble and pebble-challtestsrv, on free loopback ports, with their own HTTPS CA.
struct Pebble {
    dir: tempfile::TempDir,
    directory_port: u16,
    management_port: u16,
    dns_management_port: u16,
    _processes: Vec<Killed>,
}

impl Pebble {
    fn start(http_port: u16) -> Pebble {
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
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
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
        let dns_port = free_port();
        let dns_management_port = free_port();
        let tls_port = free_port();
        let config = serde_json::json!({"pebble": {
            "listenAddress": format!("127.0.0.1:{directory_port}"),
            "managementListenAddress": format!("127.0.0.1:{management_port}"),
            "certificate": path("cert.pem"),
            "privateKey": path("key.pem"),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        }});
        std::fs::write(dir.path().join("pebble.json"), config.to_string()).expect("config");

        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let dns = Command::new("pebble-challtestsrv")
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_management_port}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .stdout(log("challtestsrv.log"))
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv (apt-get install pebble)");
        let dns = Killed(dns);
        let pebble = Command::new("pebble")
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
            _processes: vec![Killed(pebble), dns],
            dir,
        };
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

    fn minica(&self) -> PathBuf {
        self.dir.path().join("minica.pem")
    }

    /// The root pebble issues under; the only root the clients trust.
    fn root_path(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }

    fn root(&self) -> Option<String> {
        let url = format!("https://127.0.0.1:{}/roots/0", self.management_port);
        let minica = self.minica().display().to_string();
        let output = run(
            10,
            &["curl", "--silent", "--fail", "--cacert", &minica, &url],
        );
        let pem = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success() && pem.contains("BEGIN CERTIFICATE")).then_some(pem)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// How many orders pebble has taken (new-order requests in its log).
    fn orders(&self) -> usize {
        self.log()
            .matches("/order-plz -> calling handler()")
            .count()
    }

    /// Makes every DNS lookup of `host` fail (SERVFAIL), so its challenge cannot succeed.
    fn servfail(&self, host: &str) {
        let url = format!("http://127.0.0.1:{}/set-servfail", self.dns_management_port);
        let body = serde_json::json!({ "host": host }).to_string();
        let output = run(10, &["curl", "--silent", "--fail", "--data", &body, &url]);
        assert!(output.status.success(), "set-servfail: {}", text(&output));
    }
}

/// A local upstream for the reverse-proxy site: answers every request with `body`,
/// until the test ends (the thread stops with the process).
fn upstream(body: &'static str) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream");
    let port = listener.local_addr().expect("upstream address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

struct WebHost {
    bed: Testbed,
    http_port: u16,
    https_port: u16,
    pebble: Pebble,
}

impl WebHost {
    fn up(name: &str, suite: &str) -> WebHost {
        let http_port = free_port();
        let https_port = free_port();
        let pebble = Pebble::start(http_port);
        let bed = Testbed::up(name, suite);
        std::fs::copy(pebble.minica(), bed.root_path("/root/pebble-minica.pem"))
            .expect("copy pebble's HTTPS CA onto the host");
        WebHost {
            bed,
            http_port,
            https_port,
            pebble,
        }
    }

    /// The inventory: the web and certs roles, with `sites` and `certificates` as YAML
    /// flow lists.
    fn inventory(&self, sites: &str, certificates: &str) {
        self.bed.write_inventory(&format!(
            "roles: [web, certs]\n    vars:\n      web_http_port: {}\n      web_https_port: {}\n      \
             web_sites: {sites}\n      certs_email: admin@club.example\n      \
             certs_acme_server: https://127.0.0.1:{}/dir\n      certs_ca_bundle: /root/pebble-minica.pem\n      \
             certs_certificates: {certificates}\n",
            self.http_port, self.https_port, self.pebble.directory_port
        ));
    }

    fn apply(&self) -> (Output, u64) {
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

    fn apply_ok(&self, what: &str) -> u64 {
        let (output, changed) = self.apply();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{what}:\n{}",
            stdout(&output)
        );
        changed
    }

    /// GET https://NAME:PORT/PATH, trusting only pebble's root: (status, headers+body).
    fn https(&self, name: &str, path: &str) -> (bool, String) {
        let resolve = format!("{name}:{}:127.0.0.1", self.https_port);
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

    fn http(&self, name: &str, path: &str) -> String {
        let resolve = format!("{name}:{}:127.0.0.1", self.http_port);
        let url = format!("http://{name}:{}{path}", self.http_port);
        text(&run(
            20,
            &["curl", "--silent", "--include", "--resolve", &resolve, &url],
        ))
    }

    /// The certificate nginx presents for `name`, verified by openssl against pebble's
    /// root and the name: its serial and its names.
    fn presented(&self, name: &str) -> (String, String) {
        let root = self.pebble.root_path().display().to_string();
        let connect = format!("127.0.0.1:{}", self.https_port);
        let mut s_client = Command::new("timeout")
            .args([
                "20",
                "openssl",
                "s_client",
                "-connect",
                &connect,
                "-servername",
                name,
            ])
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
        assert!(
            status.success(),
            "s_client -verify_return_error for {name} failed:\n{pem}"
        );
        assert!(pem.contains("Verify return code: 0 (ok)"), "{pem}");
        let certificate_file = self.pebble.dir.path().join("presented.pem");
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
        (serial, details)
    }

    /// The certificate presented for `name` once `wanted(serial, details)` holds, or
    /// after 20 s: nginx's reload returns before its new workers answer.
    fn presented_when(&self, name: &str, wanted: impl Fn(&str, &str) -> bool) -> (String, String) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (serial, details) = self.presented(name);
            if wanted(&serial, &details) || Instant::now() > deadline {
                return (serial, details);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn lineages(&self) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(self.bed.root_path("/etc/letsencrypt/renewal"))
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
}

const CLUB_SITES: &str = "[{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}]";
const CLUB_CERTIFICATE: &str =
    "[{name: club, domains: [club.example, www.club.example, members.club.example], services: [nginx]}]";

fn certificates_and_sites(host: &WebHost) {
    let started = Instant::now();
    // (1) One lineage for three names; each is served over HTTPS with a certificate
    // a client trusting only pebble's root verifies, for that name.
    host.inventory(CLUB_SITES, CLUB_CERTIFICATE);
    host.apply_ok("first apply");
    eprintln!("first apply: {:?}", started.elapsed());
    assert_eq!(host.lineages(), ["club.conf"]);
    assert_eq!(host.pebble.orders(), 1, "one order:\n{}", host.pebble.log());
    std::fs::write(
        host.bed.root_path("/var/www/club/index.html"),
        "club pages\n",
    )
    .expect("write the site's page");
    let mut serial = String::new();
    for name in ["club.example", "www.club.example", "members.club.example"] {
        let (ok, answer) = host.https(name, "/");
        assert!(ok && answer.contains("club pages"), "{name}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "HSTS on {name}: {answer}"
        );
        let (this_serial, details) = host.presented(name);
        for expected in [
            "DNS:club.example",
            "DNS:www.club.example",
            "DNS:members.club.example",
        ] {
            assert!(details.contains(expected), "{expected} in {details}");
        }
        serial = this_serial;
    }
    // HTTP redirects to HTTPS now that the certificate exists; challenges stay on HTTP.
    let redirect = host.http("www.club.example", "/page");
    assert!(
        redirect.contains("301")
            && redirect.contains(&format!(
                "Location: https://www.club.example:{}/page",
                host.https_port
            )),
        "{redirect}"
    );
    let probe = host.http(
        "www.club.example",
        "/.well-known/acme-challenge/placard-probe",
    );
    assert!(
        probe.contains("200 OK") && probe.contains("placard"),
        "{probe}"
    );
    // Unknown names are refused: the TLS handshake, and HTTP without an answer.
    let (ok, answer) = host.https("unknown.example", "/");
    assert!(!ok, "an unknown name must be refused: {answer}");
    let (ok, answer) = host.https("club.example", "/");
    assert!(ok, "control: a known name is served: {answer}");
    let unknown = host.http("unknown.example", "/");
    assert!(!unknown.contains("200 OK"), "{unknown}");
    // TLS below 1.2 is refused.
    let root = host.pebble.root_path().display().to_string();
    let old = run(
        20,
        &[
            "curl",
            "--silent",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--cacert",
            &root,
            "--resolve",
            &format!("club.example:{}:127.0.0.1", host.https_port),
            &format!("https://club.example:{}/", host.https_port),
        ],
    );
    assert!(!old.status.success(), "TLS 1.1 must be refused");

    // Private keys never enter /etc's history.
    let files = run(
        30,
        &[
            "git",
            "-C",
            &host.bed.root_path("/etc").display().to_string(),
            "ls-files",
        ],
    );
    let files = String::from_utf8_lossy(&files.stdout).into_owned();
    assert!(
        files.contains("letsencrypt/renewal/club.conf"),
        "the lineage's configuration is recorded"
    );
    assert!(files.contains("nginx/sites-enabled/placard-club.example.conf"));
    for private in [
        "letsencrypt/archive/",
        "letsencrypt/accounts/",
        "letsencrypt/keys/",
        ".key",
    ] {
        assert!(
            !files.lines().any(|f| f.contains(private)),
            "`{private}` is in /etc's git:\n{files}"
        );
    }
    // live/NAME/privkey.pem is recorded as what it is, a symbolic link into archive/;
    // no commit holds a private key itself.
    let etc = host.bed.root_path("/etc").display().to_string();
    let revisions = run(30, &["git", "-C", &etc, "rev-list", "--all"]);
    for revision in String::from_utf8_lossy(&revisions.stdout).lines() {
        let found = run(
            30,
            &["git", "-C", &etc, "grep", "-l", "PRIVATE KEY", revision],
        );
        assert!(
            found.stdout.is_empty(),
            "a private key in /etc's history: {}",
            text(&found)
        );
    }

    // `placard dns` reminds the admin of the CAA and address records the names need.
    let dns = host.bed.placard(&["dns", &host.bed.host.name]);
    let records = stdout(&dns);
    assert_eq!(dns.status.code(), Some(0), "placard dns:\n{records}");
    assert!(
        records.contains("CAA 0 issue \"letsencrypt.org\"")
            && records.contains("members.club.example"),
        "{records}"
    );

    // The roles' health checks pass.
    let verify = host.bed.placard(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "placard verify:\n{}",
        stdout(&verify)
    );

    // (7) A second apply changes nothing and orders nothing.
    let started = Instant::now();
    assert_eq!(
        host.apply_ok("second apply"),
        0,
        "a second apply changes nothing"
    );
    eprintln!("no-op apply: {:?}", started.elapsed());
    assert_eq!(host.pebble.orders(), 1, "no order on a no-op apply");

    // (4) A renewal by certbot's own means (the timer's `certbot renew`, forced): the
    // deploy hook reloads nginx, which then presents the new certificate; nginx is
    // reloaded, not restarted (same main PID). Then placard still has nothing to do.
    let pid = || {
        host.bed
            .ssh("systemctl show --property MainPID --value nginx")
            .trim()
            .to_string()
    };
    let nginx_pid = pid();
    host.bed.ssh(
        "REQUESTS_CA_BUNDLE=/root/pebble-minica.pem timeout 300 certbot renew --force-renewal --no-random-sleep-on-renew --cert-name club --non-interactive",
    );
    // nginx's reload returns before its new workers answer: wait a little for them.
    let (renewed_serial, _) = host.presented_when("www.club.example", |now, _| now != serial);
    assert_ne!(
        renewed_serial, serial,
        "nginx presents the renewed certificate"
    );
    assert_eq!(pid(), nginx_pid, "nginx was reloaded, not restarted");
    assert_eq!(host.pebble.orders(), 2, "the renewal is one order");
    assert_eq!(host.apply_ok("apply after a renewal"), 0);
    assert_eq!(host.pebble.orders(), 2, "no order on a no-op apply");
    let serial = renewed_serial;

    // (3) radio.club.example, a reverse proxy, joins the same lineage: one new order.
    let upstream_port = upstream("radio upstream\n");
    let sites = format!(
        "[{{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}}, \
         {{name: radio.club.example, proxy: \"http://127.0.0.1:{upstream_port}\", certificate: club}}]"
    );
    let expanded = "[{name: club, domains: [club.example, www.club.example, members.club.example, radio.club.example], services: [nginx]}]";
    host.inventory(&sites, expanded);
    assert!(host.apply_ok("expanding apply") > 0);
    assert_eq!(host.lineages(), ["club.conf"], "the same lineage, expanded");
    assert_eq!(host.pebble.orders(), 3, "one new order");
    let (ok, answer) = host.https("radio.club.example", "/");
    assert!(
        ok && answer.contains("radio upstream"),
        "the proxy over HTTPS: {answer}"
    );
    let (expanded_serial, details) =
        host.presented_when("club.example", |_, details| details.contains("radio"));
    assert!(details.contains("DNS:radio.club.example"), "{details}");
    assert_ne!(expanded_serial, serial, "a new certificate");
    assert_eq!(host.apply_ok("apply after expanding"), 0);
    assert_eq!(host.pebble.orders(), 3, "no order on a no-op apply");

    // (5) A name that cannot be validated: the host fails with certbot's reason, the
    // previous certificate stays served, and no second lineage appears.
    let renewal_before = host.bed.read("/etc/letsencrypt/renewal/club.conf");
    host.pebble.servfail("nowhere.club.example");
    let failing = "[{name: club, domains: [club.example, www.club.example, members.club.example, radio.club.example, nowhere.club.example], services: [nginx]}]";
    host.inventory(&sites, failing);
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "the host fails:\n{report}");
    assert!(
        report.contains("Domain: nowhere.club.example") && report.contains("could not resolve"),
        "certbot's reason is reported:\n{report}"
    );
    let (still, details) = host.presented("radio.club.example");
    assert_eq!(
        still, expanded_serial,
        "the previous certificate is still served"
    );
    assert!(!details.contains("nowhere"), "{details}");
    assert_eq!(host.lineages(), ["club.conf"]);
    assert_eq!(
        host.bed.read("/etc/letsencrypt/renewal/club.conf"),
        renewal_before,
        "the lineage's configuration is as it was"
    );
    let nginx = host.bed.ssh_output("nginx -t");
    assert!(nginx.status.success(), "nginx's configuration is whole");

    // Back to the names that work: nothing to order, nothing to change.
    host.inventory(&sites, expanded);
    assert_eq!(host.apply_ok("apply after the failure"), 0);
    assert_eq!(host.pebble.orders(), 4, "only the failed order was added");

    // A site nginx -t refuses (its upstream's name does not resolve) never replaces a
    // working configuration: the host fails naming nginx's reason, the file is not left
    // in place, and the other sites are still served.
    let broken = format!(
        "[{{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}}, \
         {{name: radio.club.example, proxy: \"http://127.0.0.1:{upstream_port}\", certificate: club}}, \
         {{name: broken.club.example, proxy: \"http://upstream.invalid:8000\"}}]"
    );
    host.inventory(&broken, expanded);
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a broken site fails the host:\n{report}"
    );
    assert!(
        report.contains("host not found in upstream"),
        "nginx's reason:\n{report}"
    );
    assert!(
        host.bed
            .read("/etc/nginx/sites-enabled/placard-broken.club.example.conf")
            .is_none(),
        "the refused site is not left in place"
    );
    assert!(host.bed.ssh_output("nginx -t").status.success());
    let (ok, answer) = host.https("www.club.example", "/");
    assert!(ok && answer.contains("club pages"), "{answer}");
    host.inventory(&sites, expanded);
    assert_eq!(host.apply_ok("apply after the refused site"), 0);

    // Removing a name shrinks the same lineage: one order, still one lineage.
    host.inventory(CLUB_SITES, CLUB_CERTIFICATE);
    assert!(host.apply_ok("apply without radio.club.example") > 0);
    assert_eq!(host.lineages(), ["club.conf"], "the same lineage, shrunk");
    assert!(
        host.bed
            .read("/etc/nginx/sites-enabled/placard-radio.club.example.conf")
            .is_none(),
        "a site no longer listed is no longer served"
    );
    assert_eq!(host.pebble.orders(), 5, "one new order");
    let (_, details) = host.presented_when("club.example", |_, details| !details.contains("radio"));
    assert!(!details.contains("DNS:radio.club.example"), "{details}");
    assert!(details.contains("DNS:members.club.example"), "{details}");
    assert_eq!(host.apply_ok("apply after shrinking"), 0);
    assert_eq!(host.pebble.orders(), 5, "no order on a no-op apply");
}

#[test]
fn certs_on_debian_12_one_lineage_expanded_served_and_kept_on_failure() {
    let _one_at_a_time = WEB_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let host = WebHost::up("e2e-certs12", "bookworm");
    certificates_and_sites(&host);
}

#[test]
fn certs_on_debian_13_one_lineage_expanded_served_and_kept_on_failure() {
    let _one_at_a_time = WEB_HOSTS.lock().unwrap_or_else(|e| e.into_inner());
    let host = WebHost::up("e2e-certs13", "trixie");
    certificates_and_sites(&host);
}
