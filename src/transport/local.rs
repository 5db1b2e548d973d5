//! `--local`: the agent runs in this process, on this machine.

use anyhow::Context as _;
use tokio::sync::mpsc::UnboundedSender;

use crate::agent;
use crate::plan::{Bundle, Event};

pub async fn run(bundle: Bundle, events: UnboundedSender<Event>) -> anyhow::Result<()> {
    tokio::task::spawn_blocking(move || {
        let mut emit = |event: Event| {
            let _ = events.send(event);
        };
        agent::run(&bundle, &agent::Paths::default(), &mut emit)
    })
    .await
    .context("the local agent stopped unexpectedly")?
}
