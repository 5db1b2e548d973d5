//! Running programs on the host: always an argv, never a shell line built from values,
//! and always under a deadline.
//!
//! Every program runs with one environment policy: `LC_ALL=C` (so that its output can
//! be read), `DEBIAN_FRONTEND=noninteractive` and `APT_LISTCHANGES_FRONTEND=none` (so
//! that no package ever waits for a human), and Debian's PATH for root (so that a run
//! over SSH and a run from a root shell find the same programs). A caller may add
//! variables of its own on top.
//!
//! Each program runs in a process group of its own. When it passes its deadline, the
//! whole group gets SIGTERM, then SIGKILL a few seconds later, so that a hung validator
//! cannot keep a grandchild alive that holds the run. Its output is kept up to a cap
//! (the end is kept, which is where programs say what went wrong).
//!
//! What this module leaves to others: deciding which deadline a task gets
//! ([`crate::resource::Context::deadline`]) and what an exit status means.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// Debian's PATH for root.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of each output stream is kept; past it, the start is dropped.
const OUTPUT_CAP: usize = 32 << 20;

/// How long a program has, between SIGTERM and SIGKILL, to stop by itself.
const GRACE: Duration = Duration::from_secs(3);

/// How long to wait for the output pipes to close once the program has exited: a
/// daemon it started may have kept them open, and is not waited for.
const PIPE_LINGER: Duration = Duration::from_secs(1);

/// The default deadlines, by kind of program. A task's `timeout:` overrides them.
pub mod deadline {
    use std::time::Duration;

    /// Programs that only look: dpkg-query, systemctl is-active, getent, a guard.
    pub const QUERY: Duration = Duration::from_secs(60);
    /// PID 1 answering over its socket (crate::system::systemd), before `systemctl`
    /// is asked instead: it answers in milliseconds, also on a busy host.
    pub const SOCKET: Duration = Duration::from_secs(5);
    /// A validator reading a configuration: sshd -t, postfix check, nginx -t.
    pub const VALIDATE: Duration = Duration::from_secs(120);
    /// systemctl start/stop/reload, useradd, update-grub, etckeeper.
    pub const SYSTEM: Duration = Duration::from_secs(300);
    /// A `command:` task.
    pub const COMMAND: Duration = Duration::from_secs(600);
    /// apt-get install, update, upgrade, download.
    pub const APT: Duration = Duration::from_secs(1800);
}

/// Why a program did not give an output to read.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("an empty command was given")]
    Empty,
    /// The cause is part of the message, not a `source`: a report that prints the
    /// chain would otherwise say it twice.
    #[error("cannot run `{program}`: {error}")]
    Spawn {
        program: String,
        error: std::io::Error,
    },
    #[error("`{command}` did not finish within {} and was stopped{}", seconds(*.timeout), tail(.last_output))]
    TimedOut {
        command: String,
        timeout: Duration,
        last_output: String,
    },
    #[error("`{command}` exited with {code}: {detail}")]
    Failed {
        command: String,
        code: String,
        detail: String,
    },
}

fn seconds(duration: Duration) -> String {
    format!("{} s", duration.as_secs_f64())
}

fn tail(last_output: &str) -> String {
    if last_output.is_empty() {
        "; it printed nothing".to_string()
    } else {
        format!("; its last output:\n{last_output}")
    }
}

/// A program's output, whatever its exit status.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last lines of stderr, else of stdout: where programs say what went wrong.
    pub fn last_lines(&self, count: usize) -> String {
        let stderr = String::from_utf8_lossy(&self.stderr);
        let stdout = String::from_utf8_lossy(&self.stdout);
        let text = if stderr.trim().is_empty() {
            stdout.trim().to_string()
        } else {
            stderr.trim().to_string()
        };
        last_lines(&text, count)
    }
}

/// One program to run: its argv, and what it gets.
#[derive(Debug, Clone)]
pub struct Program {
    argv: Vec<OsString>,
    /// How the program is named in messages; a caller hides secret arguments this way.
    shown: Option<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, OsString)>,
    directory: Option<PathBuf>,
    timeout: Duration,
}

