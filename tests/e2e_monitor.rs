//! The monitor role (issue 15), end to end on real Debian hosts: the mail role and the
//! monitor role on one host, the monitor's timer every 20 s, its mail leaving through
//! the host's Postfix, which relays to an SMTP sink here (tests/common/smtp_sink.rs).
//!
//! Dovecot is stopped: one mail names its failing checks; started again: one recovery
//! mail; then nothing for two periods. A check that hangs is stopped at its deadline
//! and mailed as timed out; a reboot mails nothing again. A second apply changes
//! nothing. The mail hosts' helper daemons use fixed loopback ports, so this test takes
//! its turn with e2e_mail (`testbed::exclusive("mail-daemons")`).

#[path = "common/smtp_sink.rs"]
mod smtp_sink;
#[path = "common/testbed.rs"]
mod testbed;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;
use smtp_sink::{smtp_sink, Envelope};
use testbed::{stdout, Testbed};

const PERIOD: Duration = Duration::from_secs(10);
/// How long past one period a mail may take: the run itself (checks in parallel, each
/// under 5 s), sendmail, Postfix's queue and its delivery to the sink.
const BOUND: Duration = Duration::from_secs(70);
const ADMIN: &str = "admin@elsewhere.example";

fn inventory(bed: &Testbed, address: &str, sink_port: u16, extra: &str) {
    bed.write_inventory(&format!(
        "roles: [mail, monitor]\n    vars:\n      mail_domain: club.example\n      mail_hostname: mail.club.example\n      \
         mail_postmaster: alice\n      mail_members:\n        - {{name: alice}}\n      mail_listen_address: {address}\n      \
         mail_relayhost: \"[127.0.0.1]:{sink_port}\"\n      monitor_admin: {ADMIN}\n      monitor_interval: 10s\n      \
         monitor_check_timeout: 5s\n{extra}"
    ));
}

fn changed(output: &std::process::Output) -> u64 {
    let text = stdout(output);
    let summary: Value = serde_json::from_str(text.lines().last().expect("json output"))
        .expect("the last line is the summary");
    summary["summary"][0]["changed"]
        .as_u64()
        .expect("a count of changes")
}

/// The monitor's mails (to the admin, with placard's subject) the sink got within
/// `wait`; stops early once `until` holds of the mails so far.
fn mails(
    envelopes: &Receiver<Envelope>,
    wait: Duration,
    until: impl Fn(&[Envelope]) -> bool,
) -> Vec<Envelope> {
    let deadline = Instant::now() + wait;
    let mut found: Vec<Envelope> = Vec::new();
    while !until(&found) {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        match envelopes.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(envelope)
                if envelope.recipients.iter().any(|r| r == ADMIN)
                    && envelope.data.contains("Subject: [placard]") =>
            {
                eprintln!("mail to the admin:\n{}", envelope.data);
                found.push(envelope);
            }
            Ok(other) => eprintln!("another mail: {other:?}"),
            Err(_) => {}
        }
    }
    found
}

fn subject(envelope: &Envelope) -> &str {
    envelope
        .data
        .lines()
        .find_map(|l| l.strip_prefix("Subject: "))
        .unwrap_or_default()
}

/// How many mails say `change` (FAILING, recovered) of the check `name`.
fn count(mails: &[Envelope], change: &str, name: &str) -> usize {
    mails
        .iter()
        .filter(|m| {
            subject(m)
                .split("; ")
                .any(|part| part.contains(change) && part.contains(name))
        })
        .count()
}

fn status(bed: &Testbed) -> String {
    let output = bed.placard(&["monitor", "status"]);
    assert_eq!(output.status.code(), Some(0), "monitor status runs");
    stdout(&output)
}

