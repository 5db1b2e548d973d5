//! Clubs behind NAT (issue 12), end to end on real Debian 12 hosts on private networks
//! (tests/common/network.rs): a relay host on the public side, a club host behind a
//! router that masquerades, and the controller's end on the public side.

#[path = "common/network.rs"]
mod network;
#[path = "common/testbed.rs"]
mod testbed;

use std::time::Duration;

use network::ClubNetwork;
use testbed::Testbed;

/// Boots a host on one of the network's attachments, with apt sent through the
/// mirror path.
fn host_on(name: &str, namespace: &network::Namespace) -> Testbed {
    let bed = Testbed::up_in(name, "bookworm", Some(&namespace.path()));
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
