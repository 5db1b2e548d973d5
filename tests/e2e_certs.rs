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

use std::time::Instant;

use acme::{run, text, upstream, WebHost};
use testbed::stdout;

const CLUB_SITES: &str = "[{name: club.example, aliases: [www.club.example, members.club.example], root: /var/www/club, owner: www-data, certificate: club}]";
const CLUB_CERTIFICATE: &str =
    "[{name: club, domains: [club.example, www.club.example, members.club.example], services: [nginx]}]";

fn certificates_and_sites(host: &WebHost) {
    let started = Instant::now();
    // (1) One lineage for three names; each is served over HTTPS with a certificate
    // a client trusting only pebble's root verifies, for that name.
    host.inventory(CLUB_SITES, CLUB_CERTIFICATE);
    host.apply_ok("first apply");
    eprintln!("first apply: {:?}", started.elapsed());
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
    assert!(
        records.contains("CAA 0 issue \"letsencrypt.org\"")
            && records.contains("members.club.example"),
        "{records}"
    );

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

#[test]
fn certs_on_debian_12_one_lineage_expanded_served_and_kept_on_failure() {
    let host = WebHost::up("e2e-certs12", "bookworm");
    certificates_and_sites(&host);
}

#[test]
fn certs_on_debian_13_one_lineage_expanded_served_and_kept_on_failure() {
    let host = WebHost::up("e2e-certs13", "trixie");
    certificates_and_sites(&host);
}
