//! placard: declarative provisioning for self-hosted community servers.
//!
//! Data flows one way: **load → validate → plan → ship → apply → report**.
//!
//! - [`inventory`] and [`role`] load the admin's YAML, strictly, keeping positions
//!   ([`source`]) so that every problem is reported as `file:line:col` ([`error`]).
//! - [`plan`] resolves each host's variables, renders every task once with placeholder
//!   facts ([`template`]) to catch errors before any host is contacted, and builds one
//!   [`plan::Bundle`] per host.
//! - [`controller`] sends the bundles concurrently through [`transport`] (SSH with
//!   russh, or in-process with `--local`); on the host, the same binary runs as the
//!   [`agent`]: it gathers [`facts`], runs each [`resource`], runs handlers, commits
//!   /etc to git, and streams [`plan::Event`]s back.
//! - [`report`] turns the events into progress lines and the end report; [`dns`]
//!   formats the records `placard dns` prints.
//!
//! Beside the apply pipeline, for distro configuration: [`distro`] keeps the pristine
//! conffiles of the installed packages on a `distro` branch of /etc's repository and
//! classifies /etc against it (`placard etc drift`); [`merge`] merges a site's changes
//! onto new pristine files, setting by setting where the file is a list of settings.
//!
//! At the bottom, [`system`] is how placard touches a host, and everything above calls
//! it: programs run as an argv under a deadline, files replaced atomically with a journal
//! of what a run is about to leave on disk, and /etc's git. A run killed at any instant
//! is undone by the next one before it does anything else.
//!
//! [`sandbox`] boots local Debian hosts with systemd-nspawn, for trying roles and for
//! the tests. [`commands`] ties the pieces to the command line ([`cli`]).

pub mod agent;
pub mod cli;
pub mod commands;
pub mod controller;
pub mod diff;
pub mod distro;
pub mod dns;
pub mod error;
pub mod facts;
pub mod inventory;
pub mod merge;
pub mod monitor;
pub mod plan;
pub mod pull;
pub mod report;
pub mod resource;
pub mod role;
pub mod sandbox;
pub mod settings;
pub mod source;
pub mod system;
pub mod template;
pub mod transport;
pub mod verify;
