//! Each command, from parsed arguments to an exit code.

mod monitor;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::cli::{
    self, CaptureArgs, Cli, Command, HostArgs, RolesCommand, SandboxCommand, TargetArgs,
};
use crate::controller;
use crate::plan::{self, EtcCommand, Job};
use crate::report::{human::HumanReporter, Format, HostReport, JsonReporter, Reporter};
use crate::role::Site;
use crate::sandbox;
use crate::settings::Settings;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Failed = 1,
    Pending = 2,
    InvalidInput = 3,
}

/// Runs one command. A new command is one arm here, beside its variant in
/// [`crate::cli::Command`].
pub fn run(cli: Cli) -> Result<Exit> {
    match cli.command {
        Command::Apply(args) => {
            let job = Job::Apply {
                check: args.check,
                diff: args.diff,
            };
            run_hosts(&args.run, job, false)
        }
        Command::Plan(args) => run_hosts(
            &args,
            Job::Apply {
                check: true,
                diff: true,
            },
            true,
        ),
        Command::Verify(args) => run_hosts(&args, Job::Verify, false),
        Command::Facts(args) => run_one(&args, Job::Facts),
        Command::Dns(args) => run_one(&args, Job::Dns),
        Command::Etc { command } => etc(command),
        Command::Capture(args) => capture(&args),
        Command::Roles { command, site } => roles(
            command,
            &Site::new(&site.unwrap_or_else(|| PathBuf::from("."))),
        ),
        Command::Sandbox { command } => sandbox_command(command),
        Command::Monitor(args) => monitor::run(args),
        Command::Pull(args) => {
            crate::pull::main(args).map(|failed| if failed { Exit::Failed } else { Exit::Done })
        }
        Command::Agent => crate::agent::main().map(|()| Exit::Done),
    }
}

/// `placard etc …`.
fn etc(command: cli::EtcCommand) -> Result<Exit> {
    use cli::EtcCommand as Etc;
    let on_etc = |host: &HostArgs, command| run_one(host, Job::Etc { command });
    match command {
        Etc::Status(host) => on_etc(&host, EtcCommand::Status),
        Etc::Log(host) => on_etc(&host, EtcCommand::Log),
        Etc::Diff(host) => on_etc(&host, EtcCommand::Diff),
        Etc::Init(host) => on_etc(&host, EtcCommand::Init),
        Etc::Drift(args) => on_etc(
            &args.host,
            EtcCommand::Drift {
                reference: args.reference,
            },
        ),
        Etc::Upgrade(args) => {
            let settings = Settings::resolve(&args.host.common)?;
            let release = upgrade_release(&settings, args.release)?;
            let job = Job::EtcUpgrade { release };
            host_exit(&execute(&settings, &[args.host.host], job, 1, true)?)
        }
        Etc::Resolve(host) => run_one(&host, Job::EtcResolve),
        Etc::Migrate(args) => migrate(&args.host, &args.from),
    }
}

/// `placard capture HOST -o DIR`: the agent gathers, the controller writes the draft.
fn capture(args: &CaptureArgs) -> Result<Exit> {
    let settings = Settings::resolve(&args.host.common)?;
    // Checked before the host is contacted (bad input, exit 3), and again before
    // anything is written.
    if let Err(error) = crate::distro::draft::check_empty(&args.output) {
        return Err(settings.invalid(
            format!("{error:#}"),
            "give -o a new or empty folder; a draft is never written over another",
        ));
    }
    let job = Job::Capture {
        release: args.release.clone(),
        reference: args.reference,
    };
    let reports = execute(
        &settings,
        std::slice::from_ref(&args.host.host),
        job,
        1,
        true,
    )?;
    let Some(data) = output_data(&reports, "capture") else {
        return Ok(Exit::Failed);
    };
    let captured: crate::distro::capture::Capture =
        serde_json::from_value(data).context("the agent's capture cannot be read")?;
    let inventory = &settings.inventory;
    let entry = inventory.file.hosts.get(&args.host.host);
    let reach = crate::distro::draft::Reach {
        name: args.host.host.clone(),
        address: entry.and_then(|e| e.address.clone()),
        port: entry.and_then(|e| e.port),
        user: entry.and_then(|e| e.user.clone()),
        known_hosts: inventory
            .file
            .ssh
            .known_hosts
            .iter()
            .map(|p| inventory.resolve_path(p))
            .collect(),
        identity: entry
            .and_then(|e| e.identity.as_deref())
            .or(inventory.file.ssh.identity.as_deref())
            .map(|p| inventory.resolve_path(p)),
    };
    let written = crate::distro::draft::write(&args.output, &captured, &reach)?;
    println!(
        "draft written to {}: {} packages, {} patches, {} site files, {} services",
        written.folder.display(),
        written.packages,
        written.patches,
        written.site_files,
        written.services
    );
    for line in &written.renamed {
        println!("  renamed in {}: {line}", args.release);
    }
    for line in &written.missing {
        println!("  missing from {}: {line}", args.release);
    }
    for secret in &written.secrets {
        println!("  secret, move by hand: /etc/{secret}");
    }
    println!(
        "  next: read {0}/README.md; placard plan -i {0}/inventory/hosts.yml",
        written.folder.display()
    );
    Ok(Exit::Done)
}

