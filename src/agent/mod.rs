//! The agent: what runs on the host, in one process per run.
//!
//! `placard agent` reads a [`Bundle`] on stdin and writes [`Event`]s, one JSON line
//! each, on stdout. It takes the host's lock, commits stray changes in /etc, renders and
//! runs each task in order, runs the handlers that were notified, and commits /etc with
//! a message naming the roles and files. It is plain synchronous code: a run is a
//! sequence of small system calls and programs, and nothing here waits on the network.
//!
//! A failed task stops the tasks after it (they may depend on it), but the handlers
//! already notified still run: a configuration that was written must be loaded, or the
//! next run, finding the file unchanged, would never load it. For the same reason the
//! notified handlers are written down as soon as they are notified
//! ([`state::PendingHandlers`]): a run that is killed, or whose controller goes away,
//! leaves them to the next run.
//!
//! A run can be killed at any instant. Before anything else, under the lock, the next
//! run undoes what was left half done ([`recover`]): files staged or kept beside their
//! targets, a configuration left live mid-validation, and git lock files.
//!
//! When the controller's connection goes away (its SSH session ends, so our stdout
//! has no reader), the run finishes the step it is in, then stops: no further task, no
//! handler (they stay pending), /etc committed, the lock released.

pub mod state;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use serde_json::json;

use crate::facts::Facts;
use crate::plan::{bundle, loop_items, template_data, Bundle, EtcCommand, Event, Job, TaskStatus};
use crate::resource::service::UnitStates;
use crate::resource::Context;
use crate::system::{etc_git, journal::Journal, leftovers, lock};
use crate::template::{Renderer, SecretSource};

/// Where the agent works; tests point these elsewhere.
#[derive(Debug, Clone)]
pub struct Paths {
    pub etc: std::path::PathBuf,
    pub lock: std::path::PathBuf,
    /// The agent's own state: the journal, pending handlers, secret-bearing paths.
    pub state: std::path::PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            etc: "/etc".into(),
            lock: lock::LOCK_FILE.into(),
            state: state::STATE_DIR.into(),
        }
    }
}

/// Set once the controller's connection is gone; see [`watch_controller`].
static CONTROLLER_GONE: AtomicBool = AtomicBool::new(false);

fn controller_gone() -> bool {
    CONTROLLER_GONE.load(Ordering::Relaxed)
}

