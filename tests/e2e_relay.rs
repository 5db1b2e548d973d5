//! Clubs behind NAT (issue 12), end to end on real Debian 12 hosts on private networks
//! (tests/common/network.rs): a relay host on the public side, a club host behind a
//! router that masquerades, and the controller's end on the public side.
//!
//! The club's HTTPS site: pebble (the CA) runs on the public side, in the controller's
//! namespace, and validates HTTP-01 at the relay's public port 80, which the relay
//! passes through the club's tunnel to the club's nginx: the certificate is ordered
//! through the relay (HTTP-01 reaches, so no DNS-01 is needed), as it would be for a
//! club whose name points at its relay.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/network.rs"]
mod network;
#[path = "common/testbed.rs"]
mod testbed;

use std::process::Command;
use std::time::{Duration, Instant};

use network::ClubNetwork;
use testbed::{placard_at, stderr, stdout, summary, Testbed};

/// Boots a host on one of the network's attachments, with apt sent through the
/// mirror path.
fn host_on(name: &str, namespace: &network::Namespace) -> Testbed {
    host_of(name, "bookworm", namespace)
}

/// [`host_on`] with Debian `suite`.
fn host_of(name: &str, suite: &str, namespace: &network::Namespace) -> Testbed {
    let bed = Testbed::up_in(name, suite, Some(&namespace.path()));
    std::fs::write(
        bed.root_path("/etc/apt/apt.conf.d/00-testbed-proxy"),
        ClubNetwork::apt_proxy_conf(),
    )
    .expect("write the apt proxy");
    bed
}

#[test]
fn the_club_lan_reaches_the_relay_but_the_public_side_cannot_reach_the_club() {
    let net = ClubNetwork::new();
    let relay = host_on("e2e-nat-relay", &net.relay.namespace);
    let club = host_on("e2e-nat-club", &net.club.namespace);
    let wait = Duration::from_secs(5);

    // Outbound from the club LAN, through the router's NAT, to the relay's sshd: the
    // relay sees the router's address, as a VPS sees a club's home connection.
    assert!(net
        .club
        .namespace
        .can_connect(&net.relay.address, relay.host.port, wait));
    let seen_from = club.ssh(&format!(
        "timeout 10 ssh -o BatchMode=yes -o StrictHostKeyChecking=no -p {} probe@{} true 2>&1 || true",
        relay.host.port, net.relay.address
    ));
    assert!(
        seen_from.contains("Permission denied"),
        "the club host reaches the relay's sshd: {seen_from}"
    );
    // The controller reaches the relay.
    assert!(net
        .controller
        .can_connect(&net.relay.address, relay.host.port, wait));
    // The control case of the next assertion: the club's sshd answers on its own LAN.
    assert!(net
        .club
        .namespace
        .can_connect(&net.club.address, club.host.port, wait));
    // From the public side the club host is not reachable, though the controller has
    // a route to the LAN through the router: the router drops new inbound connections.
    assert!(!net
        .controller
        .can_connect(&net.club.address, club.host.port, wait));
    assert!(!net
        .relay
        .namespace
        .can_connect(&net.club.address, club.host.port, wait));

    // Packages reach the club host through the mirror path on the public side.
    let update = club.ssh_output("apt-get update -q 2>&1");
    let text = String::from_utf8_lossy(&update.stdout);
    assert!(update.status.success(), "apt-get update failed: {text}");
}

