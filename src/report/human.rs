//! The report for people: progress while hosts run, then what changed and what failed.
//!
//! Progress goes to stderr (a spinner line per host on a terminal, a line per finished
//! host otherwise); the report goes to stdout. Colour only on a terminal, and never
//! when NO_COLOR is set.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{HostReport, Reporter};
use crate::plan::{Event, TaskStatus};

pub struct HumanReporter {
    out: Box<dyn Write + Send>,
    progress: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    color: bool,
    /// Whether unchanged tasks are listed too (`-v`).
    verbose: bool,
    /// Whether the host being printed ran checks rather than tasks.
    checks_only: bool,
}

impl HumanReporter {
    pub fn new(verbose: bool) -> HumanReporter {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let progress = std::io::stderr().is_terminal().then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                BTreeMap::new(),
            )
        });
        HumanReporter {
            out: Box::new(std::io::stdout()),
            progress,
            color: std::io::stdout().is_terminal() && !no_color,
            verbose,
            checks_only: false,
        }
    }

    /// A reporter writing the end report, without colour or progress, to `out`.
    pub fn to_writer(out: Box<dyn Write + Send>, verbose: bool) -> HumanReporter {
        HumanReporter {
            out,
            progress: None,
            color: false,
            verbose,
            checks_only: false,
        }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }

    fn bar(&mut self, host: &str) -> Option<&ProgressBar> {
        let (multi, bars) = self.progress.as_mut()?;
        Some(bars.entry(host.to_string()).or_insert_with(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:.bold} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(host.to_string());
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            bar
        }))
    }
}

impl Reporter for HumanReporter {
    fn event(&mut self, host: &str, event: &Event) {
        let line = match event {
            Event::Started { .. } => Some("connected, running".to_string()),
            Event::Task { task, .. } => Some(task.clone()),
            Event::Done {
                ok,
                changed,
                failed,
                elapsed_ms,
                ..
            } => Some(format!(
                "done: {ok} ok, {changed} changed, {failed} failed ({elapsed_ms} ms on the host)"
            )),
            Event::Error { message } => Some(format!("error: {message}")),
            _ => None,
        };
        let Some(line) = line else { return };
        let finished = matches!(event, Event::Done { .. } | Event::Error { .. });
        match self.bar(host) {
            Some(bar) => {
                if finished {
                    bar.finish_with_message(line);
                } else {
                    bar.set_message(line);
                }
            }
            None if finished => eprintln!("{host}: {line}"),
            None => {}
        }
    }

    fn finish(&mut self, reports: &[HostReport]) {
        if let Some((multi, _)) = &self.progress {
            let _ = multi.clear();
        }
        let mut totals = (0, 0, 0);
        for report in reports {
            let _ = writeln!(
                self.out,
                "{}",
                self.paint("1", &format!("── {}", report.host))
            );
            self.checks_only = report
                .events
                .iter()
                .any(|e| matches!(e, Event::Check { .. }));
            for event in &report.events {
                self.print_event(event);
            }
            if let Some(error) = &report.error {
                let _ = writeln!(self.out, "  {} {error}", self.paint("31", "failed"));
            }
            if report.failed() {
                totals.2 += 1;
            } else if report.changed() > 0 {
                totals.1 += 1;
            } else {
                totals.0 += 1;
            }
        }
        let (unchanged, changed, failed) = totals;
        let hosts = reports.len();
        let _ = writeln!(
            self.out,
            "{hosts} host{}: {unchanged} unchanged, {changed} changed, {failed} failed",
            if hosts == 1 { "" } else { "s" }
        );
        let _ = self.out.flush();
    }
}