/// Watches stdout, the pipe to the controller's SSH session: when its reader goes away,
/// the kernel reports an error or hang-up on our end, and the run stops after its
/// current step.
fn watch_controller() {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    std::thread::spawn(|| {
        let stdout = std::io::stdout();
        loop {
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    let gone = fds[0].revents().is_some_and(|r| {
                        r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL)
                    });
                    if gone {
                        CONTROLLER_GONE.store(true, Ordering::Relaxed);
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    });
}

/// `placard agent`: bundle on stdin, events on stdout.
pub fn main() -> Result<()> {
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read the bundle on stdin")?;
    watch_controller();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut emit = |event: Event| {
        // The controller reads lines as they come; a closed pipe means it is gone, and
        // the run goes on to leave the host consistent.
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    };
    let bundle: Bundle = match serde_json::from_slice(&input) {
        Ok(bundle) => bundle,
        Err(error) => {
            emit(Event::Error {
                message: format!("cannot read the bundle: {error}"),
            });
            return Ok(());
        }
    };
    if let Err(error) = run(&bundle, &Paths::default(), &mut emit) {
        emit(Event::Error {
            message: format!("{error:#}"),
        });
    }
    Ok(())
}

/// Runs one bundle, reporting through `emit`.
pub fn run(bundle: &Bundle, paths: &Paths, emit: &mut dyn FnMut(Event)) -> Result<()> {
    if bundle.format != bundle::FORMAT {
        bail!(
            "this agent reads bundle format {}, the controller sent {}",
            bundle::FORMAT,
            bundle.format
        );
    }
    let started = Instant::now();
    // The bootstrap over SSH runs with umask 077 (for the uploaded binary); the programs
    // the agent runs — apt, maintainer scripts, a role's commands — get Debian's 022,
    // as in a root shell. Files the agent writes itself take explicit modes.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    match &bundle.job {
        Job::Facts => emit(Event::Output {
            data: serde_json::to_value(Facts::gather())?,
        }),
        Job::Verify => {
            let (data, renderer) = host_renderer(bundle)?;
            let mut failed = 0;
            for role in &bundle.roles {
                for check in &role.checks {
                    let (name, ok, detail) =
                        match check.render(|text| renderer.render_string(text, &data)) {
                            Ok(rendered) => {
                                let (ok, detail) = crate::verify::run(&rendered);
                                (rendered.name, ok, detail)
                            }
                            Err(message) => (check.name.clone(), false, message),
                        };
                    failed += usize::from(!ok);
                    emit(Event::Check {
                        role: role.name.clone(),
                        name,
                        ok,
                        detail,
                    });
                }
            }
            emit(done(0, 0, failed, started));
        }
        Job::Etc { command } => emit(Event::Output {
            data: etc_command(bundle, paths, *command)?,
        }),
        Job::Capture { .. } | Job::Migrate { .. } => emit(Event::Output {
            data: distro_job(bundle, paths)?,
        }),
        Job::EtcUpgrade { release } => {
            let _lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
            let worktree = std::path::Path::new(crate::distro::upgrade::WORKTREE);
            let report =
                crate::distro::upgrade::run(&paths.etc, worktree, release, &mut |progress| {
                    use crate::distro::upgrade::Progress;
                    emit(match progress {
                        Progress::Notice(message) => Event::Notice { message },
                        Progress::Commit { id, summary } => Event::Commit { id, summary },
                    })
                })?;
            emit(Event::Output {
                data: json!({ "upgrade": report }),
            });
        }
        Job::EtcResolve => {
            let _lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
            // Migrate's conflicts first: when there are some and no upgrade is under
            // way, they are all there is to resolve.
            let folder = std::path::Path::new(crate::distro::migrate::CONFLICTS_DIR);
            let migrate = crate::distro::migrate::resolve(&paths.etc, folder)?;
            let upgrading =
                std::path::Path::new(crate::distro::upgrade::WORKTREE).join("conflicts.json");
            let report = match migrate {
                Some(report) if !upgrading.exists() => report,
                Some(report) => {
                    let refused = report.refusal();
                    emit(Event::Output {
                        data: json!({ "resolve": report }),
                    });
                    if let Some(message) = refused {
                        emit(Event::Error { message });
                    }
                    crate::distro::upgrade::resolve(
                        &paths.etc,
                        std::path::Path::new(crate::distro::upgrade::WORKTREE),
                    )?
                }
                None => crate::distro::upgrade::resolve(
                    &paths.etc,
                    std::path::Path::new(crate::distro::upgrade::WORKTREE),
                )?,
            };
            let refused = report.refusal();
            emit(Event::Output {
                data: json!({ "resolve": report }),
            });
            // Files that still hold markers, or whose validator failed, fail the run.
            if let Some(message) = refused {
                emit(Event::Error { message });
            }
        }
        Job::Dns => emit(Event::Output {
            data: dns_records(bundle)?,
        }),
        Job::Monitor => emit(Event::Output {
            data: crate::monitor::status(&paths.state)?,
        }),
        Job::Apply { check, diff } => apply(bundle, paths, *check, *diff, emit, started)?,
    }
    Ok(())
}

/// What every job that renders needs: the template data (variables and this host's
/// facts) and a renderer reading the host's secrets.
fn host_renderer(bundle: &Bundle) -> Result<(serde_json::Value, Renderer)> {
    let data = template_data(&bundle.vars, &Facts::gather(), &bundle.host);
    let renderer = Renderer::new(&bundle.templates, SecretSource::Host)
        .map_err(|f| anyhow::anyhow!("template {:?}: {}", f.template, f.message))?;
    Ok((data, renderer))
}

/// The roles' DNS records, rendered with the host's facts and files.
fn dns_records(bundle: &Bundle) -> Result<serde_json::Value> {
    let (data, renderer) = host_renderer(bundle)?;
    let mut records = Vec::new();
    for role in &bundle.roles {
        for record in &role.dns {
            let rendered =
                crate::plan::render_record(&renderer, record, &data).map_err(|message| {
                    anyhow::anyhow!(
                        "role {}, DNS record {} {}: {message}",
                        role.name,
                        record.kind,
                        record.name
                    )
                })?;
            records.extend(rendered);
        }
    }
    if renderer.take_used_secret() {
        bail!("a DNS record uses a secret; secrets never leave the host");
    }
    Ok(json!({ "records": records }))
}

