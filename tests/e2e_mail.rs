//! The mail role (issue 3), end to end on real Debian hosts booted with systemd-nspawn,
//! driven by real clients: Python's smtplib and imaplib on the host (tests/mail/client.py),
//! dkimpy to check signatures against what `placard dns` prints, and a small SMTP sink
//! here standing in for the rest of the Internet.
//!
//! The sandbox hosts share this machine's network, where other test hosts may run a
//! Postfix on 0.0.0.0:25 too. So each test host listens on an address of its own
//! (`mail_listen_address: 127.0.0.6x`, which Postfix binds in master.cf and Dovecot with
//! `listen`), and the clients talk to that address; the health checks expect the banner
//! with this host's name, so another server answering would fail them. The helper
//! daemons (postsrsd, OpenDKIM, postfwd) still use fixed loopback ports, so the mail
//! hosts run one at a time, across test binaries too (`testbed::exclusive("mail-daemons")`).

#[path = "common/smtp_sink.rs"]
mod smtp_sink;
#[path = "common/testbed.rs"]
mod testbed;

use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;
use smtp_sink::smtp_sink;
use testbed::{stdout, Testbed};

const CLIENT: &str = include_str!("mail/client.py");

struct MailHost {
    bed: Testbed,
    address: &'static str,
}

impl MailHost {
    fn up(name: &str, suite: &str, address: &'static str) -> MailHost {
        let bed = Testbed::up(name, suite);
        std::fs::write(bed.root_path("/root/client.py"), CLIENT)
            .expect("copy the client onto the host");
        MailHost { bed, address }
    }

    /// The inventory for the mail role; `extra` lines are added to the host's vars.
    fn inventory(&self, extra: &str) {
        self.bed.write_inventory(&format!(
            "roles: [mail]\n    vars:\n      mail_domain: club.example\n      mail_hostname: mail.club.example\n      mail_postmaster: alice\n      \
             mail_members:\n        - {{name: alice, aliases: [info]}}\n        - {{name: bob}}\n      mail_listen_address: {}\n{extra}",
            self.address
        ));
    }

    fn password(&self, member: &str) -> String {
        self.bed
            .read(&format!("/var/lib/placard/secrets/mail-{member}"))
            .expect("the member's password was generated")
            .trim()
            .to_string()
    }

