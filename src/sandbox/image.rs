//! The image cache: one debootstrapped base tree per suite, built once into a temporary
//! folder and renamed into place when complete, so an interrupted build never leaves a
//! half image.

use super::*;

/// Turn a fresh debootstrap tree into a reusable image: settings every host
/// of the suite shares, minus everything that must be unique per host.
pub(super) fn customize_image(root: &Path, suite: &str, has_security: bool) -> Result<()> {
    // apt sources as a Debian install has them (deb822; debootstrap only
    // writes a one-line sources.list for SUITE main).
    let mut sources = format!(
        "Types: deb\nURIs: {MIRROR}\nSuites: {suite} {suite}-updates\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    );
    if has_security {
        sources.push_str(&format!(
            "\nTypes: deb\nURIs: {SECURITY_MIRROR}\nSuites: {suite}-security\nComponents: main\n\
             Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        ));
    }
    write_in_root(
        root,
        "etc/apt/sources.list.d/debian.sources",
        sources.as_bytes(),
        0o644,
    )?;
    remove_if_exists(&root.join("etc/apt/sources.list"))?;

    // debootstrap generated host keys; copies must not share them.
    for entry in fs::read_dir(root.join("etc/ssh"))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            fs::remove_file(entry.path())?;
        }
    }

    // debootstrap also left a machine-id in /etc AND a separate copy in
    // /var/lib/dbus. systemd reads the D-Bus one when /etc/machine-id is
    // empty, so every copy would boot with the same id; Debian normally has
    // a symlink there. Per-host ids are written by `up`.
    write_in_root(root, "etc/machine-id", b"", 0o444)?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    remove_if_exists(&dbus_id)?;
    if let Some(parent) = dbus_id.parent() {
        fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink("/etc/machine-id", &dbus_id)?;

    // debootstrap copied this machine's hostname and resolv.conf; the
    // hostname is set per host, resolv.conf is copied in by nspawn at boot
    // (--resolv-conf=copy-host). trixie's minbase has no /etc/hosts at all.
    write_in_root(root, "etc/hostname", b"localhost\n", 0o644)?;
    write_in_root(root, "etc/hosts", hosts_file("localhost").as_bytes(), 0o644)?;
    remove_if_exists(&root.join("etc/resolv.conf"))?;

    // The apt timers would run `apt-get update`/upgrades at random times and
    // hold the dpkg lock while a test applies a role.
    for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
        remove_if_exists(
            &root
                .join("etc/systemd/system/timers.target.wants")
                .join(timer),
        )?;
    }

    // Nothing pre-downloaded: no .debs, no package lists (they would be
    // stale in a cached image anyway).
    clear_dir_files(&root.join("var/cache/apt/archives"), |n| {
        n.ends_with(".deb")
    })?;
    clear_dir_files(&root.join("var/cache/apt"), |n| n.ends_with(".bin"))?;
    clear_dir_files(&root.join("var/lib/apt/lists"), |n| n != "lock")?;
    Ok(())
}

pub(super) fn hosts_file(name: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}
