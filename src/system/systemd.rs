//! Asking systemd about units the way `systemctl` itself does when root runs it:
//! straight over PID 1's private D-Bus socket, /run/systemd/private, without a
//! dbus-daemon and without starting a program.
//!
//! A no-op run asks about every unit of its service tasks once; the one `systemctl
//! show` that did it cost about 10 ms of a host's CPU (half of it the program
//! starting); a connection and three calls a unit, all sent before the first answer
//! is read, cost the agent about 0.8 ms of CPU for base's two units (docs/benchmarks.md,
//! fan-out). The answers are the properties `systemctl show` reads, from the same
//! objects.
//!
//! How it asks, and why so: each property is read with
//! `org.freedesktop.DBus.Properties.Get` on the unit's own object path, which PID 1
//! loads on demand; `systemctl show` reads the same path with one `GetAll` (three
//! Gets are not one snapshot, but a unit changing between them would have changed
//! just after a `GetAll` too). `Manager.LoadUnit` is not used: on Debian 12's systemd
//! a LoadUnit on the private socket sometimes got no answer at all (with libdbus and a
//! hand-built message alike), where 1000 connections with Gets in a row were all
//! answered, on Debian 12 and 13. zbus is not used either: it refuses PID 1's replies
//! on this socket, whose sender is a well-known name rather than a unique one.
//!
//! Every step is under one deadline, connecting included: the asking runs on a thread
//! of its own, which is left behind when PID 1 does not answer in time. Callers treat
//! any error as "ask `systemctl` instead": a host without systemd running, a user
//! other than root, a unit name systemd would write otherwise, or a PID 1 that does not
//! answer in time.

use std::collections::HashMap;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use dbus::arg::Variant;
use dbus::channel::Channel;
use dbus::Message;

/// PID 1's own socket; only root may connect to it.
const PRIVATE_SOCKET: &str = "unix:path=/run/systemd/private";

/// Where PID 1 keeps its units' objects.
const UNIT_PATH_PREFIX: &str = "/org/freedesktop/systemd1/unit/";

/// The D-Bus interface every unit has, whatever its type.
const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// The unit types systemd knows; a name without one of them is a service.
const UNIT_TYPES: [&str; 11] = [
    "service",
    "socket",
    "target",
    "timer",
    "path",
    "mount",
    "automount",
    "swap",
    "device",
    "slice",
    "scope",
];

/// What `systemctl show --property=LoadState,UnitFileState,ActiveState` says of a
/// unit, as systemd says it.
#[derive(Debug)]
pub struct UnitProperties {
    /// loaded, not-found, masked, bad-setting, error …
    pub load_state: String,
    /// enabled, disabled, static, masked …; empty for a unit without a unit file.
    pub unit_file_state: String,
    /// active, inactive, failed, activating …
    pub active_state: String,
}

/// Asks PID 1 about `units`, answering one for each, in their order, before
/// `deadline` has passed.
pub fn unit_properties(units: &[&str], deadline: Duration) -> Result<Vec<UnitProperties>> {
    let units: Vec<String> = units.iter().map(|unit| unit.to_string()).collect();
    let (answer, answered) = mpsc::channel();
    thread::Builder::new()
        .name("systemd-socket".to_string())
        .spawn(move || {
            let units: Vec<&str> = units.iter().map(String::as_str).collect();
            // The receiver is gone when the deadline passed first: nobody to tell.
            let _ = answer.send(ask(&units, deadline));
        })
        .context("cannot start a thread to ask systemd")?;
    answered
        .recv_timeout(deadline)
        .map_err(|_| anyhow::anyhow!("systemd did not answer within {} s", deadline.as_secs()))?
}

/// The properties asked of each unit, in [`UnitProperties`]' order.
const PROPERTIES: [&str; 3] = ["LoadState", "UnitFileState", "ActiveState"];

