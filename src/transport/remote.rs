//! Running the agent on a remote host: one SSH exec that checks the host can run it,
//! uploads it when this version is not there yet, and runs it on the bundle.
//!
//! The exec runs [`BOOTSTRAP`], a fixed POSIX sh script (only our own hash and size
//! are substituted into it, never a value from the inventory). It answers on its first
//! line: `UNSUPPORTED …` (wrong architecture or C library: said plainly, nothing
//! written), `NEED` (we send the binary, it checks the sha256 and answers `READY`) or
//! `READY`. Then the agent reads the bundle on stdin and answers with event lines.
//! The agent is a static build of placard when [`agent_binary`] finds one (it runs on
//! any x86_64 Linux), else the controller's own executable (glibc 2.36 or newer on the
//! host). It is cached on the host under `/var/lib/placard/bin/placard-<sha256>`, so it
//! crosses the network once per version; older versions are removed.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use super::agent_binary::{agent_binary, BUILD_ADVICE};
use super::ssh::{Connection, RemoteProcess, SshOptions, SshTarget};
use crate::plan::{Bundle, Event};

/// The oldest glibc a dynamically linked agent runs on: the one it was built against
/// (Debian 12).
const MINIMUM_GLIBC: &str = "2.36";

/// Checks the host's glibc, for an agent that is not static. The advice names no value
/// of the inventory, only our own text, and holds no single quote (see
/// [`bootstrap_command`]).
const GLIBC_CHECK: &str = r#"glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | cut -d" " -f2 || true)
if [ -z "$glibc" ]; then
  echo "UNSUPPORTED this host has no GNU C library (musl or other) and this placard has no static agent to send; @ADVICE@"; exit 0
fi
if [ "$(printf "%s\n%s\n" "@MINIMUM@" "$glibc" | sort -V | head -n 1)" != "@MINIMUM@" ]; then
  echo "UNSUPPORTED this host has glibc $glibc, older than the @MINIMUM@ this placard needs, and there is no static agent to send; @ADVICE@"; exit 0
fi
"#;

const BOOTSTRAP: &str = r#"# placard agent bootstrap (agent of @SIZE@ bytes)
set -eu
umask 077
dir=/var/lib/placard/bin
bin="$dir/placard-@HASH@"
if [ ! -x "$bin" ]; then
  # The host is checked before an upload only: an agent already here passed the checks,
  # and a run then starts no program before the agent (scripts/bench-fanout).
  arch=$(uname -m)
  if [ "$arch" != "x86_64" ]; then
    echo "UNSUPPORTED this host is $arch (uname -m); the placard agent is built for x86_64 only"; exit 0
  fi
@LIBC_CHECK@  echo NEED
  mkdir -p "$dir"
  chmod 0700 /var/lib/placard "$dir"
  part="$bin.part.$$"
  # The agent comes gzip-compressed, after a line with its compressed size; read
  # takes that line only, byte by byte.
  IFS= read -r size
  case "$size" in ""|*[!0-9]*) echo "CORRUPT the compressed size was not a number"; exit 1;; esac
  head -c "$size" | gzip -dc > "$part" || true
  if ! echo "@HASH@  $part" | sha256sum -c --status; then
    rm -f "$part"; echo "CORRUPT the uploaded agent does not match its sha256"; exit 1
  fi
  chmod 0700 "$part"
  mv "$part" "$bin"
  # Older versions go, but not an upload in progress nor one made in the last hour:
  # a run of another version, by another admin, may be about to start it.
  find "$dir" -maxdepth 1 -name "placard-*" ! -name "placard-@HASH@" ! -name "*.part.*" -mmin +60 -delete
fi
echo READY
exec "$bin" agent
"#;

/// The bootstrap script for an agent of this sha256 (a static one skips the glibc
/// check), run through sudo when we do not log in as root. `size` (the uncompressed
/// size) is only shown in the bootstrap's own comment line, for whoever reads it in
/// a process list.
pub fn bootstrap_command(sha256: &str, size: usize, is_static: bool, user_is_root: bool) -> String {
    let libc_check = if is_static {
        String::new()
    } else {
        GLIBC_CHECK
            .replace("@MINIMUM@", MINIMUM_GLIBC)
            .replace("@ADVICE@", &BUILD_ADVICE.replace('`', "\\`"))
    };
    let script = BOOTSTRAP
        .replace("@LIBC_CHECK@", &libc_check)
        .replace("@HASH@", sha256)
        .replace("@SIZE@", &size.to_string());
    if user_is_root {
        script
    } else {
        // The script holds no single quote, so it can be quoted whole.
        debug_assert!(!script.contains('\''));
        format!("sudo -n /bin/sh -c '{script}'")
    }
}

