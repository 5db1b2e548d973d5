//! `placard verify`: the roles' health checks, run on the host.
//!
//! A check's strings are rendered first (see [`CheckSpec::render`]), then it runs: a
//! unit's state, a port's banner, or a command's exit status.

use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::role::CheckSpec;
use crate::system::command::{self, deadline};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs one check: whether it passed, and what was seen.
pub fn run(check: &CheckSpec) -> (bool, String) {
    run_within(check, deadline::QUERY)
}

/// [`run`] under `limit`: a command still running then is stopped (its process group
/// killed) and the check fails with "timed out" (the monitor's deadline per check).
pub fn run_within(check: &CheckSpec, limit: Duration) -> (bool, String) {
    if let Some(unit) = &check.service {
        let output = command::Program::new(
            &["systemctl", "is-active", "--", unit],
            limit.min(deadline::QUERY),
        )
        .output();
        let state = output
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|e| e.to_string());
        return (state == "active", format!("{unit} is {state}"));
    }
    if let Some(port) = &check.port {
        return match probe(&port.host, port.port, port.expect.as_deref()) {
            Ok(banner) => (
                true,
                format!(
                    "{}:{} answers{}",
                    port.host,
                    port.port,
                    if banner.is_empty() {
                        String::new()
                    } else {
                        format!(": {banner}")
                    }
                ),
            ),
            Err(problem) => (false, format!("{}:{} {problem}", port.host, port.port)),
        };
    }
    if let Some(argv) = &check.command {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        return match command::Program::new(&argv, limit).output() {
            Ok(output) => {
                let text = String::from_utf8_lossy(if output.stdout.is_empty() {
                    &output.stderr
                } else {
                    &output.stdout
                })
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
                let status = output
                    .status
                    .code()
                    .map_or_else(|| "killed by a signal".to_string(), |c| format!("exit {c}"));
                (
                    output.status.success(),
                    if text.is_empty() {
                        status
                    } else {
                        format!("{status}: {text}")
                    },
                )
            }
            Err(command::CommandError::TimedOut { .. }) => (
                false,
                format!(
                    "timed out: still running after {} s, stopped",
                    limit.as_secs()
                ),
            ),
            Err(error) => (false, error.to_string()),
        };
    }
    (false, "the check says nothing to check".into())
}

fn probe(host: &str, port: u16, expect: Option<&str>) -> Result<String, String> {
    let address = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot be resolved: {e}"))?
        .next()
        .ok_or("has no address")?;
    let stream = TcpStream::connect_timeout(&address, TIMEOUT)
        .map_err(|e| format!("refuses connections: {e}"))?;
    let Some(expect) = expect else {
        return Ok(String::new());
    };
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| format!("sent no banner: {e}"))?;
    let line = line.trim().to_string();
    if line.contains(expect) {
        Ok(line)
    } else {
        Err(format!("answered `{line}`, expected `{expect}`"))
    }
}