fn etc_command(bundle: &Bundle, paths: &Paths, command: EtcCommand) -> Result<serde_json::Value> {
    let etc = paths.etc.as_path();
    let open = || -> Result<etc_git::EtcRepo> {
        etc_git::EtcRepo::open(etc)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a git repository yet, so there is no history to compare with and nowhere to keep the distro branch; nothing was written. \
                 Run `placard etc init HOST` to create it (`placard apply` creates it too)",
                etc.display()
            )
        })
    };
    Ok(match command {
        EtcCommand::Init => etc_init(bundle, paths)?,
        EtcCommand::Status => json!({ "changes": open()?.changes()?,
            // Issue 13, item 4: secrets an earlier commit already put in the history.
            "secrets_in_history": crate::distro::secrets::check_etc(etc)? }),
        EtcCommand::Log => {
            json!({ "commits": open()?.log(20)?.into_iter().map(|(id, time, summary)| json!({"id": id, "time": time, "summary": summary})).collect::<Vec<_>>() })
        }
        EtcCommand::Diff => json!({ "diff": open()?.diff()? }),
        EtcCommand::Drift { reference } => {
            open()?;
            // Drift writes the distro branch: one run at a time.
            let _lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
            json!({ "drift": crate::distro::drift::run(&crate::distro::host::Roots::host(etc), reference)? })
        }
    })
}

/// `capture` and `etc migrate`: both need /etc's repository (they write the distro
/// branch, and migrate commits), and one run at a time.
fn distro_job(bundle: &Bundle, paths: &Paths) -> Result<serde_json::Value> {
    let etc = paths.etc.as_path();
    if etc_git::EtcRepo::open(etc)?.is_none() {
        bail!(
            "{} is not a git repository yet, so there is nowhere to keep the distro branch of pristine files; nothing was written. \
             Run `placard etc init HOST` to create it (`placard apply` creates it too)",
            etc.display()
        );
    }
    let _lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
    let roots = crate::distro::host::Roots::host(etc);
    Ok(match &bundle.job {
        Job::Capture { release, reference } => {
            json!({ "capture": crate::distro::capture::run(&roots, release, *reference)? })
        }
        Job::Migrate {
            source,
            files,
            others,
        } => json!({
            "migrate": crate::distro::migrate::run(
                etc,
                std::path::Path::new(crate::distro::migrate::CONFLICTS_DIR),
                source,
                files,
                others,
            )?
        }),
        _ => bail!("not a distro job"),
    })
}

/// `etc init`: the repository, and a first commit of /etc as found; says what it did.
fn etc_init(bundle: &Bundle, paths: &Paths) -> Result<serde_json::Value> {
    let etc = paths.etc.as_path();
    let _lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
    let (repo, created) = etc_git::EtcRepo::open_or_init(etc)?;
    if !created {
        return Ok(
            json!({ "init": { "created": false, "message": format!("{} is already a git repository; nothing was written", etc.display()) } }),
        );
    }
    let private = repo.update_ignores(&etc_git::Declared::load(&paths.state)?)?;
    let files = repo.changes()?;
    let commit = repo.commit_all(
        "placard etc init: /etc as found",
        &file_list(files.iter().map(String::as_str)),
    )?;
    let mut message = format!(
        "created a git repository in {} and committed {} files",
        etc.display(),
        files.len()
    );
    if !private.is_empty() {
        message.push_str(&format!(
            "; kept out, as they are not world-readable and may hold secrets: {} \
             (to record one anyway, add `!/PATH` to /etc/.gitignore after placard's section)",
            private.join(", ")
        ));
    }
    Ok(json!({ "init": { "created": true, "commit": commit, "message": message } }))
}

/// Undoes what a killed run left, before anything else and under the lock: the
/// journal's steps, leftovers in /etc (with `sweep`: when the run before may have
/// left some, see [`state`]), and git's lock files. Says what it did.
pub fn recover(
    paths: &Paths,
    journal: &Journal,
    repo: Option<&etc_git::EtcRepo>,
    sweep: bool,
) -> Result<Vec<String>> {
    let mut said = journal.recover()?;
    if sweep {
        said.extend(leftovers::sweep(&paths.etc)?);
    }
    if let Some(repo) = repo {
        said.extend(repo.clear_stale_locks()?);
    }
    Ok(said)
}

