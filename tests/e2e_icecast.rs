//! The icecast role (issue 9), end to end on Debian 12 and 13, with real clients only:
//! Icecast2 from Debian on a real host (systemd-nspawn), behind the web role's nginx
//! with a certificate from pebble (see tests/common/acme.rs), a real source client
//! (ffmpeg) broadcasting a generated tone, and curl as the listener.
//!
//! Where the clients run: on this machine, not in the host. The host shares this
//! machine's network, so Icecast's 127.0.0.1:PORT is reachable from here as a member
//! reaches it through an SSH tunnel; ffmpeg is installed once here (.ci/run) rather
//! than in every test host (some 90 packages each), and the host keeps only what the
//! roles installed, so the idempotency and `verify` checks are about the roles alone.
//!
//! One host per Debian release, shared by every case, in this order: first apply;
//! passwords out of git and of the output; the check of icecast.xml; refused
//! passwords; alice streams and a listener hears her over HTTPS; the status lists her
//! mount; the admin pages only from this host; a second apply changes nothing;
//! `systemctl restart icecast2`; a reboot of the host. Every child process is killed
//! when its guard drops, and every wait has a deadline.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/testbed.rs"]
mod testbed;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use acme::{free_port, run, text, Killed, WebHost};
use testbed::stdout;

const SHOWS: &str = "[{mount: alice.ogg, name: \"Alice & friends\", description: \"Tunes <live>\", max_listeners: 10}, \
                     {mount: bob.ogg, name: Bob's show, fallback: alice.ogg}]";
const LISTENER_BYTES: usize = 64 * 1024;

struct Radio {
    host: WebHost,
    icecast_port: u16,
}

impl Radio {
    fn up(name: &str, suite: &str) -> Radio {
        let host = WebHost::up(name, suite);
        let icecast_port = free_port();
        let sites = format!(
            "[{{name: radio.club.example, proxy: \"http://127.0.0.1:{icecast_port}\", stream: true, local_only: [/admin], certificate: radio}}]"
        );
        host.inventory_with(
            &["icecast"],
            &sites,
            "[{name: radio, domains: [radio.club.example], services: [nginx]}]",
            &format!(
                "icecast_port: {icecast_port}\nicecast_hostname: radio.club.example\n\
                 icecast_location: The club's cellar\nicecast_admin_email: radio@club.example\n\
                 icecast_shows: {SHOWS}\n"
            ),
        );
        Radio { host, icecast_port }
    }

    fn secret(&self, name: &str) -> String {
        self.host
            .bed
            .read(&format!("/var/lib/placard/secrets/{name}"))
            .unwrap_or_else(|| panic!("secret {name} was generated"))
            .trim()
            .to_string()
    }

    fn source_url(&self, password: &str, mount: &str) -> String {
        format!(
            "icecast://source:{password}@127.0.0.1:{}/{mount}",
            self.icecast_port
        )
    }

