//! The grub-pin role on a real Debian 12 host (systemd-nspawn) with grub-pc and two
//! real kernel packages from Debian's mirror.
//!
//! Inside a container GRUB cannot probe the disk under its root, so update-grub would
//! fail; the stand-ins in tests/fixtures/grub/ (see its README) replace grub-probe and
//! grub-mkrelpath, answering as for one ext4 partition. Everything else is the
//! distribution's: grub-mkconfig, /etc/grub.d, the kernels, apt-mark.

#[path = "common/testbed.rs"]
mod testbed;

use std::fs;

use placard::facts::grub;
use testbed::{stderr, stdout, Testbed};

const PIN: &str = "/etc/default/grub.d/placard-pin.cfg";
const UUID: &str = "6c4b2f1e-8d0a-4f6e-9a53-2b7d1e0c9f41";

fn changed(output: &std::process::Output) -> u64 {
    let text = stdout(output);
    let last = text.lines().last().expect("json output");
    let summary = serde_json::from_str::<serde_json::Value>(last)
        .expect("the last line is the summary")["summary"][0]
        .clone();
    assert_eq!(summary["failed"].as_bool(), Some(false), "{text}");
    summary["changed"].as_u64().expect("a count")
}

fn menu(bed: &Testbed) -> grub::Menu {
    grub::parse(&bed.read("/boot/grub/grub.cfg").expect("grub.cfg"))
}

fn pin(bed: &Testbed, kernel: &str) {
    bed.write_inventory(&format!(
        "roles: [grub-pin]\n    vars:\n      grub_pin_kernel: \"{kernel}\"\n"
    ));
}

#[test]
fn a_pinned_kernel_becomes_grubs_default_by_id_and_unpinning_restores_it() {
    let bed = Testbed::up("e2e-grub-pin", "bookworm");
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/grub");
    fs::copy(
        format!("{fixtures}/grub-probe-stand-in"),
        bed.root_path("/root/grub-probe"),
    )
    .expect("copy the grub-probe stand-in");
    fs::copy(
        format!("{fixtures}/grub-mkrelpath-stand-in"),
        bed.root_path("/root/grub-mkrelpath"),
    )
    .expect("copy the grub-mkrelpath stand-in");
    bed.ssh(
        "dpkg-divert --quiet --add --rename --divert /usr/sbin/grub-probe.real /usr/sbin/grub-probe \
         && install -m 755 /root/grub-probe /usr/sbin/grub-probe \
         && dpkg-divert --quiet --add --rename --divert /usr/bin/grub-mkrelpath.real /usr/bin/grub-mkrelpath \
         && install -m 755 /root/grub-mkrelpath /usr/bin/grub-mkrelpath",
    );
    // The two newest 6.1 cloud kernels the mirror has (the smallest flavour).
    let kernels = bed.ssh(
        "apt-get update -q >/dev/null && apt-cache search --names-only '^linux-image-6\\.1\\.0-[0-9]+-cloud-amd64$' | cut -d' ' -f1 | sort -V | tail -n 2",
    );
    let packages: Vec<&str> = kernels.split_whitespace().collect();
    assert_eq!(packages.len(), 2, "two kernels: {kernels}");
    bed.ssh(&format!(
        "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends grub-pc {} >/dev/null 2>&1 && update-grub 2>/dev/null",
        packages.join(" ")
    ));
    let older = packages[0].trim_start_matches("linux-image-").to_string();
    let newer = packages[1].trim_start_matches("linux-image-").to_string();
    let before = bed
        .read("/boot/grub/grub.cfg")
        .expect("update-grub wrote grub.cfg");
    assert_eq!(
        menu(&bed).default.as_deref(),
        Some("0"),
        "GRUB's own default is the first entry, the newest kernel"
    );

    // A kernel that is not installed: an error naming the installed ones, nothing written.
    pin(&bed, "6.1.0-1-amd64");
    let refused = bed.placard(&["apply"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    let report = stdout(&refused);
    assert!(
        report.contains("kernel 6.1.0-1-amd64 is not installed"),
        "{report}"
    );
    assert!(
        report.contains(&format!("the installed kernels are: {older}, {newer}")),
        "{report}"
    );
    assert!(bed.read(PIN).is_none(), "the drop-in was written");
    assert_eq!(
        bed.read("/boot/grub/grub.cfg").as_deref(),
        Some(before.as_str()),
        "grub.cfg changed"
    );

    // Pin the older kernel: grub.cfg defaults to its entry, by id path.
    pin(&bed, &older);
    let first = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    assert_eq!(changed(&first), 2, "the pin, and the check's script");
    let id_path = format!("gnulinux-advanced-{UUID}>gnulinux-{older}-advanced-{UUID}");
    assert!(
        bed.read(PIN)
            .is_some_and(|p| p.contains(&format!("GRUB_DEFAULT=\"{id_path}\"\n"))),
        "{:?}",
        bed.read(PIN)
    );
    let pinned = menu(&bed);
    assert_eq!(
        pinned.default.as_deref(),
        Some(id_path.as_str()),
        "grub.cfg does not boot the pinned kernel"
    );
    assert!(pinned.has_id_path(&id_path));
    assert_eq!(
        bed.ssh("apt-mark showhold").trim(),
        format!("linux-image-{older}")
    );
    let second = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(changed(&second), 0, "a second apply changed something");
    let verify = bed.placard(&["verify"]);
    assert_eq!(verify.status.code(), Some(0));
    assert!(
        stdout(&verify).contains(&id_path),
        "verify reports the default entry: {}",
        stdout(&verify)
    );
    // The check checks the pin: a grub.cfg that no longer boots the pinned entry fails
    // verify, and the next apply runs update-grub again.
    bed.ssh(&format!(
        "sed -i 's/set default=\"{id_path}\"/set default=\"0\"/' /boot/grub/grub.cfg"
    ));
    assert_eq!(
        menu(&bed).default.as_deref(),
        Some("0"),
        "grub.cfg was not edited"
    );
    let broken = bed.placard(&["verify"]);
    assert_ne!(broken.status.code(), Some(0), "{}", stdout(&broken));
    assert!(
        stdout(&broken).contains("not the pinned kernel"),
        "{}",
        stdout(&broken)
    );
    let repaired = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(changed(&repaired), 1, "update-grub ran again");
    assert_eq!(menu(&bed).default.as_deref(), Some(id_path.as_str()));
    assert_eq!(bed.placard(&["verify"]).status.code(), Some(0));

    // Unpin: the drop-in goes, GRUB's default comes back, the hold is released.
    pin(&bed, "");
    let unpinned = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(changed(&unpinned), 1);
    assert!(bed.read(PIN).is_none());
    assert_eq!(menu(&bed).default.as_deref(), Some("0"));
    assert_eq!(bed.ssh("apt-mark showhold").trim(), "");
    let again = bed.placard(&["apply", "--format", "json"]);
    assert_eq!(changed(&again), 0);
    let verify = bed.placard(&["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(
        stdout(&verify).contains("no kernel is pinned"),
        "{}",
        stdout(&verify)
    );
}
