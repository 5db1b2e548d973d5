//! Pull mode (issue 15), end to end on real Debian hosts: a site repository here, served
//! read-only by `git daemon` on a free loopback port, and a host that pulls it with the
//! pull role's service (started with `systemctl start`, exactly what its timer does).
//!
//! The host is bootstrapped by one push of the pull and monitor roles; from then on the
//! repository drives it. It applies a signed commit; refuses an unsigned one and one
//! whose inventory is broken (exit 3), keeping its last good state, with a mail saying
//! why (through the monitor's mail path: plain SMTP to a sink here); a run with no new
//! commit changes nothing and makes no commit in /etc; a push holding the run lock makes
//! the pull wait for the next period; over ssh:// it fetches with the deploy key it
//! generated, from a throwaway sshd here; an unreachable repository leaves the host as
//! it is and is mailed once.

#[path = "common/smtp_sink.rs"]
mod smtp_sink;
#[path = "common/sshd.rs"]
mod sshd;
#[path = "common/testbed.rs"]
mod testbed;

use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use smtp_sink::{smtp_sink, Envelope};
use testbed::Testbed;

const NOTE_ROLE: &str = "\
description: A test role that writes a note, to see which commit a host applied.
variables:
  note_text: {description: The note., type: string}
tasks:
  - name: Write the note.
    file: {path: /etc/placard-note, content: \"{{note_text}}\\n\", mode: \"0644\"}
";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Admin",
            "-c",
            "user.email=admin@club.example",
        ])
        .args(args)
        .status()
        .expect("run git");
    assert!(status.success(), "git {args:?}");
}

/// `git daemon` serving `base` read-only on `port`; killed on drop.
struct Daemon(Child);