    /// ffmpeg broadcasting a 440 Hz tone, Ogg Vorbis, in real time, until dropped.
    fn broadcast(&self, password: &str, mount: &str) -> Killed {
        let child = Command::new("ffmpeg")
            .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-re"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"])
            .args(["-c:a", "libvorbis", "-b:a", "128k"])
            .args(["-content_type", "application/ogg", "-f", "ogg"])
            .arg(self.source_url(password, mount))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ffmpeg (apt-get install ffmpeg)");
        Killed(child)
    }

    /// ffmpeg trying to broadcast 3 s with `password`: its exit and what it said.
    fn try_broadcast(&self, password: &str, mount: &str) -> (bool, String) {
        let url = self.source_url(password, mount);
        let output = run(
            60,
            &[
                "ffmpeg",
                "-nostdin",
                "-hide_banner",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:sample_rate=44100:duration=3",
                "-c:a",
                "libvorbis",
                "-content_type",
                "application/ogg",
                "-f",
                "ogg",
                &url,
            ],
        );
        (output.status.success(), text(&output))
    }

    /// /status-json.xsl straight from Icecast on the host's loopback port.
    fn status(&self) -> String {
        let url = format!("http://127.0.0.1:{}/status-json.xsl", self.icecast_port);
        text(&run(
            20,
            &["curl", "--silent", "--show-error", "--fail", &url],
        ))
    }

    /// Waits (30 s at most) until Icecast's own status lists `mount` on air (a source
    /// broadcasts to it: its entry has a stream_start), or not.
    fn wait_listed(&self, mount: &str, listed: bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status();
            let now = on_air(&status, mount);
            if now == listed || Instant::now() > deadline {
                return status;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A listener over HTTPS through nginx, trusting only pebble's root: the status
    /// line of the answer and the first LISTENER_BYTES of the stream (fewer when the
    /// stream ends, or 60 s pass first).
    fn listen(&self, mount: &str) -> (String, Vec<u8>) {
        let headers = self.host.pebble.dir.path().join(format!("{mount}.headers"));
        let _ = std::fs::remove_file(&headers);
        let root = self.host.pebble.root_path().display().to_string();
        let resolve = format!("radio.club.example:{}:127.0.0.1", self.host.https_port);
        let url = format!(
            "https://radio.club.example:{}/{mount}",
            self.host.https_port
        );
        let mut curl = Killed(
            Command::new("curl")
                .args(["--silent", "--no-buffer", "--cacert", &root])
                .args(["--resolve", &resolve, "--max-time", "60"])
                .arg("--dump-header")
                .arg(&headers)
                .arg(&url)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("start curl"),
        );
        let mut stream = curl.0.stdout.take().expect("curl's output");
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::Read as _;
            let mut heard = Vec::new();
            let mut buffer = [0u8; 8192];
            while heard.len() < LISTENER_BYTES {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => heard.extend_from_slice(&buffer[..n]),
                }
            }
            let _ = sender.send(heard);
        });
        let heard = receiver
            .recv_timeout(Duration::from_secs(70))
            .unwrap_or_default();
        drop(curl);
        let status = std::fs::read_to_string(&headers)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        (status, heard)
    }

    /// GET https://radio.club.example/PATH through nginx from `source` (a loopback
    /// address of this machine): the HTTP status.
    fn https_status_from(&self, source: &str, path: &str) -> String {
        self.https_status_from_to(source, "127.0.0.1", path)
    }

    /// The HTTP status of GET PATH over HTTPS, from `source` to nginx at `destination`.
    fn https_status_from_to(&self, source: &str, destination: &str, path: &str) -> String {
        let root = self.host.pebble.root_path().display().to_string();
        let resolve = format!("radio.club.example:{}:{destination}", self.host.https_port);
        let url = format!("https://radio.club.example:{}{path}", self.host.https_port);
        stdout(&run(
            20,
            &[
                "curl",
                "--silent",
                "--interface",
                source,
                "--cacert",
                &root,
                "--resolve",
                &resolve,
                "--output",
                "/dev/null",
                "--write-out",
                "%{http_code}",
                &url,
            ],
        ))
    }

    fn service_runs(&self, when: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .host
            .bed
            .ssh_output("systemctl is-active --quiet icecast2")
            .status
            .code()
            != Some(0)
        {
            assert!(
                Instant::now() < deadline,
                "icecast2 is not active {when}: {}",
                self.host
                    .bed
                    .ssh_output("systemctl status icecast2 --no-pager; tail -20 /var/log/icecast2/error.log")
                    .stdout
                    .escape_ascii()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(
            self.host.bed.ssh("systemctl is-enabled icecast2").trim(),
            "enabled",
            "{when}"
        );
        assert!(
            self.wait_listed("nothing-here", false).contains("icestats"),
            "Icecast answers its status {when}"
        );
    }

    /// alice broadcasts; a listener hears Ogg through nginx over HTTPS; the status
    /// lists her mount, over HTTPS too.
    fn alice_is_heard(&self, when: &str) {
        let alice = self.secret("icecast-show-alice.ogg");
        let _source = self.broadcast(&alice, "alice.ogg");
        let status = self.wait_listed("alice.ogg", true);
        assert!(
            on_air(&status, "alice.ogg") && status.contains("Alice & friends"),
            "the status lists alice's mount while she streams ({when}): {status}"
        );
        let (status_line, heard) = self.listen("alice.ogg");
        assert!(
            status_line.starts_with("HTTP/") && status_line.contains(" 200"),
            "the listener's answer ({when}): {status_line}"
        );
        assert!(
            heard.len() >= LISTENER_BYTES && heard.starts_with(b"OggS"),
            "the listener heard {} bytes starting with {:?} ({when})",
            heard.len(),
            &heard[..heard.len().min(4)]
        );
        let (ok, status) = self.host.https("radio.club.example", "/status-json.xsl");
        assert!(
            ok && status.contains("/alice.ogg\""),
            "status over HTTPS ({when}): {status}"
        );
        let verify = self.host.bed.placard(&["verify"]);
        assert_eq!(verify.status.code(), Some(0), "verify ({when})");
        assert!(
            stdout(&verify).contains("on air: alice.ogg; off air: bob.ogg"),
            "verify reports alice on air ({when}): {}\nIcecast's status now: {}",
            stdout(&verify),
            self.status()
        );
    }
}

/// Whether Icecast's status (JSON) lists `mount` with a source broadcasting to it.
/// Icecast 2.4 also lists, without a source, a mount whose fallback is on air.
fn on_air(status: &str, mount: &str) -> bool {
    let json = status.find('{').map_or("", |start| &status[start..]);
    let Ok(value) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    let sources = match &value["icestats"]["source"] {
        serde_json::Value::Array(sources) => sources.clone(),
        serde_json::Value::Object(_) => vec![value["icestats"]["source"].clone()],
        _ => vec![],
    };
    sources.iter().any(|source| {
        source["listenurl"]
            .as_str()
            .is_some_and(|url| url.ends_with(&format!("/{mount}")))
            && source.get("stream_start").is_some()
    })
}

fn radio(name: &str, suite: &str) {
    let mut radio = Radio::up(name, suite);
    let first = radio.host.apply_ok_output("first apply");
    let bed = &radio.host.bed;

    // A real systemd unit, enabled and started, restarted on failure.
    radio.service_runs("after the first apply");
    assert_eq!(
        bed.ssh("systemctl show --property Restart --value icecast2")
            .trim(),
        "on-failure"
    );
    assert_eq!(
        bed.ssh("systemctl show --property FragmentPath --value icecast2")
            .trim(),
        "/etc/systemd/system/icecast2.service"
    );

    // icecast.xml: the variables, the passwords generated on the host, private.
    let config = bed.read("/etc/icecast2/icecast.xml").expect("icecast.xml");
    let passwords: Vec<(&str, String)> = [
        "icecast-admin",
        "icecast-source",
        "icecast-relay",
        "icecast-show-alice.ogg",
        "icecast-show-bob.ogg",
    ]
    .iter()
    .map(|name| (*name, radio.secret(name)))
    .collect();
    for (name, password) in &passwords {
        assert!(password.len() >= 24, "{name}");
        assert!(config.contains(password.as_str()), "{name} in icecast.xml");
    }
    assert_ne!(passwords[3].1, passwords[4].1, "each show its own password");
    for expected in [
        "<hostname>radio.club.example</hostname>",
        "<location>The club&apos;s cellar</location>",
        "<admin>radio@club.example</admin>",
        &format!("<port>{}</port>", radio.icecast_port),
        "<bind-address>127.0.0.1</bind-address>",
        "<mount-name>/alice.ogg</mount-name>",
        "<stream-name>Alice &amp; friends</stream-name>",
        "<stream-description>Tunes &lt;live&gt;</stream-description>",
        "<max-listeners>10</max-listeners>",
        "<fallback-mount>/alice.ogg</fallback-mount>",
    ] {
        assert!(config.contains(expected), "icecast.xml lacks {expected}");
    }
    assert!(
        !config.contains("hackme"),
        "the package's example passwords"
    );
    assert_eq!(
        bed.ssh("stat -c '%U:%G %a' /etc/icecast2/icecast.xml")
            .trim(),
        "root:icecast 640"
    );
    // The package's installer was told not to set passwords.
    assert!(bed
        .ssh("debconf-show icecast2")
        .contains("icecast2/icecast-setup: false"));
    // No password in /etc's git (file or history), nor in any output.
    let etc = bed.root_path("/etc").display().to_string();
    let files = stdout(&run(30, &["git", "-C", &etc, "ls-files", "icecast2"]));
    assert!(
        !files.contains("icecast2/icecast.xml"),
        "icecast.xml is tracked: {files}"
    );
    let history = stdout(&run(60, &["git", "-C", &etc, "log", "-p", "--all"]));
    for (name, password) in &passwords {
        assert!(!history.contains(password.as_str()), "{name} in /etc's git");
        assert!(
            !stdout(&first.0).contains(password.as_str()),
            "{name} was printed"
        );
    }

    // The check of icecast.xml: the live file passes, a broken one does not, and
    // neither disturbs the running server.
    let pid = bed.ssh("systemctl show --property MainPID --value icecast2");
    let check = bed.ssh_output(
        "cp -p /etc/icecast2/icecast.xml /etc/icecast2/check-good.xml && /usr/local/lib/placard/icecast-check /etc/icecast2/check-good.xml",
    );
    assert!(check.status.success(), "{}", text(&check));
    let check = bed.ssh_output(
        "sed 's|</limits>||' /etc/icecast2/icecast.xml > /etc/icecast2/check-bad.xml && /usr/local/lib/placard/icecast-check /etc/icecast2/check-bad.xml",
    );
    assert!(
        !check.status.success(),
        "an icecast.xml that is not XML passes"
    );
    // Well-formed, but Icecast cannot use it: it must start, and fails to.
    let check = bed.ssh_output(
        "sed 's|<logdir>/var/log/icecast2</logdir>|<logdir>/nonexistent</logdir>|' /etc/icecast2/icecast.xml > /etc/icecast2/check-bad.xml && chgrp icecast /etc/icecast2/check-bad.xml && /usr/local/lib/placard/icecast-check /etc/icecast2/check-bad.xml",
    );
    assert!(
        !check.status.success() && text(&check).contains("Icecast does not start"),
        "an icecast.xml Icecast cannot start with passes: {}",
        text(&check)
    );
    bed.ssh("rm -f /etc/icecast2/check-good.xml /etc/icecast2/check-bad.xml");
    assert_eq!(
        bed.ssh("systemctl show --property MainPID --value icecast2"),
        pid,
        "the check left the running Icecast alone"
    );

    // Off air, `verify` passes and says so.
    let verify = bed.placard(&["verify"]);
    assert_eq!(verify.status.code(), Some(0), "verify");
    assert!(stdout(&verify).contains("on air: none; off air: alice.ogg bob.ogg"));

    // bob's password on alice's mount is refused, and so is a wrong one; bob's on
    // his own mount is taken (the control).
    let bob = radio.secret("icecast-show-bob.ogg");
    for (password, who) in [
        (bob.as_str(), "bob's password"),
        ("wrong", "a wrong password"),
    ] {
        let (ok, said) = radio.try_broadcast(password, "alice.ogg");
        assert!(!ok, "{who} on alice's mount was taken: {said}");
        assert!(said.contains("401"), "{who}: {said}");
    }
    let (ok, said) = radio.try_broadcast(&bob, "bob.ogg");
    assert!(ok, "bob on his own mount: {said}");
    // Once his client has stopped, Icecast drops his mount from the status (seen to
    // take a moment on Debian 13).
    let status = radio.wait_listed("bob.ogg", false);
    assert!(
        !on_air(&status, "bob.ogg"),
        "bob's mount is still listed 30 s after he stopped: {status}"
    );

    radio.alice_is_heard("after the first apply");

    // The admin pages answer only on this host: nginx refuses them from another
    // address (127.0.0.2 is loopback too, but not the host's own address) and lets
    // them through from 127.0.0.1, where Icecast asks for its password.
    assert_eq!(radio.https_status_from("127.0.0.2", "/admin/stats"), "403");
    assert_eq!(radio.https_status_from("127.0.0.1", "/admin/stats"), "401");
    // A connection the relay role's tunnel hands over comes from 127.0.0.1 too, but
    // arrives at the tunnel address (web_tunnel_address): it is the Internet's, refused.
    assert_eq!(
        radio.https_status_from_to("127.0.0.1", "127.0.0.9", "/admin/stats"),
        "403"
    );
    assert_eq!(
        radio.https_status_from_to("127.0.0.1", "127.0.0.9", "/status-json.xsl"),
        "200"
    );
    assert_eq!(
        radio.https_status_from("127.0.0.2", "/status-json.xsl"),
        "200"
    );

    // A second apply changes nothing.
    assert_eq!(radio.host.apply_ok("second apply"), 0, "a second apply");

    // systemctl restart, then a reboot: Icecast comes back, and alice is heard again.
    radio.host.bed.ssh("systemctl restart icecast2");
    radio.service_runs("after systemctl restart icecast2");
    // Restarted on failure: Icecast killed outright comes back, as a new process.
    let main_pid = || {
        radio
            .host
            .bed
            .ssh("systemctl show --property MainPID --value icecast2")
            .trim()
            .to_string()
    };
    let killed = main_pid();
    radio.host.bed.ssh(&format!("kill -KILL {killed}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while main_pid() == killed || main_pid() == "0" {
        assert!(Instant::now() < deadline, "systemd did not restart Icecast");
        std::thread::sleep(Duration::from_millis(500));
    }
    radio.service_runs("after Icecast was killed");
    radio.alice_is_heard("after systemctl restart icecast2");
    radio.host.bed.reboot();
    radio.service_runs("after a reboot");
    radio.alice_is_heard("after a reboot");
    assert_eq!(
        radio.host.apply_ok("apply after the reboot"),
        0,
        "an apply after the reboot"
    );
}

#[test]
fn icecast_bookworm() {
    radio("e2e-icecast-12", "bookworm");
}

#[test]
fn icecast_trixie() {
    radio("e2e-icecast-13", "trixie");
}