fn monitor_mails_a_failure_once_and_its_recovery(name: &str, suite: &str, address: &str) {
    let _one_at_a_time = testbed::exclusive("mail-daemons");
    let (sink_port, envelopes) = smtp_sink(Duration::from_secs(1800));
    let mut bed = Testbed::up(name, suite);
    inventory(&bed, address, sink_port, "");
    let first = bed.placard(&["apply"]);
    assert_eq!(first.status.code(), Some(0), "the first apply succeeds");
    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(changed(&second), 0, "a second apply changes nothing");
    assert!(
        bed.read("/var/lib/placard/checks.json")
            .is_some_and(|c| c.contains("Dovecot is running")),
        "the apply stored the mail role's checks for the monitor"
    );

    // The first run finds everything well and says nothing.
    let deadline = Instant::now() + PERIOD + BOUND;
    while bed.read("/var/lib/placard/monitor/state.json").is_none() {
        assert!(
            Instant::now() < deadline,
            "the monitor's timer never ran:\n{}",
            bed.ssh("systemctl list-timers --all --no-pager; journalctl -u placard-monitor --no-pager | tail -30")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let before = status(&bed);
    assert!(
        before.contains("ok      mail: Dovecot is running") && !before.contains("FAILING"),
        "every check passes before dovecot is stopped:\n{before}"
    );
    assert!(
        mails(&envelopes, Duration::from_secs(1), |_| false).is_empty(),
        "nothing to say, no mail"
    );

    bed.ssh("systemctl stop dovecot");
    let failing = mails(&envelopes, PERIOD + BOUND, |m| {
        count(m, "FAILING", "Dovecot is running") > 0
    });
    assert_eq!(
        count(&failing, "FAILING", "Dovecot is running"),
        1,
        "one mail names the failed check within a period and a bound"
    );
    let mail = failing
        .iter()
        .find(|m| count(std::slice::from_ref(m), "FAILING", "Dovecot is running") > 0)
        .expect("the failure mail");
    assert!(
        mail.data
            .contains("FAILING: Dovecot is running (role mail)")
            && mail.data.contains("dovecot is inactive")
            && mail.data.contains(" UTC"),
        "the mail names the check, its output and the time"
    );
    assert!(
        status(&bed).contains("FAILING mail: Dovecot is running"),
        "monitor status shows it failing"
    );

    bed.ssh("systemctl start dovecot");
    let mut after = mails(&envelopes, PERIOD + BOUND, |m| {
        count(m, "recovered", "Dovecot is running") > 0
    });
    assert_eq!(
        count(&after, "recovered", "Dovecot is running"),
        1,
        "one recovery mail"
    );
    // Two more periods: nothing more to say.
    after.extend(mails(
        &envelopes,
        PERIOD * 2 + Duration::from_secs(5),
        |_| false,
    ));
    let all: Vec<Envelope> = failing.iter().chain(after.iter()).cloned().collect();
    // Stopping dovecot fails its unit check and the IMAPS port: each is mailed once
    // failing and once recovered, whether together or in two runs, and nothing else.
    for check in ["Dovecot is running", "IMAPS answers on port 993"] {
        assert!(count(&all, "FAILING", check) <= 1, "{check} mailed twice");
        assert_eq!(
            count(&all, "FAILING", check),
            count(&all, "recovered", check),
            "{check}: one recovery per failure"
        );
    }
    for mail in &all {
        assert!(
            subject(mail)
                .split(": ")
                .nth(1)
                .unwrap_or_default()
                .split("; ")
                .flat_map(|part| part.split(", "))
                .all(|named| named.ends_with("Dovecot is running")
                    || named.ends_with("IMAPS answers on port 993")),
            "a mail about something else: {}",
            subject(mail)
        );
    }

    // A check that hangs is stopped at its deadline and reported as timed out.
    inventory(
        &bed,
        address,
        sink_port,
        "      monitor_checks:\n        - {name: a check that hangs, command: [sleep, \"3600\"]}\n",
    );
    let apply = bed.placard(&["apply"]);
    assert_eq!(apply.status.code(), Some(0));
    let hung = mails(&envelopes, PERIOD + BOUND, |m| {
        count(m, "FAILING", "a check that hangs") > 0
    });
    assert_eq!(count(&hung, "FAILING", "a check that hangs"), 1);
    assert!(
        hung.iter().any(|m| m.data.contains("timed out")),
        "the hung check is reported as timed out"
    );
    let shown = status(&bed);
    assert!(
        shown.contains("FAILING monitor: a check that hangs") && shown.contains("timed out"),
        "{shown}"
    );
    // A run starts one every period and stops it 5 s later: none is older.
    let ages = bed.ssh("ps -C sleep -o etimes= || true");
    assert!(
        ages.split_whitespace()
            .all(|age| age.parse::<u64>().is_ok_and(|a| a <= 8)),
        "the hung check's process was stopped at its deadline: ages {ages}"
    );

    // A reboot says nothing again: the check still hangs, and was mailed already.
    bed.reboot();
    // Three periods and half a minute more for Postfix to come up and hand a mail over.
    let after_reboot = mails(&envelopes, PERIOD * 3 + Duration::from_secs(30), |_| false);
    assert!(
        after_reboot.is_empty(),
        "a reboot sent {} mail(s) again",
        after_reboot.len()
    );
    let last = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(last.status.code(), Some(0));
    assert_eq!(changed(&last), 0, "a second apply changes nothing");
}

#[test]
fn monitor_on_debian_12_mails_a_failure_once_and_its_recovery() {
    monitor_mails_a_failure_once_and_its_recovery("e2e-monitor12", "bookworm", "127.0.0.65");
}

#[test]
fn monitor_on_debian_13_mails_a_failure_once_and_its_recovery() {
    monitor_mails_a_failure_once_and_its_recovery("e2e-monitor13", "trixie", "127.0.0.66");
}