    /// Runs the client on the host; its JSON answer.
    fn client(&self, args: &[&str]) -> Value {
        let quoted: Vec<String> = args
            .iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect();
        let output = self.bed.ssh_output(&format!(
            "MAIL_HOST={} timeout 300 python3 /root/client.py {}",
            self.address,
            quoted.join(" ")
        ));
        let text = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| {
            panic!(
                "client {args:?}: {e}\n{text}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    fn apply(&self) -> Output {
        self.bed.placard(&["apply"])
    }

    fn changed(&self, output: &Output) -> u64 {
        let text = stdout(output);
        let last = text.lines().last().expect("json output");
        let summary: Value = serde_json::from_str(last).expect("the last line is the summary");
        summary["summary"][0]["changed"]
            .as_u64()
            .expect("a count of changes")
    }

    /// Waits until `command` on the host prints something containing `needle`.
    fn wait_for(&self, command: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = String::from_utf8_lossy(&self.bed.ssh_output(command).stdout).into_owned();
            if text.contains(needle) || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

/// (1) An authenticated mail on 587 to a local user, read back over IMAPS, with a DKIM
/// signature that verifies against the key `placard dns` prints; IMAP on 143 needs
/// STARTTLS before a password.
fn delivers_and_signs(host: &MailHost) {
    let (alice, bob) = (host.password("alice"), host.password("bob"));
    let sent = host.client(&[
        "send",
        "alice",
        &alice,
        "alice@club.example",
        "bob@club.example",
        "signed hello",
    ]);
    assert_eq!(sent["ok"], true, "submission on 587: {sent}");
    let fetched = host.client(&[
        "fetch",
        "bob",
        &bob,
        "signed hello",
        "60",
        "/root/signed.eml",
    ]);
    assert_eq!(fetched["ok"], true, "IMAPS on 993: {fetched}");
    let message = fetched["message"].as_str().expect("the message");
    assert!(
        message.contains("DKIM-Signature:")
            && message.contains("d=club.example")
            && message.contains("s=mail;"),
        "{message}"
    );

    let dns = host.bed.placard(&["dns", &host.bed.host.name]);
    assert_eq!(
        dns.status.code(),
        Some(0),
        "placard dns: {}",
        testbed::stderr(&dns)
    );
    let records = stdout(&dns);
    for expected in [
        "club.example. IN MX 10 mail.club.example.",
        "club.example. IN TXT \"v=spf1 mx -all\"",
        "_dmarc.club.example. IN TXT \"v=DMARC1; p=quarantine;",
    ] {
        assert!(
            records.contains(expected),
            "`{expected}` missing from:\n{records}"
        );
    }
    let dkim_line = records
        .lines()
        .find(|l| l.starts_with("mail._domainkey.club.example. IN TXT "))
        .expect("the DKIM record");
    let strings: Vec<&str> = dkim_line.split('"').skip(1).step_by(2).collect();
    assert!(
        strings.len() >= 2 && strings.iter().all(|s| s.len() <= 255),
        "a 2048-bit key needs two strings of at most 255 bytes: {dkim_line}"
    );
    std::fs::write(host.bed.root_path("/root/dkim.txt"), strings.concat())
        .expect("write the record");
    // dkimpy, Debian's package, is the test's verifier; the role does not need it.
    host.bed.ssh("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-dkim >/dev/null");
    let verified = host.client(&["dkim-verify", "/root/signed.eml", "/root/dkim.txt"]);
    assert_eq!(
        verified["ok"], true,
        "the signature verifies against the published key"
    );
    // The control: the same check fails on a message changed after signing.
    host.bed
        .ssh("sed -i 's/signed hello/signed hullo/' /root/signed.eml");
    assert_eq!(
        host.client(&["dkim-verify", "/root/signed.eml", "/root/dkim.txt"])["ok"],
        false,
        "a tampered message must fail"
    );

    let imap = host.client(&["imap-starttls", "bob", &bob, "127.0.0.79"]);
    assert!(
        imap["before_starttls"]
            .as_str()
            .is_some_and(|s| s.starts_with("refused")),
        "{imap}"
    );
    assert_eq!(imap["after_starttls"], "accepted");

    // The private key stays out of /etc's history; the public half is there.
    let etc = host.bed.root_path("/etc");
    let files = std::process::Command::new("git")
        .arg("-C")
        .arg(&etc)
        .args(["ls-files"])
        .output()
        .expect("git ls-files");
    let files = String::from_utf8_lossy(&files.stdout);
    assert!(
        files.lines().any(|f| f == "dkimkeys/mail.public"),
        "the public key is tracked"
    );
    assert!(
        !files
            .lines()
            .any(|f| f.ends_with(".key") || f == "postsrsd.secret"),
        "a private key is tracked:\n{files}"
    );
    let key = host
        .bed
        .read("/etc/dkimkeys/mail.key")
        .expect("the DKIM key");
    let body_line = key.lines().nth(1).expect("a line of the key");
    let history = std::process::Command::new("git")
        .arg("-C")
        .arg(&etc)
        .args(["log", "-p", "--all"])
        .output()
        .expect("git log");
    assert!(
        !String::from_utf8_lossy(&history.stdout).contains(body_line),
        "the DKIM private key is in /etc's history"
    );
}

/// (4) Zero changes on a second apply; a value Postfix refuses is caught by `postfix
/// check` and the running Postfix keeps its configuration.
fn idempotent_and_validated(host: &MailHost, base_vars: &str) {
    let second = host.bed.placard(&["apply", "--format", "json"]);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        host.changed(&second),
        0,
        "a second apply changes nothing:\n{}",
        stdout(&second)
    );

    let before = host.bed.read("/etc/postfix/main.cf").expect("main.cf");
    let master_pid = host.bed.ssh("cat /var/spool/postfix/pid/master.pid");
    // placard's domain type accepts 123.456; Postfix refuses an all-numeric host name.
    host.inventory(base_vars);
    let text = std::fs::read_to_string(host.bed.inventory()).expect("inventory");
    std::fs::write(
        host.bed.inventory(),
        text.replace(
            "mail_hostname: mail.club.example",
            "mail_hostname: \"123.456\"",
        ),
    )
    .expect("inventory");
    let broken = host.apply();
    assert_eq!(broken.status.code(), Some(1), "the host failed");
    let report = stdout(&broken);
    assert!(
        report.contains("/etc/postfix/main.cf failed validation; the old file is still in place"),
        "{report}"
    );
    assert!(
        !report.contains("handler reload postfix"),
        "Postfix was not reloaded:\n{report}"
    );
    assert_eq!(
        host.bed.read("/etc/postfix/main.cf").as_deref(),
        Some(before.as_str())
    );
    assert_eq!(
        host.bed.ssh("postconf -h myhostname").trim(),
        "mail.club.example"
    );
    assert_eq!(
        host.bed.ssh("cat /var/spool/postfix/pid/master.pid"),
        master_pid,
        "the running Postfix was not restarted"
    );
    host.bed.ssh("postfix status");

    host.inventory(base_vars);
    let repaired = host.bed.placard(&["apply", "--format", "json"]);
    assert_eq!(repaired.status.code(), Some(0));
    let verify = host.bed.placard(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "every health check passes:\n{}",
        stdout(&verify)
    );
    assert!(!stdout(&verify).contains("FAIL"));
}

fn first_apply(host: &MailHost, vars: &str) {
    host.inventory(vars);
    let first = host.apply();
    assert_eq!(
        first.status.code(),
        Some(0),
        "first apply:\n{}",
        stdout(&first)
    );
    let report = stdout(&first);
    assert!(
        report.contains(
            "Generate a self-signed TLS certificate for mail.club.example (mail programs will warn"
        ),
        "the admin is told about the certificate"
    );
    for member in ["alice", "bob"] {
        assert!(
            !report.contains(&host.password(member)),
            "a password was printed"
        );
    }
}

#[test]
fn mail_on_debian_12_delivers_signs_forwards_and_resists_abuse() {
    // One mail host at a time: the helper daemons' loopback ports are the machine's.
    let _one_at_a_time = testbed::exclusive("mail-daemons");
    let (sink_port, envelopes) = smtp_sink(Duration::from_secs(900));
    let host = MailHost::up("e2e-mail12", "bookworm", "127.0.0.61");
    let vars = format!(
        "      mail_relayhost: \"[127.0.0.1]:{sink_port}\"\n      mail_rate_limit: 5\n      mail_fail2ban_max_retry: 3\n      \
         mail_fail2ban_ignore: \"127.0.0.1/32 ::1\"\n      mail_fail2ban_banaction: dummy\n"
    );
    first_apply(&host, &vars);
    delivers_and_signs(&host);

    // An alias reaches its member.
    let (alice, bob) = (host.password("alice"), host.password("bob"));
    assert_eq!(
        host.client(&[
            "inbound",
            "dave@outside.example",
            "info@club.example",
            "to the alias"
        ])["ok"],
        true
    );
    assert_eq!(
        host.client(&["fetch", "alice", &alice, "to the alias", "60"])["ok"],
        true,
        "info@ reaches alice"
    );

    // (2) bob forwards his mail outside: the envelope sender is rewritten with SRS into
    // the club's domain, so that SPF passes at the destination.
    host.bed.ssh("printf 'carol@elsewhere.example\\n' > /home/bob/.forward && chown bob:bob /home/bob/.forward");
    assert_eq!(
        host.client(&[
            "inbound",
            "dave@outside.example",
            "bob@club.example",
            "to be forwarded"
        ])["ok"],
        true
    );
    let forwarded = envelopes
        .recv_timeout(Duration::from_secs(90))
        .expect("the forwarded message reached the sink");
    assert_eq!(
        forwarded.recipients,
        vec!["carol@elsewhere.example".to_string()]
    );
    assert!(
        forwarded.sender.starts_with("SRS0=")
            && forwarded
                .sender
                .ends_with("=outside.example=dave@club.example"),
        "the envelope sender is SRS-rewritten: {}",
        forwarded.sender
    );
    host.bed.ssh("rm /home/bob/.forward");

    // (3) No open relay: a client outside mynetworks, without a password, cannot send
    // to another domain.
    let relay = host.client(&[
        "inbound",
        "dave@outside.example",
        "carol@elsewhere.example",
        "relay attempt",
        "127.0.0.77",
    ]);
    assert_eq!(relay["ok"], false);
    assert_eq!(relay["code"], 554, "relay refused: {relay}");

    // (3) The rate limit: bob may send to 5 recipients an hour; the 6th and 7th are
    // refused with 450, while alice still sends.
    let burst = host.client(&[
        "burst",
        "bob",
        &bob,
        "bob@club.example",
        "alice@club.example",
        "7",
    ]);
    let accepted: Vec<bool> = burst["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["ok"] == true)
        .collect();
    assert_eq!(
        accepted,
        vec![true, true, true, true, true, false, false],
        "{burst}"
    );
    assert_eq!(burst["results"][5]["code"], 450);
    assert_eq!(
        host.client(&[
            "send",
            "alice",
            &alice,
            "alice@club.example",
            "bob@club.example",
            "alice is not limited"
        ])["ok"],
        true
    );

    // (3) fail2ban: repeated bad passwords on 587 get the client's address banned.
    let answers = host.client(&["bad-logins", "alice", "4", "127.0.0.78"]);
    assert_eq!(answers["answers"][0], 535, "{answers}");
    let status = host.wait_for(
        "fail2ban-client status postfix-sasl",
        "127.0.0.78",
        Duration::from_secs(60),
    );
    assert!(
        status.contains("Banned IP list:") && status.contains("127.0.0.78"),
        "{status}"
    );
    // /run is the host's own tmpfs, so read it over SSH.
    assert!(
        host.bed
            .ssh("cat /run/fail2ban/fail2ban.dummy")
            .contains("+127.0.0.78"),
        "the ban action ran"
    );

    idempotent_and_validated(&host, &vars);
}

#[test]
fn mail_on_debian_13_delivers_signs_and_stays_put() {
    // One mail host at a time: the helper daemons' loopback ports are the machine's.
    let _one_at_a_time = testbed::exclusive("mail-daemons");
    let host = MailHost::up("e2e-mail13", "trixie", "127.0.0.62");
    let vars = "";
    first_apply(&host, vars);
    assert!(
        host.bed
            .ssh("doveconf -n")
            .contains("mail_driver = maildir"),
        "the Dovecot 2.4 form was chosen"
    );
    delivers_and_signs(&host);
    idempotent_and_validated(&host, vars);
}
