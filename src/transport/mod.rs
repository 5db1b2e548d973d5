//! Getting a bundle to a host's agent and its events back.
//!
//! Two routes: [`local`] runs the agent in this process (`--local`, an admin on the
//! server itself); [`remote`] reaches the host over SSH ([`ssh`], russh), uploads the
//! agent once per version and runs it — one connection and one exec per host per run.
//! [`agent_binary`] chooses the executable uploaded: the static build when there is one.

pub mod agent_binary;
pub mod local;
pub mod remote;
pub mod ssh;

use tokio::sync::mpsc::UnboundedSender;

use crate::plan::{Bundle, Event};

/// How to reach one host.
#[derive(Debug, Clone)]
pub enum Route {
    Local,
    Ssh(ssh::SshTarget),
}

/// Runs `bundle` on the host behind `route`, sending its events as they come.
pub async fn run(
    route: &Route,
    options: &ssh::SshOptions,
    bundle: &Bundle,
    events: UnboundedSender<Event>,
) -> anyhow::Result<()> {
    match route {
        Route::Local => local::run(bundle.clone(), events).await,
        Route::Ssh(target) => remote::run(target, options, bundle, events).await,
    }
}