/// [`unit_properties`] on the calling thread: one connection for all the units, and
/// every call sent before the first answer is read (PID 1 answers them in turn; a
/// call and its answer each way, one after the other, cost more than the asking
/// itself). The waiting is bounded by what is left of `deadline` (the connection's
/// authentication happens with the first call); only the connecting itself is not.
fn ask(units: &[&str], deadline: Duration) -> Result<Vec<UnitProperties>> {
    let started = Instant::now();
    let channel = Channel::open_private(PRIVATE_SOCKET)
        .with_context(|| format!("cannot connect to systemd at {PRIVATE_SOCKET}"))?;
    let mut calls = Vec::with_capacity(units.len() * PROPERTIES.len());
    for unit in units {
        let path = unit_object_path(&full_unit_name(unit));
        for property in PROPERTIES {
            let call = Message::new_method_call(
                "org.freedesktop.systemd1",
                path.as_str(),
                "org.freedesktop.DBus.Properties",
                "Get",
            )
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot ask systemd about {unit}"))?
            .append2(UNIT_INTERFACE, property);
            let serial = channel
                .send(call)
                .map_err(|()| anyhow::anyhow!("cannot send systemd a call about {unit}"))?;
            calls.push((*unit, property, serial));
        }
    }
    let mut answers: HashMap<u32, Option<Message>> =
        calls.iter().map(|(_, _, serial)| (*serial, None)).collect();
    let mut unanswered = calls.len();
    while unanswered > 0 {
        let left = deadline.saturating_sub(started.elapsed());
        if left.is_zero() {
            anyhow::bail!("systemd did not answer within {} s", deadline.as_secs());
        }
        let Some(message) = channel.blocking_pop_message(left)? else {
            continue;
        };
        let slot = message
            .get_reply_serial()
            .and_then(|serial| answers.get_mut(&serial));
        if let Some(slot @ None) = slot {
            *slot = Some(message);
            unanswered -= 1;
        }
    }
    let values = calls
        .into_iter()
        .map(|(unit, property, serial)| {
            let mut answer = answers
                .remove(&serial)
                .flatten()
                .expect("every call was answered");
            let answer = answer
                .as_result()
                .with_context(|| format!("systemd gave no {property} of {unit}"))?;
            answer
                .read1::<Variant<String>>()
                .map(|value| value.0)
                .with_context(|| format!("systemd's {property} of {unit} is not a string"))
        })
        .collect::<Result<Vec<String>>>()?;
    Ok(values
        .chunks_exact(PROPERTIES.len())
        .map(|unit| UnitProperties {
            load_state: unit[0].clone(),
            unit_file_state: unit[1].clone(),
            active_state: unit[2].clone(),
        })
        .collect())
}

/// The name systemd gives a unit named without its type: `ssh` is `ssh.service`, as
/// `systemctl` reads it.
fn full_unit_name(unit: &str) -> String {
    let typed = unit
        .rsplit_once('.')
        .is_some_and(|(stem, suffix)| !stem.is_empty() && UNIT_TYPES.contains(&suffix));
    if typed {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// The unit's D-Bus object path: its name with every byte other than a letter (or a
/// digit, past the first byte) written as `_` and two hex digits, as systemd's
/// bus_label_escape() writes it. Never empty: [`full_unit_name`] gave it a type.
fn unit_object_path(unit: &str) -> String {
    let mut path = String::from(UNIT_PATH_PREFIX);
    for (index, byte) in unit.bytes().enumerate() {
        if byte.is_ascii_alphabetic() || (index > 0 && byte.is_ascii_digit()) {
            path.push(char::from(byte));
        } else {
            path.push_str(&format!("_{byte:02x}"));
        }
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_named_without_its_type_is_a_service() {
        for (given, full) in [
            ("ssh", "ssh.service"),
            ("ssh.service", "ssh.service"),
            ("certbot.timer", "certbot.timer"),
            ("nut-driver.target", "nut-driver.target"),
            (
                "placard-relay-public-8080.socket",
                "placard-relay-public-8080.socket",
            ),
            ("getty@tty1", "getty@tty1.service"),
            ("php8.2-fpm", "php8.2-fpm.service"),
            ("foo.bar", "foo.bar.service"),
            (".service", ".service.service"),
        ] {
            assert_eq!(full_unit_name(given), full, "{given}");
        }
    }

    #[test]
    fn object_paths_escape_as_systemd_does() {
        // As Debian 12's systemd answers `busctl call org.freedesktop.systemd1
        // /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager LoadUnit s UNIT`.
        for (unit, path) in [
            ("ssh.service", "ssh_2eservice"),
            ("getty@tty1.service", "getty_40tty1_2eservice"),
            ("php8.2-fpm.service", "php8_2e2_2dfpm_2eservice"),
            ("systemd-journald.service", "systemd_2djournald_2eservice"),
            ("0day.service", "_30day_2eservice"),
            ("a_b:c.service", "a_5fb_3ac_2eservice"),
        ] {
            assert_eq!(unit_object_path(unit), format!("{UNIT_PATH_PREFIX}{path}"));
        }
    }
}
