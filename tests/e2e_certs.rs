//! The web and certs roles (issue 8), end to end: a real Debian host (systemd-nspawn)
//! with nginx and certbot from Debian, ordering real certificates from pebble, Let's
//! Encrypt's test ACME server (Debian's `pebble` package), run here on loopback.
//!
//! How the pieces meet (pebble, the host's nginx on free ports, clients trusting only
//! pebble's root) is told in tests/common/acme.rs.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/testbed.rs"]
mod testbed;

use std::time::{Duration, Instant};

use acme::{run, text, upstream, WebHost, DNS_ZONE};
use testbed::stdout;

const CLUB_SITES: &str = "[{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}]";
const CLUB_CERTIFICATE: &str =
    "[{name: club, domains: [club.example, www.club.example, members.club.example], services: [nginx]}]";

fn certificates_and_sites(host: &WebHost) {
    let started = Instant::now();
    // (1) One lineage for three names; each is served over HTTPS with a certificate
    // a client trusting only pebble's root verifies, for that name.
    host.inventory(CLUB_SITES, CLUB_CERTIFICATE);
    let (output, _) = host.apply_ok_output("first apply");
    let report = stdout(&output);
    eprintln!("first apply: {:?}", started.elapsed());
    // Both roles changed nginx's files: nginx is reloaded once, by the web role's
    // handler; the certs role's, of the same name and action, is skipped.
    let reloads: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("\"handler\":true") && l.contains("\"task\":\"reload nginx\""))
        .collect();
    assert_eq!(reloads.len(), 2, "both roles notified it:\n{report}");
    assert!(
        reloads[0].contains("\"role\":\"web\"") && reloads[0].contains("\"status\":\"changed\""),
        "{reloads:?}"
    );
    assert!(
        reloads[1].contains("\"role\":\"certs\"") && reloads[1].contains("\"status\":\"skipped\""),
        "{reloads:?}"
    );
    assert_eq!(host.lineages(), ["club.conf"]);
    assert_eq!(host.pebble.orders(), 1, "one order:\n{}", host.pebble.log());
    std::fs::write(
        host.bed.root_path("/var/www/club/index.html"),
        "club pages\n",
    )
    .expect("write the site's page");
    let mut serial = String::new();
    for name in ["club.example", "www.club.example", "members.club.example"] {
        let (ok, answer) = host.https(name, "/");
        assert!(ok && answer.contains("club pages"), "{name}: {answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("strict-transport-security: max-age=31536000"),
            "HSTS on {name}: {answer}"
        );
        let (this_serial, details) = host.presented(name);
        for expected in [
            "DNS:club.example",
            "DNS:www.club.example",
            "DNS:members.club.example",
        ] {
            assert!(details.contains(expected), "{expected} in {details}");
        }
        serial = this_serial;
    }
    // HTTP redirects to HTTPS now that the certificate exists; challenges stay on HTTP.
    let redirect = host.http("www.club.example", "/page");
    assert!(
        redirect.contains("301")
            && redirect.contains(&format!(
                "Location: https://www.club.example:{}/page",
                host.https_port
            )),
        "{redirect}"
    );
    let probe = host.http(
        "www.club.example",
        "/.well-known/acme-challenge/placard-probe",
    );
    assert!(
        probe.contains("200 OK") && probe.contains("placard"),
        "{probe}"
    );
    // Unknown names are refused: the TLS handshake, and HTTP without an answer.
    let (ok, answer) = host.https("unknown.example", "/");
    assert!(!ok, "an unknown name must be refused: {answer}");
    let (ok, answer) = host.https("club.example", "/");
    assert!(ok, "control: a known name is served: {answer}");
    let unknown = host.http("unknown.example", "/");
    assert!(!unknown.contains("200 OK"), "{unknown}");
    // TLS below 1.2 is refused.
    let root = host.pebble.root_path().display().to_string();
    let old = run(
        20,
        &[
            "curl",
            "--silent",
            "--tlsv1.0",
            "--tls-max",
            "1.1",
            "--cacert",
            &root,
            "--resolve",
            &format!("club.example:{}:127.0.0.1", host.https_port),
            &format!("https://club.example:{}/", host.https_port),
        ],
    );
    assert!(!old.status.success(), "TLS 1.1 must be refused");

    // Private keys never enter /etc's history.
    let files = run(
        30,
        &[
            "git",
            "-C",
            &host.bed.root_path("/etc").display().to_string(),
            "ls-files",
        ],
    );
    let files = String::from_utf8_lossy(&files.stdout).into_owned();
    assert!(
        files.contains("letsencrypt/renewal/club.conf"),
        "the lineage's configuration is recorded"
    );
    assert!(files.contains("nginx/sites-enabled/placard-club.example.conf"));
    for private in [
        "letsencrypt/archive/",
        "letsencrypt/accounts/",
        "letsencrypt/keys/",
        ".key",
    ] {
        assert!(
            !files.lines().any(|f| f.contains(private)),
            "`{private}` is in /etc's git:\n{files}"
        );
    }
    // live/NAME/privkey.pem is recorded as what it is, a symbolic link into archive/;
    // no commit holds a private key itself.
    let etc = host.bed.root_path("/etc").display().to_string();
    let revisions = run(30, &["git", "-C", &etc, "rev-list", "--all"]);
    for revision in String::from_utf8_lossy(&revisions.stdout).lines() {
        let found = run(
            30,
            &["git", "-C", &etc, "grep", "-l", "PRIVATE KEY", revision],
        );
        assert!(
            found.stdout.is_empty(),
            "a private key in /etc's history: {}",
            text(&found)
        );
    }

    // `placard dns` reminds the admin of the CAA and address records the names need.
    let dns = host.bed.placard(&["dns", &host.bed.host.name]);
    let records = stdout(&dns);
    assert_eq!(dns.status.code(), Some(0), "placard dns:\n{records}");
    for record in [
        "club.example. IN CAA 0 issue \"letsencrypt.org\"",
        "www.club.example. IN CAA 0 issue \"letsencrypt.org\"",
        "members.club.example. IN CAA 0 issue \"letsencrypt.org\"",
        "; A/AAAA: this host's address is not known",
    ] {
        assert!(records.contains(record), "{record} in:\n{records}");
    }

    // The roles' health checks pass.
    let verify = host.bed.placard(&["verify"]);
    assert_eq!(
        verify.status.code(),
        Some(0),
        "placard verify:\n{}",
        stdout(&verify)
    );

    // (7) A second apply changes nothing and orders nothing.
    let started = Instant::now();
    assert_eq!(
        host.apply_ok("second apply"),
        0,
        "a second apply changes nothing"
    );
    eprintln!("no-op apply: {:?}", started.elapsed());
    assert_eq!(host.pebble.orders(), 1, "no order on a no-op apply");

    // (4) A renewal by certbot's own means (the timer's `certbot renew`, forced): the
    // deploy hook reloads nginx, which then presents the new certificate; nginx is
    // reloaded, not restarted (same main PID). Then placard still has nothing to do.
    let pid = || {
        host.bed
            .ssh("systemctl show --property MainPID --value nginx")
            .trim()
            .to_string()
    };
    let nginx_pid = pid();
    host.bed.ssh(
        "REQUESTS_CA_BUNDLE=/root/pebble-minica.pem timeout 300 certbot renew --force-renewal --no-random-sleep-on-renew --cert-name club --non-interactive",
    );
    // nginx's reload returns before its new workers answer: wait a little for them.
    let (renewed_serial, _) = host.presented_when("www.club.example", |now, _| now != serial);
    assert_ne!(
        renewed_serial, serial,
        "nginx presents the renewed certificate"
    );
    assert_eq!(pid(), nginx_pid, "nginx was reloaded, not restarted");
    assert_eq!(host.pebble.orders(), 2, "the renewal is one order");
    assert_eq!(host.apply_ok("apply after a renewal"), 0);
    assert_eq!(host.pebble.orders(), 2, "no order on a no-op apply");
    let serial = renewed_serial;

    // (3) radio.club.example, a reverse proxy, joins the same lineage: one new order.
    let upstream_port = upstream("radio upstream\n");
    let sites = format!(
        "[{{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}}, \
         {{name: radio.club.example, proxy: \"http://127.0.0.1:{upstream_port}\", certificate: club}}]"
    );
    let expanded = "[{name: club, domains: [club.example, www.club.example, members.club.example, radio.club.example], services: [nginx]}]";
    host.inventory(&sites, expanded);
    assert!(host.apply_ok("expanding apply") > 0);
    assert_eq!(host.lineages(), ["club.conf"], "the same lineage, expanded");
    assert_eq!(host.pebble.orders(), 3, "one new order");
    let (ok, answer) = host.https("radio.club.example", "/");
    assert!(
        ok && answer.contains("radio upstream"),
        "the proxy over HTTPS: {answer}"
    );
    let (expanded_serial, details) =
        host.presented_when("club.example", |_, details| details.contains("radio"));
    assert!(details.contains("DNS:radio.club.example"), "{details}");
    assert_ne!(expanded_serial, serial, "a new certificate");
    assert_eq!(host.apply_ok("apply after expanding"), 0);
    assert_eq!(host.pebble.orders(), 3, "no order on a no-op apply");

    // (5) A name that cannot be validated: the host fails with certbot's reason, the
    // previous certificate stays served, and no second lineage appears.
    let renewal_before = host.bed.read("/etc/letsencrypt/renewal/club.conf");
    host.pebble.servfail("nowhere.club.example");
    let failing = "[{name: club, domains: [club.example, www.club.example, members.club.example, radio.club.example, nowhere.club.example], services: [nginx]}]";
    host.inventory(&sites, failing);
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "the host fails:\n{report}");
    assert!(
        report.contains("Domain: nowhere.club.example") && report.contains("could not resolve"),
        "certbot's reason is reported:\n{report}"
    );
    let (still, details) = host.presented("radio.club.example");
    assert_eq!(
        still, expanded_serial,
        "the previous certificate is still served"
    );
    assert!(!details.contains("nowhere"), "{details}");
    assert_eq!(host.lineages(), ["club.conf"]);
    assert_eq!(
        host.bed.read("/etc/letsencrypt/renewal/club.conf"),
        renewal_before,
        "the lineage's configuration is as it was"
    );
    let nginx = host.bed.ssh_output("nginx -t");
    assert!(nginx.status.success(), "nginx's configuration is whole");

    // Back to the names that work: nothing to order, nothing to change.
    host.inventory(&sites, expanded);
    assert_eq!(host.apply_ok("apply after the failure"), 0);
    assert_eq!(host.pebble.orders(), 4, "only the failed order was added");

    // A site nginx -t refuses (its upstream's name does not resolve) never replaces a
    // working configuration: the host fails naming nginx's reason, the file is not left
    // in place, and the other sites are still served.
    let broken = format!(
        "[{{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}}, \
         {{name: radio.club.example, proxy: \"http://127.0.0.1:{upstream_port}\", certificate: club}}, \
         {{name: broken.club.example, proxy: \"http://upstream.invalid:8000\"}}]"
    );
    host.inventory(&broken, expanded);
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "a broken site fails the host:\n{report}"
    );
    assert!(
        report.contains("host not found in upstream"),
        "nginx's reason:\n{report}"
    );
    assert!(
        host.bed
            .read("/etc/nginx/sites-enabled/placard-broken.club.example.conf")
            .is_none(),
        "the refused site is not left in place"
    );
    assert!(host.bed.ssh_output("nginx -t").status.success());
    let (ok, answer) = host.https("www.club.example", "/");
    assert!(ok && answer.contains("club pages"), "{answer}");
    host.inventory(&sites, expanded);
    assert_eq!(host.apply_ok("apply after the refused site"), 0);

    // Removing a name shrinks the same lineage: one order, still one lineage.
    host.inventory(CLUB_SITES, CLUB_CERTIFICATE);
    assert!(host.apply_ok("apply without radio.club.example") > 0);
    assert_eq!(host.lineages(), ["club.conf"], "the same lineage, shrunk");
    assert!(
        host.bed
            .read("/etc/nginx/sites-enabled/placard-radio.club.example.conf")
            .is_none(),
        "a site no longer listed is no longer served"
    );
    assert_eq!(host.pebble.orders(), 5, "one new order");
    let (_, details) = host.presented_when("club.example", |_, details| !details.contains("radio"));
    assert!(!details.contains("DNS:radio.club.example"), "{details}");
    assert!(details.contains("DNS:members.club.example"), "{details}");
    assert_eq!(host.apply_ok("apply after shrinking"), 0);
    assert_eq!(host.pebble.orders(), 5, "no order on a no-op apply");
}

