//! The report for people: progress while hosts run, then what changed and what failed.
//!
//! Progress goes to stderr (a spinner line per host on a terminal, a line per finished
//! host otherwise); the report goes to stdout. Colour only on a terminal, and never
//! when NO_COLOR is set.

use std::collections::BTreeMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{HostReport, Reporter};
use crate::plan::{Event, TaskStatus};

pub struct HumanReporter {
    progress: Option<(MultiProgress, BTreeMap<String, ProgressBar>)>,
    color: bool,
    /// Whether unchanged tasks are listed too (`-v`).
    verbose: bool,
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
            progress,
            color: std::io::stdout().is_terminal() && !no_color,
            verbose,
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
            println!("{}", self.paint("1", &format!("── {}", report.host)));
            for event in &report.events {
                self.print_event(event);
            }
            if let Some(error) = &report.error {
                println!("  {} {error}", self.paint("31", "failed"));
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
        println!(
            "{hosts} host{}: {unchanged} unchanged, {changed} changed, {failed} failed",
            if hosts == 1 { "" } else { "s" }
        );
    }
}

impl HumanReporter {
    fn print_event(&self, event: &Event) {
        match event {
            Event::Task {
                role,
                task,
                handler,
                status,
                reason,
                diff,
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
                println!("  {label} {role}: {kind}{task}");
                println!("          {reason}");
                if let Some(diff) = diff {
                    for line in diff.lines() {
                        let painted = match line.chars().next() {
                            Some('+') if !line.starts_with("+++") => self.paint("32", line),
                            Some('-') if !line.starts_with("---") => self.paint("31", line),
                            _ => line.to_string(),
                        };
                        println!("          {painted}");
                    }
                }
            }
            Event::Commit { id, summary } => println!(
                "  {} /etc {} {summary}",
                self.paint("36", "commit "),
                &id[..id.len().min(12)]
            ),
            Event::Notice { message } => println!("  note    {message}"),
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
                println!("  {label} {role}: {name} — {detail}");
            }
            Event::Output { data } => print_output(data),
            Event::Error { message } => println!("  {} {message}", self.paint("31", "failed ")),
            Event::Done {
                ok,
                changed,
                failed,
                ..
            } => println!("  {ok} ok, {changed} changed, {failed} failed"),
            Event::Started { .. } => {}
        }
    }
}

/// Facts, `etc` and `dns` answers, readably.
fn print_output(data: &serde_json::Value) {
    if let Some(records) = data.get("records").and_then(|r| r.as_array()) {
        // Zone-file lines, unindented, so that they can be pasted as they are.
        for record in records {
            match serde_json::from_value::<crate::dns::DnsRecord>(record.clone()) {
                Ok(record) => println!("{}", record.zone_line()),
                Err(error) => println!("; a record placard cannot read: {error}"),
            }
        }
    } else if let Some(diff) = data.get("diff").and_then(|d| d.as_str()) {
        print!("{diff}");
        if diff.is_empty() {
            println!("  no uncommitted changes in /etc");
        }
    } else if let Some(changes) = data.get("changes").and_then(|c| c.as_array()) {
        if changes.is_empty() {
            println!("  /etc is clean: everything is committed");
        }
        for change in changes {
            println!("  changed {}", change.as_str().unwrap_or_default());
        }
    } else if let Some(commits) = data.get("commits").and_then(|c| c.as_array()) {
        for commit in commits {
            println!(
                "  {} {}",
                commit["id"].as_str().unwrap_or_default(),
                commit["summary"].as_str().unwrap_or_default()
            );
        }
    } else {
        println!("{}", serde_json::to_string_pretty(data).unwrap_or_default());
    }
}
