//! A minimal SMTP server on the test side standing in for the rest of the Internet: it
//! accepts every message and reports each (envelope and text) on a channel. Test hosts
//! share this machine's network, so their Postfix relays to it on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// An envelope the sink received.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub sender: String,
    pub recipients: Vec<String>,
    /// The message as sent (headers and body), dots unstuffed, lines ending in CRLF.
    pub data: String,
}

/// A minimal SMTP server on 127.0.0.1: it accepts everything and reports each envelope.
/// It stops by itself after `lifetime`.
pub fn smtp_sink(lifetime: Duration) -> (u16, mpsc::Receiver<Envelope>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
    let port = listener.local_addr().expect("sink address").port();
    listener.set_nonblocking(true).expect("nonblocking sink");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let deadline = Instant::now() + lifetime;
        while Instant::now() < deadline {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
            let mut writer = stream.try_clone().expect("clone the stream");
            let mut reader = BufReader::new(stream);
            let mut envelope = Envelope {
                sender: String::new(),
                recipients: Vec::new(),
                data: String::new(),
            };
            let _ = writer.write_all(b"220 sink.e2e.test ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let upper = line.to_ascii_uppercase();
                let answer: &[u8] = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
                    b"250 sink.e2e.test\r\n"
                } else if upper.starts_with("MAIL FROM:") {
                    envelope.sender = line[10..]
                        .trim()
                        .trim_start_matches('<')
                        .split('>')
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    b"250 ok\r\n"
                } else if upper.starts_with("RCPT TO:") {
                    envelope.recipients.push(
                        line[8..]
                            .trim()
                            .trim_matches(|c| c == '<' || c == '>')
                            .to_string(),
                    );
                    b"250 ok\r\n"
                } else if upper.starts_with("DATA") {
                    let _ = writer.write_all(b"354 go on\r\n");
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0
                            || line == ".\r\n"
                            || line == ".\n"
                        {
                            break;
                        }
                        let line = line.strip_prefix('.').unwrap_or(&line);
                        envelope.data.push_str(line);
                    }
                    let _ = sender.send(std::mem::replace(
                        &mut envelope,
                        Envelope {
                            sender: String::new(),
                            recipients: Vec::new(),
                            data: String::new(),
                        },
                    ));
                    b"250 queued\r\n"
                } else if upper.starts_with("QUIT") {
                    let _ = writer.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                if writer.write_all(answer).is_err() {
                    break;
                }
            }
        }
    });
    (port, receiver)
}