const ALICE_SITES: &str =
    "{name: radio.alice.members.club.example, root: /var/www/radio-alice, certificate: alice}, \
     {name: blog.alice.members.club.example, root: /var/www/blog-alice, certificate: alice}";
const ALICE_CERTIFICATE: &str = "{name: alice, domains: [alice.members.club.example, \"*.alice.members.club.example\"], challenge: dns, services: [nginx]}";
const TSIG_KEY: &str = "certbot-e2e-host";

/// (2) DNS-01: a wildcard lineage for alice's subdomain, proven by RFC 2136 updates to
/// BIND signed with the TSIG key the role generated on the host; two sub-sub-domains
/// served over HTTPS with it. Runs on the host `certificates_and_sites` left.
fn wildcard_by_dns(host: &WebHost) {
    let sites = format!("[{}, {ALICE_SITES}]", &CLUB_SITES[1..CLUB_SITES.len() - 1]);
    let certificates = format!(
        "[{}, {ALICE_CERTIFICATE}]",
        &CLUB_CERTIFICATE[1..CLUB_CERTIFICATE.len() - 1]
    );
    let vars = format!(
        "certs_dns_server: 127.0.0.1\ncerts_dns_port: {}\ncerts_tsig_key_name: {TSIG_KEY}\ncerts_dns_propagation_seconds: 1\n\
         certs_public_ipv4: 192.0.2.10",
        host.pebble.dns_port
    );
    host.inventory_with(&[], &sites, &certificates, &vars);
    // The first apply generates the key's secret on the host; BIND does not know the
    // key yet, so it refuses the update and the order fails: the host fails, with no
    // lineage half made.
    let (output, _) = host.apply();
    let first_report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the server does not know the key yet:\n{first_report}"
    );
    assert_eq!(host.lineages(), ["club.conf"], "no lineage half made");
    let secret = host
        .bed
        .read("/var/lib/placard/secrets/certs-tsig")
        .expect("the TSIG secret is generated on the host");
    let secret = secret.trim().to_string();
    assert_eq!(secret.len(), 44, "a base64 secret of 33 bytes: {secret}");
    let mode = |path: &str| {
        host.bed
            .ssh(&format!("stat -c %a {path}"))
            .trim()
            .to_string()
    };
    assert_eq!(mode("/var/lib/placard/secrets/certs-tsig"), "600");
    assert_eq!(mode("/etc/letsencrypt/placard-rfc2136.ini"), "600");
    // The admin gives the key to the DNS server; then the order goes through.
    host.pebble.trust_key(TSIG_KEY, &secret);
    let orders_before = host.pebble.orders();
    let (output, _) = host.apply();
    let report = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "the dns order with the key known:\n{report}\nBIND:\n{}",
        host.pebble.named_log()
    );
    assert_eq!(host.lineages(), ["alice.conf", "club.conf"]);
    assert_eq!(host.pebble.orders(), orders_before + 1, "one order");
    assert!(
        host.pebble
            .named_log()
            .contains(&format!("key {TSIG_KEY}: updating zone '{DNS_ZONE}/IN'")),
        "the challenge went through BIND's signed updates:\n{}",
        host.pebble.named_log()
    );
    for name in [
        "radio.alice.members.club.example",
        "blog.alice.members.club.example",
    ] {
        let folder = format!(
            "/var/www/{}-alice/index.html",
            &name[..name.find('.').unwrap_or(0)]
        );
        std::fs::write(host.bed.root_path(&folder), format!("{name} pages\n"))
            .expect("write the site's page");
        // nginx's reload returns before its new workers answer: wait for the wildcard.
        let (_, details) = host.presented_when(name, |_, details| {
            details.contains("DNS:*.alice.members.club.example")
        });
        assert!(
            details.contains("DNS:*.alice.members.club.example")
                && details.contains("DNS:alice.members.club.example"),
            "{name}: {details}"
        );
        let (ok, answer) = host.https(name, "/");
        assert!(
            ok && answer.contains(&format!("{name} pages")),
            "{name}: {answer}"
        );
    }
    // The club's lineage is untouched.
    let (_, details) = host.presented("www.club.example");
    assert!(!details.contains("alice"), "{details}");

    // The secret is in no output and not in /etc's git, nor in any of its commits.
    assert!(
        !first_report.contains(&secret) && !report.contains(&secret),
        "the secret was printed"
    );
    let etc = host.bed.root_path("/etc").display().to_string();
    let files = run(30, &["git", "-C", &etc, "ls-files"]);
    let files = String::from_utf8_lossy(&files.stdout).into_owned();
    assert!(!files.contains("placard-rfc2136.ini"), "{files}");
    assert!(files.contains("letsencrypt/renewal/alice.conf"));
    let revisions = run(30, &["git", "-C", &etc, "rev-list", "--all"]);
    for revision in String::from_utf8_lossy(&revisions.stdout).lines() {
        let found = run(30, &["git", "-C", &etc, "grep", "-l", &secret, revision]);
        assert!(
            found.stdout.is_empty(),
            "the secret in /etc's history: {}",
            text(&found)
        );
    }

    // `placard dns`: the records, with the wildcard's CAA at the name under the star
    // (once), an A record for every name, and what the DNS server must know.
    let dns = host.bed.placard(&["dns", &host.bed.host.name]);
    let records = stdout(&dns);
    assert_eq!(dns.status.code(), Some(0), "placard dns:\n{records}");
    for record in [
        "club.example. IN A 192.0.2.10",
        "*.alice.members.club.example. IN A 192.0.2.10",
        "alice.members.club.example. IN A 192.0.2.10",
        "alice.members.club.example. IN CAA 0 issue \"letsencrypt.org\"",
        "must know the TSIG key certbot-e2e-host",
    ] {
        assert!(records.contains(record), "{record} in:\n{records}");
    }
    assert_eq!(
        records
            .matches("alice.members.club.example. IN CAA")
            .count(),
        1,
        "{records}"
    );
    assert!(
        !records.contains("*.alice.members.club.example. IN CAA"),
        "{records}"
    );
    assert!(!records.contains("address is not known"), "{records}");
    assert!(!records.contains(&secret), "the secret was printed");

    // A second apply changes nothing and orders nothing.
    assert_eq!(host.apply_ok("second apply with the dns lineage"), 0);
    assert_eq!(
        host.pebble.orders(),
        orders_before + 1,
        "no order on a no-op"
    );

    // certbot's own renewal uses the same challenge (its renewal configuration names
    // the rfc2136 plugin and the credentials): a new certificate, served.
    let (serial, _) = host.presented("radio.alice.members.club.example");
    host.bed.ssh(
        "REQUESTS_CA_BUNDLE=/root/pebble-minica.pem timeout 300 certbot renew --force-renewal --no-random-sleep-on-renew --cert-name alice --non-interactive",
    );
    let (renewed, _) =
        host.presented_when("blog.alice.members.club.example", |now, _| now != serial);
    assert_ne!(renewed, serial, "nginx presents the renewed wildcard");
    assert_eq!(host.apply_ok("apply after the wildcard's renewal"), 0);
}

