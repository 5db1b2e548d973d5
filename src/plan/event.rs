//! What the agent tells the controller, one JSON object per line on stdout, as it goes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    /// The agent started and took the lock.
    Started { version: String },
    /// A task (or handler) ran.
    Task {
        role: String,
        task: String,
        handler: bool,
        status: TaskStatus,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        diff: Option<String>,
        /// How long the task took on the host, its guards and checks included: where
        /// a run's time goes (scripts/bench-certs sums it per task).
        #[serde(default)]
        duration_ms: u64,
    },
    /// A commit in /etc's repository.
    Commit { id: String, summary: String },
    /// One health check.
    Check {
        role: String,
        name: String,
        ok: bool,
        detail: String,
    },
    /// The answer to `facts` or `etc …`.
    Output { data: Value },
    /// Something worth telling the admin that is not a failure.
    Notice { message: String },
    /// The run is over.
    Done {
        ok: usize,
        changed: usize,
        failed: usize,
        peak_memory_kib: u64,
        elapsed_ms: u64,
    },
    /// The run could not go on.
    Error { message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Ok,
    Changed,
    Failed,
    Skipped,
}
