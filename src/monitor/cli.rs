//! `placard monitor …` as typed: clap structs and nothing else (no I/O here).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::Common;

#[derive(Debug, Args)]
pub struct MonitorArgs {
    #[command(subcommand)]
    pub command: MonitorCommand,
}

#[derive(Debug, Subcommand)]
pub enum MonitorCommand {
    /// Each host's monitored checks: their last state and since when (what the monitor
    /// role's timer last found there).
    Status {
        #[command(flatten)]
        common: Common,
        /// Hosts or groups (default: all).
        targets: Vec<String>,
    },
    /// On a host: run the checks the last apply stored, and mail the admin about the
    /// ones that changed state. The monitor role's timer runs this; run it by hand to
    /// check now.
    Run {
        /// The monitor's settings, written by the monitor role.
        #[arg(long, default_value = super::CONFIG_PATH)]
        config: PathBuf,
        /// placard's state folder on the host (checks.json, monitor/).
        #[arg(long, default_value = crate::system::STATE_DIR)]
        state: PathBuf,
    },
}