impl Program {
    pub fn new<S: Into<OsString> + Clone>(argv: &[S], timeout: Duration) -> Program {
        Program {
            argv: argv.iter().cloned().map(Into::into).collect(),
            shown: None,
            stdin: None,
            env: Vec::new(),
            directory: None,
            timeout,
        }
    }

    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Program {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(mut self, name: impl Into<OsString>, value: impl Into<OsString>) -> Program {
        self.env.push((name.into(), value.into()));
        self
    }

    pub fn directory(mut self, directory: impl Into<PathBuf>) -> Program {
        self.directory = Some(directory.into());
        self
    }

    /// Names the program `shown` in every message instead of spelling out its argv.
    pub fn shown_as(mut self, shown: impl Into<String>) -> Program {
        self.shown = Some(shown.into());
        self
    }

    fn describe(&self) -> String {
        self.shown.clone().unwrap_or_else(|| {
            self.argv
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
    }

    /// Runs the program to its end or its deadline; its output whatever its status.
    pub fn output(&self) -> Result<Output, CommandError> {
        execute(
            self.prepare()?,
            self.stdin.clone(),
            self.timeout,
            &self.describe(),
        )
    }

    /// The command with its arguments, placard's environment policy, the caller's
    /// variables and folder: what both [`Program::output`] and [`Program::stream`] run.
    fn prepare(&self) -> Result<std::process::Command, CommandError> {
        let (program, args) = self.argv.split_first().ok_or(CommandError::Empty)?;
        let mut command = std::process::Command::new(program);
        command
            .args(args)
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("APT_LISTCHANGES_FRONTEND", "none")
            .env("PATH", PATH)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        if let Some(directory) = &self.directory {
            command.current_dir(directory);
        }
        Ok(command)
    }

    /// Runs the program; a nonzero exit is an error carrying its last output lines.
    pub fn run_ok(&self) -> Result<Output, CommandError> {
        let output = self.output()?;
        self.check(&output)?;
        Ok(output)
    }

    /// Whether the program exits 0; its output is discarded.
    pub fn succeeds(&self) -> Result<bool, CommandError> {
        Ok(self.output()?.status.success())
    }

    /// An error naming the program when `output` is not a success.
    pub fn check(&self, output: &Output) -> Result<(), CommandError> {
        if output.status.success() {
            return Ok(());
        }
        let code = output
            .status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| c.to_string());
        Err(CommandError::Failed {
            command: self.describe(),
            code,
            detail: output.last_lines(12),
        })
    }
}

/// Runs a prepared command to its end or its deadline, in a process group of its own,
/// with `stdin` fed from a thread and its output collected (capped); `shown` names it
/// in errors. [`Program`] prepares the command with placard's environment policy; the
/// sandbox, which drives this machine's own tools, prepares its own.
pub fn execute(
    mut command: std::process::Command,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    shown: &str,
) -> Result<Output, CommandError> {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command.spawn().map_err(|error| CommandError::Spawn {
        program: program.clone(),
        error,
    })?;
    let group = Pid::from_raw(child.id() as i32);

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A program that does not read its input must not block us: write from a
        // thread, and let a closed pipe end it.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    let (exited, exit) = mpsc::channel();
    thread::spawn(move || {
        let _ = exited.send(child.wait());
    });

    let mut timed_out = false;
    let status = match exit.recv_timeout(timeout) {
        Ok(status) => status,
        Err(_) => {
            timed_out = true;
            let _ = killpg(group, Signal::SIGTERM);
            match exit.recv_timeout(GRACE) {
                Ok(status) => status,
                Err(_) => {
                    let _ = killpg(group, Signal::SIGKILL);
                    exit.recv().unwrap_or_else(|_| {
                        Err(std::io::Error::other("the program could not be waited for"))
                    })
                }
            }
        }
    };
    if timed_out {
        // What is left of the group still holds the pipes: it goes too.
        let _ = killpg(group, Signal::SIGKILL);
    }
    let status = status.map_err(|error| CommandError::Spawn { program, error })?;
    let output = Output {
        status,
        stdout: stdout.map(receive).unwrap_or_default(),
        stderr: stderr.map(receive).unwrap_or_default(),
    };
    if timed_out {
        return Err(CommandError::TimedOut {
            command: shown.to_string(),
            timeout,
            last_output: output.last_lines(12),
        });
    }
    Ok(output)
}

/// A program whose output is read as it comes (a .deb's files, larger than any cap);
/// its deadline runs from its start, whether or not its output is being read.
pub struct Streaming {
    program: Program,
    child: std::process::Child,
    stderr: Option<mpsc::Receiver<Vec<u8>>>,
    stop: mpsc::Sender<()>,
    timed_out: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Program {
    /// Starts the program with its stdout to be read through [`Streaming::stdout`].
    pub fn stream(&self) -> Result<Streaming, CommandError> {
        let mut command = self.prepare()?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|error| CommandError::Spawn {
            program: command.get_program().to_string_lossy().into_owned(),
            error,
        })?;
        let group = Pid::from_raw(child.id() as i32);
        let stderr = child.stderr.take().map(collect);
        let timed_out = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let timeout = self.timeout;
        let flag = timed_out.clone();
        thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(timeout) {
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
                let _ = killpg(group, Signal::SIGTERM);
                thread::sleep(GRACE);
                let _ = killpg(group, Signal::SIGKILL);
            }
        });
        Ok(Streaming {
            program: self.clone(),
            child,
            stderr,
            stop,
            timed_out,
        })
    }
}

