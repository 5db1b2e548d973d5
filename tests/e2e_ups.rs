//! The ups role on a real Debian 12 host (systemd-nspawn) with NUT's dummy-ups driver,
//! which reads the UPS's status from a file: on battery, back on line, then on battery
//! with a low battery, and upsmon must mail each event and run the shutdown command.
//!
//! Three stand-ins, all on the host: the status file, a shutdown command that records
//! its call instead of powering off, and dma, a real local mail server without a
//! listening daemon (the test hosts share this machine's network, so nothing here may
//! take port 25). upsd listens on a free loopback port for the same reason.

#[path = "common/testbed.rs"]
mod testbed;

use std::time::{Duration, Instant};

use testbed::{stderr, stdout, summary, Testbed};

const STATUS_FILE: &str = "/var/lib/ups-test/dummy.dev";
const SHUTDOWN_LOG: &str = "/var/lib/ups-test/shutdown.log";

fn json_summary(output: &std::process::Output) -> serde_json::Value {
    let text = stdout(output);
    let last = text.lines().last().expect("json output");
    serde_json::from_str::<serde_json::Value>(last).expect("the last line is the summary")
        ["summary"][0]
        .clone()
}

/// Polls `command` on the host until it succeeds; false after `timeout`.
fn wait_for(bed: &Testbed, command: &str, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if bed.ssh_output(command).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    false
}

fn set_status(bed: &Testbed, status: &str, charge: u32) {
    bed.ssh(&format!(
        "printf 'ups.status: {status}\\nbattery.charge: {charge}\\n' > {STATUS_FILE}"
    ));
}

fn free_loopback_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("an address").port()
}

