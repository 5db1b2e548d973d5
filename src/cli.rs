//! The command line, exactly as typed: clap structs and nothing else (no I/O here).
//! [`crate::settings`] resolves them into what a run uses.
//!
//! A new command is a variant of [`Command`] (with its own `Args` struct when it takes
//! more than [`HostArgs`] or [`TargetArgs`]), and one arm of the match in
//! [`crate::commands::run`]; a command with subcommands of its own gets an enum like
//! [`EtcCommand`]. Every command that contacts hosts flattens [`Common`].

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::report::Format;

/// Declarative provisioning for self-hosted community servers.
///
/// Exit codes: 0 done (or nothing to change), 1 a host failed, 2 changes pending
/// (plan), 3 invalid input (nothing was contacted).
#[derive(Debug, Parser)]
#[command(name = "placard", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring hosts to what their roles describe.
    Apply(ApplyArgs),
    /// Show what apply would change, with diffs; exit 2 when something would.
    Plan(TargetArgs),
    /// Run the roles' health checks on the hosts.
    Verify(TargetArgs),
    /// Show what placard knows of a host.
    Facts(HostArgs),
    /// The DNS records to publish for a host (MX, SPF, DKIM, DMARC, PTR…), as
    /// zone-file lines; values only the host knows, such as its DKIM key, are read there.
    Dns(HostArgs),
    /// /etc in git on a host: its history, its drift from the packages' pristine files,
    /// a Debian release upgrade that merges the distro's changes, a captured host's
    /// changes replayed.
    Etc {
        #[command(subcommand)]
        command: EtcCommand,
    },
    /// Write a draft site repository for rebuilding a legacy host: its manually installed
    /// packages (checked against the target release), its modified conffiles as patches,
    /// the files the site added, its enabled services, an inventory and a `site` role.
    Capture(CaptureArgs),
    /// The roles: list them, or show one's purpose and variables.
    Roles {
        #[command(subcommand)]
        command: RolesCommand,
        /// The site folder holding roles/ and templates/ (default: the current folder).
        #[arg(long, global = true)]
        site: Option<PathBuf>,
    },
    /// Monitoring: each host's checks as its monitor role last found them; `run` is what
    /// the role's timer runs on the host.
    Monitor(MonitorArgs),
    /// On a host in pull mode: fetch the site's repository and apply a new signed
    /// commit with --local (what the pull role's timer runs).
    Pull(crate::pull::cli::PullArgs),
    /// Local Debian hosts (systemd-nspawn) to try roles on.
    Sandbox {
        #[command(subcommand)]
        command: SandboxCommand,
    },
    /// Run as the agent on a host: a bundle on stdin, events on stdout.
    #[command(hide = true)]
    Agent,
}

#[derive(Debug, Subcommand)]
pub enum EtcCommand {
    /// Uncommitted changes in /etc, and files kept out of its git.
    Status(HostArgs),
    /// The history of /etc.
    Log(HostArgs),
    /// The uncommitted changes, as a diff.
    Diff(HostArgs),
    /// Every file under /etc against the installed packages' pristine files.
    Drift(DriftArgs),
    /// Create /etc's git repository and commit /etc as found.
    Init(HostArgs),
    /// Upgrade to the next Debian release, merging the distro's changes into the
    /// locally modified conffiles.
    Upgrade(UpgradeArgs),
    /// Take the admin's resolutions of the upgrade's (or migrate's) conflicts.
    Resolve(HostArgs),
    /// Replay a capture's site changes onto this host's own pristine files.
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct DriftArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// Build the reference install that tells files maintainer scripts made from the
    /// site's, when none is cached for the host's package set (minutes, and some 450 MB
    /// of scratch space on the host; see docs/migrate.md).
    #[arg(long)]
    pub reference: bool,
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// The Debian release to upgrade to, by codename (e.g. trixie).
    #[arg(long)]
    pub release: String,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// The draft folder `placard capture` wrote.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
}

#[derive(Debug, Args)]
pub struct CaptureArgs {
    #[command(flatten)]
    pub host: HostArgs,
    /// The folder to write the draft into (new or empty).
    #[arg(short, long, value_name = "DIR")]
    pub output: PathBuf,
    /// The Debian release the site will be rebuilt on; packages are checked against it.
    #[arg(long, default_value = "trixie")]
    pub release: String,
    /// Build the reference install that tells files maintainer scripts made from the
    /// site's, when none is cached (as `placard etc drift --reference`).
    #[arg(long)]
    pub reference: bool,
}

#[derive(Debug, Args)]
pub struct Common {
    /// The inventory file.
    #[arg(short, long, env = "PLACARD_INVENTORY")]
    pub inventory: PathBuf,
    /// The site folder holding roles/ and templates/ (default: the inventory's parent
    /// folder when it has roles/, else the current folder).
    #[arg(long)]
    pub site: Option<PathBuf>,
    /// Run on this machine, in-process, instead of over SSH.
    #[arg(long)]
    pub local: bool,
    /// Trust and record the host key of a host contacted for the first time.
    #[arg(long)]
    pub accept_new_host_keys: bool,
    /// A known_hosts file to check host keys against (repeatable; overrides the inventory).
    #[arg(long)]
    pub known_hosts: Vec<PathBuf>,
    /// The most seconds one host may take (connecting, uploading the agent, running it);
    /// a host past it fails, naming the stage, and the others go on.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub host_timeout: u64,
    #[arg(long, value_enum, default_value = "human")]
    pub format: Format,
}

/// What `plan` and `verify` take: hosts to run on and how.
#[derive(Debug, Args)]
pub struct TargetArgs {
    #[command(flatten)]
    pub common: Common,
    /// Hosts or groups to run on (default: all).
    pub targets: Vec<String>,
    /// How many hosts run at once.
    #[arg(short, long, default_value_t = 16)]
    pub jobs: usize,
    /// List unchanged tasks too.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub run: TargetArgs,
    /// Only report what would change.
    #[arg(long)]
    pub check: bool,
    /// Show a diff of every changed file.
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    pub common: Common,
    /// The host.
    pub host: String,
}

#[derive(Debug, Subcommand)]
pub enum RolesCommand {
    /// The roles and what each is for.
    List,
    /// A role's purpose, its variables with their documentation and defaults, its tasks.
    Show { role: String },
}

#[derive(Debug, Subcommand)]
pub enum SandboxCommand {
    /// Build (once) and boot a Debian host named NAME, reachable over SSH on loopback.
    Up {
        name: String,
        /// Debian release: bullseye (11), bookworm (12) or trixie (13).
        #[arg(long, default_value = "bookworm")]
        suite: String,
        /// The loopback port its sshd listens on.
        #[arg(long, default_value_t = 2201)]
        port: u16,
    },
    /// Stop the host and delete it.
    Down { name: String },
    /// Open a shell on the host.
    Ssh { name: String },
    /// The sandboxes that run.
    List,
}

/// `placard monitor …`.
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
        #[arg(long, default_value = crate::monitor::CONFIG_PATH)]
        config: PathBuf,
        /// placard's state folder on the host (checks.json, monitor/).
        #[arg(long, default_value = crate::system::STATE_DIR)]
        state: PathBuf,
    },
}