impl Streaming {
    /// The program's output, to read to its end before [`Streaming::finish`].
    pub fn stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// Waits for the program; an error when it passed its deadline or failed.
    pub fn finish(mut self) -> Result<Output, CommandError> {
        drop(self.child.stdout.take());
        let status = self.child.wait().map_err(|error| CommandError::Spawn {
            program: self.program.describe(),
            error,
        })?;
        let _ = self.stop.send(());
        let output = Output {
            status,
            stdout: Vec::new(),
            stderr: self.stderr.take().map(receive).unwrap_or_default(),
        };
        if self.timed_out.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CommandError::TimedOut {
                command: self.program.describe(),
                timeout: self.program.timeout,
                last_output: output.last_lines(12),
            });
        }
        self.program.check(&output)?;
        Ok(output)
    }
}

/// Runs `argv` within `timeout` and returns its stdout; a nonzero exit is an error.
pub fn run_ok<S: Into<OsString> + Clone>(
    argv: &[S],
    timeout: Duration,
) -> Result<String, CommandError> {
    Ok(Program::new(argv, timeout).run_ok()?.stdout_text())
}

/// Whether `argv` exits 0 within `timeout`.
pub fn succeeds<S: Into<OsString> + Clone>(
    argv: &[S],
    timeout: Duration,
) -> Result<bool, CommandError> {
    Program::new(argv, timeout).succeeds()
}

/// Reads a pipe to its end on a thread of its own, keeping the last [`OUTPUT_CAP`] bytes.
fn collect(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut kept = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(read) => {
                    kept.extend_from_slice(&chunk[..read]);
                    if kept.len() > 2 * OUTPUT_CAP {
                        kept.drain(..kept.len() - OUTPUT_CAP);
                    }
                }
            }
        }
        if kept.len() > OUTPUT_CAP {
            kept.drain(..kept.len() - OUTPUT_CAP);
        }
        let _ = sender.send(kept);
    });
    receiver
}

/// What a reader thread collected, once the pipe closed or [`PIPE_LINGER`] passed.
fn receive(receiver: mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
    receiver.recv_timeout(PIPE_LINGER).unwrap_or_default()
}

/// The end of a long output, which is where programs say what went wrong.
pub fn last_lines(text: &str, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(count);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn output_and_status_are_returned() {
        let output = Program::new(
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            deadline::QUERY,
        )
        .output()
        .unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(output.stdout, b"out\n");
        assert_eq!(output.last_lines(5), "err");
    }

    #[test]
    fn input_reaches_the_program() {
        let text = Program::new(&["cat"], deadline::QUERY)
            .stdin("hello\n")
            .run_ok()
            .unwrap()
            .stdout_text();
        assert_eq!(text, "hello\n");
    }

    #[test]
    fn a_failure_names_the_program_and_its_last_words() {
        let error = run_ok(
            &["sh", "-c", "echo no such thing >&2; exit 2"],
            deadline::QUERY,
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("`sh -c echo no such thing >&2; exit 2` exited with 2"),
            "{error}"
        );
        assert!(error.ends_with("no such thing"), "{error}");
    }

    #[test]
    fn a_hung_program_and_its_children_are_stopped_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child-survived");
        // The grandchild ignores SIGTERM and would write the marker after 3 s.
        let script = format!(
            "echo started; (trap '' TERM; sleep 3; touch {}) & sleep 600",
            marker.display()
        );
        let started = Instant::now();
        let error = Program::new(&["sh", "-c", &script], Duration::from_millis(300))
            .output()
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        let message = error.to_string();
        assert!(matches!(error, CommandError::TimedOut { .. }), "{message}");
        assert!(message.contains("did not finish within 0.3 s"), "{message}");
        assert!(message.ends_with("started"), "{message}");
        thread::sleep(Duration::from_secs(4));
        assert!(!marker.exists(), "the grandchild was killed with its group");
    }

    #[test]
    fn a_daemon_holding_the_pipes_does_not_hold_the_caller() {
        let started = Instant::now();
        let output = Program::new(&["sh", "-c", "sleep 5 & echo done"], deadline::QUERY)
            .output()
            .unwrap();
        assert!(output.status.success());
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let error = run_ok(&["/nonexistent/program"], deadline::QUERY).unwrap_err();
        assert!(matches!(error, CommandError::Spawn { .. }), "{error}");
        // Said once, also where the whole chain is printed (the run's report).
        let chain = format!("{:#}", anyhow::Error::from(error));
        assert_eq!(
            chain,
            "cannot run `/nonexistent/program`: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn output_is_capped_at_its_end() {
        let output = Program::new(
            &["sh", "-c", "head -c 70000000 /dev/zero; echo; echo last"],
            deadline::QUERY,
        )
        .output()
        .unwrap();
        assert!(output.stdout.len() <= 2 * OUTPUT_CAP);
        assert!(output.stdout.ends_with(b"last\n"));
    }
}