fn apply(
    bundle: &Bundle,
    paths: &Paths,
    check: bool,
    show_diff: bool,
    emit: &mut dyn FnMut(Event),
    started: Instant,
) -> Result<()> {
    let lock = lock::Lock::acquire(&paths.lock, &bundle.operator)?;
    emit(Event::Started {
        version: env!("CARGO_PKG_VERSION").to_string(),
    });
    let notice = |emit: &mut dyn FnMut(Event), message: String| emit(Event::Notice { message });

    let mut context = Context::new(check);
    let state = state::State::new(&paths.state);
    let mut pending = state::PendingHandlers::default();
    let mut declared = etc_git::Declared::default();
    let repo = if check {
        None
    } else {
        let journal = Journal::open(&state.journal())?;
        let existing = etc_git::EtcRepo::open(&paths.etc)?;
        let sweep = !state.ended_cleanly(lock.previous());
        for message in recover(paths, &journal, existing.as_ref(), sweep)? {
            notice(emit, message);
        }
        context.journal = Some(journal);
        let (mut repo, created) = match existing {
            Some(repo) => (repo, false),
            None => etc_git::EtcRepo::open_or_init(&paths.etc)?,
        };
        repo.record_scans_in(state.etc_scan());
        if created {
            notice(
                emit,
                format!(
                    "created a git repository in {} to record every change",
                    paths.etc.display()
                ),
            );
        }
        // The monitor's timer runs this binary; kept at a path of its own, since the
        // bootstrap removes old versions.
        if let Err(error) = crate::monitor::keep_agent(&paths.state) {
            notice(
                emit,
                format!("the monitor cannot keep this agent for its timer: {error:#}"),
            );
        }
        declared = etc_git::Declared::load(&paths.state)?;
        pending = state.pending_handlers()?;
        for file in repo.update_ignores(&declared)? {
            notice(emit, private_file_notice(&file));
        }
        let stray = repo.changes_since_scan()?;
        // Nothing git sees changed: a commit would record the same tree (staging all of
        // /etc costs a no-op run more than any task), unless etckeeper adds owners and
        // modes that git does not see.
        let commit = if stray.is_empty() && !repo.uses_etckeeper() {
            None
        } else {
            repo.commit_all(
                "changes found before placard run",
                &file_list(stray.iter().map(String::as_str)),
            )?
        };
        if let Some(id) = commit {
            emit(Event::Commit {
                id,
                summary: format!(
                    "changes found before placard run ({})",
                    count_files(stray.len())
                ),
            });
        }
        Some(repo)
    };

    let (data, renderer) = host_renderer(bundle)?;
    // Handlers an interrupted run may have notified run in this one.
    let mut notified: BTreeSet<(usize, String)> = BTreeSet::new();
    for (role, handler) in &pending.handlers {
        match bundle.roles.iter().position(|r| &r.name == role) {
            Some(index) if bundle.roles[index].handlers.iter().any(|h| &h.name == handler) => {
                notice(
                    emit,
                    format!("handler `{handler}` of role {role} may have been notified by an interrupted run: it runs in this one"),
                );
                notified.insert((index, handler.clone()));
            }
            _ => notice(
                emit,
                format!("handler `{handler}` of role {role} was notified by an interrupted run, but this run has no such handler; run it by hand if it is still needed"),
            ),
        }
    }
    context.unit_states = UnitStates::ask(&service_units(bundle, &data, &renderer));
    let mut tasks = TaskRun {
        renderer: &renderer,
        state: &state,
        repo: repo.as_ref(),
        declared: &mut declared,
        context: &mut context,
    };
    let (mut ok, mut changed, mut failed) = (0, 0, 0);
    let mut interrupted = false;
    // The handlers written down as pending. A task's handlers are written down before
    // it runs: a run killed just after the task changed a file must still leave the
    // reload to the next run, which will find the file unchanged.
    let mut written_down = notified.clone();

    'roles: for (role_index, role) in bundle.roles.iter().enumerate() {
        for task in &role.tasks {
            let task_started = Instant::now();
            let runs = loop_items(task, &data).map_err(anyhow::Error::msg);
            let runs = match runs {
                Ok(runs) => runs,
                Err(error) => {
                    failed += 1;
                    emit(Event::Task {
                        role: role.name.clone(),
                        task: task.name.clone(),
                        handler: false,
                        status: TaskStatus::Failed,
                        reason: format!("{error:#}"),
                        diff: None,
                        duration_ms: millis(task_started),
                    });
                    break 'roles;
                }
            };
            for item_data in runs {
                let task_started = Instant::now();
                if controller_gone() {
                    interrupted = true;
                    break 'roles;
                }
                let name = renderer
                    .render_string(&task.name, &item_data)
                    .unwrap_or_else(|_| task.name.clone());
                match crate::role::task::condition_holds(task, |text| {
                    renderer.render_string(text, &item_data)
                }) {
                    Ok(true) => {}
                    Ok(false) => {
                        let reason = format!(
                            "skipped: `when: {}` is false",
                            task.when.as_deref().unwrap_or_default()
                        );
                        emit(Event::Task {
                            role: role.name.clone(),
                            task: name,
                            handler: false,
                            status: TaskStatus::Skipped,
                            reason,
                            diff: None,
                            duration_ms: millis(task_started),
                        });
                        continue;
                    }
                    Err(message) => {
                        failed += 1;
                        emit(Event::Task {
                            role: role.name.clone(),
                            task: name,
                            handler: false,
                            status: TaskStatus::Failed,
                            reason: message,
                            diff: None,
                            duration_ms: millis(task_started),
                        });
                        break 'roles;
                    }
                }
                let before = written_down.len();
                written_down.extend(task.notify.iter().map(|h| (role_index, h.clone())));
                if !check && written_down.len() > before {
                    state.set_pending_handlers(&pending_list(bundle, &written_down))?;
                }
                tasks.context.timeout = task.timeout.map(|t| t.duration());
                let result = tasks.run(&task.spec, &item_data);
                if !matches!(result, Ok(ref outcome) if !outcome.changed) {
                    tasks.context.unit_states.forget();
                }
                let (status, reason, diff) = match result {
                    Ok(outcome) if outcome.changed => {
                        changed += 1;
                        notified.extend(task.notify.iter().map(|h| (role_index, h.clone())));
                        (TaskStatus::Changed, outcome.reason, outcome.diff)
                    }
                    Ok(outcome) => {
                        ok += 1;
                        (TaskStatus::Ok, outcome.reason, None)
                    }
                    Err(error) => {
                        failed += 1;
                        (TaskStatus::Failed, format!("{error:#}"), None)
                    }
                };
                emit(Event::Task {
                    role: role.name.clone(),
                    task: name,
                    handler: false,
                    status,
                    reason,
                    diff: diff.filter(|_| show_diff),
                    duration_ms: millis(task_started),
                });
                if status == TaskStatus::Failed {
                    break 'roles;
                }
            }
        }
    }

    // Handlers act on what the tasks left: they ask systemd afresh.
    tasks.context.unit_states.forget();
    if !interrupted {
        // Two roles may declare the same handler (web and certs both reload nginx): one
        // with the same name and action as a handler that already ran runs only once.
        let mut ran: Vec<(&str, &crate::resource::Spec, &str)> = Vec::new();
        for (role_index, role) in bundle.roles.iter().enumerate() {
            for handler in role
                .handlers
                .iter()
                .filter(|h| notified.contains(&(role_index, h.name.clone())))
            {
                let task_started = Instant::now();
                if let Some((_, _, first)) = ran
                    .iter()
                    .find(|(name, spec, _)| *name == handler.name && **spec == handler.spec)
                {
                    emit(Event::Task {
                        role: role.name.clone(),
                        task: handler.name.clone(),
                        handler: true,
                        status: TaskStatus::Skipped,
                        reason: format!(
                            "skipped: role {first}'s handler of the same name and action ran"
                        ),
                        diff: None,
                        duration_ms: millis(task_started),
                    });
                    continue;
                }
                ran.push((&handler.name, &handler.spec, &role.name));
                // A handler may have a `when` too: restarting a daemon the host has no
                // hardware for would only fail.
                let condition = crate::role::task::condition_holds(handler, |text| {
                    renderer.render_string(text, &data)
                });
                let (status, reason) = if let Err(message) = condition {
                    failed += 1;
                    (TaskStatus::Failed, message)
                } else if condition == Ok(false) {
                    (
                        TaskStatus::Skipped,
                        format!(
                            "skipped: `when: {}` is false",
                            handler.when.as_deref().unwrap_or_default()
                        ),
                    )
                } else if check {
                    (TaskStatus::Changed, "would run: notified".to_string())
                } else {
                    tasks.context.timeout = handler.timeout.map(|t| t.duration());
                    match tasks.run(&handler.spec, &data) {
                        Ok(outcome) => (TaskStatus::Changed, outcome.reason),
                        Err(error) => {
                            failed += 1;
                            (TaskStatus::Failed, format!("{error:#}"))
                        }
                    }
                };
                emit(Event::Task {
                    role: role.name.clone(),
                    task: handler.name.clone(),
                    handler: true,
                    status,
                    reason,
                    diff: None,
                    duration_ms: millis(task_started),
                });
            }
        }
        if !check && !written_down.is_empty() {
            state.set_pending_handlers(&state::PendingHandlers::default())?;
        }
    }

    if let (Some(repo), false) = (&repo, check) {
        let mut all = tasks.declared.clone();
        all.secret.extend(context.sensitive_paths.iter().cloned());
        // A run that changed nothing made no new file: the start's scan still holds.
        let quiet = changed == 0 && failed == 0 && notified.is_empty();
        let private = if quiet {
            repo.update_ignores_unchanged(&all)?
        } else {
            repo.update_ignores(&all)?
        };
        for file in private {
            emit(Event::Notice {
                message: private_file_notice(&file),
            });
        }
        let roles: Vec<&str> = bundle.roles.iter().map(|r| r.name.as_str()).collect();
        // The start committed what it found, and a quiet run wrote nothing to /etc
        // (unless .gitignore moved): no second git status, one of the three walks of
        // /etc a no-op run made (docs/benchmarks.md, fan-out). Whatever else changed /etc in
        // the meantime is not placard's: the next run finds it, and commits it as found
        // before that run.
        let files = if quiet && !repo.ignores_written() {
            Vec::new()
        } else {
            repo.changes()?
        };
        let summary = format!(
            "placard: {}{}",
            roles.join(", "),
            if interrupted {
                " (interrupted: the controller went away)"
            } else if failed > 0 {
                " (failed)"
            } else {
                ""
            }
        );
        let commit = if files.is_empty() && !repo.uses_etckeeper() {
            None
        } else {
            repo.commit_all(&summary, &file_list(files.iter().map(String::as_str)))?
        };
        if let Some(id) = commit {
            emit(Event::Commit {
                id,
                summary: format!("{summary} ({})", count_files(files.len())),
            });
        }
    }
    if !check && !interrupted && failed == 0 {
        let checks = monitored_checks(bundle, &renderer, &data, emit);
        crate::monitor::store_checks(&paths.state, &checks)?;
    }
    if interrupted {
        emit(Event::Error {
            message: "the controller's connection went away: the run stopped after its current step; notified handlers run at the next apply".to_string(),
        });
    } else if failed == 0 && (!check || state.ended_cleanly(lock.previous())) {
        // Nothing of this run is left in /etc. A check writes nothing there: it passes
        // on what the run before it left, clean only if that one was. When the marker
        // cannot be written, the next run sweeps /etc: nothing is lost.
        let _ = state.set_ended_cleanly(lock.line());
    }
    emit(done(ok, changed, failed, started));
    Ok(())
}