/// The slowest upload we wait for: 32 KiB/s, a quarter of an ADSL uplink (1 Mbit/s).
const SLOWEST_UPLOAD_BYTES_PER_SECOND: u64 = 32 * 1024;

/// How long an upload of `bytes` may take before it is an error.
pub fn upload_limit(bytes: usize) -> Duration {
    Duration::from_secs(60 + bytes as u64 / SLOWEST_UPLOAD_BYTES_PER_SECOND)
}

/// `work`, unless `deadline` passes first: then an error naming the stage.
async fn within<T>(
    deadline: Instant,
    limit: Duration,
    stage: &str,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result,
        Err(_) => bail!(
            "timed out while {stage}: the host took longer than {} s (--host-timeout); \
             the host or the link to it is stuck or too slow",
            limit.as_secs()
        ),
    }
}

/// Milliseconds since the host's run started, at the end of each stage.
#[derive(Default)]
struct Stages {
    /// TCP connection, SSH handshake and authentication (through a jump host too).
    connect_ms: u64,
    /// The bootstrap answered READY (the exec, the check, an upload when needed).
    agent_start_ms: u64,
    /// The agent's own run, as it reports it (not since the start).
    agent_run_ms: u64,
}

fn since(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

pub async fn run(
    target: &SshTarget,
    options: &SshOptions,
    bundle: &Bundle,
    events: UnboundedSender<Event>,
) -> Result<()> {
    let limit = options.host_timeout;
    let started = Instant::now();
    let deadline = started + limit;
    // Where a host's time goes (PLACARD_LOG=placard=debug): scripts/bench-fanout reads
    // these to split a no-op run into its stages.
    let mut stages = Stages::default();
    let binary = agent_binary()?;
    // SshError's messages already include their causes; flatten them so that the report,
    // which prints the whole chain, does not say the cause twice.
    let connection = within(deadline, limit, "connecting", async {
        Connection::connect(target, options)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?;
    stages.connect_ms = since(started);
    let user_is_root = connection.target().user == "root";
    let process = within(deadline, limit, "starting the agent", async {
        connection
            .exec(&bootstrap_command(
                &binary.sha256,
                binary.size,
                binary.is_static,
                user_is_root,
            ))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    })
    .await?;
    let RemoteProcess {
        stdin,
        stdout,
        exit,
    } = process;
    let (mut stdin, mut stdout) = (stdin, BufReader::new(stdout));
    let mut line = String::new();

    loop {
        line.clear();
        let read = within(deadline, limit, "starting the agent", async {
            Ok(stdout.read_line(&mut line).await?)
        })
        .await?;
        if read == 0 {
            let status = within(deadline, limit, "starting the agent", async {
                Ok(exit.wait().await?)
            })
            .await?;
            let hint = if !user_is_root && status.stderr.contains("sudo") {
                " (the login user needs passwordless sudo)"
            } else {
                ""
            };
            bail!(
                "the host closed the session before the agent started ({status}){hint}: {}",
                status.stderr.trim()
            );
        }
        let answer = line.trim();
        if let Some(reason) = answer.strip_prefix("UNSUPPORTED ") {
            bail!("the placard agent cannot run on {}: {reason}", target.name);
        } else if answer == "NEED" {
            // Compressing takes a moment of CPU: not on the runtime's threads.
            let compressed: &'static [u8] =
                tokio::task::spawn_blocking(move || binary.compressed())
                    .await
                    .context("compressing the agent")??;
            let bytes = compressed.len();
            let upload_limit = upload_limit(bytes);
            tracing::debug!(
                agent = binary.size,
                compressed = bytes,
                "uploading the agent"
            );
            let upload = async {
                stdin.write_all(format!("{bytes}\n").as_bytes()).await?;
                stdin.write_all(compressed).await?;
                stdin.flush().await
            };
            match tokio::time::timeout_at(deadline.min(Instant::now() + upload_limit), upload).await
            {
                Ok(result) => result.context("cannot upload the agent")?,
                Err(_) => bail!(
                    "timed out while uploading the agent ({bytes} bytes): not done within {} s \
                     (slower than {} KiB/s, or the link is stuck)",
                    upload_limit.min(limit).as_secs(),
                    SLOWEST_UPLOAD_BYTES_PER_SECOND / 1024
                ),
            }
        } else if answer == "READY" {
            stages.agent_start_ms = since(started);
            break;
        } else if let Some(reason) = answer.strip_prefix("CORRUPT ") {
            bail!("uploading the agent failed: {reason}");
        } else {
            bail!("unexpected answer from the host while starting the agent: {answer}");
        }
    }

    let payload = serde_json::to_vec(bundle)?;
    within(deadline, limit, "sending the bundle", async {
        stdin
            .write_all(&payload)
            .await
            .context("cannot send the bundle")?;
        stdin
            .shutdown()
            .await
            .context("cannot close the bundle stream")
    })
    .await?;
    drop(stdin);

    let finished = within(deadline, limit, "running the agent", async {
        let mut finished = false;
        loop {
            line.clear();
            if stdout.read_line(&mut line).await? == 0 {
                break;
            }
            match serde_json::from_str::<Event>(line.trim()) {
                Ok(event) => {
                    if let Event::Done { elapsed_ms, .. } = &event {
                        stages.agent_run_ms = *elapsed_ms;
                    }
                    finished |= matches!(
                        event,
                        Event::Done { .. } | Event::Error { .. } | Event::Output { .. }
                    );
                    let _ = events.send(event);
                }
                Err(_) => {
                    tracing::debug!("agent printed a line that is not an event: {}", line.trim())
                }
            }
        }
        Ok(finished)
    })
    .await?;
    let status = within(deadline, limit, "waiting for the agent's exit", async {
        Ok(exit.wait().await?)
    })
    .await?;
    tracing::debug!(
        host = %target.name,
        connect_ms = stages.connect_ms,
        agent_start_ms = stages.agent_start_ms,
        agent_run_ms = stages.agent_run_ms,
        total_ms = since(started),
        "host timing"
    );
    if !finished {
        bail!(
            "the agent stopped without finishing ({status}): {}",
            status.stderr.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stage_past_the_deadline_fails_naming_the_stage() {
        let limit = Duration::from_millis(50);
        let stuck = within(
            Instant::now() + limit,
            limit,
            "running the agent",
            std::future::pending::<Result<()>>(),
        )
        .await;
        let message = format!("{:#}", stuck.expect_err("a deadline"));
        assert!(
            message.starts_with("timed out while running the agent"),
            "{message}"
        );
        let quick = within(Instant::now() + limit, limit, "connecting", async { Ok(7) }).await;
        assert_eq!(quick.expect("in time"), 7);
    }

    #[test]
    fn the_upload_limit_allows_an_adsl_uplink() {
        // 30 MB at 1 Mbit/s (128 KiB/s) takes 240 s.
        assert!(upload_limit(30_000_000) > Duration::from_secs(240));
    }

    #[test]
    fn the_bootstrap_is_plain_sh_with_only_our_values() {
        for is_static in [true, false] {
            let script = bootstrap_command(&"ab".repeat(32), 1234, is_static, true);
            assert!(script.contains("agent of 1234 bytes"));
            assert!(script.contains("gzip -dc"));
            assert!(!script.contains('@'), "every placeholder is filled");
            assert_eq!(script.contains("GNU_LIBC_VERSION"), !is_static);
            let sudo = bootstrap_command("00", 1, is_static, false);
            assert!(sudo.starts_with("sudo -n /bin/sh -c '") && sudo.ends_with('\''));
            assert_eq!(sudo.matches('\'').count(), 2);
        }
    }

    #[test]
    fn the_bootstrap_parses_as_sh() {
        for is_static in [true, false] {
            let script = bootstrap_command(&"ab".repeat(32), 10, is_static, true);
            let status = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .status()
                .expect("sh runs");
            assert!(status.success());
        }
    }

    /// The refusal a host with an old glibc gets, run for real with a fake `getconf`:
    /// it names the version and says how to build the static agent.
    #[test]
    fn an_old_glibc_is_refused_with_the_way_out_and_a_static_agent_is_not() {
        let bin = tempfile::tempdir().expect("a temporary folder");
        let getconf = bin.path().join("getconf");
        std::fs::write(&getconf, "#!/bin/sh\necho glibc 2.31\n").expect("write getconf");
        std::fs::set_permissions(
            &getconf,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let path = format!(
            "{}:{}",
            bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let first_line = |is_static: bool| {
            // Stop the script before it writes anything: only the checks run.
            let script = bootstrap_command(&"ab".repeat(32), 10, is_static, true)
                .replace("  echo NEED\n", "  echo CHECKED; exit 0\n");
            let output = std::process::Command::new("sh")
                .args(["-c", &script])
                .env("PATH", &path)
                .output()
                .expect("sh runs");
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        };
        let refused = first_line(false);
        if std::env::consts::ARCH == "x86_64" {
            assert!(
                refused.starts_with("UNSUPPORTED this host has glibc 2.31, older than the 2.36"),
                "{refused}"
            );
            assert!(
                refused.contains("cargo build --release --target x86_64-unknown-linux-musl`"),
                "{refused}"
            );
            assert_eq!(first_line(true), "CHECKED");
        }
    }
}
