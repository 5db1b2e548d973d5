//! The watchdog role on a real Debian 12 host (systemd-nspawn), which like any container
//! has no BMC and no watchdog device: each mode writes what it should, switching from
//! one to the other leaves nothing of the first, a second apply changes nothing, and
//! `verify` says plainly that there is no hardware, without failing.

#[path = "common/testbed.rs"]
mod testbed;

use testbed::{stderr, stdout, Testbed};

const BMC_DROP_IN: &str = "/etc/systemd/system/bmc-watchdog.service.d/placard.conf";
const SYSTEMD_DROP_IN: &str = "/etc/systemd/system.conf.d/50-placard-watchdog.conf";
const MODULES: &str = "/etc/modules-load.d/placard-watchdog.conf";

fn changed(output: &std::process::Output) -> u64 {
    let text = stdout(output);
    let last = text.lines().last().expect("json output");
    let summary = serde_json::from_str::<serde_json::Value>(last)
        .expect("the last line is the summary")["summary"][0]
        .clone();
    assert_eq!(summary["failed"].as_bool(), Some(false), "{text}");
    summary["changed"].as_u64().expect("a count")
}

/// Applies `mode` twice: the first run succeeds, the second changes nothing.
fn apply_mode(bed: &Testbed, mode: &str) {
    bed.write_inventory(&format!("roles: [watchdog]\n    vars:\n      watchdog_mode: {mode}\n      watchdog_systemd_module: softdog\n"));
    let first = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}{}",
        stdout(&first),
        stderr(&first)
    );
    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(
        changed(&second),
        0,
        "a second apply in mode {mode} changed something"
    );
}

/// The package's state as dpkg knows it: `ii` installed, `rc` removed with its
/// configuration left, `un` (or nothing, if dpkg forgot it) when purged.
fn bmc_package_state(bed: &Testbed) -> String {
    bed.ssh("dpkg-query -W -f '${db:Status-Abbrev}' freeipmi-bmc-watchdog 2>/dev/null || true")
        .trim()
        .to_string()
}

fn runtime_watchdog(bed: &Testbed) -> String {
    bed.ssh("systemctl show -p RuntimeWatchdogUSec --value")
        .trim()
        .to_string()
}

fn verify(bed: &Testbed) -> String {
    let output = bed.placard(&["verify"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "verify failed: {}",
        stdout(&output)
    );
    stdout(&output)
}

fn assert_no_bmc_trace(bed: &Testbed) {
    let state = bmc_package_state(bed);
    assert!(
        state.is_empty() || state == "un",
        "freeipmi-bmc-watchdog is still installed or left its configuration: {state}"
    );
    assert!(
        !bed.root_path(BMC_DROP_IN)
            .parent()
            .expect("a folder")
            .exists(),
        "the bmc-watchdog drop-in is still there"
    );
    assert!(
        bed.read("/etc/default/bmc-watchdog").is_none(),
        "the package's configuration is still there"
    );
    assert_eq!(
        bed.ssh("systemctl is-active bmc-watchdog || true").trim(),
        "inactive"
    );
}

fn assert_no_systemd_trace(bed: &Testbed) {
    assert!(
        bed.read(SYSTEMD_DROP_IN).is_none(),
        "systemd's watchdog settings are still there"
    );
    assert!(
        bed.read(MODULES).is_none(),
        "the watchdog module is still loaded at boot"
    );
    assert_eq!(
        runtime_watchdog(bed),
        "0",
        "the running systemd still feeds a watchdog"
    );
}

#[test]
fn each_mode_undoes_the_other_and_verify_says_there_is_no_hardware() {
    let bed = Testbed::up("e2e-watchdog", "bookworm");

    apply_mode(&bed, "bmc");
    assert_eq!(bmc_package_state(&bed), "ii");
    let options = bed.read(BMC_DROP_IN).expect("the bmc-watchdog drop-in");
    assert!(
        options
            .contains("Environment=\"OPTIONS=-d -u 4 -p 0 -a 1 -l 0 -F -P -L -S -O -i 900 -e 60\""),
        "{options}"
    );
    let unit = bed.ssh("systemctl show -p Environment --value bmc-watchdog");
    assert!(
        unit.contains("-i 900"),
        "systemd does not see the drop-in: {unit}"
    );
    assert_eq!(
        bed.ssh("systemctl is-enabled bmc-watchdog || true").trim(),
        "disabled",
        "enabled on a host without a BMC"
    );
    assert_no_systemd_trace(&bed);
    let report = verify(&bed);
    assert!(
        report.contains("no BMC on this host (systemd-nspawn)"),
        "{report}"
    );

    apply_mode(&bed, "systemd");
    assert_no_bmc_trace(&bed);
    let manager = bed
        .read(SYSTEMD_DROP_IN)
        .expect("systemd's watchdog settings");
    assert!(
        manager.contains("RuntimeWatchdogSec=30s\n")
            && manager.contains("RebootWatchdogSec=10min\n"),
        "{manager}"
    );
    assert_eq!(bed.read(MODULES).as_deref(), Some("softdog\n"));
    assert_eq!(
        runtime_watchdog(&bed),
        "30s",
        "systemd was not re-executed with the new settings"
    );
    let report = verify(&bed);
    assert!(
        report.contains("no watchdog device on this host"),
        "{report}"
    );

    apply_mode(&bed, "bmc");
    assert_no_systemd_trace(&bed);
    assert_eq!(bmc_package_state(&bed), "ii");

    apply_mode(&bed, "none");
    assert_no_bmc_trace(&bed);
    assert_no_systemd_trace(&bed);
    assert!(verify(&bed).contains("no watchdog is armed"));
}