/// The roles' checks, rendered, for the monitor's timer (what `placard verify` would
/// run now); a check that cannot be rendered is left out, with a notice.
fn monitored_checks(
    bundle: &Bundle,
    renderer: &Renderer,
    data: &serde_json::Value,
    emit: &mut dyn FnMut(Event),
) -> Vec<crate::monitor::StoredCheck> {
    let mut checks = Vec::new();
    for role in &bundle.roles {
        for check in &role.checks {
            match check.render(|text| renderer.render_string(text, data)) {
                Ok(check) => checks.push(crate::monitor::StoredCheck {
                    role: role.name.clone(),
                    check,
                }),
                Err(message) => emit(Event::Notice {
                    message: format!(
                        "check `{}` of role {} cannot be rendered, so the monitor leaves it out: {message}",
                        check.name, role.name
                    ),
                }),
            }
        }
    }
    checks
}

fn private_file_notice(file: &str) -> String {
    format!(
        "/etc/{file} is not world-readable, so it may hold a secret: it is kept out of /etc's git history. \
         To record it anyway, add `!/{file}` to /etc/.gitignore after placard's section"
    )
}

/// The notified handlers, by role name, as the state file keeps them.
fn pending_list(bundle: &Bundle, notified: &BTreeSet<(usize, String)>) -> state::PendingHandlers {
    state::PendingHandlers {
        handlers: notified
            .iter()
            .map(|(index, handler)| (bundle.roles[*index].name.clone(), handler.clone()))
            .collect(),
    }
}