#[test]
fn upsmon_mails_power_events_and_shuts_down_on_low_battery() {
    let bed = Testbed::up("e2e-ups", "bookworm");
    // As on a debootstrap minbase system, /etc/hosts is missing (removed below) and
    // `localhost` resolves to nothing: upsmon must reach upsd all the same.
    bed.ssh(&format!(
        "mkdir -p /var/lib/ups-test && printf 'ups.status: OL\\nbattery.charge: 100\\n' > {STATUS_FILE} && chmod 644 {STATUS_FILE} \
         && printf '#!/bin/sh\\necho \"shutdown requested\" >> {SHUTDOWN_LOG}\\n' > /usr/local/sbin/record-shutdown \
         && chmod 755 /usr/local/sbin/record-shutdown \
         && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dma >/dev/null \
         && rm /etc/hosts"
    ));
    let port = free_loopback_port();
    bed.write_inventory(&format!(
        "roles: [ups]\n    vars:\n      ups_driver: dummy-ups\n      ups_port: {STATUS_FILE}\n      ups_upsd_port: {port}\n      ups_shutdown_command: /usr/local/sbin/record-shutdown\n"
    ));

    let first = bed.placard(&["apply"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    assert_eq!(summary(&first), "1 host: 0 unchanged, 1 changed, 0 failed");
    for file in [
        "nut.conf",
        "ups.conf",
        "upsd.conf",
        "upsd.users",
        "upsmon.conf",
    ] {
        assert_eq!(
            bed.ssh(&format!("stat -c '%U:%G %a' /etc/nut/{file}"))
                .trim(),
            "root:nut 640",
            "/etc/nut/{file}"
        );
    }
    assert_eq!(
        bed.read("/etc/nut/nut.conf")
            .unwrap_or_default()
            .lines()
            .last(),
        Some("MODE=standalone")
    );
    let upsmon = bed.read("/etc/nut/upsmon.conf").expect("upsmon.conf");
    let password = bed
        .read("/var/lib/placard/secrets/ups-upsmon-password")
        .expect("the generated password");
    for line in [
        format!(
            "MONITOR ups@127.0.0.1:{port} 1 upsmon {} primary",
            password.trim()
        ),
        "MINSUPPLIES 1".to_string(),
        "SHUTDOWNCMD \"/usr/local/sbin/record-shutdown\"".to_string(),
        "POWERDOWNFLAG /etc/killpower".to_string(),
        "NOTIFYCMD /etc/nut/placard-notify".to_string(),
        "NOTIFYFLAG LOWBATT SYSLOG+WALL+EXEC".to_string(),
    ] {
        assert!(
            upsmon.lines().any(|l| l == line),
            "upsmon.conf lacks `{line}`:\n{upsmon}"
        );
    }
    assert!(bed
        .read("/etc/nut/upsd.users")
        .is_some_and(|u| u.contains(&format!("password = {}", password.trim()))));
    assert!(bed
        .read("/etc/nut/upsd.conf")
        .is_some_and(|u| u.contains(&format!("LISTEN 127.0.0.1 {port}\n"))));
    // The host has no git of its own (the base role installs it): read /etc's history from here.
    let git = |args: &[&str]| {
        let output = std::process::Command::new("git")
            .arg("-C")
            .arg(bed.root_path("/etc"))
            .args(args)
            .output()
            .expect("run git");
        assert!(output.status.success(), "git {args:?}: {}", stderr(&output));
        stdout(&output)
    };
    let tracked = git(&["ls-files", "nut"]);
    assert!(
        tracked.contains("nut/ups.conf")
            && !tracked.contains("upsd.users")
            && !tracked.contains("upsmon.conf"),
        "files holding the password are tracked: {tracked}"
    );
    assert!(
        !git(&["log", "-p", "--all"]).contains(password.trim()),
        "the password is in /etc's history"
    );
    assert!(
        !stdout(&first).contains(password.trim()),
        "the password was printed"
    );

    // upsd answers for the UPS, and `verify` reports its status.
    let upsc = format!("upsc ups@127.0.0.1:{port} ups.status");
    assert!(
        wait_for(
            &bed,
            &format!("[ \"$({upsc} 2>/dev/null)\" = OL ]"),
            Duration::from_secs(60)
        ),
        "upsc never answered OL"
    );
    let verify = bed.placard(&["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("OL"),
        "verify reports the status: {}",
        stdout(&verify)
    );

    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(second.status.code(), Some(0));
    let totals = json_summary(&second);
    assert_eq!(
        (totals["changed"].as_u64(), totals["failed"].as_bool()),
        (Some(0), Some(false)),
        "{totals}"
    );

    // Issue 16: an inventory written before the variables carried the role's prefix
    // still works. The old names set the same values (nothing changes on the host), and
    // the run says which line to rename.
    bed.write_inventory(&format!(
        "roles: [ups]\n    vars:\n      ups_driver: dummy-ups\n      ups_port: {STATUS_FILE}\n      upsd_port: {port}\n      admin_email: root\n      ups_shutdown_command: /usr/local/sbin/record-shutdown\n"
    ));
    let old_names = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(old_names.status.code(), Some(0), "{}", stderr(&old_names));
    assert_eq!(json_summary(&old_names)["changed"].as_u64(), Some(0));
    let inventory = bed.inventory();
    for (at, old, new) in [
        ("13:7", "upsd_port", "ups_upsd_port"),
        ("14:7", "admin_email", "ups_admin_email"),
    ] {
        let warning = format!(
            "warning: {}:{at}: variable `{old}` is now called `{new}` (role ups)",
            inventory.display()
        );
        assert!(
            stderr(&old_names).contains(&warning),
            "no `{warning}` in:\n{}",
            stderr(&old_names)
        );
    }

    // On battery: the admin gets a mail through the notify script; no shutdown yet.
    set_status(&bed, "OB", 80);
    assert!(
        wait_for(
            &bed,
            "grep -q 'ups@127.0.0.1.*: ONBATT' /var/mail/root",
            Duration::from_secs(60)
        ),
        "no ONBATT mail"
    );
    // Back on line: that clears it, with a mail saying so, still without a shutdown.
    set_status(&bed, "OL", 80);
    assert!(
        wait_for(
            &bed,
            "grep -q 'ups@127.0.0.1.*: ONLINE' /var/mail/root",
            Duration::from_secs(60)
        ),
        "no ONLINE mail"
    );
    assert!(
        bed.read(SHUTDOWN_LOG).is_none(),
        "upsmon shut down while the UPS was only on battery"
    );

    // On battery with a low battery: upsmon runs the shutdown command.
    set_status(&bed, "OB LB", 10);
    assert!(
        wait_for(
            &bed,
            &format!("test -s {SHUTDOWN_LOG}"),
            Duration::from_secs(90)
        ),
        "upsmon never ran the shutdown command"
    );
    assert_eq!(
        bed.read(SHUTDOWN_LOG).as_deref(),
        Some("shutdown requested\n")
    );
    assert!(
        bed.read("/etc/killpower").is_some(),
        "the power-down flag tells the last shutdown step to cut the UPS"
    );
    assert!(
        wait_for(
            &bed,
            "grep -q ': SHUTDOWN' /var/mail/root",
            Duration::from_secs(30)
        ),
        "no SHUTDOWN mail"
    );
    let mail = bed.ssh("grep '^Subject:' /var/mail/root");
    assert!(mail.contains(": LOWBATT"), "no LOWBATT mail: {mail}");

    // Power is back and the host boots again (here: NUT restarts): the UPS is on line,
    // the forced shutdown is forgotten, and upsmon does not shut down again.
    set_status(&bed, "OL", 30);
    bed.ssh("systemctl restart nut-driver.target nut-server && systemctl start nut-monitor");
    assert!(
        wait_for(
            &bed,
            &format!("[ \"$({upsc} 2>/dev/null)\" = OL ]"),
            Duration::from_secs(60)
        ),
        "the UPS is not back on line"
    );
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        bed.read(SHUTDOWN_LOG).as_deref(),
        Some("shutdown requested\n"),
        "upsmon shut down again on line power"
    );
    assert_eq!(bed.ssh("systemctl is-active nut-monitor").trim(), "active");
}
