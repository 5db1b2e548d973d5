//! The stream a session through a jump host runs on: one direct-tcpip channel of the
//! jump host's session, read by a task of its own into an unbounded queue.
//!
//! Why not russh's own `ChannelStream`: russh hands a channel's incoming data to a
//! bounded queue, and the session carrying the channel stops reading the network
//! while that queue is full. The tunnelled session does not read while it is busy
//! writing, and during the agent's upload it writes until the jump channel's window
//! is spent; meanwhile the host keeps sending window adjustments of its own, which
//! fill the queue. The carrying session then stops reading and never sees the window
//! adjustment it waits for: both sessions wait on each other, and the upload hangs.
//! That cycle, read in russh 0.54.5 (client/encrypted.rs awaits the channel's bounded
//! queue inside the session loop), is the likely cause of the jump-host hang of issue
//! 12; the hang was not reproduced on demand (it needs a slow link), and the run
//! deadlines of [`crate::transport::remote`] turn any other stall into an error. Here
//! the channel is always drained. The queue cannot grow without
//! bound: it only holds what the tunnelled session's peer may send, and SSH flow
//! control limits that to the windows we granted (a few MB) plus small control
//! messages.

use super::*;

use tokio::sync::mpsc;

/// A direct-tcpip channel as a byte stream that never stops reading.
pub(super) type JumpStream = tokio::io::Join<JumpReader, ChannelWriter>;

/// Opens the stream: the channel's reading task starts now.
pub(super) fn jump_stream(channel: russh::Channel<client::Msg>) -> JumpStream {
    let (mut read, write) = channel.split();
    let (sender, incoming) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(message) = read.wait().await {
            let chunk = match message {
                ChannelMsg::Data { data } => data.to_vec(),
                ChannelMsg::Eof | ChannelMsg::Close => break,
                _ => continue,
            };
            if sender.send(chunk).is_err() {
                break;
            }
        }
        // Dropping the sender is the end of the stream for the reader.
    });
    let writer = ChannelWriter(Box::pin(write.make_writer()));
    tokio::io::join(
        JumpReader {
            incoming,
            pending: Vec::new(),
            offset: 0,
            _write: write,
            reader,
        },
        writer,
    )
}

/// The reading half: what the channel's task queued.
pub(super) struct JumpReader {
    incoming: mpsc::UnboundedReceiver<Vec<u8>>,
    /// The unread rest of the last chunk.
    pending: Vec<u8>,
    offset: usize,
    // Kept so that the channel stays open as long as the stream lives.
    _write: ChannelWriteHalf<client::Msg>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for JumpReader {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl AsyncRead for JumpReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.offset >= this.pending.len() {
            match this.incoming.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => {
                    this.pending = chunk;
                    this.offset = 0;
                }
                // The channel ended: end of stream.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
        let rest = &this.pending[this.offset..];
        let count = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..count]);
        this.offset += count;
        Poll::Ready(Ok(()))
    }
}