/// `placard etc migrate --from DIR HOST`.
fn migrate(host: &HostArgs, from: &Path) -> Result<Exit> {
    let settings = Settings::resolve(&host.common)?;
    let (source, files, others) = match crate::distro::migrate::load(from) {
        Ok(loaded) => loaded,
        Err(error) => {
            return Err(settings.invalid(
                format!("{error:#}"),
                "give --from the folder `placard capture` wrote for the old host",
            ))
        }
    };
    let reports = execute(
        &settings,
        std::slice::from_ref(&host.host),
        Job::Migrate {
            source,
            files,
            others,
        },
        1,
        true,
    )?;
    // Conflicts and files left to do by hand: something is left for the admin.
    let conflicts = output_data(&reports, "migrate")
        .map(|m| {
            m["conflicts"].as_array().map_or(0, Vec::len)
                + m["by_hand"].as_array().map_or(0, Vec::len)
        })
        .unwrap_or(0);
    Ok(if reports.iter().any(HostReport::failed) {
        Exit::Failed
    } else if conflicts > 0 {
        // Like plan: something is left for the admin.
        Exit::Pending
    } else {
        Exit::Done
    })
}

/// The `key` object of the first host's output event.
fn output_data(reports: &[HostReport], key: &str) -> Option<serde_json::Value> {
    reports
        .first()?
        .events
        .iter()
        .find_map(|event| match event {
            crate::plan::Event::Output { data } => data.get(key).cloned(),
            _ => None,
        })
}

