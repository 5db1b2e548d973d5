//! The synapse role (issue 10), end to end: two clubs' homeservers on real Debian hosts,
//! club-a.example on Debian 12 (bookworm) and club-b.example on Debian 13 (trixie), each
//! with PostgreSQL from Debian, Synapse from PyPI, nginx and a certificate from pebble
//! (the web and certs roles). Everything is asked over HTTPS with curl, trusting only
//! pebble's roots, through the Matrix client API; the two servers talk over federation.
//!
//! How the hosts meet on this machine's one network: each host has its own loopback
//! address (127.0.0.N, the first whose port 443 is free, held with a file lock so that
//! runs in other worktrees pick others), and its nginx listens there only, on port
//! 443, which federation needs: another server finds club-a.example's Synapse by
//! asking https://club-a.example/.well-known/matrix/server, always on port 443. Names
//! resolve through /etc/hosts on both hosts (written by the test, as DNS would), and
//! each host's pebble resolves every name to its host's address for HTTP-01. Each
//! Synapse trusts both pebbles' roots for federation (`synapse_federation_cas`) and may
//! reach 127.0.0.0/8 (`synapse_ip_range_whitelist`). Synapse and PostgreSQL listen on
//! free ports of 127.0.0.1.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/testbed.rs"]
mod testbed;

use std::time::{Duration, Instant};

use acme::{free_port, run, text, Loopback, WebHost};
use serde_json::{json, Value};
use testbed::stdout;

/// The release installed first, the one upgraded to, and one that cannot start on the
/// database the others made (its schema is too new for 1.98, which refuses it).
const FIRST: &str = "1.162.0";
const UPGRADE: &str = "1.163.0";
const CANNOT_START: &str = "1.98.0";
const COMPLEXITY_ERROR: &str = "Too big for club-b's small server";

struct Club {
    web: WebHost,
    /// Declared after `web`, so released after the host is down.
    _loopback: Loopback,
    domain: &'static str,
    synapse_port: u16,
    database_port: u16,
    /// Everything placard printed, searched for secrets at the end.
    outputs: std::sync::Mutex<String>,
}

impl Club {
    fn up(name: &str, suite: &str, domain: &'static str) -> Club {
        let loopback = Loopback::take(443);
        let web = WebHost::up_on(name, suite, &loopback.address, 443);
        Club {
            web,
            _loopback: loopback,
            domain,
            synapse_port: free_port(),
            database_port: free_port(),
            outputs: std::sync::Mutex::new(String::new()),
        }
    }

    fn matrix(&self) -> String {
        format!("matrix.{}", self.domain)
    }

