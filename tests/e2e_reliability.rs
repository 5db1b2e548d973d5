//! Issue 14: an apply can be killed at any instant, its controller can go away, and a
//! hung program meets its deadline, without harm to the host. Each test boots a real
//! Debian host and applies tests/reliability/roles/churn.yml: forty files with
//! validators (half on a staged copy, half in place) and a handler that records each
//! reload with the generation of the files it reloaded.
//!
//! The kill points are drawn from a seeded generator; the seed is printed, and
//! PLACARD_KILL_SEED=N repeats a run.

#[path = "common/testbed.rs"]
mod testbed;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rand::{rngs::StdRng, Rng, SeedableRng};
use testbed::{stdout, Testbed};

const NAMES: usize = 20;

fn site() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reliability")
}

fn seed() -> u64 {
    let seed = std::env::var("PLACARD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(1)
        });
    eprintln!("kill points drawn with PLACARD_KILL_SEED={seed}");
    seed
}

fn placard_command(bed: &Testbed, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_placard"));
    command
        .args(args)
        .arg("-i")
        .arg(bed.inventory())
        .arg("--site")
        .arg(site())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

fn placard(bed: &Testbed, args: &[&str]) -> Output {
    let output = placard_command(bed, args).output().expect("run placard");
    eprintln!(
        "$ placard {}\n{}{}",
        args.join(" "),
        stdout(&output),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn set_vars(bed: &Testbed, vars: &str) {
    bed.write_inventory(&format!("roles: [churn]\n    vars:\n{vars}"));
}

fn generation(bed: &Testbed, generation: u32) {
    set_vars(bed, &format!("      churn_generation: {generation}\n"));
}

/// The content every churned file has at `generation`.
fn content(name: &str, generation: u32) -> String {
    let mut text = format!("# {name}, generation {generation}\n");
    for index in 1..=NAMES {
        text.push_str(&format!("f{index:02} = {generation}\n"));
    }
    text.push_str(&format!("end of generation {generation}\n"));
    text
}

fn churned(bed: &Testbed) -> Vec<(String, Option<String>)> {
    (1..=NAMES)
        .flat_map(|i| [format!("f{i:02}"), format!("f{i:02}-live")])
        .map(|name| {
            let item = name.trim_end_matches("-live").to_string();
            (item, bed.read(&format!("/etc/churn/{name}.conf")))
        })
        .collect()
}

/// Every churned file is wholly of one of the generations given.
fn assert_whole(bed: &Testbed, generations: &[u32], when: &str) {
    for (item, text) in churned(bed) {
        let text = text.unwrap_or_else(|| panic!("{when}: {item} is missing"));
        assert!(
            generations.iter().any(|g| text == content(&item, *g)),
            "{when}: {item} is neither of generations {generations:?}:\n{text}"
        );
    }
}

/// What a killed run must never leave once the next run started: staged or kept
/// files, and git lock files.
fn leftovers(bed: &Testbed) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir(bed.root_path("/etc/churn")).expect("/etc/churn") {
        let name = entry.expect("an entry").file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".placard") {
            found.push(format!("/etc/churn/{name}"));
        }
    }
    let git = bed.root_path("/etc/.git");
    for lock in ["index.lock", "HEAD.lock", "refs/heads/master.lock"] {
        if git.join(lock).exists() {
            found.push(format!("/etc/.git/{lock}"));
        }
    }
    found
}

/// This machine's git on the host's /etc (the minimal host has no git of its own).
fn git(bed: &Testbed, args: &[&str]) -> Output {
    Command::new("git")
        .args(["-c", "safe.directory=*", "-C"])
        .arg(bed.root_path("/etc"))
        .args(args)
        .output()
        .expect("run git")
}

fn last_reload(bed: &Testbed) -> Option<String> {
    bed.read("/var/lib/churn-reloads")
        .and_then(|text| text.lines().last().map(str::to_string))
}

/// The agent's `done` event: its counts and how long it took on the host.
fn json_summary(output: &Output) -> serde_json::Value {
    stdout(output)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|event| event["event"] == "done")
        .expect("the agent's done event")
}

