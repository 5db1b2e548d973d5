//! The distro side of /etc: what the installed packages shipped, kept on a `distro`
//! branch of /etc's repository, and the classification of every live file against it.
//!
//! - [`host`] reads dpkg's and ucf's databases and hashes /etc;
//! - [`pristine`] gets the pristine files: from the .debs, ucf's cache, and templates;
//! - [`tables`] documents what dpkg cannot say: config generated from templates, and
//!   files the system generates;
//! - [`branch`] commits them on the `distro` branch, from blobs, never touching live /etc;
//! - [`baseline`] builds a reference install of the same packages, whose /etc tells the
//!   files maintainer scripts made from the site's;
//! - [`classify`] (pure) sorts files into pristine, modified, site, leftover, generated;
//! - [`drift`] ties them together for `placard etc drift`;
//! - [`capture`] gathers what a draft site needs to rebuild the host (`placard capture`),
//!   checking packages against the target release's lists ([`archive`]); [`draft`]
//!   writes the draft on the controller;
//! - [`migrate`] replays a draft's patches onto a new host's own pristine files
//!   (`placard etc migrate`).
//! - [`secrets`] says which files are secrets (never captured) and finds them in /etc's history;
//! - [`successors`] says where the settings of a conffile a release dropped go;
//! - [`upgrade`] drives a release upgrade and merges the distro's changes into the
//!   locally modified conffiles (`placard etc upgrade`, `placard etc resolve`);
//! - [`validate`] checks the files upgrade, migrate and resolve write, by one rule.
//!
//! This runs on the host, in the agent. The three-way merges that `etc upgrade` will
//! run on these files are in [`crate::merge`].

pub mod archive;
pub mod baseline;
pub mod branch;
pub mod capture;
pub mod classify;
pub mod draft;
pub mod drift;
pub mod host;
pub mod migrate;
pub mod pristine;
pub mod secrets;
pub mod successors;
pub mod tables;
pub mod upgrade;
pub mod validate;