/// What every task of a run shares.
struct TaskRun<'a> {
    renderer: &'a Renderer,
    state: &'a state::State,
    repo: Option<&'a etc_git::EtcRepo>,
    /// What the roles said of the files they wrote, in this and earlier runs.
    declared: &'a mut etc_git::Declared,
    context: &'a mut Context,
}

impl TaskRun<'_> {
    fn run(
        &mut self,
        spec: &crate::resource::Spec,
        data: &serde_json::Value,
    ) -> Result<crate::resource::Outcome> {
        run_task(
            self.renderer,
            spec,
            data,
            self.context,
            self.repo,
            self.state,
            self.declared,
        )
    }
}

fn run_task(
    renderer: &Renderer,
    spec: &crate::resource::Spec,
    data: &serde_json::Value,
    context: &mut Context,
    repo: Option<&etc_git::EtcRepo>,
    state: &state::State,
    declared: &mut etc_git::Declared,
) -> Result<crate::resource::Outcome> {
    renderer.take_used_secret();
    let rendered = renderer
        .render_spec(spec, data)
        .map_err(|f| anyhow::anyhow!("{}: {}", f.field, f.message))?;
    context.sensitive = renderer.take_used_secret() || rendered.holds_secret();
    // A file about to hold a secret is recorded in the agent's state and kept out of
    // /etc's git before it is written, so that a run interrupted after writing it
    // cannot leave it to the next stray commit, even if .gitignore were lost. A file
    // rendered without one is recorded as public: it may be committed though private.
    if let (Some(repo), Some(path)) = (repo, rendered.path()) {
        declared.declare(
            std::path::Path::new(path),
            context.sensitive,
            state.folder(),
        )?;
        if context.sensitive {
            // Only the declared path matters here; new private files are the end's
            // scan's to find (a fresh one, as this run then changed something).
            repo.update_ignores_unchanged(declared)?;
        }
    }
    rendered.run(context)
}

