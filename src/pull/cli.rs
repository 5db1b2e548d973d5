//! `placard pull` as typed: clap structs and nothing else (no I/O here).

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Pull mode's settings, written by the pull role.
    #[arg(long, default_value = super::CONFIG_PATH)]
    pub config: PathBuf,
    /// placard's state folder on the host (pull/ holds the checkout and the state).
    #[arg(long, default_value = crate::system::STATE_DIR)]
    pub state: PathBuf,
}
