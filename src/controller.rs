//! The controller's run: bundles out to hosts concurrently, events back to the report.
//!
//! Each host runs in its own tokio task, at most `jobs` at once. A host that fails —
//! unreachable, a refused host key, a failed task — only fails its own report; the
//! others go on.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::inventory::Inventory;
use crate::plan::{Bundle, Event};
use crate::report::{HostReport, Reporter};
use crate::transport::ssh::{SshOptions, SshTarget};
use crate::transport::{self, Route};

/// How to reach `host`: its inventory entry, its jump hosts, and the global ssh settings.
pub fn route(inventory: &Inventory, host: &str, local: bool) -> Route {
    if local {
        return Route::Local;
    }
    Route::Ssh(target(inventory, host))
}

fn target(inventory: &Inventory, host: &str) -> SshTarget {
    let entry = inventory.entry(host);
    let settings = &inventory.file.ssh;
    let via = entry.via.as_ref().map(|via| {
        Box::new(if inventory.file.hosts.contains_key(via) {
            target(inventory, via)
        } else {
            parse_jump(via)
        })
    });
    SshTarget {
        name: host.to_string(),
        address: entry.address.clone().unwrap_or_else(|| host.to_string()),
        port: entry.port,
        user: entry.user.clone().or_else(|| settings.user.clone()),
        identity: entry
            .identity
            .as_deref()
            .or(settings.identity.as_deref())
            .map(|p| inventory.resolve_path(p)),
        via,
    }
}

/// `user@host:port`, each part but the host optional.
fn parse_jump(text: &str) -> SshTarget {
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) => (Some(user.to_string()), rest),
        None => (None, text),
    };
    let (address, port) = match rest.rsplit_once(':') {
        Some((address, port)) if port.parse::<u16>().is_ok() => {
            (address.to_string(), port.parse().ok())
        }
        _ => (rest.to_string(), None),
    };
    SshTarget {
        name: text.to_string(),
        address,
        port,
        user,
        identity: None,
        via: None,
    }
}

/// Runs every bundle, reporting events as they arrive; one report per host, in order.
pub async fn run(
    bundles: Vec<(Bundle, Route)>,
    options: SshOptions,
    jobs: usize,
    reporter: &mut dyn Reporter,
) -> Vec<HostReport> {
    let permits = Arc::new(Semaphore::new(jobs.max(1)));
    let options = Arc::new(options);
    let (sender, mut receiver) =
        mpsc::unbounded_channel::<(usize, Option<Event>, Option<String>)>();
    let mut reports: Vec<HostReport> = bundles
        .iter()
        .map(|(b, _)| HostReport::new(&b.host))
        .collect();
    for (index, (bundle, route)) in bundles.into_iter().enumerate() {
        let permits = permits.clone();
        let options = options.clone();
        let sender = sender.clone();
        tokio::spawn(async move {
            let _permit = permits.acquire_owned().await;
            let (events, mut host_events) = mpsc::unbounded_channel();
            let forward = {
                let sender = sender.clone();
                tokio::spawn(async move {
                    while let Some(event) = host_events.recv().await {
                        let _ = sender.send((index, Some(event), None));
                    }
                })
            };
            let result = transport::run(&route, &options, &bundle, events).await;
            let _ = forward.await;
            let error = result.err().map(|e| format!("{e:#}"));
            let _ = sender.send((index, None, error.or(Some(String::new()))));
        });
    }
    drop(sender);
    while let Some((index, event, finished)) = receiver.recv().await {
        let report = &mut reports[index];
        if let Some(event) = event {
            reporter.event(&report.host, &event);
            report.events.push(event);
        }
        if let Some(error) = finished.filter(|e| !e.is_empty()) {
            reporter.event(
                &report.host,
                &Event::Error {
                    message: error.clone(),
                },
            );
            report.error = Some(error);
        }
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_hosts_in_ssh_form() {
        let jump = parse_jump("admin@relay.club.example:2222");
        assert_eq!(
            (jump.user.as_deref(), jump.address.as_str(), jump.port),
            (Some("admin"), "relay.club.example", Some(2222))
        );
        let bare = parse_jump("relay");
        assert_eq!(
            (bare.user, bare.address.as_str(), bare.port),
            (None, "relay", None)
        );
    }
}