/// Logs in over submission (587, STARTTLS) and IMAPS (993) as a mail client would,
/// verifying the certificate against pebble's root only and the name mail.club.example.
const MAIL_CLIENT: &str = r#"
import imaplib, smtplib, socket, ssl, sys
address, name, root, user, password = sys.argv[1:6]
context = ssl.create_default_context(cafile=root)  # pebble's root, and no other
smtp = smtplib.SMTP(address, 587, timeout=20)
smtp._host = name  # the name STARTTLS verifies (smtplib takes the address otherwise)
smtp.ehlo()
smtp.starttls(context=context)
smtp.ehlo()
smtp.login(user, password)
smtp.quit()
class Imaps(imaplib.IMAP4_SSL):
    def _create_socket(self, timeout):
        sock = socket.create_connection((address, 993), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=name)
imap = Imaps(address, 993, ssl_context=context, timeout=20)
imap.login(user, password)
imap.select("INBOX")
imap.logout()
print("logged in over 587 and 993")
"#;

/// (4, 6) The mail role on the same host, presenting the club's lineage (which now
/// covers mail.club.example), picked without `mail_certificate`: submission and IMAPS
/// present pebble's certificate, a client trusting only pebble's root logs in, and
/// certbot's renewal changes what nginx, Postfix and Dovecot present, reloading them and
/// restarting nothing else. Then mail.club.example moves to a lineage of its own, which
/// the mail role follows (the club lineage's renewals no longer reload the mail
/// services), and `mail_certificate: ""` goes back to the self-signed certificate.
fn mail_with_the_lineage(host: &WebHost, address: &str) {
    // One mail host at a time, across test programs too: the mail role's helper daemons
    // (postsrsd, OpenDKIM, postfwd) listen on fixed loopback ports, this machine's (see
    // tests/e2e_mail.rs); a mail host of another program made the packages' postinst fail.
    let _one_mail_host = testbed::exclusive("mail-daemons");
    let sites = format!("[{}, {ALICE_SITES}]", &CLUB_SITES[1..CLUB_SITES.len() - 1]);
    let certificates = format!(
        "[{{name: club, domains: [club.example, www.club.example, members.club.example, mail.club.example], services: [nginx]}}, {ALICE_CERTIFICATE}]"
    );
    let vars = format!(
        "certs_dns_server: 127.0.0.1\ncerts_dns_port: {}\ncerts_tsig_key_name: {TSIG_KEY}\ncerts_dns_propagation_seconds: 1\n\
         mail_domain: club.example\nmail_hostname: mail.club.example\nmail_postmaster: alice\n\
         mail_members: [{{name: alice}}]\nmail_listen_address: {address}",
        host.pebble.dns_port
    );
    host.inventory_with(&["mail"], &sites, &certificates, &vars);
    let orders = host.pebble.orders();
    assert!(host.apply_ok("apply with the mail role") > 0);
    assert_eq!(
        host.pebble.orders(),
        orders + 1,
        "club expanded with one order"
    );
    assert_eq!(host.lineages(), ["alice.conf", "club.conf"]);
    assert_eq!(host.apply_ok("second apply with the mail role"), 0);
    assert!(
        host.bed.read("/etc/ssl/certs/placard-mail.pem").is_none(),
        "no self-signed certificate when a lineage covers mail_hostname"
    );
    assert_eq!(
        host.bed
            .read("/etc/letsencrypt/placard-services.d/mail.list")
            .as_deref(),
        Some("club postfix\nclub dovecot\n"),
        "the lineage covering mail.club.example is the mail role's, and reloads Postfix and Dovecot"
    );

    let submission = format!("{address}:587");
    let imaps = format!("{address}:993");
    let (smtp_serial, details) = host.presented_by(&submission, "mail.club.example", Some("smtp"));
    assert!(details.contains("DNS:mail.club.example"), "{details}");
    let (imap_serial, _) = host.presented_by(&imaps, "mail.club.example", None);
    let (web_serial, _) = host.presented("www.club.example");
    assert_eq!(
        smtp_serial, imap_serial,
        "Postfix and Dovecot present the lineage"
    );
    assert_eq!(smtp_serial, web_serial, "as nginx does");

    let password = host
        .bed
        .read("/var/lib/placard/secrets/mail-alice")
        .expect("alice's password");
    let client = host.pebble.dir.path().join("mail-client.py");
    std::fs::write(&client, MAIL_CLIENT).expect("write the mail client");
    let root = host.pebble.root_path().display().to_string();
    let login = run(
        60,
        &[
            "python3",
            &client.display().to_string(),
            address,
            "mail.club.example",
            &root,
            "alice",
            password.trim(),
        ],
    );
    assert!(
        login.status.success(),
        "a client trusting pebble's root logs in: {}",
        text(&login)
    );

    // certbot's renewal: nginx, Postfix and Dovecot present the new certificate, each
    // reloaded (same main PID); the services outside the lineage are not restarted.
    let pid = |unit: &str| {
        host.bed
            .ssh(&format!("systemctl show --property MainPID --value {unit}"))
            .trim()
            .to_string()
    };
    let postfix_master = || {
        host.bed
            .read("/var/spool/postfix/pid/master.pid")
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let units = ["nginx", "dovecot", "opendkim", "postsrsd", "fail2ban"];
    let before: Vec<String> = units.iter().map(|u| pid(u)).collect();
    let master = postfix_master();
    assert!(!master.is_empty(), "Postfix's master runs");
    host.bed.ssh(
        "REQUESTS_CA_BUNDLE=/root/pebble-minica.pem timeout 300 certbot renew --force-renewal --no-random-sleep-on-renew --cert-name club --non-interactive",
    );
    let (web_now, _) = host.presented_when("www.club.example", |now, _| now != web_serial);
    assert_ne!(
        web_now, web_serial,
        "nginx presents the renewed certificate"
    );
    let (smtp_now, _) =
        host.presented_by_when(&submission, "mail.club.example", Some("smtp"), |now, _| {
            now != smtp_serial
        });
    assert_eq!(
        smtp_now, web_now,
        "Postfix presents the renewed certificate"
    );
    let (imap_now, _) = host.presented_by_when(&imaps, "mail.club.example", None, |now, _| {
        now != imap_serial
    });
    assert_eq!(
        imap_now, web_now,
        "Dovecot presents the renewed certificate"
    );
    let after: Vec<String> = units.iter().map(|u| pid(u)).collect();
    assert_eq!(
        after, before,
        "main PIDs of {units:?}: reloaded or untouched"
    );
    assert_eq!(
        postfix_master(),
        master,
        "Postfix was reloaded, not restarted"
    );
    assert_eq!(host.apply_ok("apply after the renewal"), 0);

    // mail.club.example moves to a lineage of its own: the mail role takes it, and the
    // club lineage's deploy hook no longer reloads Postfix and Dovecot.
    let certificates = format!(
        "[{{name: club, domains: [club.example, www.club.example, members.club.example], services: [nginx]}}, \
         {{name: mx, domains: [mail.club.example]}}, {ALICE_CERTIFICATE}]"
    );
    host.inventory_with(&["mail"], &sites, &certificates, &vars);
    let orders = host.pebble.orders();
    assert!(host.apply_ok("apply with mail.club.example in lineage mx") > 0);
    assert_eq!(
        host.pebble.orders(),
        orders + 2,
        "club reduced and mx ordered, one order each"
    );
    assert_eq!(host.lineages(), ["alice.conf", "club.conf", "mx.conf"]);
    assert_eq!(host.apply_ok("second apply with lineage mx"), 0);
    assert_eq!(
        host.bed
            .read("/etc/letsencrypt/placard-services.d/mail.list")
            .as_deref(),
        Some("mx postfix\nmx dovecot\n"),
        "the mail role's deploy-hook entry moved from club to mx"
    );
    let (smtp_mx, details) =
        host.presented_by_when(&submission, "mail.club.example", Some("smtp"), |now, _| {
            now != smtp_now
        });
    assert!(
        details.contains("DNS:mail.club.example") && !details.contains("DNS:www.club.example"),
        "Postfix presents lineage mx: {details}"
    );
    let (imap_mx, _) =
        host.presented_by_when(&imaps, "mail.club.example", None, |now, _| now != imap_now);
    assert_eq!(imap_mx, smtp_mx, "Dovecot presents lineage mx too");
    // The deploy hook as certbot runs it after a renewal: club's reloads nginx only,
    // mx's reloads Dovecot (Dovecot's reloads counted in its journal).
    let dovecot_reloads = || -> usize {
        host.bed
            .ssh("journalctl --no-pager -o cat -u dovecot.service | grep -c '^Reloading' || true")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let hook = |lineage: &str| {
        host.bed.ssh(&format!(
            "RENEWED_LINEAGE=/etc/letsencrypt/live/{lineage} /etc/letsencrypt/renewal-hooks/deploy/placard-reload-services && echo ran"
        ))
    };
    let reloads = dovecot_reloads();
    assert!(hook("club").contains("ran"), "club's deploy hook runs");
    assert!(hook("mx").contains("ran"), "mx's deploy hook runs");
    let deadline = Instant::now() + Duration::from_secs(20);
    while dovecot_reloads() == reloads && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        dovecot_reloads(),
        reloads + 1,
        "Dovecot is reloaded by mx's deploy hook only, not by club's"
    );

    // `mail_certificate: ""` wins over the lineage covering mail_hostname: self-signed.
    host.inventory_with(
        &["mail"],
        &sites,
        &certificates,
        &format!("{vars}\nmail_certificate: \"\""),
    );
    assert!(host.apply_ok("apply with mail_certificate empty") > 0);
    assert_eq!(host.apply_ok("second apply with mail_certificate empty"), 0);
    assert!(
        host.bed.read("/etc/ssl/certs/placard-mail.pem").is_some(),
        "the self-signed certificate is made"
    );
    assert_eq!(
        host.bed
            .read("/etc/letsencrypt/placard-services.d/mail.list"),
        None,
        "no lineage reloads the mail services"
    );
    assert_eq!(
        host.bed.ssh("postconf -h smtpd_tls_cert_file").trim(),
        "/etc/ssl/certs/placard-mail.pem",
        "Postfix presents the self-signed certificate"
    );
}

#[test]
fn certs_on_debian_12_one_lineage_expanded_served_and_kept_on_failure() {
    let host = WebHost::up("e2e-certs12", "bookworm");
    certificates_and_sites(&host);
    wildcard_by_dns(&host);
    mail_with_the_lineage(&host, "127.0.0.72");
}

#[test]
fn certs_on_debian_13_one_lineage_expanded_served_and_kept_on_failure() {
    let host = WebHost::up("e2e-certs13", "trixie");
    certificates_and_sites(&host);
    wildcard_by_dns(&host);
    mail_with_the_lineage(&host, "127.0.0.73");
}