impl HumanReporter {
    fn print_event(&mut self, event: &Event) {
        match event {
            Event::Task {
                role,
                task,
                handler,
                status,
                reason,
                diff,
                ..
            } => {
                let label = match status {
                    TaskStatus::Ok if !self.verbose => return,
                    TaskStatus::Ok => self.paint("32", "ok     "),
                    TaskStatus::Changed => self.paint("33", "changed"),
                    TaskStatus::Failed => self.paint("31", "failed "),
                    TaskStatus::Skipped if !self.verbose => return,
                    TaskStatus::Skipped => self.paint("2", "skipped"),
                };
                let kind = if *handler { "handler " } else { "" };
                let _ = writeln!(self.out, "  {label} {role}: {kind}{task}");
                let _ = writeln!(self.out, "          {reason}");
                if let Some(diff) = diff {
                    for line in diff.lines() {
                        let painted = match line.chars().next() {
                            Some('+') if !line.starts_with("+++") => self.paint("32", line),
                            Some('-') if !line.starts_with("---") => self.paint("31", line),
                            _ => line.to_string(),
                        };
                        let _ = writeln!(self.out, "          {painted}");
                    }
                }
            }
            Event::Commit { id, summary } => {
                let _ = writeln!(
                    self.out,
                    "  {} /etc {} {summary}",
                    self.paint("36", "commit "),
                    &id[..id.len().min(12)]
                );
            }
            Event::Notice { message } => {
                let _ = writeln!(self.out, "  note    {message}");
            }
            Event::Check {
                role,
                name,
                ok,
                detail,
            } => {
                let label = if *ok {
                    self.paint("32", "pass   ")
                } else {
                    self.paint("31", "FAIL   ")
                };
                let _ = writeln!(self.out, "  {label} {role}: {name} — {detail}");
            }
            Event::Output { data } => print_output(&mut self.out, data),
            Event::Error { message } => {
                let _ = writeln!(self.out, "  {} {message}", self.paint("31", "failed "));
            }
            // Verify runs no tasks: its checks are already listed, with their own verdicts.
            Event::Done {
                ok: 0,
                changed: 0,
                failed,
                ..
            } if self.checks_only => {
                let _ = writeln!(
                    self.out,
                    "  {}",
                    if *failed == 0 {
                        "all checks pass".to_string()
                    } else {
                        format!("{failed} check(s) failed")
                    }
                );
            }
            Event::Done {
                ok,
                changed,
                failed,
                ..
            } => {
                let _ = writeln!(self.out, "  {ok} ok, {changed} changed, {failed} failed");
            }
            Event::Started { .. } => {}
        }
    }
}

/// Facts, `etc` and `dns` answers, readably.
fn print_output(out: &mut dyn Write, data: &serde_json::Value) {
    if let Some(records) = data.get("records").and_then(|r| r.as_array()) {
        // Zone-file lines, unindented, so that they can be pasted as they are.
        for record in records {
            let _ = match serde_json::from_value::<crate::dns::DnsRecord>(record.clone()) {
                Ok(record) => writeln!(out, "{}", record.zone_line()),
                Err(error) => writeln!(out, "; a record placard cannot read: {error}"),
            };
        }
    } else if let Some(monitor) = data.get("monitor") {
        print_monitor_status(out, monitor);
    } else if let Some(drift) = data.get("drift") {
        print_drift(out, drift);
    } else if let Some(capture) = data.get("capture") {
        // The controller writes the draft and says what it holds.
        let count = |key: &str| capture[key].as_array().map_or(0, Vec::len);
        let _ = writeln!(
            out,
            "  captured {} packages, {} modified conffiles, {} site files, {} services",
            count("packages"),
            count("modified"),
            count("site_files"),
            count("services")
        );
    } else if let Some(migrate) = data.get("migrate") {
        print_migrate(out, migrate);
    } else if let Some(upgrade) = data.get("upgrade") {
        super::upgrade::print_upgrade(out, upgrade);
    } else if let Some(resolve) = data.get("resolve") {
        super::upgrade::print_resolve(out, resolve);
    } else if let Some(message) = data
        .get("init")
        .and_then(|i| i.get("message"))
        .and_then(|m| m.as_str())
    {
        let _ = writeln!(out, "  {message}");
    } else if let Some(diff) = data.get("diff").and_then(|d| d.as_str()) {
        let _ = write!(out, "{diff}");
        if diff.is_empty() {
            let _ = writeln!(out, "  no uncommitted changes in /etc");
        }
    } else if let Some(changes) = data.get("changes").and_then(|c| c.as_array()) {
        if changes.is_empty() {
            let _ = writeln!(out, "  /etc is clean: everything is committed");
        }
        for change in changes {
            let _ = writeln!(out, "  changed {}", change.as_str().unwrap_or_default());
        }
        print_secrets_in_history(out, &data["secrets_in_history"]);
    } else if let Some(commits) = data.get("commits").and_then(|c| c.as_array()) {
        for commit in commits {
            let _ = writeln!(
                out,
                "  {} {}",
                commit["id"].as_str().unwrap_or_default(),
                commit["summary"].as_str().unwrap_or_default()
            );
        }
    } else {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(data).unwrap_or_default()
        );
    }
}

