//! Private networks for test hosts: network namespaces joined by veth pairs and bridges,
//! made by the test and removed when it ends, so that a test can put hosts where a real
//! club's server is: behind a NAT, with no inbound route.
//!
//! [`ClubNetwork::new`] builds the one topology the relay tests need:
//!
//! ```text
//!   controller ns (the test's own end)       relay ns (a booted host)
//!     eth0 10.77.0.10 ──┐                  ┌── eth0 10.77.0.2
//!                       └── public bridge ─┤        (ns "pub", nothing else in it)
//!   router ns            ┌─────────────────┘
//!     wan 10.77.0.3 ─────┘   nftables: masquerade LAN → WAN, nothing new WAN → LAN
//!     lan 192.168.77.1 ── LAN bridge ── eth0 192.168.77.2  club ns (a booted host)
//! ```
//!
//! The router is a plain network namespace with nftables in it, not a booted host: it
//! does exactly what a club's box does (forward, masquerade, refuse new inbound
//! connections) and boots in no time. The controller's namespace has a route to the
//! club LAN through the router on purpose, as if the provider routed it: a failed
//! connection then proves the router's rules, not a missing route.
//!
//! Packages: hosts here have no route to the Debian mirror. [`MirrorPath`] listens in
//! the controller's namespace on 10.77.0.10:3142 and relays each connection to the
//! mirror (deb.debian.org:80) from this machine's own namespace; hosts get it as
//! apt's HTTP proxy (written into their tree by the test bed). Club hosts reach it
//! through the NAT like any host behind a home router reaches the internet. Nothing
//! else leaves the namespaces: they have no link to this machine's network.
//!
//! Every namespace is deleted by `Drop` (and with it every link in it), also when the
//! test fails; names carry the test process's pid and a counter.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use placard::sandbox::in_network_namespace;
use placard::system::command::run_ok;

const IP_TIMEOUT: Duration = Duration::from_secs(20);

pub const CONTROLLER_ADDRESS: &str = "10.77.0.10";
pub const RELAY_ADDRESS: &str = "10.77.0.2";
pub const ROUTER_WAN_ADDRESS: &str = "10.77.0.3";
pub const ROUTER_LAN_ADDRESS: &str = "192.168.77.1";
pub const MIRROR_PORT: u16 = 3142;

/// Runs `ip ARGS` under a deadline; panics with its error (a test bed that cannot be
/// built is a failed test).
fn ip(args: &[&str]) {
    let argv: Vec<&str> = std::iter::once("ip").chain(args.iter().copied()).collect();
    if let Err(error) = run_ok(&argv, IP_TIMEOUT) {
        panic!("`{}` failed: {error}", argv.join(" "));
    }
}

/// A named network namespace (/run/netns/NAME), deleted on drop.
pub struct Namespace {
    pub name: String,
}

