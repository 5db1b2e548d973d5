//! `placard monitor status` (on the controller: each host's last states, read by its
//! agent) and `placard monitor run` (on the host, from the timer: output goes to the
//! journal).

use anyhow::Result;

use super::Exit;
use crate::cli::{MonitorArgs, MonitorCommand};
use crate::monitor::LOCK_FILE;
use crate::plan::Job;

pub fn run(args: MonitorArgs) -> Result<Exit> {
    match args.command {
        MonitorCommand::Status { common, targets } => {
            let settings = crate::settings::Settings::resolve(&common)?;
            super::host_exit(&super::execute(
                &settings,
                &targets,
                Job::Monitor,
                16,
                true,
            )?)
        }
        MonitorCommand::Run { config, state } => {
            let paths = crate::monitor::Paths { config, state };
            let _lock = crate::system::lock::Lock::acquire(
                std::path::Path::new(LOCK_FILE),
                "placard monitor run",
            )?;
            // An apply restarts services on purpose: checks taken meanwhile would mail
            // about a restart. The next period checks instead.
            if apply_under_way(std::path::Path::new(crate::system::lock::LOCK_FILE)) {
                println!("skipped: a placard run holds this host's lock; the next period checks");
                return Ok(Exit::Done);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let report = crate::monitor::run(&paths, now, &crate::monitor::mail::send)?;
            println!(
                "{} checks, {} failing{}{}",
                report.checked,
                report.failing.len(),
                if report.failing.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", report.failing.join("; "))
                },
                if report.mailed.is_empty() {
                    String::new()
                } else {
                    format!("; mailed about {}", report.mailed.join("; "))
                }
            );
            Ok(Exit::Done)
        }
    }
}

/// Whether someone holds the flock on `lock`, read from /proc/locks without taking it:
/// even a moment's hold by the monitor would make an admin's apply fail.
fn apply_under_way(lock: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(metadata) = std::fs::metadata(lock) else {
        return false;
    };
    let device =
        nix::sys::stat::major(metadata.dev()) << 32 | nix::sys::stat::minor(metadata.dev());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    held(&locks, device, metadata.ino())
}

/// Whether /proc/locks (`1: FLOCK  ADVISORY  WRITE 123 00:1a:4567 0 EOF`: major and
/// minor in hexadecimal, then the inode) lists a flock on this file; `device` is
/// major << 32 | minor.
fn held(locks: &str, device: u64, inode: u64) -> bool {
    let wanted = format!("{:02x}:{:02x}:{inode}", device >> 32, device & 0xffff_ffff);
    locks.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.get(1) == Some(&"FLOCK") && fields.get(5) == Some(&wanted.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flock_is_found_by_inode_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 99 00:1a:4567 0 EOF\n2: FLOCK  ADVISORY  WRITE 123 00:19:890 0 EOF\n";
        assert!(held(locks, 0x19, 890));
        assert!(!held(locks, 0x1a, 890), "the same inode on another device");
        assert!(!held(locks, 0x1a, 4567), "a POSIX lock is someone else's");
        assert!(!held(locks, 0x19, 89));
    }

    #[test]
    fn a_lock_held_here_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("placard.lock");
        std::fs::write(&path, "").unwrap();
        assert!(!apply_under_way(&path));
        let lock = crate::system::lock::Lock::acquire(&path, "test").unwrap();
        assert!(apply_under_way(&path));
        drop(lock);
        assert!(!apply_under_way(&path));
    }
}