/// `etc status`'s warning: secret files already in /etc's git history, and the fix.
fn print_secrets_in_history(out: &mut dyn Write, check: &serde_json::Value) {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let leaks = check["leaks"].as_array().cloned().unwrap_or_default();
    if leaks.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "  WARNING: /etc's git history holds {} secret file(s):",
        leaks.len()
    );
    for leak in &leaks {
        let _ = writeln!(
            out,
            "    /etc/{}: {} (in commit {})",
            text(&leak["path"]),
            text(&leak["why"]),
            text(&leak["commit"])
        );
    }
    let _ = writeln!(out, "  The fix:");
    for line in check["fix"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "    {}", text(line));
    }
}

/// `etc migrate`: what merged and was committed, what is left for the admin, and where.
fn print_migrate(out: &mut dyn Write, migrate: &serde_json::Value) {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let list = |key: &str| migrate[key].as_array().cloned().unwrap_or_default();
    let merged = list("merged");
    let _ = writeln!(out, "  merged cleanly and committed ({}):", merged.len());
    for file in &merged {
        let _ = writeln!(out, "    /etc/{}", text(&file["path"]));
        for translation in file["translations"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "        translated: {}", text(translation));
        }
    }
    for moved in list("moved") {
        let _ = writeln!(
            out,
            "  moved: /etc/{} (not shipped by this release) → /etc/{} ({})",
            text(&moved["path"]),
            text(&moved["successor"]),
            text(&moved["source"])
        );
    }
    let unchanged = list("unchanged");
    if !unchanged.is_empty() {
        let _ = writeln!(out, "  already merged ({})", unchanged.len());
    }
    for validation in list("validations") {
        let verdict = if validation["ok"] == true {
            "passed"
        } else {
            "FAILED"
        };
        let _ = writeln!(out, "  {} {verdict}", text(&validation["command"]));
    }
    let conflicts = list("conflicts");
    let _ = writeln!(
        out,
        "  left for you in {} ({}); live /etc keeps its files:",
        text(&migrate["folder"]),
        conflicts.len()
    );
    for conflict in &conflicts {
        let _ = writeln!(
            out,
            "    /etc/{}: {}",
            text(&conflict["path"]),
            text(&conflict["reason"])
        );
    }
    if !conflicts.is_empty() {
        let _ = writeln!(
            out,
            "  edit each file there (or delete it to keep this host's own), then `placard etc resolve HOST`"
        );
    }
    super::upgrade::print_still_invalid(out, &migrate["still_invalid"], !conflicts.is_empty());
    for path in list("deleted") {
        let _ = writeln!(
            out,
            "  deleted: /etc/{} (the old site had deleted it; this host's copy was as shipped)",
            text(&path)
        );
    }
    for by_hand in list("by_hand") {
        let _ = writeln!(
            out,
            "  by hand: /etc/{}: {}",
            text(&by_hand["path"]),
            text(&by_hand["what"])
        );
    }
    for missing in list("unavailable") {
        let _ = writeln!(
            out,
            "  unavailable: {}",
            missing.as_str().unwrap_or_default()
        );
    }
}

