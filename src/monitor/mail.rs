//! The monitor's mail: one message per run that found changes, naming each check, what
//! it saw and when; sent through the local MTA (`sendmail`, which the mail role's Postfix
//! provides) or, when a relay is set, straight to it over SMTP.
//!
//! The SMTP client is the smallest that works with a relay that accepts this host
//! without a password (a club's own mail server, or a provider's relay for its
//! customers' addresses): no TLS, no login. A relay that needs them is reached through
//! a local MTA instead.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};

use super::{Alert, Change, Config};
use crate::system::command::{self, deadline};

const SENDMAIL: &str = "/usr/sbin/sendmail";
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// This host's name, for the sender, the subject and the SMTP greeting.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// Sends the alerts of one run as one mail.
pub fn send(config: &Config, alerts: &[Alert]) -> Result<()> {
    let (subject, body) = describe(&host_name(), alerts, now());
    send_text(config, &subject, &body)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Sends a mail to the admin, as the monitor does (pull mode's reports use it too).
pub fn send_text(config: &Config, subject: &str, body: &str) -> Result<()> {
    let host = host_name();
    let sender = if config.sender.is_empty() {
        format!("root@{host}")
    } else {
        config.sender.clone()
    };
    let message = compose(&host, &sender, &config.admin, subject, body, now());
    if config.relay_host.is_empty() {
        sendmail(&sender, &config.admin, &message)
    } else {
        smtp(
            &config.relay_host,
            config.relay_port,
            &host,
            &sender,
            &config.admin,
            &message,
        )
    }
}

fn sendmail(sender: &str, admin: &str, message: &str) -> Result<()> {
    if !std::path::Path::new(SENDMAIL).exists() {
        bail!("{SENDMAIL} is missing: this host has no MTA; apply the mail role, or set monitor_relay_host");
    }
    command::Program::new(
        &[SENDMAIL, "-oi", "-f", sender, "--", admin],
        deadline::QUERY,
    )
    .stdin(message.replace("\r\n", "\n"))
    .run_ok()?;
    Ok(())
}

/// The subject and body of a run's mail: each check, what it saw and when.
pub fn describe(host: &str, alerts: &[Alert], now: u64) -> (String, String) {
    let count = |change: Change| alerts.iter().filter(|a| a.change == change).count();
    let names = |change: Change| {
        alerts
            .iter()
            .filter(|a| a.change == change)
            .map(|a| a.check.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut parts = Vec::new();
    if count(Change::Failing) > 0 {
        parts.push(format!("FAILING {}", names(Change::Failing)));
    }
    if count(Change::StillFailing) > 0 {
        parts.push(format!("still failing {}", names(Change::StillFailing)));
    }
    if count(Change::Recovered) > 0 {
        parts.push(format!("recovered {}", names(Change::Recovered)));
    }
    let subject = format!("[placard] {host}: {}", parts.join("; "));
    let mut body = String::new();
    for alert in alerts {
        let check = &alert.check;
        let (what, since) = match alert.change {
            Change::Failing => ("FAILING", "since"),
            Change::StillFailing => ("STILL FAILING", "since"),
            Change::Recovered => ("RECOVERED", "at"),
        };
        body.push_str(&format!(
            "{what}: {} (role {})\n  {since} {}\n  {}\n\n",
            check.name,
            check.role,
            utc_time(check.since),
            check.detail
        ));
    }
    body.push_str(&format!(
        "Checked on {host} at {} by placard's monitor (the monitor role's timer).\n\
         See every check: placard monitor status -i INVENTORY {host}\n",
        utc_time(now)
    ));
    (subject, body)
}

/// The message, headers and body, lines ending in CRLF.
pub fn compose(
    host: &str,
    sender: &str,
    admin: &str,
    subject: &str,
    body: &str,
    now: u64,
) -> String {
    let headers = [
        format!("From: placard monitor <{sender}>"),
        format!("To: <{admin}>"),
        format!("Subject: {}", encode_header(subject)),
        format!("Date: {}", rfc2822_date(now)),
        format!("Message-ID: <monitor.{now}.{}@{host}>", std::process::id()),
        "Auto-Submitted: auto-generated".to_string(),
        "MIME-Version: 1.0".to_string(),
        "Content-Type: text/plain; charset=utf-8".to_string(),
        "Content-Transfer-Encoding: 8bit".to_string(),
    ];
    let mut message = headers.join("\r\n");
    message.push_str("\r\n\r\n");
    for line in body.lines() {
        message.push_str(line);
        message.push_str("\r\n");
    }
    message
}

/// An RFC 2047 encoded word when the text is not plain ASCII.
fn encode_header(text: &str) -> String {
    use base64::Engine as _;
    if text.is_ascii() {
        return text.to_string();
    }
    format!(
        "=?utf-8?b?{}?=",
        base64::engine::general_purpose::STANDARD.encode(text)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2026-11-30 17:40:12 UTC`.
pub fn utc_time(seconds: u64) -> String {
    let seconds = seconds as i64;
    let (year, month, day) = civil(seconds.div_euclid(86_400));
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// `Mon, 30 Nov 2026 17:40:12 +0000`.
fn rfc2822_date(seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let seconds = seconds as i64;
    let days = seconds.div_euclid(86_400);
    let (year, month, day) = civil(days);
    let rest = seconds.rem_euclid(86_400);
    format!(
        "{}, {day} {} {year} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[month as usize - 1],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Plain SMTP to a relay: greeting, EHLO, MAIL, RCPT, DATA (dot-stuffed), QUIT; every
/// answer checked, every read and write under a deadline.
pub fn smtp(
    relay: &str,
    port: u16,
    helo: &str,
    sender: &str,
    admin: &str,
    message: &str,
) -> Result<()> {
    let address = (relay, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve the relay {relay}"))?
        .next()
        .with_context(|| format!("the relay {relay} has no address"))?;
    let stream = TcpStream::connect_timeout(&address, SMTP_TIMEOUT)
        .with_context(|| format!("cannot reach the relay {relay}:{port}"))?;
    stream.set_read_timeout(Some(SMTP_TIMEOUT))?;
    stream.set_write_timeout(Some(SMTP_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let expect = |reader: &mut BufReader<TcpStream>, code: &str, after: &str| -> Result<()> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                bail!("the relay {relay}:{port} closed the connection after {after}");
            }
            if !line.starts_with(code) {
                bail!(
                    "the relay {relay}:{port} answered `{}` to {after}",
                    line.trim_end()
                );
            }
            // `250-…` continues, `250 …` ends the answer.
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    };
    expect(&mut reader, "220", "the connection")?;
    let mut say = |text: &str| -> Result<()> {
        writer.write_all(text.as_bytes())?;
        writer.write_all(b"\r\n")?;
        writer.flush()?;
        Ok(())
    };
    say(&format!("EHLO {helo}"))?;
    expect(&mut reader, "250", "EHLO")?;
    say(&format!("MAIL FROM:<{sender}>"))?;
    expect(&mut reader, "250", "MAIL FROM")?;
    say(&format!("RCPT TO:<{admin}>"))?;
    expect(&mut reader, "250", "RCPT TO")?;
    say("DATA")?;
    expect(&mut reader, "354", "DATA")?;
    let mut data = String::new();
    for line in message.trim_end_matches("\r\n").split("\r\n") {
        if line.starts_with('.') {
            data.push('.');
        }
        data.push_str(line);
        data.push_str("\r\n");
    }
    data.push('.');
    say(&data)?;
    expect(&mut reader, "250", "the message")?;
    let _ = say("QUIT");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::CheckState;
    use std::net::TcpListener;

    fn alert(change: Change, name: &str) -> Alert {
        Alert {
            change,
            check: CheckState {
                role: "mail".into(),
                name: name.into(),
                ok: change == Change::Recovered,
                detail: "dovecot is inactive".into(),
                since: 1_796_060_412,
                mailed: 1_796_060_412,
            },
        }
    }

    #[test]
    fn dates_are_utc_and_rfc_2822() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            rfc2822_date(1_796_060_412),
            "Mon, 30 Nov 2026 17:40:12 +0000"
        );
    }

    #[test]
    fn the_mail_names_the_check_its_output_and_the_time() {
        let (subject, body) = describe(
            "club",
            &[alert(Change::Failing, "Dovecot is running")],
            1_796_060_412,
        );
        let message = compose(
            "club",
            "root@club",
            "admin@club.example",
            &subject,
            &body,
            1,
        );
        assert!(message.contains("Subject: [placard] club: FAILING Dovecot is running\r\n"));
        assert!(message.contains("FAILING: Dovecot is running (role mail)\r\n"));
        assert!(message.contains("since 2026-11-30 17:40:12 UTC"));
        assert!(message.contains("dovecot is inactive"));
        let (subject, _) = describe("club", &[alert(Change::Recovered, "Dovecot is running")], 1);
        assert_eq!(subject, "[placard] club: recovered Dovecot is running");
    }

    #[test]
    fn smtp_delivers_to_a_relay_and_stuffs_dots() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut writer = stream.try_clone().unwrap();
            let mut reader = BufReader::new(stream);
            let mut transcript = Vec::new();
            writer.write_all(b"220 sink\r\n").unwrap();
            let mut in_data = false;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                transcript.push(line.clone());
                let answer: &[u8] = if in_data {
                    if line != ".\r\n" {
                        continue;
                    }
                    in_data = false;
                    b"250 queued\r\n"
                } else if line.starts_with("EHLO") {
                    b"250-sink\r\n250 8BITMIME\r\n"
                } else if line.starts_with("DATA") {
                    in_data = true;
                    b"354 go on\r\n"
                } else if line.starts_with("QUIT") {
                    writer.write_all(b"221 bye\r\n").unwrap();
                    break;
                } else {
                    b"250 ok\r\n"
                };
                writer.write_all(answer).unwrap();
            }
            transcript
        });
        smtp(
            "127.0.0.1",
            port,
            "club",
            "root@club",
            "admin@club.example",
            "Subject: x\r\n\r\n.hidden\r\nend\r\n",
        )
        .unwrap();
        let transcript = server.join().unwrap();
        assert!(transcript.contains(&"MAIL FROM:<root@club>\r\n".to_string()));
        assert!(transcript.contains(&"RCPT TO:<admin@club.example>\r\n".to_string()));
        assert!(
            transcript.contains(&"..hidden\r\n".to_string()),
            "{transcript:?}"
        );
    }

    #[test]
    fn a_refusing_relay_is_an_error_naming_the_step() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.write_all(b"554 go away\r\n").unwrap();
        });
        let error = smtp("127.0.0.1", port, "h", "a@b.c", "d@e.f", "x").unwrap_err();
        assert!(error.to_string().contains("554 go away"), "{error}");
    }
}