/// The parent of `pid`, from /proc/PID/stat (after the command's closing parenthesis).
fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The pids of the agent processes running inside this host: those descending from
/// its systemd-nspawn.
fn agents(bed: &Testbed) -> Vec<i32> {
    let nspawn = bed.host.pid as i32;
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("/var/lib/placard/bin/placard-") || !cmdline.contains("agent") {
            continue;
        }
        let mut ancestor = parent(pid);
        while let Some(current) = ancestor.filter(|p| *p > 1) {
            if current == nspawn {
                pids.push(pid);
                break;
            }
            ancestor = parent(current);
        }
    }
    pids
}

fn kill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Waits, bounded, until `ready` holds; false when the time ran out.
fn wait_for(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    ready()
}

/// The next run converges to `generation`, commits, reloads, leaves nothing behind,
/// and the run after it changes nothing.
fn assert_converges(bed: &Testbed, generation_now: u32, when: &str) {
    let recovered = placard(bed, &["apply", "--format", "json"]);
    assert_eq!(
        recovered.status.code(),
        Some(0),
        "{when}: the next apply failed"
    );
    assert_whole(bed, &[generation_now], when);
    assert_eq!(
        bed.read("/etc/churn/slow.conf").as_deref(),
        Some("good\n"),
        "{when}"
    );
    assert!(
        leftovers(bed).is_empty(),
        "{when}: left {:?}",
        leftovers(bed)
    );
    let fsck = git(bed, &["fsck", "--no-progress", "--strict"]);
    assert!(
        fsck.status.success(),
        "{when}: git fsck: {}",
        String::from_utf8_lossy(&fsck.stderr)
    );
    let status = git(bed, &["status", "--porcelain"]);
    assert_eq!(stdout(&status), "", "{when}: /etc is committed");
    assert_eq!(
        last_reload(bed).as_deref(),
        Some(generation_now.to_string().as_str()),
        "{when}: the handler ran after the files of generation {generation_now} were written"
    );
    let again = placard(bed, &["apply", "--format", "json"]);
    assert_eq!(again.status.code(), Some(0), "{when}");
    assert_eq!(
        json_summary(&again)["changed"],
        0,
        "{when}: the run after changes nothing"
    );
}