/// `etc drift`: what the distro branch did, then the files that are not as the packages
/// shipped them, by class, with the diffs of modified ones. Pristine and generated
/// files are only counted.
fn print_drift(out: &mut dyn Write, drift: &serde_json::Value) {
    let text = |value: &serde_json::Value| value.as_str().unwrap_or_default().to_string();
    let branch = &drift["branch"];
    let _ = match branch["commit"].as_str() {
        Some(commit) => writeln!(
            out,
            "  distro branch: committed {} ({} pristine files; {} .debs read)",
            &commit[..commit.len().min(12)],
            branch["files"],
            branch["fetched"]
        ),
        None => writeln!(
            out,
            "  distro branch: up to date ({} pristine files)",
            branch["files"]
        ),
    };
    for change in branch["changes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "    {}", text(change));
    }
    for missing in branch["unavailable"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  unavailable: {} {}: {}",
            text(&missing["package"]),
            text(&missing["version"]),
            text(&missing["message"])
        );
    }
    let baseline = &drift["baseline"];
    let _ = match baseline["status"].as_str() {
        Some("used") => writeln!(
            out,
            "  reference install: {} files made by maintainer scripts ({}; {} packages left out)",
            baseline["generated"],
            if baseline["built"] == true {
                format!(
                    "built in {:.0} s, {} MB of scratch",
                    baseline["build_seconds"].as_f64().unwrap_or(0.0),
                    baseline["scratch_bytes"].as_u64().unwrap_or(0) >> 20
                )
            } else {
                "from the cache".to_string()
            },
            baseline["left_out"].as_array().map_or(0, Vec::len)
        ),
        _ => writeln!(
            out,
            "  reference install unavailable, so files maintainer scripts made are listed as the site's: {}",
            text(&baseline["reason"])
        ),
    };
    let files = drift["files"].as_array().cloned().unwrap_or_default();
    let sections = [
        ("modified", "locally modified"),
        ("site", "added by the site"),
        ("leftover", "left over from removed packages"),
        ("unknown", "not judged (no pristine version)"),
    ];
    for (class, title) in sections {
        let in_class: Vec<&serde_json::Value> =
            files.iter().filter(|f| f["class"] == class).collect();
        if in_class.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {title} ({}):", in_class.len());
        for file in in_class {
            let detail = match class {
                "modified" if file["deleted"] == true => {
                    format!(" ({}, deleted)", text(&file["package"]))
                }
                "modified" => format!(" ({}, {})", text(&file["package"]), text(&file["source"])),
                "leftover" | "unknown" => format!(" ({})", text(&file["reason"])),
                _ => String::new(),
            };
            let _ = writeln!(out, "    /etc/{}{detail}", text(&file["path"]));
            if let Some(diff) = file["diff"].as_str() {
                for line in diff.lines() {
                    let _ = writeln!(out, "        {line}");
                }
            }
        }
    }
    let count = |class: &str| drift["counts"][class].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "  {} pristine, {} generated (ignored)",
        count("pristine"),
        count("generated")
    );
}

