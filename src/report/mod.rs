//! Reports: what happened on each host, for people or for machines.
//!
//! The controller feeds every [`Event`] of every host to a [`Reporter`] as it arrives
//! (for the progress lines), then asks it for the summary. Human output is one line per
//! host while it runs, then per host what changed (diffs under `--diff`), what failed
//! and why, and a summary line. `--format json` writes one JSON object per event, each
//! tagged with its host, then a summary object.

pub mod human;
pub mod upgrade;

use serde::Serialize;

use crate::plan::{Event, TaskStatus};

/// The result of one host's run, gathered from its events.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostReport {
    pub host: String,
    pub events: Vec<Event>,
    /// A failure outside the tasks: unreachable host, refused host key, agent error.
    pub error: Option<String>,
}

impl HostReport {
    pub fn new(host: &str) -> HostReport {
        HostReport {
            host: host.to_string(),
            ..HostReport::default()
        }
    }

    pub fn count(&self, status: TaskStatus) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Task { status: s, .. } if *s == status))
            .count()
    }

    pub fn failed(&self) -> bool {
        self.error.is_some()
            || self.count(TaskStatus::Failed) > 0
            || self
                .events
                .iter()
                .any(|e| matches!(e, Event::Check { ok: false, .. } | Event::Error { .. }))
    }

    pub fn changed(&self) -> usize {
        self.count(TaskStatus::Changed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

/// Receives events while hosts run, and writes the end report.
pub trait Reporter: Send {
    fn event(&mut self, host: &str, event: &Event);
    fn finish(&mut self, reports: &[HostReport]);
}

/// JSON lines: `{"host": …, "event": …}` as they come, then `{"summary": …}`.
pub struct JsonReporter;

impl Reporter for JsonReporter {
    fn event(&mut self, host: &str, event: &Event) {
        let mut value = serde_json::to_value(event).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert("host".into(), host.into());
        }
        println!("{value}");
    }

    fn finish(&mut self, reports: &[HostReport]) {
        let hosts: Vec<serde_json::Value> = reports
            .iter()
            .map(|r| serde_json::json!({"host": r.host, "ok": r.count(TaskStatus::Ok), "changed": r.changed(), "failed": r.failed(), "error": r.error}))
            .collect();
        println!("{}", serde_json::json!({ "summary": hosts }));
    }
}
