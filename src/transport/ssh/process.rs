//! A command running on the host: its stdin, stdout, stderr and exit status, with
//! bounded buffers so that a chatty or stuck command cannot exhaust the controller.

use super::*;

/// A command running on the remote host.
///
/// Take the fields apart to use them concurrently: write `stdin` (shut it
/// down, or drop it, to send EOF), read `stdout`, then `exit.wait()`.
pub struct RemoteProcess {
    pub stdin: RemoteStdin,
    pub stdout: RemoteStdout,
    pub exit: RemoteExit,
}

impl fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteProcess").finish_non_exhaustive()
    }
}

/// Everything a finished command produced, for callers that do not stream.
#[derive(Debug, Clone)]
pub struct RemoteOutput {
    pub stdout: Vec<u8>,
    pub status: RemoteExitStatus,
}

impl RemoteProcess {
    /// Sends `input` as stdin, closes it, and collects stdout and the exit
    /// status.
    pub async fn output(self, input: &[u8]) -> Result<RemoteOutput, SshError> {
        use tokio::io::AsyncReadExt;
        let RemoteProcess {
            mut stdin,
            mut stdout,
            exit,
        } = self;
        let writer = async move {
            // A remote command that exits without reading its stdin makes
            // these writes fail; its exit status is what matters then.
            if !input.is_empty() {
                let _ = stdin.write_all(input).await;
            }
            let _ = stdin.shutdown().await;
        };
        let mut out = Vec::new();
        let reader = stdout.read_to_end(&mut out);
        let ((), read) = tokio::join!(writer, reader);
        let status = exit.wait().await?;
        // A read error here means the pump stopped early; the status above
        // already explains why.
        let _ = read;
        Ok(RemoteOutput {
            stdout: out,
            status,
        })
    }
}

/// A channel's writer that takes an empty write as a no-op (russh's rejects it).
pub(super) struct ChannelWriter(pub(super) Pin<Box<dyn AsyncWrite + Send>>);

impl AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        self.0.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.as_mut().poll_shutdown(cx)
    }
}

/// The remote command's stdin. `shutdown()` (or dropping it) sends EOF.
pub struct RemoteStdin {
    pub(super) inner: ChannelWriter,
    pub(super) eof_on_drop: Option<oneshot::Sender<()>>,
}

impl AsyncWrite for RemoteStdin {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.eof_on_drop.is_none() {
            return Poll::Ready(Ok(()));
        }
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        if let Poll::Ready(Ok(())) = r {
            // EOF went out; dropping the sender tells the pump not to send
            // another one.
            self.eof_on_drop = None;
        }
        r
    }
}

impl Drop for RemoteStdin {
    fn drop(&mut self) {
        if let Some(tx) = self.eof_on_drop.take() {
            let _ = tx.send(());
        }
    }
}

/// The remote command's stdout, buffered (use `AsyncBufReadExt::lines`).
/// EOF when the remote side closes stdout.
pub struct RemoteStdout {
    pub(super) inner: BufReader<DuplexStream>,
}

impl AsyncRead for RemoteStdout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncBufRead for RemoteStdout {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        Pin::new(&mut self.get_mut().inner).poll_fill_buf(cx)
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        Pin::new(&mut self.inner).consume(amt)
    }
}

/// Resolves when the remote command has finished.
pub struct RemoteExit {
    pub(super) task: tokio::task::JoinHandle<Result<RemoteExitStatus, SshError>>,
    pub(super) label: String,
}

impl RemoteExit {
    /// Waits for the exit status (and the collected stderr). Returns
    /// `ConnectionLost` if the session died first.
    pub async fn wait(self) -> Result<RemoteExitStatus, SshError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(SshError::ConnectionLost {
                target: self.label,
                stderr: format!("(placard's output task failed: {e})"),
            }),
        }
    }
}

/// How a remote command ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteExitStatus {
    /// Exit code, when the command exited normally.
    pub code: Option<u32>,
    /// Signal name (e.g. `KILL`), when the command was killed.
    pub signal: Option<String>,
    pub core_dumped: bool,
    /// stderr, lossily decoded, capped at 1 MiB.
    pub stderr: String,
    pub stderr_truncated: bool,
}

impl RemoteExitStatus {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

impl fmt::Display for RemoteExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.code, &self.signal) {
            (Some(c), _) => write!(f, "exit code {c}"),
            (None, Some(s)) => write!(
                f,
                "killed by signal {s}{}",
                if self.core_dumped {
                    " (core dumped)"
                } else {
                    ""
                }
            ),
            (None, None) => write!(f, "unknown exit status"),
        }
    }
}

pub(super) struct PumpState {
    stdout: Option<DuplexStream>,
    stderr: Vec<u8>,
    status: RemoteExitStatus,
    got_status: bool,
}

impl PumpState {
    async fn handle(&mut self, msg: ChannelMsg) {
        match msg {
            ChannelMsg::Data { data } => {
                if let Some(out) = self.stdout.as_mut() {
                    // The caller dropped stdout: keep draining so the remote
                    // side is not blocked and the exit status still arrives.
                    if out.write_all(&data).await.is_err() {
                        self.stdout = None;
                    }
                }
            }
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                let room = STDERR_LIMIT.saturating_sub(self.stderr.len());
                if data.len() > room {
                    self.status.stderr_truncated = true;
                }
                self.stderr.extend_from_slice(&data[..data.len().min(room)]);
            }
            ChannelMsg::Eof => {
                self.stdout = None;
            }
            ChannelMsg::ExitStatus { exit_status } => {
                self.status.code = Some(exit_status);
                self.got_status = true;
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            } => {
                self.status.signal = Some(match signal_name {
                    russh::Sig::Custom(s) => s,
                    other => format!("{other:?}"),
                });
                self.status.core_dumped = core_dumped;
                self.got_status = true;
            }
            _ => {}
        }
    }
}

/// Owns the channel's read side: routes stdout into the caller's pipe,
/// collects stderr, records the exit status, and sends EOF if stdin is
/// dropped without being shut down.
pub(super) async fn pump(
    mut read: ChannelReadHalf,
    write: ChannelWriteHalf<client::Msg>,
    early: Vec<ChannelMsg>,
    stdout: DuplexStream,
    mut eof_on_drop: oneshot::Receiver<()>,
    label: String,
) -> Result<RemoteExitStatus, SshError> {
    let mut state = PumpState {
        stdout: Some(stdout),
        stderr: Vec::new(),
        status: RemoteExitStatus::default(),
        got_status: false,
    };
    for msg in early {
        state.handle(msg).await;
    }
    let mut stdin_open = true;
    loop {
        let msg = tokio::select! {
            msg = read.wait() => msg,
            dropped = &mut eof_on_drop, if stdin_open => {
                stdin_open = false;
                if dropped.is_ok() {
                    let _ = write.eof().await;
                }
                continue;
            }
        };
        match msg {
            None | Some(ChannelMsg::Close) => break,
            Some(msg) => state.handle(msg).await,
        }
    }
    drop(state.stdout.take());
    let stderr = String::from_utf8_lossy(&state.stderr).into_owned();
    if !state.got_status {
        return Err(SshError::ConnectionLost {
            target: label,
            stderr,
        });
    }
    state.status.stderr = stderr;
    Ok(state.status)
}