/// The human form of a host's monitor state (the agent's `monitor` output).
fn print_monitor_status(out: &mut dyn Write, data: &serde_json::Value) {
    let timer = data["timer"].as_str().unwrap_or("unknown");
    let last_run = data["last_run"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "  timer placard-monitor.timer is {timer}; last run {}",
        if last_run == 0 {
            "never".to_string()
        } else {
            crate::monitor::mail::utc_time(last_run)
        }
    );
    if let Some(error) = data["mail_error"].as_str() {
        let _ = writeln!(out, "  the last mail could not be sent: {error}");
    }
    let checks = data["checks"].as_array().cloned().unwrap_or_default();
    if checks.is_empty() {
        let _ = writeln!(
            out,
            "  no checks recorded yet{}",
            if data["stored_checks"].is_null() {
                " (no apply has stored this host's checks: apply its roles)"
            } else {
                ""
            }
        );
    }
    for check in checks {
        let ok = check["ok"].as_bool().unwrap_or(false);
        let _ = writeln!(
            out,
            "  {:<7} {}: {} (since {}){}",
            if ok { "ok" } else { "FAILING" },
            check["role"].as_str().unwrap_or_default(),
            check["name"].as_str().unwrap_or_default(),
            crate::monitor::mail::utc_time(check["since"].as_u64().unwrap_or(0)),
            if ok {
                String::new()
            } else {
                format!(
                    "\n          {}",
                    check["detail"].as_str().unwrap_or_default()
                )
            }
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .expect("not poisoned")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `etc migrate`: a group written though this host's configuration already failed
    /// its validator is named with its files and what to do.
    #[test]
    fn migrate_names_the_files_written_to_a_configuration_still_invalid() {
        let migrate = serde_json::json!({
            "merged": [{"path": "postfix/main.cf"}],
            "validations": [{"command": "postfix check", "ok": false, "files": ["postfix/main.cf"]}],
            "still_invalid": [{"validator": "postfix check", "unit": "postfix", "files": ["postfix/main.cf"], "message": "`postfix check` failed: fatal: bad"}],
            "conflicts": [],
            "folder": "/var/lib/placard/etc-migrate",
        });
        let mut out = Vec::new();
        print_migrate(&mut out, &migrate);
        let text = String::from_utf8(out).expect("text");
        assert!(text.contains("  STILL INVALID: postfix's configuration failed `postfix check` before placard wrote these files, and still fails with them:\n    /etc/postfix/main.cf\n"), "{text}");
        assert!(
            text.contains("    To do: run `postfix check` on the host"),
            "{text}"
        );
    }

    fn task(task: &str, status: TaskStatus, reason: &str, diff: Option<&str>) -> Event {
        Event::Task {
            role: "base".into(),
            task: task.into(),
            handler: false,
            status,
            reason: reason.into(),
            diff: diff.map(str::to_string),
            duration_ms: 0,
        }
    }

    #[test]
    fn the_end_report_lists_changes_diffs_failures_and_a_summary() {
        let mut cupboard = HostReport::new("cupboard");
        cupboard.events = vec![
            Event::Started { version: "0.1.0".into() },
            Event::Commit { id: "0123456789abcdef".into(), summary: "changes found before placard run (1 file)".into() },
            task("Name the host cupboard.", TaskStatus::Ok, "/etc/hostname is up to date", None),
            task(
                "Harden the SSH server.",
                TaskStatus::Changed,
                "/etc/ssh/sshd_config.d/50-placard.conf: update content",
                Some("--- /etc/ssh/sshd_config.d/50-placard.conf\n+++ /etc/ssh/sshd_config.d/50-placard.conf\n@@ -1 +1 @@\n-MaxAuthTries 6\n+MaxAuthTries 3\n"),
            ),
            Event::Task { role: "base".into(), task: "reload ssh".into(), handler: true, status: TaskStatus::Changed, reason: "reload ssh".into(), diff: None, duration_ms: 0 },
            Event::Commit { id: "fedcba9876543210".into(), summary: "placard: base (1 file)".into() },
            Event::Done { ok: 1, changed: 1, failed: 0, peak_memory_kib: 9000, elapsed_ms: 40 },
        ];
        let mut relay = HostReport::new("relay");
        relay.error = Some("relay (root@192.0.2.7:22): cannot connect: Connection refused".into());
        let mut quiet = HostReport::new("quiet");
        quiet.events = vec![
            task(
                "Name the host quiet.",
                TaskStatus::Ok,
                "/etc/hostname is up to date",
                None,
            ),
            Event::Done {
                ok: 1,
                changed: 0,
                failed: 0,
                peak_memory_kib: 9000,
                elapsed_ms: 30,
            },
        ];

        let captured = Captured::default();
        let mut reporter = HumanReporter::to_writer(Box::new(captured.clone()), false);
        reporter.finish(&[cupboard, relay, quiet]);
        let text =
            String::from_utf8(captured.0.lock().expect("not poisoned").clone()).expect("utf-8");
        insta::assert_snapshot!(text);
    }
}