#[test]
fn an_agent_killed_at_any_instant_leaves_files_whole_and_the_next_run_converges() {
    let bed = Testbed::up("e2e-kill-agent", "bookworm");
    generation(&bed, 0);
    assert_eq!(placard(&bed, &["apply"]).status.code(), Some(0));
    // How long a changing run takes in the agent: kill points are drawn inside it.
    generation(&bed, 1);
    let full = placard(&bed, &["apply", "--format", "json"]);
    assert_eq!(full.status.code(), Some(0));
    let agent_ms = json_summary(&full)["elapsed_ms"]
        .as_u64()
        .unwrap_or(500)
        .max(50);
    eprintln!("a changing run takes {agent_ms} ms in the agent");

    let mut random = StdRng::seed_from_u64(seed());
    let (mut killed, mut clean) = (0, 0);
    for generation_now in 2..40 {
        generation(&bed, generation_now);
        let delay = Duration::from_micros(random.gen_range(0..agent_ms * 1000));
        let mut child: Child = placard_command(&bed, &["apply"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start placard");
        let mut pid = None;
        wait_for(Duration::from_secs(30), || {
            pid = agents(&bed).first().copied();
            pid.is_some() || child.try_wait().ok().flatten().is_some()
        });
        let Some(pid) = pid else {
            let _ = child.wait();
            continue;
        };
        std::thread::sleep(delay);
        kill(pid);
        let _ = child.wait();
        killed += 1;
        let when = format!("kill {killed} ({delay:?} into generation {generation_now})");
        assert_whole(&bed, &[generation_now - 1, generation_now], &when);
        assert_converges(&bed, generation_now, &when);
        clean += 1;
    }
    eprintln!("{killed} kill points, {clean} left the host clean");
    assert!(killed >= 30, "only {killed} kills reached the agent");

    // Kills aimed at the instants git holds its lock files: the test watches for the
    // index's or the branch's lock file and kills the agent as soon as one appears. A
    // kill can land just after git let go; the count of those that left a lock is said.
    let (mut aimed, mut landed) = (0, 0);
    for generation_now in 40..52 {
        generation(&bed, generation_now);
        let mut child: Child = placard_command(&bed, &["apply"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start placard");
        let git = bed.root_path("/etc/.git");
        let locks = [git.join("index.lock"), git.join("refs/heads/master.lock")];
        let mut agent = None;
        wait_for(Duration::from_secs(30), || {
            agent = agents(&bed).first().copied();
            agent.is_some() || child.try_wait().ok().flatten().is_some()
        });
        // A lock lives for a millisecond or so: watch for it without sleeping, bounded.
        let started = Instant::now();
        let mut seen = false;
        for round in 0u64.. {
            if locks.iter().any(|l| l.exists()) {
                seen = true;
                break;
            }
            if round % 4096 == 0
                && (started.elapsed() > Duration::from_secs(60)
                    || child.try_wait().ok().flatten().is_some())
            {
                break;
            }
        }
        if let (true, Some(pid)) = (seen, agent) {
            kill(pid);
            aimed += 1;
        }
        let _ = child.wait();
        if locks.iter().any(|l| l.exists()) {
            landed += 1;
        }
        let when = format!("kill aimed at a git lock, generation {generation_now}");
        assert_whole(&bed, &[generation_now - 1, generation_now], &when);
        assert_converges(&bed, generation_now, &when);
    }
    eprintln!("{aimed} kills aimed at git's lock files, {landed} left a lock behind; every host converged");

    // The instants git's lock files exist: a kill there leaves them behind.
    for (round, locks) in [
        vec!["index.lock"],
        vec!["refs/heads/master.lock"],
        vec!["index.lock", "HEAD.lock", "refs/heads/master.lock"],
    ]
    .into_iter()
    .enumerate()
    {
        let generation_now = 100 + round as u32;
        generation(&bed, generation_now);
        for lock in &locks {
            fs::write(bed.root_path(&format!("/etc/.git/{lock}")), "").expect("a lock file");
        }
        let output = placard(&bed, &["apply"]);
        assert!(
            stdout(&output).contains("a git lock left by an interrupted run"),
            "the removal is said"
        );
        assert_converges(&bed, generation_now, &format!("stale {locks:?}"));
    }
}

#[test]
fn a_controller_that_goes_away_lets_the_agent_finish_its_step_and_release_the_host() {
    let bed = Testbed::up("e2e-kill-controller", "bookworm");
    generation(&bed, 0);
    assert_eq!(placard(&bed, &["apply"]).status.code(), Some(0));
    let mut random = StdRng::seed_from_u64(seed());
    let mut rounds = 0;
    for generation_now in 1..13 {
        generation(&bed, generation_now);
        let mut child = placard_command(&bed, &["apply"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start placard");
        wait_for(Duration::from_secs(30), || {
            !agents(&bed).is_empty() || child.try_wait().ok().flatten().is_some()
        });
        std::thread::sleep(Duration::from_millis(random.gen_range(0..300)));
        // Half the rounds stop the controller; the others drop the connection on the
        // host's side, as a network failure would.
        if generation_now % 2 == 0 {
            let _ = child.kill();
        } else {
            let _ = bed.ssh_output("pkill -KILL -f 'sshd: root@notty'");
        }
        let _ = child.wait();
        assert!(
            wait_for(Duration::from_secs(60), || agents(&bed).is_empty()),
            "round {generation_now}: the agent did not exit after its controller went away"
        );
        rounds += 1;
        let when = format!("controller gone in round {generation_now}");
        assert_whole(&bed, &[generation_now - 1, generation_now], &when);
        assert_converges(&bed, generation_now, &when);
    }
    eprintln!("{rounds} rounds without a controller, each left the host clean");
}

#[test]
fn deadlines_stop_hung_programs_and_a_killed_validation_is_undone() {
    let bed = Testbed::up("e2e-deadlines", "bookworm");
    generation(&bed, 0);
    assert_eq!(placard(&bed, &["apply"]).status.code(), Some(0));

    // A command that hangs fails at its task's `timeout: 2`, naming it.
    set_vars(&bed, "      churn_command_seconds: 600\n");
    let started = Instant::now();
    let hung = placard(&bed, &["apply"]);
    assert_eq!(hung.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
    assert!(
        stdout(&hung).contains("`sleep 600` did not finish within 2 s and was stopped"),
        "the report names the program and its deadline"
    );
    assert_eq!(
        bed.ssh("pgrep -x sleep || true").trim(),
        "",
        "the command was stopped"
    );
    set_vars(&bed, "");
    assert_eq!(
        placard(&bed, &["apply"]).status.code(),
        Some(0),
        "the lock was released"
    );

    // An agent killed while an in-place validator runs: the never-validated file is
    // live at that instant, and the next run puts the old one back before anything.
    set_vars(
        &bed,
        "      churn_slow: bad\n      churn_validate_seconds: 30\n",
    );
    let mut child = placard_command(&bed, &["apply"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start placard");
    assert!(
        wait_for(Duration::from_secs(60), || bed
            .root_path("/etc/churn/.placard-old-slow.conf")
            .exists()),
        "the validation started"
    );
    for pid in agents(&bed) {
        kill(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(bed.read("/etc/churn/slow.conf").as_deref(), Some("bad\n"));
    // The same content again, with a validator that now answers at once: the run must
    // not take the live file for validated.
    set_vars(&bed, "      churn_slow: bad\n");
    let refused = placard(&bed, &["apply"]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "bad never passes its validator"
    );
    let report = stdout(&refused);
    assert!(
        report.contains("put back the previous /etc/churn/slow.conf"),
        "{report}"
    );
    assert!(report.contains("failed validation"), "{report}");
    assert_eq!(bed.read("/etc/churn/slow.conf").as_deref(), Some("good\n"));
    assert!(leftovers(&bed).is_empty(), "left {:?}", leftovers(&bed));
    set_vars(&bed, "");
    let again = placard(&bed, &["apply", "--format", "json"]);
    assert_eq!(json_summary(&again)["changed"], 0);

    // After a run that ended cleanly, the next one does not read every folder of /etc
    // for leftovers: a file placed since, under a staged file's name, is not placard's.
    let placed = bed.root_path("/etc/churn/.placard-tmp-placed.conf");
    fs::write(&placed, "placed by hand\n").expect("place a file");
    let quiet = placard(&bed, &["apply"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(placed.exists(), "{}", stdout(&quiet));
    // Another placard took the lock since (an older one, which keeps no journal) and
    // was killed with a staged file left: the next run sweeps /etc and removes it.
    bed.ssh("echo 'pid 1 for old@placard, since 1 (seconds since the epoch)' > /run/placard.lock");
    let swept = placard(&bed, &["apply"]);
    assert_eq!(swept.status.code(), Some(0));
    assert!(
        stdout(&swept)
            .contains("removed /etc/churn/.placard-tmp-placed.conf, left by an interrupted run"),
        "{}",
        stdout(&swept)
    );
    assert!(leftovers(&bed).is_empty(), "left {:?}", leftovers(&bed));
}