/// `etc upgrade`'s release: a Debian codename placard knows, checked before any host
/// is contacted.
fn upgrade_release(settings: &Settings, release: String) -> Result<String> {
    if crate::distro::upgrade::release_number(&release).is_some() {
        return Ok(release);
    }
    let known = crate::distro::upgrade::RELEASES
        .iter()
        .map(|(name, number)| format!("{name} ({number})"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(settings.invalid(
        format!("`{release}` is not a Debian release placard knows"),
        format!("name it by codename: {known}"),
    ))
}

fn run_hosts(args: &TargetArgs, job: Job, plan_exit: bool) -> Result<Exit> {
    let settings = Settings::resolve(&args.common)?;
    let reports = execute(&settings, &args.targets, job, args.jobs, args.verbose)?;
    let failed = reports.iter().any(HostReport::failed);
    let changed = reports.iter().any(|r| r.changed() > 0);
    Ok(if failed {
        Exit::Failed
    } else if plan_exit && changed {
        Exit::Pending
    } else {
        Exit::Done
    })
}

fn run_one(host: &HostArgs, job: Job) -> Result<Exit> {
    let settings = Settings::resolve(&host.common)?;
    host_exit(&execute(
        &settings,
        std::slice::from_ref(&host.host),
        job,
        1,
        true,
    )?)
}

fn host_exit(reports: &[HostReport]) -> Result<Exit> {
    Ok(if reports.iter().any(HostReport::failed) {
        Exit::Failed
    } else {
        Exit::Done
    })
}

/// Validate and plan (exit 3 on any problem, before any host is contacted), then run on
/// the hosts and report.
pub(crate) fn execute(
    settings: &Settings,
    targets: &[String],
    job: Job,
    jobs: usize,
    verbose: bool,
) -> Result<Vec<HostReport>> {
    let inventory = &settings.inventory;
    let hosts = inventory.select(targets)?;
    if settings.local && hosts.len() != 1 {
        return Err(settings.invalid(
            format!(
                "--local runs on this machine only, but {} hosts were selected",
                hosts.len()
            ),
            "name the one host this machine is, e.g. `placard apply --local cupboard`",
        ));
    }
    let prepared = plan::prepare(inventory, &settings.site, &hosts, &job, &settings.operator)?;
    for warning in &prepared.warnings {
        eprint!("{warning}");
    }
    let routed = prepared.bundles.into_iter().map(|b| {
        let route = controller::route(inventory, &b.host, settings.local);
        (b, route)
    });
    let mut reporter: Box<dyn Reporter> = match settings.format {
        Format::Human => Box::new(HumanReporter::new(verbose)),
        Format::Json => Box::new(JsonReporter),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reports = runtime.block_on(controller::run(
        routed.collect(),
        settings.ssh.clone(),
        jobs,
        reporter.as_mut(),
    ));
    reporter.finish(&reports);
    Ok(reports)
}

fn roles(command: RolesCommand, site: &Site) -> Result<Exit> {
    match command {
        RolesCommand::List => {
            let names = site
                .role_names()
                .with_context(|| format!("cannot list {}", site.roles_dir.display()))?;
            for name in names {
                let role = site.load_role(&name)?;
                let summary = role.file.description.lines().next().unwrap_or_default();
                println!("{name:<12} {summary}");
            }
        }
        RolesCommand::Show { role } => {
            let role = site.load_role(&role)?;
            println!("{}\n\n{}\n", role.name, role.file.description.trim());
            if !role.file.variables.is_empty() {
                println!("Variables:");
                for (name, variable) in &role.file.variables {
                    let default = match &variable.default {
                        Some(value) => format!(
                            "default: {}",
                            serde_json::to_string(value).unwrap_or_default()
                        ),
                        None => "required".to_string(),
                    };
                    let kind = variable
                        .kind
                        .map(|k| format!(", {}", k.name()))
                        .unwrap_or_default();
                    let choices = if variable.choices.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", one of {}",
                            variable
                                .choices
                                .iter()
                                .map(|c| serde_json::to_string(c).unwrap_or_default())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    println!("  {name} ({default}{kind}{choices})");
                    for line in variable.description.trim().lines() {
                        println!("      {line}");
                    }
                    if let Some(old) = &variable.renamed_from {
                        println!(
                            "      Deprecated old name: `{old}` (still read, with a warning)."
                        );
                    }
                }
                println!();
            }
            println!("Tasks:");
            for task in &role.file.tasks {
                println!("  - {} ({})", task.name, task.spec.kind());
            }
            if !role.file.handlers.is_empty() {
                println!("Handlers:");
                for handler in &role.file.handlers {
                    println!("  - {}", handler.name);
                }
            }
            if !role.file.checks.is_empty() {
                println!("Checks (placard verify):");
                for check in &role.file.checks {
                    println!("  - {}", check.name);
                }
            }
        }
    }
    Ok(Exit::Done)
}

fn sandbox_command(command: SandboxCommand) -> Result<Exit> {
    let paths = sandbox::SandboxPaths::from_env();
    match command {
        SandboxCommand::Up { name, suite, port } => {
            let host = sandbox::up(&paths, &name, &suite, port)?;
            println!(
                "sandbox {} is up: Debian {}, ssh root@127.0.0.1 -p {}",
                host.name, host.suite, host.port
            );
            println!(
                "  host key recorded in {}",
                paths.state_dir.join("known_hosts").display()
            );
            println!("  key: {}", paths.state_dir.join("id_ed25519").display());
        }
        SandboxCommand::Down { name } => {
            sandbox::down(&paths, &name)?;
            println!("sandbox {name} is stopped and deleted");
        }
        SandboxCommand::Ssh { name } => {
            let argv = sandbox::ssh_argv(&paths, &name)?;
            let status = std::process::Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .context("cannot run ssh")?;
            if !status.success() {
                bail!("ssh exited with {status}");
            }
        }
        SandboxCommand::List => {
            for host in sandbox::list(&paths)? {
                println!(
                    "{:<16} {:<10} 127.0.0.1:{} (pid {})",
                    host.name, host.suite, host.port, host.pid
                );
            }
        }
    }
    Ok(Exit::Done)
}
