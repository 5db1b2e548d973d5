//! Running programs on the host: always an argv, never a shell line built from values.
//!
//! Every program runs with `LC_ALL=C` (so that we can read its output) and
//! `DEBIAN_FRONTEND=noninteractive` (so that no package ever waits for a human).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _, Result};

/// Runs `argv`, feeding `stdin` when given, and returns its output whatever its exit status.
pub fn run(argv: &[&str], stdin: Option<&[u8]>) -> Result<Output> {
    let (program, args) = argv.split_first().context("empty command")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("LC_ALL", "C")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("APT_LISTCHANGES_FRONTEND", "none")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {program}"))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .with_context(|| format!("cannot write to {program}"))?;
    }
    child
        .wait_with_output()
        .with_context(|| format!("cannot wait for {program}"))
}

/// Runs `argv` and returns its stdout; a nonzero exit is an error carrying stderr.
pub fn run_ok(argv: &[&str]) -> Result<String> {
    let output = run(argv, None)?;
    check_status(argv, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run_ok`], with input on stdin.
pub fn run_ok_with_input(argv: &[&str], stdin: &[u8]) -> Result<String> {
    let output = run(argv, Some(stdin))?;
    check_status(argv, &output)?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `argv` exits 0; its output is discarded.
pub fn succeeds(argv: &[&str]) -> Result<bool> {
    Ok(run(argv, None)?.status.success())
}

pub fn check_status(argv: &[&str], output: &Output) -> Result<()> {
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let detail = if stderr.trim().is_empty() {
        stdout.trim()
    } else {
        stderr.trim()
    };
    let code = output
        .status
        .code()
        .map_or_else(|| "a signal".to_string(), |c| c.to_string());
    bail!(
        "`{}` exited with {code}: {}",
        argv.join(" "),
        last_lines(detail, 12)
    )
}

/// The end of a long error output, which is where programs say what went wrong.
fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}