impl Daemon {
    fn start(base: &Path, port: u16) -> Daemon {
        // git-daemon itself, not `git daemon`, which runs it as a child that killing
        // `git` would leave serving.
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .expect("git --exec-path");
        let exec_path = String::from_utf8_lossy(&exec_path.stdout)
            .trim()
            .to_string();
        let child = Command::new(Path::new(&exec_path).join("git-daemon"))
            .arg("--export-all")
            .arg(format!("--base-path={}", base.display()))
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg("--reuseaddr")
            .arg(base)
            .spawn()
            .expect("start git daemon");
        // Ready when it answers.
        for _ in 0..50 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Site {
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    public_key: String,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let key = dir.path().join("signing-key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "admin@laptop", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(status.success());
        let public_key = std::fs::read_to_string(key.with_extension("pub"))
            .expect("the public key")
            .trim()
            .to_string();
        let repo = dir.path().join("site");
        let source = Path::new(env!("CARGO_MANIFEST_DIR"));
        for folder in ["roles", "templates/pull", "templates/monitor", "inventory"] {
            std::fs::create_dir_all(repo.join(folder)).expect("a folder of the site");
        }
        for role in ["pull", "monitor"] {
            let name = format!("roles/{role}.yml");
            std::fs::copy(source.join(&name), repo.join(&name)).expect("copy a role");
            for entry in std::fs::read_dir(source.join("templates").join(role)).expect("templates")
            {
                let entry = entry.expect("a template");
                std::fs::copy(
                    entry.path(),
                    repo.join("templates").join(role).join(entry.file_name()),
                )
                .expect("copy a template");
            }
        }
        std::fs::write(repo.join("roles/note.yml"), NOTE_ROLE).expect("the note role");
        git(&repo, &["init", "--quiet", "--initial-branch", "main"]);
        Site {
            dir,
            key,
            public_key,
        }
    }

    fn repo(&self) -> std::path::PathBuf {
        self.dir.path().join("site")
    }

    /// Commits the inventory with `vars` for `host` (roles monitor, pull, note).
    fn commit(&self, host: &str, vars: &str, signed: bool) {
        std::fs::write(
            self.repo().join("inventory/hosts.yml"),
            format!("hosts:\n  {host}:\n    roles: [monitor, pull, note]\n    vars:\n{vars}"),
        )
        .expect("write the inventory");
        git(&self.repo(), &["add", "-A"]);
        let key = self.key.display().to_string();
        let mut args = vec!["-c", "gpg.format=ssh", "-c"];
        let signing = format!("user.signingkey={key}");
        args.push(&signing);
        args.extend(["commit", "--quiet", "--allow-empty", "-m", "site"]);
        if signed {
            args.push("-S");
        }
        git(&self.repo(), &args);
    }
}

/// Starts the pull service, as its timer does; whether it succeeded.
/// One pull, as the timer starts it; whether it succeeded. A failure's systemctl output
/// goes to the test's log.
fn pull(bed: &Testbed) -> bool {
    let output = bed.ssh_output("systemctl start placard-pull.service");
    if !output.status.success() {
        eprintln!(
            "systemctl start placard-pull.service: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output.status.success()
}

/// The last pull's result, as it wrote it to its state before it ended.
fn last_result(bed: &Testbed) -> String {
    bed.read("/var/lib/placard/pull/state.json")
        .unwrap_or_default()
}

/// How long a mail the test expects may take to reach the sink after the pull ended
/// (the pull sends it before it ends; this is slack for a loaded machine).
const MAIL_WAIT: Duration = Duration::from_secs(15);

fn journal(bed: &Testbed) -> String {
    bed.ssh("journalctl -u placard-pull --no-pager -n 30")
}

/// Whether the pull's journal shows `text` within 10 s: journald takes the service's
/// output asynchronously, so its last line may come after `systemctl start` returned.
fn journal_shows(bed: &Testbed, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if journal(bed).contains(text) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn note(bed: &Testbed) -> String {
    bed.read("/etc/placard-note")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn etc_commits(bed: &Testbed) -> String {
    bed.ssh("git -C /etc rev-list --count HEAD")
        .trim()
        .to_string()
}

/// The mails the sink got within `wait`.
fn mails(envelopes: &Receiver<Envelope>, wait: Duration) -> Vec<Envelope> {
    let mut found = Vec::new();
    while let Ok(envelope) = envelopes.recv_timeout(wait) {
        eprintln!("mail:\n{}", envelope.data);
        found.push(envelope);
    }
    found
}

fn pull_mode(name: &str, suite: &str) {
    let (sink_port, envelopes) = smtp_sink(Duration::from_secs(1800));
    let site = Site::new();
    let daemon_port = free_port();
    let mut daemon = Some(Daemon::start(site.dir.path(), daemon_port));
    let bed = Testbed::up(name, suite);
    let host = bed.host.name.clone();
    let base_vars = format!(
        "      monitor_admin: admin@elsewhere.example\n      monitor_interval: 1h\n      \
         monitor_relay_host: 127.0.0.1\n      monitor_relay_port: {sink_port}\n      \
         pull_repository: git://127.0.0.1:{daemon_port}/site\n      pull_interval: 1h\n      \
         pull_allowed_signers: [\"{}\"]\n",
        site.public_key
    );
    let with_note = |text: &str| format!("{base_vars}      note_text: {text}\n");

    // The bootstrap: one push of the pull and monitor roles.
    bed.write_inventory(&format!("roles: [monitor, pull]\n    vars:\n{base_vars}"));
    let bootstrap = bed.placard(&["apply"]);
    assert_eq!(
        bootstrap.status.code(),
        Some(0),
        "the bootstrap push applies"
    );

    // (1) A signed commit is applied.
    site.commit(&host, &with_note("one"), true);
    assert!(pull(&bed), "the signed commit applies:\n{}", journal(&bed));
    assert_eq!(note(&bed), "one");
    assert!(
        journal_shows(&bed, "applied commit"),
        "the journal says applied commit:\n{}",
        journal(&bed)
    );

    // (2) No new commit: nothing applied, no commit in /etc.
    let commits = etc_commits(&bed);
    assert!(pull(&bed));
    assert!(
        journal_shows(&bed, "no new commit"),
        "the journal says no new commit:\n{}",
        journal(&bed)
    );
    assert_eq!(
        etc_commits(&bed),
        commits,
        "a run with no new commit commits nothing"
    );
    assert!(
        mails(&envelopes, Duration::from_secs(2)).is_empty(),
        "nothing to mail"
    );

    // (3) An unsigned commit is refused, and mailed.
    site.commit(&host, &with_note("two"), false);
    assert!(!pull(&bed), "an unsigned commit fails the pull");
    assert_eq!(note(&bed), "one", "the host keeps its last good state");
    let refused = mails(&envelopes, MAIL_WAIT);
    assert_eq!(
        refused.len(),
        1,
        "one mail; the pull's journal:\n{}",
        journal(&bed)
    );
    assert!(
        refused[0].data.contains("pull FAILED") && refused[0].data.contains("not signed"),
        "the mail says why"
    );

    // (4) A signed commit with a broken inventory: exit 3, not applied, mailed.
    site.commit(&host, &format!("{base_vars}      note_txt: three\n"), true);
    assert!(!pull(&bed));
    assert_eq!(note(&bed), "one", "the host keeps its last good state");
    let invalid = mails(&envelopes, MAIL_WAIT);
    assert_eq!(
        invalid.len(),
        1,
        "one mail; the pull's journal:\n{}",
        journal(&bed)
    );
    assert!(
        invalid[0].data.contains("not a valid site (exit 3)")
            && invalid[0].data.contains("inventory/hosts.yml:")
            && invalid[0].data.contains("note_txt"),
        "the mail names the file, the line and the mistake"
    );
    assert!(pull(&bed), "the refused commit is not judged again");

    // (5) The run lock is shared with push: a push under way makes the pull fail and
    // try the commit again at the next period.
    site.commit(&host, &with_note("three"), true);
    bed.ssh("systemd-run --unit hold-lock flock /run/placard.lock sleep 30 >/dev/null");
    std::thread::sleep(Duration::from_secs(1));
    assert!(!pull(&bed), "a pull waits for a push holding the lock");
    assert!(
        journal_shows(&bed, "another placard run holds the lock"),
        "{}",
        journal(&bed)
    );
    assert_eq!(note(&bed), "one");
    bed.ssh("systemctl stop hold-lock");
    let _ = mails(&envelopes, Duration::from_secs(3));
    assert!(pull(&bed), "the commit applies once the lock is free");
    assert_eq!(note(&bed), "three");
    let again = mails(&envelopes, MAIL_WAIT);
    assert!(
        again.len() == 1 && again[0].data.contains("pull works again"),
        "the first success after a failure is mailed"
    );

    // (6) Over ssh://, with the deploy key the host generated (which `placard dns`
    // prints) and the server's pinned host key: a throwaway sshd here serves the
    // repository (git-upload-pack only).
    let deploy = bed
        .read("/var/lib/placard/pull/deploy-key.pub")
        .expect("the host generated its deploy key");
    let dns = bed.placard(&["dns", &host]);
    assert!(
        testbed::stdout(&dns).contains(deploy.trim()),
        "placard dns prints the deploy key"
    );
    let authorized = site.dir.path().join("deploy-key");
    std::fs::write(authorized.with_extension("pub"), &deploy).expect("the deploy key");
    let server = sshd::Sshd::start_with(
        &[&authorized],
        &format!("ForceCommand git-upload-pack {}", site.repo().display()),
    );
    let over_ssh = |text: &str| {
        format!(
            "{}      pull_repository_host_key: \"{}\"\n      note_text: {text}\n",
            base_vars.replace(
                &format!("git://127.0.0.1:{daemon_port}/site"),
                &format!("ssh://root@127.0.0.1:{}/site", server.port)
            ),
            server.known_hosts_line().trim()
        )
    };
    site.commit(&host, &over_ssh("four"), true);
    assert!(
        pull(&bed),
        "the switch to ssh:// applies:\n{}",
        journal(&bed)
    );
    assert_eq!(note(&bed), "four");
    drop(daemon.take());
    site.commit(&host, &over_ssh("five"), true);
    assert!(
        pull(&bed),
        "fetched over SSH:\n{}\n{}",
        journal(&bed),
        server.log()
    );
    assert_eq!(note(&bed), "five");
    assert!(mails(&envelopes, Duration::from_secs(2)).is_empty());

    // (7) An unreachable repository leaves the host as it is, and is mailed once.
    drop(server);
    assert!(!pull(&bed));
    assert!(
        last_result(&bed).contains("cannot be fetched"),
        "the pull's state says the repository cannot be fetched: {}\njournal:\n{}",
        last_result(&bed),
        journal(&bed)
    );
    assert_eq!(note(&bed), "five");
    assert_eq!(mails(&envelopes, MAIL_WAIT).len(), 1);
    assert!(!pull(&bed));
    assert!(
        mails(&envelopes, Duration::from_secs(3)).is_empty(),
        "the same failure is mailed once"
    );
}

#[test]
fn pull_on_debian_12_applies_signed_commits_only() {
    pull_mode("e2e-pull12", "bookworm");
}

#[test]
fn pull_on_debian_13_applies_signed_commits_only() {
    pull_mode("e2e-pull13", "trixie");
}
