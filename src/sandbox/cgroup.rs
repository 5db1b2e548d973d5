//! A control group of its own for each host, in the hierarchies systemd uses to track a
//! unit's processes (the `name=systemd` v1 one and the v2 one).
//!
//! systemd-nspawn with `--keep-unit --register=no` puts the host under the cgroup it
//! was started in (`…/payload`, itself in `…/supervisor`). Started from the same cgroup,
//! as every host booted from a test program or a shell is, all hosts would share one
//! tree: a unit of one host (dbus.service, ssh.service, a role's service) would share its
//! cgroup with the same unit of every other host. A host stopping a unit waits until its
//! cgroup is empty; when another host starts that unit meanwhile (a host booting while
//! another reboots), the stop waits for its whole stop timeout (90 s), and the other
//! hosts' processes read as pid 0 there ("Failed to kill control group …: Input/output
//! error"). So nspawn is moved, before it runs, into `placard-sandbox-NAME-HASH` under
//! its cgroup in each of those hierarchies. Where that cannot be done (a read-only
//! cgroup file system, no such hierarchy), the host boots as before.

use super::*;

/// The hierarchies (mount point, cgroup of this process) where systemd tracks units:
/// v1's `name=systemd` and the v2 one (at /sys/fs/cgroup, or /sys/fs/cgroup/unified in
/// hybrid mode). `proc_cgroup` is this process's /proc/self/cgroup.
fn tracking_hierarchies(proc_cgroup: &str) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mount = if controllers == "name=systemd" {
            PathBuf::from("/sys/fs/cgroup/systemd")
        } else if id == "0" && controllers.is_empty() {
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else {
            continue;
        };
        found.push((mount, path.to_string()));
    }
    found
}

/// The host's cgroup under `parent` (a cgroup path such as "/" or
/// "/user.slice/session-3.scope"): named after the host and its sandbox folder, since
/// two state folders may each hold a host of the same name.
fn own_cgroup(parent: &str, name: &str, dir: &Path) -> String {
    // The crate's SHA-256: stable across runs and builds, unlike std's hasher.
    use sha2::{Digest, Sha256};
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!(
        "{}/placard-sandbox-{name}-{}",
        parent.trim_end_matches('/'),
        hex::encode(&hash[..4])
    )
}

/// Creates the host's cgroups and opens their `cgroup.procs` for [`enter`], which the
/// nspawn child calls before it execs. Records the folders in `dir/cgroups` for
/// [`remove`]. A hierarchy where this fails is left out, with a log line.
pub(super) fn prepare(name: &str, dir: &Path) -> Vec<File> {
    let Ok(proc_cgroup) = fs::read_to_string("/proc/self/cgroup") else {
        return Vec::new();
    };
    let mut procs = Vec::new();
    let mut folders = String::new();
    for (mount, parent) in tracking_hierarchies(&proc_cgroup) {
        let folder = mount.join(own_cgroup(&parent, name, dir).trim_start_matches('/'));
        let opened = fs::create_dir_all(&folder).and_then(|()| {
            OpenOptions::new()
                .write(true)
                .open(folder.join("cgroup.procs"))
        });
        match opened {
            Ok(file) => {
                procs.push(file);
                folders.push_str(&format!("{}\n", folder.display()));
            }
            Err(error) => warn!(
                name,
                folder = %folder.display(),
                %error,
                "the host shares its cgroup with the hosts started beside it"
            ),
        }
    }
    if let Err(error) = fs::write(dir.join("cgroups"), folders) {
        warn!(name, %error, "cannot record the host's cgroups; `down` leaves them");
    }
    procs
}

/// In the child, between fork and exec: moves the calling process into each cgroup
/// whose `cgroup.procs` is open in `procs` (writing 0 there moves the writer). Only a
/// write(2) per file: nothing that allocates or locks.
pub(super) fn enter(procs: &[std::os::fd::RawFd]) {
    for fd in procs {
        // SAFETY: the descriptors stay open in the parent until the spawn returns.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        let _ = nix::unistd::write(fd, b"0");
    }
}

/// Removes the host's cgroups recorded in `dir/cgroups` once the host is down: the
/// folders its systemd and nspawn made inside them first (a cgroup folder is removed
/// with rmdir once no process and no child cgroup is left in it).
pub(super) fn remove(dir: &Path) {
    let Ok(list) = fs::read_to_string(dir.join("cgroups")) else {
        return;
    };
    for folder in list.lines().filter(|l| !l.is_empty()) {
        remove_cgroup(Path::new(folder));
    }
}

fn remove_cgroup(folder: &Path) {
    if let Ok(entries) = fs::read_dir(folder) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&entry.path());
            }
        }
    }
    if let Err(error) = fs::remove_dir(folder) {
        debug!(folder = %folder.display(), %error, "cgroup left in place");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracking_hierarchies_are_name_systemd_and_v2() {
        let hybrid = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/b61c\n0::/supervisor\n";
        let found = tracking_hierarchies(hybrid);
        let mounts: Vec<_> = found.iter().map(|(m, _)| m.clone()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(mounts[0], PathBuf::from("/sys/fs/cgroup/systemd"));
        assert_eq!(found[0].1, "/");
        assert_eq!(found[1].1, "/supervisor");
        assert!(tracking_hierarchies("3:cpu:/\n").is_empty());
    }

    #[test]
    fn each_sandbox_folder_gets_its_own_cgroup() {
        let a = own_cgroup("/", "web", Path::new("/var/lib/placard/sandbox/web"));
        let b = own_cgroup("/", "web", Path::new("/tmp/placard-e2e-web-1/web"));
        assert!(a.starts_with("/placard-sandbox-web-"), "{a}");
        assert_ne!(a, b);
        let x = Path::new("/x");
        assert_eq!(
            own_cgroup("/user.slice/s.scope/", "web", x),
            format!("/user.slice/s.scope{}", own_cgroup("", "web", x))
        );
    }
}
