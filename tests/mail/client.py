#!/usr/bin/env python3
"""Real mail clients for the mail role's end-to-end tests, run on the test host.

Each subcommand speaks to the host's Postfix or Dovecot with Python's own smtplib and
imaplib and prints one JSON object, which tests/e2e_mail.rs reads. Certificates are not
checked: the role's certificate is self-signed until a certs role exists.
"""
import email.utils
import imaplib
import json
import os
import smtplib
import socket
import ssl
import sys
import time

# The address the role was told to listen on (mail_listen_address).
HOST = os.environ.get("MAIL_HOST", "127.0.0.1")
INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def message(sender, recipient, subject):
    return (f"From: {sender}\r\nTo: {recipient}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{time.time_ns()}@e2e.test>\r\nDate: {email.utils.formatdate()}\r\n\r\n"
            f"Hello from the end-to-end test: {subject}\r\n")


def submit(user, password, sender, recipient, subject, source=None):
    """Authenticated submission on 587 after STARTTLS; the server's answer."""
    with smtplib.SMTP(HOST, 587, timeout=30, source_address=source) as smtp:
        smtp.ehlo("client.e2e.test")
        smtp.starttls(context=INSECURE)
        smtp.ehlo("client.e2e.test")
        smtp.login(user, password)
        refused = smtp.sendmail(sender, [recipient], message(sender, recipient, subject))
        return {"ok": not refused, "refused": {k: list(map(str, v)) for k, v in refused.items()}}


def cmd_send(user, password, sender, recipient, subject):
    try:
        return submit(user, password, sender, recipient, subject)
    except smtplib.SMTPException as e:
        return {"ok": False, "error": str(e), "code": getattr(e, "smtp_code", None)}


def cmd_burst(user, password, sender, recipient, count):
    """Sends `count` messages one after another; which were accepted."""
    results = []
    for n in range(int(count)):
        try:
            submit(user, password, sender, recipient, f"burst {n}")
            results.append({"n": n, "ok": True})
        except smtplib.SMTPException as e:
            results.append({"n": n, "ok": False, "code": getattr(e, "smtp_code", None), "error": str(e)})
    return {"results": results}


def cmd_inbound(sender, recipient, subject, source="127.0.0.1"):
    """Unauthenticated SMTP on port 25, as another mail server would deliver, from
    `source`: a loopback address other than 127.0.0.1 is outside the role's mynetworks,
    like a client on the Internet."""
    try:
        with smtplib.SMTP(HOST, 25, timeout=30, source_address=(source, 0)) as smtp:
            smtp.ehlo("mx.outside.example")
            refused = smtp.sendmail(sender, [recipient], message(sender, recipient, subject))
            return {"ok": not refused}
    except smtplib.SMTPRecipientsRefused as e:
        return {"ok": False, "code": list(e.recipients.values())[0][0], "error": str(e)}
    except smtplib.SMTPException as e:
        return {"ok": False, "code": getattr(e, "smtp_code", None), "error": str(e)}


def cmd_fetch(user, password, subject, wait="60", save=None):
    """Waits for a message with `subject` over IMAPS and returns it whole (and saves it
    to `save`, for dkim-verify)."""
    deadline = time.time() + float(wait)
    while True:
        with imaplib.IMAP4_SSL(HOST, 993, ssl_context=INSECURE, timeout=30) as imap:
            imap.login(user, password)
            imap.select("INBOX", readonly=True)
            _, found = imap.search(None, "SUBJECT", f'"{subject}"')
            ids = found[0].split()
            if ids:
                _, data = imap.fetch(ids[-1], "(RFC822)")
                if save:
                    open(save, "wb").write(data[0][1])
                return {"ok": True, "message": data[0][1].decode("utf-8", "replace")}
        if time.time() > deadline:
            return {"ok": False, "error": f"no message with subject {subject!r} after {wait} s"}
        time.sleep(1)


class IMAP4From(imaplib.IMAP4):
    """IMAP from a chosen source address: Dovecot trusts 127.0.0.1 as if it were TLS."""

    def __init__(self, source, *args, **kwargs):
        self.source = source
        super().__init__(*args, **kwargs)

    def _create_socket(self, timeout):
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def cmd_imap_starttls(user, password, source):
    """IMAP on 143 from `source`: login is refused before STARTTLS and accepted after."""
    with IMAP4From(source, HOST, 143, timeout=30) as imap:
        try:
            imap.login(user, password)
            before = "accepted"
        except imaplib.IMAP4.error as e:
            before = f"refused: {e}"
    with IMAP4From(source, HOST, 143, timeout=30) as imap:
        imap.starttls(ssl_context=INSECURE)
        imap.login(user, password)
        after = "accepted"
    return {"before_starttls": before, "after_starttls": after}


def cmd_bad_logins(user, count, source):
    """Failed SMTP logins on 587 from `source` (a loopback address); then whether that
    address can still connect."""
    answers = []
    for n in range(int(count)):
        try:
            with smtplib.SMTP(HOST, 587, timeout=10, source_address=(source, 0)) as smtp:
                smtp.ehlo("client.e2e.test")
                smtp.starttls(context=INSECURE)
                smtp.ehlo("client.e2e.test")
                smtp.login(user, f"wrong-{n}")
                answers.append("accepted")
        except smtplib.SMTPAuthenticationError as e:
            answers.append(e.smtp_code)
        except (OSError, smtplib.SMTPException) as e:
            answers.append(f"{type(e).__name__}: {e}")
    return {"answers": answers}


def cmd_bad_imap_logins(user, count, source):
    """Failed IMAPS logins from `source`, as cmd_bad_logins for SMTP."""
    answers = []
    for n in range(int(count)):
        try:
            sock = socket.create_connection((HOST, 993), timeout=10, source_address=(source, 0))
            with INSECURE.wrap_socket(sock) as tls:
                tls.recv(1024)
                tls.sendall(f"a1 LOGIN {user} wrong-{n}\r\n".encode())
                answers.append(tls.recv(1024).decode(errors="replace").strip())
        except OSError as e:
            answers.append(f"{type(e).__name__}: {e}")
    return {"answers": answers}


def cmd_dkim_verify(path, txt_record_file):
    """Verifies the DKIM signature of the message in `path` against the TXT record in
    `txt_record_file` (what `placard dns` printed), not against the host's key file."""
    import dkim
    record = open(txt_record_file, "rb").read().strip()
    raw = open(path, "rb").read()
    def dns(name, timeout=5):
        return record
    return {"ok": bool(dkim.verify(raw, dnsfunc=dns))}


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    print(json.dumps(globals()[f"cmd_{command.replace('-', '_')}"](*args)))