/// The host's ed25519 public key as `ssh-ed25519 AAAA…`, read from its tree.
fn host_key(bed: &Testbed) -> String {
    let line = bed
        .read("/etc/ssh/ssh_host_ed25519_key.pub")
        .expect("the host's public key");
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ssh ARGS` from the controller's namespace under `timeout 10`, with this
/// machine's OpenSSH client (not placard's transport).
fn ssh_from(namespace: &network::Namespace, args: &[&str]) -> std::process::Output {
    Command::new("nsenter")
        .arg(format!("--net={}", namespace.path().display()))
        .args(["timeout", "10", "ssh", "-o", "BatchMode=yes"])
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args(args)
        .output()
        .expect("run ssh")
}

const LISTEN_PORT: u16 = 2201;
const SPARE_PORT: u16 = 2202;
const OTHER_CLUB_PORT: u16 = 2301;
/// The club's published service: its tunnel listens on the relay's loopback port
/// SITE_PORT, which the relay publishes on PUBLIC_PORT. (The service is the club's
/// sshd: any TCP service would do, and its banner says who answered.)
const SITE_PORT: u16 = 2203;
const PUBLIC_PORT: u16 = 8022;
/// The club's web site: the relay's public ports 80 and 443 (the relay has a network
/// of its own, so these are free) lead to the tunnel's loopback ports 2280 and 2443,
/// which lead to the club's nginx on its ports 80 and 443, arriving at 127.0.0.9.
const TUNNEL_HTTP_PORT: u16 = 2280;
const TUNNEL_HTTPS_PORT: u16 = 2443;
const SITE: &str = "www.club.example";

/// GET https://SITE/PATH at the relay's public port 443, from the public side, trusting
/// only pebble's root: (whether curl succeeded, status line and body).
/// A club's tunnel key, at the relay's `destination`: the other club's port is
/// refused ("remote port forwarding failed"), and so is a shell.
fn refused_other_port_and_shell(net: &ClubNetwork, key: &str, port: &str, destination: &str) {
    let foreign = ssh_from(
        &net.controller,
        &[
            "-i",
            key,
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ExitOnForwardFailure=yes",
            "-p",
            port,
            "-N",
            "-R",
            &format!("127.0.0.1:{OTHER_CLUB_PORT}:localhost:22"),
            destination,
        ],
    );
    assert_eq!(foreign.status.code(), Some(255), "{}", stderr(&foreign));
    assert!(
        stderr(&foreign).contains("remote port forwarding failed"),
        "{}",
        stderr(&foreign)
    );
    let shell = ssh_from(
        &net.controller,
        &[
            "-i",
            key,
            "-o",
            "IdentitiesOnly=yes",
            "-p",
            port,
            destination,
            "id",
        ],
    );
    assert!(!shell.status.success());
    assert!(!stdout(&shell).contains("uid="), "{}", stdout(&shell));
}

fn https_through_relay(net: &ClubNetwork, pebble: &acme::Pebble, path: &str) -> (bool, String) {
    let root = pebble.root_path().display().to_string();
    let resolve = format!("{SITE}:443:{}", net.relay.address);
    let url = format!("https://{SITE}{path}");
    let output = Command::new("nsenter")
        .arg(format!("--net={}", net.controller.path().display()))
        .args([
            "timeout",
            "20",
            "curl",
            "--silent",
            "--show-error",
            "--include",
        ])
        .args(["--cacert", &root, "--resolve", &resolve, &url])
        .output()
        .expect("run curl");
    (output.status.success(), acme::text(&output))
}

#[test]
fn a_club_host_behind_the_nat_is_applied_through_the_relay_and_its_key_opens_only_its_ports() {
    let net = ClubNetwork::new();
    let mut relay = host_on("e2e-rl-relay", &net.relay.namespace);
    let club = host_on("e2e-rl-club", &net.club.namespace);
    let dir = tempfile::tempdir().expect("a temporary folder");
    // The CA, on the public side: certbot on the club host reaches its API through the
    // NAT; it validates HTTP-01 at the relay's public port 80.
    let pebble = acme::Pebble::start_in(
        Some(&net.controller.path()),
        network::CONTROLLER_ADDRESS,
        80,
        &net.relay.address,
    );
    std::fs::copy(pebble.minica(), club.root_path("/root/pebble-minica.pem"))
        .expect("copy pebble's HTTPS CA onto the club host");

    // What the admin's known_hosts holds: the relay at its public address, the club
    // host on its LAN (for the first apply, from there) and behind the relay.
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[{relay_address}]:{relay_port} {relay_key}\n[{club_address}]:{club_port} {club_key}\n[127.0.0.1]:{LISTEN_PORT} {club_key}\n",
            relay_address = net.relay.address,
            relay_port = relay.host.port,
            relay_key = host_key(&relay),
            club_address = net.club.address,
            club_port = club.host.port,
            club_key = host_key(&club),
        ),
    )
    .expect("write known_hosts");
    let club_vars = format!(
        "relay_side: club\n      relay_host: {}\n      relay_port: {}\n      relay_host_key: \"{}\"\n      relay_listen_port: {LISTEN_PORT}\n      relay_forward_to_port: {}\n      relay_retry_seconds: 2\n      relay_forwards: [{{listen_port: {SITE_PORT}, to_port: {}}}, {{listen_port: {TUNNEL_HTTP_PORT}, to_port: 80}}, {{listen_port: {TUNNEL_HTTPS_PORT}, to_port: 443}}]\n",
        net.relay.address,
        relay.host.port,
        host_key(&relay),
        club.host.port,
        club.host.port
    );
    let inventory = dir.path().join("inventory.yml");
    let web_vars = format!(
        "web_sites: [{{name: {SITE}, root: /srv/club-site, local_only: [/admin], certificate: www}}]\n      certs_email: admin@club.example\n      certs_acme_server: {}\n      certs_ca_bundle: /root/pebble-minica.pem\n      certs_certificates: [{{name: www, domains: [{SITE}]}}]\n",
        pebble.directory_url()
    );
    let all_public_ports = format!("[{{port: {PUBLIC_PORT}, to: {SITE_PORT}}}, {{port: 25, to: {SITE_PORT}}}, {{port: 80, to: {TUNNEL_HTTP_PORT}}}, {{port: 443, to: {TUNNEL_HTTPS_PORT}}}]");
    let write_inventory = |relay_clubs: &str, public_ports: &str| {
        let text = format!(
            "ssh:\n  known_hosts: {known_hosts}\nhosts:\n  relay:\n    address: {relay_address}\n    port: {relay_port}\n    user: root\n    identity: {relay_identity}\n    roles: [relay]\n    vars:\n      relay_side: relay\n      relay_clubs: {relay_clubs}\n      relay_public_ports: {public_ports}\n  club-on-lan:\n    address: {club_address}\n    port: {club_port}\n    user: root\n    identity: {club_identity}\n    roles: [relay]\n    vars:\n      {club_vars}  club:\n    address: 127.0.0.1\n    port: {LISTEN_PORT}\n    via: relay\n    user: root\n    identity: {club_identity}\n    roles: [base, relay, web, certs]\n    vars:\n      base_hostname: club-server\n      {web_vars}      {club_vars}",
            known_hosts = known_hosts.display(),
            relay_address = net.relay.address,
            relay_port = relay.host.port,
            relay_identity = relay.paths.key().display(),
            club_address = net.club.address,
            club_port = club.host.port,
            club_identity = club.paths.key().display(),
        );
        std::fs::write(&inventory, text).expect("write the inventory");
    };
    let placard = |namespace: &network::Namespace, args: &[&str]| {
        placard_at(Some(&namespace.path()), &inventory, args)
    };
    write_inventory("[]", &all_public_ports);

    // 1. The club side, the first time from the club's LAN (the router's namespace is
    // on it), as an admin in the club's room would.
    let first = placard(&net.router, &["apply", "club-on-lan"]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let club_key = club
        .read("/etc/placard-relay/id_ed25519.pub")
        .expect("the club's tunnel key");
    let club_key = club_key.trim();
    let private = club
        .read("/etc/placard-relay/id_ed25519")
        .expect("the tunnel's private key");
    assert!(!private.is_empty());
    let mode = std::fs::metadata(club.root_path("/etc/placard-relay/id_ed25519"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the private key's mode");
    assert_eq!(mode, 0o600);
    // `placard dns` tells the admin what to put on the relay.
    let dns = placard(&net.router, &["dns", "club-on-lan"]);
    assert!(stdout(&dns).contains(club_key), "{}", stdout(&dns));

    // 2. The relay side, from the public side: the club's key, and another club's.
    let other = dir.path().join("other-club");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "other-club", "-f"])
        .arg(&other)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let other_key = std::fs::read_to_string(other.with_extension("pub")).expect("its key");
    let relay_clubs = format!(
        "[{{name: club, key: \"{club_key}\", ports: [{LISTEN_PORT}, {SPARE_PORT}, {SITE_PORT}, {TUNNEL_HTTP_PORT}, {TUNNEL_HTTPS_PORT}]}}, {{name: other, key: \"{}\", ports: [{OTHER_CLUB_PORT}]}}]",
        other_key.trim()
    );
    write_inventory(&relay_clubs, &all_public_ports);
    let sent_before = net.controller.sent_bytes("eth0");
    let relay_apply = placard(&net.controller, &["apply", "relay"]);
    // A measurement for docs/benchmarks.md, not an assertion: what a first contact
    // costs the controller's uplink (SSH, the agent's upload, the bundle). The relay
    // side installs no package, so nothing else crosses this link meanwhile; the club
    // host's apt downloads do (the mirror path is on this side), so it is not measured
    // there.
    eprintln!(
        "MEASURED bytes sent by the controller on its first contact with the relay: {}",
        net.controller.sent_bytes("eth0") - sent_before
    );
    assert_eq!(
        relay_apply.status.code(),
        Some(0),
        "{}",
        stderr(&relay_apply)
    );
    let again = placard(&net.controller, &["apply", "relay"]);
    assert_eq!(summary(&again), "1 host: 1 unchanged, 0 changed, 0 failed");

    // 3. The tunnel comes up by itself (systemd retries every 2 s).
    let deadline = Instant::now() + Duration::from_secs(90);
    while relay
        .ssh(&format!("ss -Hltn 'sport = :{LISTEN_PORT}'"))
        .trim()
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "the tunnel did not come up: {}",
            club.ssh("systemctl status placard-relay-tunnel --no-pager -n 20 || true")
        );
        std::thread::sleep(Duration::from_secs(1));
    }

    // 4. From the public side only: the club host, through the relay.
    assert!(!net
        .controller
        .can_connect(&net.club.address, club.host.port, Duration::from_secs(5)));
    let through = placard(&net.controller, &["apply", "club"]);
    assert_eq!(through.status.code(), Some(0), "{}", stderr(&through));
    assert_eq!(
        summary(&through),
        "1 host: 0 unchanged, 1 changed, 0 failed"
    );
    assert_eq!(club.read("/etc/hostname").as_deref(), Some("club-server\n"));
    // The certificate was ordered with HTTP-01 through the relay's public port 80: the
    // club host has no other inbound route.
    assert!(
        club.read("/etc/letsencrypt/live/www/fullchain.pem")
            .is_some(),
        "no certificate: {}",
        stdout(&through)
    );
    for (path, text) in [
        ("/srv/club-site/index.html", "the club's site\n"),
        ("/srv/club-site/admin/index.html", "the club's admin page\n"),
    ] {
        let file = club.root_path(path);
        std::fs::create_dir_all(file.parent().expect("a folder")).expect("the site's folder");
        std::fs::write(file, text).expect("write the site");
    }
    let second = placard(&net.controller, &["apply", "club"]);
    assert_eq!(summary(&second), "1 host: 1 unchanged, 0 changed, 0 failed");

    // The club's published port answers on the relay's public address, from the club;
    // the tunnel's loopback port is not public, and port 25 was not asked for.
    let banner = net
        .controller
        .banner(&net.relay.address, PUBLIC_PORT, Duration::from_secs(10));
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner:?}");
    let wait = Duration::from_secs(5);
    assert!(!net
        .controller
        .can_connect(&net.relay.address, SITE_PORT, wait));
    assert!(!net.controller.can_connect(&net.relay.address, 25, wait));

    // The club's HTTPS site answers on the relay's public port 443, with the
    // certificate pebble issued (the client trusts only pebble's root); its local_only
    // path is refused there, as the connection arrives at the tunnel address, while a
    // client on the club host itself gets it.
    let (ok, page) = https_through_relay(&net, &pebble, "/");
    assert!(ok, "{page}");
    assert!(page.contains("the club's site"), "{page}");
    let (ok, admin) = https_through_relay(&net, &pebble, "/admin/");
    assert!(ok, "{admin}");
    assert!(admin.starts_with("HTTP/1.1 403"), "{admin}");
    let local = club.ssh(&format!(
        "curl --silent --insecure --resolve {SITE}:443:127.0.0.1 https://{SITE}/admin/"
    ));
    assert!(local.contains("the club's admin page"), "{local}");

    // A public port taken out of relay_public_ports is taken down: it no longer
    // answers, and the others still do; the next apply changes nothing.
    write_inventory(
        &relay_clubs,
        &format!("[{{port: 25, to: {SITE_PORT}}}, {{port: 80, to: {TUNNEL_HTTP_PORT}}}, {{port: 443, to: {TUNNEL_HTTPS_PORT}}}]"),
    );
    let removed = placard(&net.controller, &["apply", "relay"]);
    assert_eq!(
        summary(&removed),
        "1 host: 0 unchanged, 1 changed, 0 failed",
        "{}",
        stdout(&removed)
    );
    assert!(!net
        .controller
        .can_connect(&net.relay.address, PUBLIC_PORT, wait));
    assert!(relay
        .read("/etc/systemd/system/placard-relay-public-8022.socket")
        .is_none());
    let (ok, page) = https_through_relay(&net, &pebble, "/");
    assert!(ok && page.contains("the club's site"), "{page}");
    let again = placard(&net.controller, &["apply", "relay"]);
    assert_eq!(summary(&again), "1 host: 1 unchanged, 0 changed, 0 failed");

    // 5. The club's key opens its own spare port (ssh keeps running until `timeout`
    // ends it: 124), but not the other club's port, and no shell.
    let key = dir.path().join("club-key");
    std::fs::write(&key, &private).expect("copy the club's key");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let key = key.to_string_lossy().into_owned();
    let port = relay.host.port.to_string();
    let destination = format!("tunnel@{}", net.relay.address);
    let forward = |listen: u16| {
        ssh_from(
            &net.controller,
            &[
                "-i",
                &key,
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ExitOnForwardFailure=yes",
                "-p",
                &port,
                "-N",
                "-R",
                &format!("127.0.0.1:{listen}:localhost:22"),
                &destination,
            ],
        )
    };
    let own = forward(SPARE_PORT);
    assert_eq!(own.status.code(), Some(124), "{}", stderr(&own));
    refused_other_port_and_shell(&net, &key, &port, &destination);

    // 6. The relay host restarts (a clean halt and a boot): the tunnel comes back by
    // itself and the next apply goes through.
    relay.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let back = placard(&net.controller, &["apply", "club"]);
        if back.status.code() == Some(0) {
            assert_eq!(summary(&back), "1 host: 1 unchanged, 0 changed, 0 failed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the tunnel did not come back after the relay restarted"
        );
        std::thread::sleep(Duration::from_secs(2));
    }

    // 7. A club host that stops answering (its tunnel frozen) fails within the
    // connection deadline, naming the stage, and the relay in the same run is done.
    club.ssh("systemctl kill --signal=STOP placard-relay-tunnel");
    let stuck = placard(&net.controller, &["apply", "club", "relay"]);
    club.ssh("systemctl kill --signal=CONT placard-relay-tunnel");
    assert_eq!(stuck.status.code(), Some(1), "{}", stderr(&stuck));
    let report = stdout(&stuck);
    assert!(report.contains("timed out"), "{report}");
    assert!(report.contains("SSH handshake"), "{report}");
    assert_eq!(summary(&stuck), "2 hosts: 1 unchanged, 0 changed, 1 failed");
}

/// The relay side on Debian 13: trixie's OpenSSH (10.0) accepts the tunnel account's
/// `Match` block (`sshd -t` before it stays, and `sshd -T` shows it applies to that
/// account), a club's key forwards its own port, which the relay publishes, and
/// nothing else.
#[test]
fn the_relay_side_works_on_debian_13() {
    let net = ClubNetwork::new();
    let relay = host_of("e2e-rl13-relay", "trixie", &net.relay.namespace);
    let dir = tempfile::tempdir().expect("a temporary folder");
    let key = dir.path().join("club-key");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "club", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(keygen.success());
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("its key");
    let known_hosts = dir.path().join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!(
            "[{}]:{} {}\n",
            net.relay.address,
            relay.host.port,
            host_key(&relay)
        ),
    )
    .expect("write known_hosts");
    let inventory = dir.path().join("inventory.yml");
    std::fs::write(
        &inventory,
        format!(
            "ssh:\n  known_hosts: {}\nhosts:\n  relay:\n    address: {}\n    port: {}\n    user: root\n    identity: {}\n    roles: [relay]\n    vars:\n      relay_side: relay\n      relay_clubs: [{{name: club, key: \"{}\", ports: [{LISTEN_PORT}, {SITE_PORT}]}}]\n      relay_public_ports: [{{port: {PUBLIC_PORT}, to: {SITE_PORT}}}]\n",
            known_hosts.display(),
            net.relay.address,
            relay.host.port,
            relay.paths.key().display(),
            public.trim()
        ),
    )
    .expect("write the inventory");
    let first = placard_at(
        Some(&net.controller.path()),
        &inventory,
        &["apply", "relay"],
    );
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    let again = placard_at(
        Some(&net.controller.path()),
        &inventory,
        &["apply", "relay"],
    );
    assert_eq!(summary(&again), "1 host: 1 unchanged, 0 changed, 0 failed");
    assert!(
        relay.ssh("/usr/sbin/sshd -V 2>&1").contains("OpenSSH_10"),
        "not trixie's OpenSSH"
    );
    let effective = relay.ssh(&format!(
        "/usr/sbin/sshd -T -C user=tunnel,host=club,addr={} 2>&1",
        network::CONTROLLER_ADDRESS
    ));
    for line in [
        "allowtcpforwarding remote",
        "permitopen none",
        "permittty no",
        "forcecommand /usr/sbin/nologin",
    ] {
        assert!(effective.contains(line), "no `{line}` in:\n{effective}");
    }

    // The club's key publishes a service (here the relay's own sshd, reached from the
    // club's end) on its port; the relay's public port leads there.
    let key = key.to_string_lossy().into_owned();
    let port = relay.host.port.to_string();
    let destination = format!("tunnel@{}", net.relay.address);
    let tunnel = Command::new("nsenter")
        .arg(format!("--net={}", net.controller.path().display()))
        .args([
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
        ])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ExitOnForwardFailure=yes",
        ])
        .args([
            "-i",
            &key,
            "-o",
            "IdentitiesOnly=yes",
            "-p",
            &port,
            "-N",
            "-R",
        ])
        .arg(format!(
            "127.0.0.1:{SITE_PORT}:{}:{}",
            net.relay.address, relay.host.port
        ))
        .arg(&destination)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the tunnel");
    let tunnel = acme::Killed(tunnel);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let banner = net
            .controller
            .banner(&net.relay.address, PUBLIC_PORT, Duration::from_secs(5));
        if banner.starts_with("SSH-2.0-OpenSSH") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the published port did not answer: {banner:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(tunnel);
    refused_other_port_and_shell(&net, &key, &port, &destination);
}
