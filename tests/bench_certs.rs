//! Not a test: the benchmark of issue 8, run by `scripts/bench-certs` (ignored here, so
//! `cargo test` only builds it). A no-op `placard apply` of base + web + certs with 3
//! lineages and 6 sites, against `ssh host true`, on one Debian 12 host with pebble
//! beside it (tests/common/acme.rs). It prints a markdown table for
//! docs/benchmarks.md; it asserts only what makes the numbers meaningful: each no-op
//! run changes nothing, orders nothing and never starts certbot.

#[path = "common/acme.rs"]
mod acme;
#[path = "common/testbed.rs"]
mod testbed;

use std::time::{Duration, Instant};

use acme::WebHost;

const SITES: &str =
    "[{name: club.example, aliases: [www.club.example], root: /var/www/club, certificate: club}, \
    {name: members.club.example, root: /var/www/members, certificate: members}, \
    {name: alice.members.club.example, root: /var/www/alice, certificate: members}, \
    {name: bob.members.club.example, root: /var/www/bob, certificate: members}, \
    {name: radio.club.example, proxy: \"http://127.0.0.1:8000\", certificate: radio}, \
    {name: stream.club.example, proxy: \"http://127.0.0.1:8001\", certificate: radio}]";
const CERTIFICATES: &str = "[{name: club, domains: [club.example, www.club.example], services: [nginx]}, \
    {name: members, domains: [members.club.example, alice.members.club.example, bob.members.club.example], services: [nginx]}, \
    {name: radio, domains: [radio.club.example, stream.club.example], services: [nginx]}]";

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[test]
#[ignore = "a benchmark: scripts/bench-certs runs it"]
fn bench_noop_apply_base_web_certs() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let host = WebHost::up("bench-certs", "bookworm");
    host.inventory_with(&["base"], SITES, CERTIFICATES, "base_hostname: bench");
    // base first: the inventory lists web, certs, then base; the order does not
    // matter to a no-op.
    let first = Instant::now();
    host.apply_ok("first apply");
    let first = first.elapsed();
    assert_eq!(host.lineages(), ["club.conf", "members.conf", "radio.conf"]);
    assert_eq!(host.apply_ok("second apply"), 0);
    let orders = host.pebble.orders();
    let certbot_log = || {
        host.bed
            .ssh("ls -l --time-style=+%s.%N /var/log/letsencrypt/")
    };

    let log_before = certbot_log();
    let mut ssh = Vec::new();
    let mut apply = Vec::new();
    let mut agent = Vec::new();
    // Each task's time on the host, summed over the runs (its `duration_ms`), and the
    // run's time outside the tasks (the lock, /etc's git before and after).
    let mut per_task: std::collections::BTreeMap<String, u64> = Default::default();
    let mut outside_tasks = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let output = host.bed.ssh_output("true");
        ssh.push(started.elapsed());
        assert!(output.status.success());
        let started = Instant::now();
        let (output, changed) = host.apply();
        apply.push(started.elapsed());
        assert_eq!(output.status.code(), Some(0));
        assert_eq!(changed, 0, "a no-op apply changes nothing");
        // The agent's own time on the host, from its `done` event.
        let report = testbed::stdout(&output);
        let events: Vec<serde_json::Value> = report
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let mut in_tasks = 0;
        for event in events.iter().filter(|e| e["event"] == "task") {
            let ms = event["duration_ms"].as_u64().unwrap_or(0);
            in_tasks += ms;
            let name = format!(
                "{}: {}",
                event["role"].as_str().unwrap_or(""),
                event["task"].as_str().unwrap_or("")
            );
            *per_task.entry(name).or_default() += ms;
        }
        if let Some(ms) = events
            .iter()
            .find(|e| e["event"] == "done")
            .and_then(|e| e["elapsed_ms"].as_u64())
        {
            agent.push(Duration::from_millis(ms));
            outside_tasks.push(Duration::from_millis(ms.saturating_sub(in_tasks)));
        }
    }
    assert_eq!(host.pebble.orders(), orders, "no order on a no-op apply");
    assert_eq!(
        certbot_log(),
        log_before,
        "certbot never ran on a no-op apply"
    );
    let (ssh, apply) = (median(ssh), median(apply));
    let agent = if agent.is_empty() {
        Duration::ZERO
    } else {
        median(agent)
    };
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| first apply (packages, 3 orders from pebble) | {} ms |",
        first.as_millis()
    );
    println!(
        "| `ssh host true`, median of {runs} | {} ms |",
        ssh.as_millis()
    );
    println!(
        "| no-op `placard apply` of base + web + certs (3 lineages, 6 sites), median of {runs} | {} ms |",
        apply.as_millis()
    );
    println!(
        "| ratio apply / ssh true | {:.2} |",
        apply.as_secs_f64() / ssh.as_secs_f64()
    );
    println!(
        "| time in the agent on the host, median | {} ms |",
        agent.as_millis()
    );
    println!("| orders and certbot runs during the no-op runs | 0 |");
    if !outside_tasks.is_empty() {
        println!(
            "| in the agent, outside the tasks (lock, /etc's git before and after), median | {} ms |",
            median(outside_tasks).as_millis()
        );
    }
    // The slowest tasks, by their mean over the runs (loop items counted apart).
    let mut slowest: Vec<(u64, String)> = per_task
        .into_iter()
        .map(|(name, total)| (total / runs as u64, name))
        .collect();
    slowest.sort_by(|a, b| b.cmp(a));
    for (ms, name) in slowest.iter().take(12) {
        println!("| task {name}, mean | {ms} ms |");
    }
    // Where the agent's time may go: the programs the roles' guards start on every
    // run, timed on the host one after the other (median of 5 rounds each).
    let probes = [
        ("3 × lineage-matches (the certs guard)", "for l in club:club.example,www.club.example members:members.club.example,alice.members.club.example,bob.members.club.example radio:radio.club.example,stream.club.example; do /usr/local/lib/placard/lineage-matches ${l%%:*} ${l#*:}; done"),
        ("the ACME probe (curl)", "curl --silent --fail --output /dev/null --max-time 10 http://127.0.0.1:$PORT/.well-known/acme-challenge/placard-probe"),
        ("2 × systemctl show (nginx, certbot.timer)", "systemctl show nginx >/dev/null; systemctl show certbot.timer >/dev/null"),
    ];
    for (what, script) in probes {
        let script = script.replace("$PORT", &host.http_port.to_string());
        let timed = format!(
            "for i in 1 2 3 4 5; do s=$(date +%s%N); {script} >/dev/null 2>&1; e=$(date +%s%N); echo $(( (e - s) / 1000000 )); done | sort -n | sed -n 3p"
        );
        println!(
            "| on the host: {what}, median of 5 | {} ms |",
            host.bed.ssh(&timed).trim()
        );
    }
}