impl Namespace {
    pub fn new(name: String) -> Namespace {
        // A leftover of a killed run with the same pid would make `add` fail.
        let _ = run_ok(&["ip", "netns", "del", &name], IP_TIMEOUT);
        ip(&["netns", "add", &name]);
        let namespace = Namespace { name };
        namespace.ip(&["link", "set", "lo", "up"]);
        namespace
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// `nsenter --net=… PROGRAM ARGS` under a deadline, returning stdout.
    pub fn run(&self, argv: &[&str]) -> String {
        let net = format!("--net={}", self.path().display());
        let all: Vec<&str> = ["nsenter", net.as_str()]
            .into_iter()
            .chain(argv.iter().copied())
            .collect();
        run_ok(&all, IP_TIMEOUT).unwrap_or_else(|e| panic!("`{}` failed: {e}", all.join(" ")))
    }

    /// The bytes `interface` in this namespace has sent so far (its kernel counter).
    pub fn sent_bytes(&self, interface: &str) -> u64 {
        let json = run_ok(
            &[
                "ip", "-n", &self.name, "-j", "-s", "link", "show", interface,
            ],
            IP_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("reading the counters of {interface}: {e}"));
        let links: serde_json::Value = serde_json::from_str(&json).expect("ip's JSON");
        links[0]["stats64"]["tx"]["bytes"]
            .as_u64()
            .expect("a tx byte counter")
    }

    /// A TCP connection from this namespace to `address:port`, when it is accepted
    /// within `timeout` (the socket stays in this namespace).
    pub fn connect(&self, address: &str, port: u16, timeout: Duration) -> Option<TcpStream> {
        let target = format!("{address}:{port}");
        in_network_namespace(&self.path(), move || {
            let addr = target
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
                .expect("a socket address");
            TcpStream::connect_timeout(&addr, timeout).ok()
        })
        .expect("enter the namespace")
    }

    /// Whether a TCP connection from this namespace to `address:port` is accepted
    /// within `timeout`.
    pub fn can_connect(&self, address: &str, port: u16, timeout: Duration) -> bool {
        self.connect(address, port, timeout).is_some()
    }

    /// The first line a TCP service at `address:port` sends, read from this namespace
    /// (empty when nothing answers within `timeout`).
    pub fn banner(&self, address: &str, port: u16, timeout: Duration) -> String {
        let Some(mut stream) = self.connect(address, port, timeout) else {
            return String::new();
        };
        let _ = stream.set_read_timeout(Some(timeout));
        let mut buffer = [0u8; 256];
        let count = stream.read(&mut buffer).unwrap_or(0);
        String::from_utf8_lossy(&buffer[..count])
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its links and their veth peers.
        if let Err(error) = run_ok(&["ip", "netns", "del", &self.name], IP_TIMEOUT) {
            eprintln!("cannot delete network namespace {}: {error}", self.name);
        }
    }
}

/// Joins namespace `a` (as `a_name`) and `b` (as `b_name`) with a veth pair made inside
/// them, so that no link ever exists in this machine's namespace.
fn veth(a: &Namespace, a_name: &str, b: &Namespace, b_name: &str) {
    ip(&[
        "link", "add", a_name, "netns", &a.name, "type", "veth", "peer", "name", b_name, "netns",
        &b.name,
    ]);
}

/// A host's place on a network: the namespace it boots in and its address there.
pub struct Attachment {
    pub namespace: Namespace,
    pub address: String,
}

/// The relay topology (see the module's picture). Build it with [`ClubNetwork::new`],
/// then boot hosts with `Testbed::up_in(name, suite, &attachment.namespace.path())`.
pub struct ClubNetwork {
    pub controller: Namespace,
    pub relay: Attachment,
    pub club: Attachment,
    pub router: Namespace,
    public: Namespace,
    mirror: MirrorPath,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl ClubNetwork {
    pub fn new() -> ClubNetwork {
        let prefix = format!(
            "pl{}n{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let public = Namespace::new(format!("{prefix}-pub"));
        public.ip(&["link", "add", "br0", "type", "bridge"]);
        public.ip(&["link", "set", "br0", "up"]);
        let on_public = |namespace: &Namespace, inside: &str, port: &str, address: &str| {
            veth(namespace, inside, &public, port);
            public.ip(&["link", "set", port, "master", "br0", "up"]);
            namespace.ip(&["addr", "add", &format!("{address}/24"), "dev", inside]);
            namespace.ip(&["link", "set", inside, "up"]);
        };

        let controller = Namespace::new(format!("{prefix}-ctl"));
        on_public(&controller, "eth0", "ctl", CONTROLLER_ADDRESS);
        let relay = Namespace::new(format!("{prefix}-relay"));
        on_public(&relay, "eth0", "relay", RELAY_ADDRESS);

        let router = Namespace::new(format!("{prefix}-rtr"));
        on_public(&router, "wan", "rtr", ROUTER_WAN_ADDRESS);
        router.ip(&["link", "add", "lan", "type", "bridge"]);
        router.ip(&[
            "addr",
            "add",
            &format!("{ROUTER_LAN_ADDRESS}/24"),
            "dev",
            "lan",
        ]);
        router.ip(&["link", "set", "lan", "up"]);
        router.run(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=1"]);
        let rules = "table inet club {
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname \"lan\" oifname \"wan\" accept
  }
  chain postrouting {
    type nat hook postrouting priority 100;
    oifname \"wan\" masquerade
  }
}
";
        let rules_file = tempfile::NamedTempFile::new().expect("a temporary file");
        std::fs::write(rules_file.path(), rules).expect("write the router's rules");
        router.run(&["nft", "-f", &rules_file.path().to_string_lossy()]);

        let club = Namespace::new(format!("{prefix}-club"));
        let club_address = "192.168.77.2";
        veth(&club, "eth0", &router, "club");
        router.ip(&["link", "set", "club", "master", "lan", "up"]);
        club.ip(&["addr", "add", &format!("{club_address}/24"), "dev", "eth0"]);
        club.ip(&["link", "set", "eth0", "up"]);
        club.ip(&["route", "add", "default", "via", ROUTER_LAN_ADDRESS]);

        // As if the provider routed the club's LAN to the public side: only the
        // router's rules keep the public side out.
        controller.ip(&["route", "add", "192.168.77.0/24", "via", ROUTER_WAN_ADDRESS]);
        relay.ip(&["route", "add", "192.168.77.0/24", "via", ROUTER_WAN_ADDRESS]);

        let mirror = MirrorPath::start(&controller);
        ClubNetwork {
            controller,
            relay: Attachment {
                namespace: relay,
                address: RELAY_ADDRESS.to_string(),
            },
            club: Attachment {
                namespace: club,
                address: club_address.to_string(),
            },
            router,
            public,
            mirror,
        }
    }

    /// The apt configuration that sends a host's downloads through [`MirrorPath`].
    pub fn apt_proxy_conf() -> String {
        format!(
            "// Written by the test bed: this host's only way to the Debian mirror.\n\
             Acquire::http::Proxy \"http://{CONTROLLER_ADDRESS}:{MIRROR_PORT}/\";\n"
        )
    }
}

/// The mirror's one way in: a listener in the controller's namespace whose
/// connections are relayed to deb.debian.org:80 from this machine's namespace. Only
/// the mirror is reached, whatever a client asks for. Stops on drop.
pub struct MirrorPath {
    stop: Arc<AtomicBool>,
    accepter: Option<thread::JoinHandle<()>>,
}

impl MirrorPath {
    fn start(controller: &Namespace) -> MirrorPath {
        let listener = in_network_namespace(&controller.path(), || {
            TcpListener::bind((CONTROLLER_ADDRESS, MIRROR_PORT))
        })
        .expect("enter the controller's namespace")
        .expect("listen for the mirror path");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        // This thread is in this machine's namespace: the connections it opens to the
        // mirror are too.
        let accepter = thread::spawn(move || {
            while !stopping.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        thread::spawn(move || relay_to_mirror(client));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        });
        MirrorPath {
            stop,
            accepter: Some(accepter),
        }
    }
}

impl Drop for MirrorPath {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(accepter) = self.accepter.take() {
            let _ = accepter.join();
        }
    }
}

fn relay_to_mirror(client: TcpStream) {
    let _ = client.set_nonblocking(false);
    let Some(mirror) = ("deb.debian.org", 80)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
    else {
        return;
    };
    let Ok(upstream) = TcpStream::connect_timeout(&mirror, Duration::from_secs(15)) else {
        return;
    };
    // An idle transfer ends the relay instead of holding a thread forever.
    for stream in [&client, &upstream] {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(120)));
    }
    let (Ok(client_back), Ok(upstream_back)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = thread::spawn(move || copy(client, upstream));
    copy(upstream_back, client_back);
    let _ = up.join();
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
