//! The bundle: everything one host needs for one run, sent to its agent on stdin as JSON.
//!
//! It is versioned ([`FORMAT`]): an agent refuses a bundle of another format rather than
//! guess, and since the agent is the controller's own binary, uploaded by content hash,
//! the two only disagree when someone runs an agent by hand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::role::{CheckSpec, Task};

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bundle {
    pub format: u32,
    pub host: String,
    pub job: Job,
    pub roles: Vec<RoleBundle>,
    /// The host's resolved variables.
    pub vars: Map<String, Value>,
    /// Template name → source, for the templates of the roles above.
    pub templates: BTreeMap<String, String>,
    /// Who runs this, for the lock and the commit message: `user@controller`.
    pub operator: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoleBundle {
    pub name: String,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
    pub checks: Vec<CheckSpec>,
    #[serde(default)]
    pub dns: Vec<crate::dns::DnsRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Job {
    /// Bring the host to the roles; with `check`, only report what would change.
    Apply { check: bool, diff: bool },
    /// Run the roles' health checks.
    Verify,
    /// Report the host's facts.
    Facts,
    /// Render the roles' DNS records on the host, where values such as a generated
    /// public key live.
    Dns,
    /// Show /etc's git repository.
    Etc { command: EtcCommand },
    /// Gather what a draft site needs to rebuild the host, checking its packages
    /// against `release` (`placard capture`).
    Capture {
        release: String,
        /// Build the reference install when none is cached.
        #[serde(default)]
        reference: bool,
    },
    /// Replay a draft's site changes onto the host's own pristine files
    /// (`placard etc migrate`).
    Migrate {
        source: String,
        files: Vec<crate::distro::migrate::MigrateFile>,
        /// Deleted conffiles and binary files of the draft (issue 13, item 7).
        #[serde(default)]
        others: crate::distro::migrate::Others,
    },
    /// Upgrade the host's packages to `release`, keeping local conffiles, then merge the
    /// distro's changes into them ([`crate::distro::upgrade`]).
    EtcUpgrade { release: String },
    /// Take the admin's resolutions of upgrade conflicts into /etc.
    EtcResolve,
    /// Report what the monitor last found ([`crate::monitor::status`]).
    Monitor,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcCommand {
    Status,
    Log,
    Diff,
    /// Classify every file against the packages' pristine versions (updates the distro
    /// branch); `reference`: build the reference install when none is cached.
    Drift {
        #[serde(default)]
        reference: bool,
    },
    /// Create /etc's repository and commit /etc as found.
    Init,
}
