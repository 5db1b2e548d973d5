//! The bottom layer: how placard touches a host. Everything above calls these, and
//! nothing here calls up.
//!
//! - [`command`]: running a program, always an argv, always under a deadline, its
//!   process group stopped when it passes it;
//! - [`atomic`]: replacing a file so that it is wholly old or wholly new, with the
//!   owner, group and mode asked for;
//! - [`journal`]: what a run is about to leave on disk, so that the next run can undo
//!   what a killed one left half done;
//! - [`leftovers`]: the sweep of /etc for files a killed run of any version left;
//! - [`etc_git`]: /etc as a git repository, with stale locks cleared and secrets kept
//!   out of history;
//! - [`etc_scan`]: the record of the last scan of /etc that found nothing to commit,
//!   which tells the next run whether anything changed since;
//! - [`systemd`]: asking PID 1 about units over its private socket, without a program.

/// The agent's own state on a host: journal, pending handlers, declared paths.
pub const STATE_DIR: &str = "/var/lib/placard";

pub mod atomic;
pub mod command;
pub mod etc_git;
pub mod etc_scan;
pub mod journal;
pub mod leftovers;
pub mod lock;
pub mod systemd;