    fn lineage(&self) -> &'static str {
        self.domain.trim_end_matches(".example")
    }

    fn sites(&self) -> String {
        format!(
            "[{{name: {d}, root: /var/www/{l}, certificate: {l}}}, {{name: {m}, proxy: \"http://127.0.0.1:{p}\", max_body_size: 50M, paths: [/_matrix, /_synapse/client], certificate: {l}}}]",
            d = self.domain,
            m = self.matrix(),
            l = self.lineage(),
            p = self.synapse_port
        )
    }

    fn certificates(&self) -> String {
        format!(
            "[{{name: {l}, domains: [{d}, {m}], services: [nginx]}}]",
            l = self.lineage(),
            d = self.domain,
            m = self.matrix()
        )
    }

    /// The web and certs roles only: the first apply, which releases nginx's first start.
    fn web_only(&self) {
        self.web
            .inventory_with(&[], &self.sites(), &self.certificates(), "");
        self.apply_ok("web and certs");
    }

    fn inventory(&self, version: &str, complexity: &str) {
        let vars = format!(
            "synapse_server_name: {d}\nsynapse_public_name: {m}\nsynapse_version: \"{version}\"\n\
             synapse_listen_port: {p}\nsynapse_database_port: {q}\nsynapse_trusted_key_servers: []\n\
             synapse_federation_cas: [/usr/local/share/placard-e2e/pebble-club-a.pem, /usr/local/share/placard-e2e/pebble-club-b.pem]\n\
             synapse_ip_range_whitelist: [127.0.0.0/8]\nsynapse_well_known_root: /var/www/{l}\n\
             synapse_pip_ca_bundle: /usr/local/share/placard-e2e/pip-ca.pem\n\
             synapse_room_complexity: {complexity}\nsynapse_room_complexity_error: \"{COMPLEXITY_ERROR}\"\n",
            d = self.domain,
            m = self.matrix(),
            l = self.lineage(),
            p = self.synapse_port,
            q = self.database_port,
        );
        self.web
            .inventory_with(&["synapse"], &self.sites(), &self.certificates(), &vars);
    }

    fn apply(&self) -> (std::process::Output, u64) {
        let (output, changed) = self.web.apply();
        self.outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&text(&output));
        (output, changed)
    }

    fn apply_ok(&self, what: &str) -> std::process::Output {
        let (output, _) = self.apply();
        assert_eq!(
            output.status.code(),
            Some(0),
            "{what} on {}:\n{}",
            self.domain,
            stdout(&output)
        );
        self.web.release_first_start();
        output
    }

    /// A Matrix API request over HTTPS through nginx, trusting only this club's pebble
    /// root: (HTTP status, JSON body).
    fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let url = format!("https://{}{path}", self.matrix());
        let resolve = format!("{}:443:{}", self.matrix(), self.web.address);
        let root = self.web.pebble.root_path().display().to_string();
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let data = body.map(Value::to_string);
        let mut argv = vec![
            "curl",
            "--silent",
            "--show-error",
            "--request",
            method,
            "--cacert",
            &root,
            "--resolve",
            &resolve,
            "--write-out",
            "\n%{http_code}",
            "--header",
            "Content-Type: application/json",
        ];
        if let Some(auth) = &auth {
            argv.extend(["--header", auth]);
        }
        if let Some(data) = &data {
            argv.extend(["--data", data]);
        }
        argv.push(&url);
        // Synapse limits how fast a user sends events: wait as told, then send again.
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let output = run(60, &argv);
            let answer = stdout(&output);
            let (body, status) = answer.rsplit_once('\n').unwrap_or(("", ""));
            let status = status.trim().parse().unwrap_or(0);
            let body = serde_json::from_str(body).unwrap_or(Value::Null);
            if status != 429 || Instant::now() > deadline {
                return (status, body);
            }
            let wait = body["retry_after_ms"].as_u64().unwrap_or(1000);
            std::thread::sleep(Duration::from_millis(wait.min(10_000)));
        }
    }

    fn ok(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Value {
        let (status, answer) = self.request(method, path, token, body);
        assert_eq!(status, 200, "{method} {path} on {}: {answer}", self.domain);
        answer
    }

    /// Registers a user with the shared-secret admin registration (Synapse's own
    /// client computes the HMAC with the secret, on the host).
    fn register(&self, user: &str, password: &str) {
        self.web.bed.ssh(&format!(
            "/opt/synapse/current/bin/register_new_matrix_user -c /etc/synapse/secrets.yaml \
             -u {user} -p {password} --no-admin http://127.0.0.1:{}",
            self.synapse_port
        ));
    }

    fn login(&self, user: &str, password: &str) -> String {
        let answer = self.ok(
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password})),
        );
        answer["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// Synapse's /health, asked on the host (nginx passes only /_matrix and
    /// /_synapse/client).
    fn health(&self) -> bool {
        let output = self.web.bed.ssh_output(&format!(
            "curl --silent --fail --max-time 10 http://127.0.0.1:{}/health",
            self.synapse_port
        ));
        output.status.success() && stdout(&output).trim() == "OK"
    }

    /// The Synapse version the federation endpoint reports.
    fn version(&self) -> String {
        let answer = self.ok("GET", "/_matrix/federation/v1/version", None, None);
        answer["server"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn rss_kib(&self) -> String {
        self.web.bed.ssh(
            "pid=$(systemctl show --property MainPID --value matrix-synapse); grep VmRSS /proc/$pid/status",
        )
    }
}

/// Waits up to a minute for `bob`'s /sync to show `wanted` in room `room`'s timeline.
fn synced(club: &Club, token: &str, room: &str, wanted: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut since = String::new();
    while Instant::now() < deadline {
        let path = if since.is_empty() {
            "/_matrix/client/v3/sync?timeout=5000".to_string()
        } else {
            format!("/_matrix/client/v3/sync?timeout=5000&since={since}")
        };
        let answer = club.ok("GET", &path, Some(token), None);
        let events = &answer["rooms"]["join"][room]["timeline"]["events"];
        if events
            .as_array()
            .is_some_and(|events| events.iter().any(|e| e["content"]["body"] == wanted))
        {
            return true;
        }
        since = answer["next_batch"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    false
}

/// Joins `room` as the user of `token`, retrying while federation warms up (keys being
/// fetched); returns the last answer.
fn join(club: &Club, token: &str, room: &str, via: &str) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let answer = club.request(
            "POST",
            &format!("/_matrix/client/v3/join/{room}?server_name={via}"),
            Some(token),
            Some(&json!({})),
        );
        if answer.0 == 200 || answer.0 == 400 || Instant::now() > deadline {
            return answer;
        }
        eprintln!("join {room}: {answer:?}; retrying");
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn secrets(club: &Club) -> Vec<String> {
    let mut values = Vec::new();
    for name in [
        "synapse-database",
        "synapse-registration",
        "synapse-macaroon",
        "synapse-form",
    ] {
        let value = club
            .web
            .bed
            .read(&format!("/var/lib/placard/secrets/{name}"))
            .unwrap_or_else(|| panic!("secret {name} on {}", club.domain));
        values.push(value.trim().to_string());
    }
    let key = club
        .web
        .bed
        .read("/var/lib/synapse/keys/signing.key")
        .expect("the signing key");
    values.push(
        key.split_whitespace()
            .last()
            .unwrap_or_default()
            .to_string(),
    );
    values
}

#[test]
fn two_clubs_federate_refuse_complex_rooms_and_upgrade() {
    let started = Instant::now();
    let a = Club::up("syn-a", "bookworm", "club-a.example");
    a.web_only();
    let b = Club::up("syn-b", "trixie", "club-b.example");
    b.web_only();
    eprintln!("two web hosts: {:?}", started.elapsed());

    // Name resolution (as DNS would) and the CAs of federation, on both hosts.
    for club in [&a, &b] {
        std::fs::write(
            club.web.bed.root_path("/etc/hosts"),
            format!(
                "127.0.0.1 localhost\n{} club-a.example matrix.club-a.example\n\
                 {} club-b.example matrix.club-b.example\n",
                a.web.address, b.web.address
            ),
        )
        .expect("write /etc/hosts");
        let folder = club.web.bed.root_path("/usr/local/share/placard-e2e");
        std::fs::create_dir_all(&folder).expect("a folder for the CAs");
        // This machine reaches PyPI through a proxy that may inspect TLS with its own
        // CA: pip on the hosts trusts what this machine trusts.
        std::fs::copy(
            "/etc/ssl/certs/ca-certificates.crt",
            folder.join("pip-ca.pem"),
        )
        .expect("copy this machine's CA bundle");
        for (peer, name) in [(&a, "club-a"), (&b, "club-b")] {
            std::fs::copy(
                peer.web.pebble.root_path(),
                folder.join(format!("pebble-{name}.pem")),
            )
            .expect("copy a pebble root");
        }
    }

    a.inventory(FIRST, "1.0");
    // club-b's limit is low: 15 state events (a complexity of 1 is 500).
    b.inventory(FIRST, "0.03");
    std::thread::scope(|scope| {
        scope.spawn(|| a.apply_ok("first apply with synapse"));
        scope.spawn(|| b.apply_ok("first apply with synapse"));
    });
    eprintln!("synapse on both: {:?}", started.elapsed());
    for club in [&a, &b] {
        assert!(club.health(), "{} answers /health", club.domain);
        assert_eq!(club.version(), FIRST);
        // Delegation: the server name's own site says where Synapse is.
        let (ok, answer) = club.web.https(club.domain, "/.well-known/matrix/server");
        assert!(
            ok && answer.contains(&format!("\"m.server\": \"{}:443\"", club.matrix())),
            "{answer}"
        );
        // nginx keeps the admin API local: only /_matrix and /_synapse/client pass.
        let (status, answer) = club.request("GET", "/_synapse/admin/v1/server_version", None, None);
        assert_eq!(
            status, 404,
            "the admin API through nginx on {}: {answer}",
            club.domain
        );
        // Registration is closed.
        let (status, answer) = club.request(
            "POST",
            "/_matrix/client/v3/register",
            None,
            Some(&json!({"username": "mallory", "password": "mallory-pass-1"})),
        );
        assert_eq!(
            status, 403,
            "open registration on {}: {answer}",
            club.domain
        );
        // The database is UTF8 with the C collation.
        let database = club.web.bed.ssh(
            "runuser -u postgres -- psql -X -tA -c \"SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = 'synapse'\"",
        );
        assert_eq!(database.trim(), "UTF8|C|C", "{}", club.domain);
        let verify = club.web.bed.placard(&["verify"]);
        assert_eq!(verify.status.code(), Some(0), "verify: {}", stdout(&verify));
        let dns = stdout(&club.web.bed.placard(&["dns", &club.web.bed.host.name]));
        assert!(
            dns.contains(&format!("{} must resolve to this host", club.matrix())),
            "{dns}"
        );
    }

    // (1) Accounts with the shared secret, logins, a room, an invitation over
    // federation, a join, and a message bob's /sync receives.
    a.register("alice", "alice-pass-1");
    b.register("bob", "bob-pass-1");
    let alice = a.login("alice", "alice-pass-1");
    let bob = b.login("bob", "bob-pass-1");
    let room = a.ok(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some(&json!({"preset": "private_chat", "name": "Club council", "invite": ["@bob:club-b.example"]})),
    )["room_id"]
        .as_str()
        .expect("a room id")
        .to_string();
    let (status, answer) = join(&b, &bob, &room, "club-a.example");
    assert_eq!(
        status, 200,
        "bob joins alice's room over federation: {answer}"
    );
    a.ok(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn1"),
        Some(&alice),
        Some(&json!({"msgtype": "m.text", "body": "Meeting on Friday"})),
    );
    assert!(
        synced(&b, &bob, &room, "Meeting on Friday"),
        "bob's /sync receives alice's message"
    );

    // (2) The complexity limit: a room full of state is refused by club-b with the
    // configured error; the simple room above joined.
    let big = a.ok(
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&alice),
        Some(&json!({"preset": "public_chat", "name": "Everything", "invite": ["@bob:club-b.example"]})),
    )["room_id"]
        .as_str()
        .expect("a room id")
        .to_string();
    for n in 0..20 {
        a.ok(
            "PUT",
            &format!("/_matrix/client/v3/rooms/{big}/state/org.example.filler/key{n}"),
            Some(&alice),
            Some(&json!({"n": n})),
        );
    }
    let (status, answer) = join(&b, &bob, &big, "club-a.example");
    assert_ne!(status, 200, "club-b must refuse the complex room: {answer}");
    assert!(
        answer["error"]
            .as_str()
            .is_some_and(|e| e.contains(COMPLEXITY_ERROR)),
        "the configured error: {answer}"
    );

    // (4) A second apply changes nothing, on both.
    for club in [&a, &b] {
        let (output, changed) = club.apply();
        assert_eq!(
            (output.status.code(), changed),
            (Some(0), 0),
            "second apply on {}:\n{}",
            club.domain,
            stdout(&output)
        );
    }

    // (3) Upgrade club-a to another release: /health again, the room and its
    // messages kept.
    let venv = |club: &Club| {
        club.web
            .bed
            .ssh("readlink /opt/synapse/current")
            .trim()
            .to_string()
    };
    a.inventory(UPGRADE, "1.0");
    a.apply_ok("upgrade");
    assert_eq!(venv(&a), format!("/opt/synapse/venv-{UPGRADE}"));
    assert!(a.health(), "/health after the upgrade");
    assert_eq!(a.version(), UPGRADE);
    assert!(
        !a.web
            .bed
            .root_path(&format!("/opt/synapse/venv-{FIRST}"))
            .exists(),
        "the old venv is removed once the new one is healthy"
    );
    let messages = a.ok(
        "GET",
        &format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"),
        Some(&alice),
        None,
    );
    assert!(
        messages.to_string().contains("Meeting on Friday"),
        "{messages}"
    );
    a.ok(
        "PUT",
        &format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/txn2"),
        Some(&alice),
        Some(&json!({"msgtype": "m.text", "body": "Upgraded"})),
    );
    assert!(
        synced(&b, &bob, &room, "Upgraded"),
        "federation after the upgrade"
    );

    // A release that cannot start on this database is rolled back, with a message.
    a.inventory(CANNOT_START, "1.0");
    let (output, _) = a.apply();
    let report = text(&output);
    assert_ne!(
        output.status.code(),
        Some(0),
        "a failed upgrade fails the run:\n{report}"
    );
    assert!(
        report.contains("rolled back") || report.contains("nothing was changed"),
        "{report}"
    );
    assert_eq!(
        venv(&a),
        format!("/opt/synapse/venv-{UPGRADE}"),
        "the previous venv is live again"
    );
    assert!(a.health(), "/health after the rollback");
    assert_eq!(a.version(), UPGRADE);
    // Applied again, the failed version is not tried again: no stop, no wait, a message.
    let main_pid = || {
        a.web
            .bed
            .ssh("systemctl show --property MainPID --value matrix-synapse")
    };
    let running = main_pid();
    let (output, _) = a.apply();
    let report = text(&output);
    assert_ne!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains("failed its health check here before"),
        "{report}"
    );
    assert_eq!(main_pid(), running, "Synapse was not stopped again");
    // Back at the version that works: nothing to do.
    a.inventory(UPGRADE, "1.0");
    let (output, changed) = a.apply();
    assert_eq!(
        (output.status.code(), changed),
        (Some(0), 0),
        "{}",
        stdout(&output)
    );

    // No secret in /etc's git history or in anything placard printed.
    for club in [&a, &b] {
        let etc = club.web.bed.root_path("/etc").display().to_string();
        let history = text(&run(60, &["git", "-C", &etc, "log", "--all", "-p"]));
        assert!(
            history.contains("homeserver.yaml"),
            "homeserver.yaml is recorded in /etc's git"
        );
        let outputs = club
            .outputs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (index, secret) in secrets(club).iter().enumerate() {
            assert!(secret.len() >= 16, "secret {index} is real");
            assert!(
                !history.contains(secret.as_str()),
                "secret {index} of {} is in /etc's git",
                club.domain
            );
            assert!(
                !outputs.contains(secret.as_str()),
                "secret {index} of {} was printed",
                club.domain
            );
        }
        eprintln!("{} Synapse RSS: {}", club.domain, club.rss_kib().trim());
    }
    eprintln!("whole test: {:?}", started.elapsed());
}