/// The units of the bundle's service tasks, as rendered for this host, to ask systemd
/// about together before the tasks run (see [`UnitStates`]). A name that does not
/// render is left out: its task asks on its own, and fails there if it must.
fn service_units(bundle: &Bundle, data: &serde_json::Value, renderer: &Renderer) -> Vec<String> {
    let mut units = Vec::new();
    for task in bundle.roles.iter().flat_map(|role| &role.tasks) {
        let crate::resource::Spec::Service(service) = &task.spec else {
            continue;
        };
        for item_data in loop_items(task, data).unwrap_or_default() {
            if let Ok(unit) = renderer.render_string(&service.name, &item_data) {
                units.push(unit);
            }
        }
    }
    units
}

fn count_files(count: usize) -> String {
    if count == 1 {
        "1 file".to_string()
    } else {
        format!("{count} files")
    }
}

fn file_list<'a>(files: impl Iterator<Item = &'a str>) -> String {
    files
        .map(|f| format!("  {f}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis() as u64
}

fn done(ok: usize, changed: usize, failed: usize, started: Instant) -> Event {
    let peak_memory_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .map(|u| u.max_rss() as u64)
        .unwrap_or(0);
    Event::Done {
        ok,
        changed,
        failed,
        peak_memory_kib,
        elapsed_ms: millis(started),
    }
}
