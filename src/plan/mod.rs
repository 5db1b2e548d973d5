//! Planning: from inventory and roles to one [`Bundle`] per host — pure, no I/O beyond
//! reading the site's files, no host contacted.
//!
//! This is where "bad input changes nothing" is kept: every role is loaded and checked,
//! every host's variables resolved and type-checked, and every task and template
//! rendered once with placeholder facts and secrets, so that a missing variable or a
//! broken template stops the run with `file:line:col` before any connection is made.

pub mod bundle;
pub mod event;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub use bundle::{Bundle, EtcCommand, Job, RoleBundle};
pub use event::{Event, TaskStatus};

use crate::error::{Diagnostic, InvalidInput};
use crate::facts::Facts;
use crate::inventory::{vars, Host, Inventory};
use crate::role::{Role, Site, Task};
use crate::source::SourceFile;
use crate::template::{RenderFailure, Renderer, SecretSource};

/// What templates see: the variables at the top level, `facts`, and `host.name`.
pub fn template_data(vars: &Map<String, Value>, facts: &Facts, host: &str) -> Value {
    let mut data = vars.clone();
    data.insert(
        "facts".into(),
        serde_json::to_value(facts).unwrap_or(Value::Null),
    );
    data.insert("host".into(), json!({ "name": host }));
    Value::Object(data)
}

/// The bundles for the selected hosts, and the warnings about the input: what works
/// but should change (a variable set under its old name), each once.
#[derive(Debug)]
pub struct Prepared {
    pub bundles: Vec<Bundle>,
    pub warnings: Vec<Diagnostic>,
}

/// Loads, checks and renders everything the selected hosts need.
pub fn prepare(
    inventory: &Inventory,
    site: &Site,
    hosts: &[Host],
    job: &Job,
    operator: &str,
) -> Result<Prepared, InvalidInput> {
    let mut problems = InvalidInput::default();
    let mut roles: BTreeMap<String, Option<Role>> = BTreeMap::new();
    for host in hosts {
        for (index, name) in host.roles.iter().enumerate() {
            if roles.contains_key(name) {
                continue;
            }
            if !site.roles_dir.join(format!("{name}.yml")).is_file() {
                let path = role_reference(inventory, host, index);
                let known = site.role_names().map(|n| n.join(", ")).unwrap_or_default();
                problems.push(
                    Diagnostic::at(
                        &inventory.source,
                        &path,
                        format!(
                            "no role `{name}`: {} does not exist",
                            site.roles_dir.join(format!("{name}.yml")).display()
                        ),
                    )
                    .help(format!("the roles are: {known}")),
                );
                roles.insert(name.clone(), None);
                continue;
            }
            match site.load_role(name) {
                Ok(role) => {
                    roles.insert(name.clone(), Some(role));
                }
                Err(invalid) => {
                    problems.diagnostics.extend(invalid.diagnostics);
                    roles.insert(name.clone(), None);
                }
            }
        }
    }
    // Problems in the roles themselves would repeat for every host: stop here.
    problems.into_result()?;

    let placeholder = Facts::placeholder();
    let mut bundles = Vec::new();
    let mut old_names = Vec::new();
    let mut problems = InvalidInput::default();
    if let Err(invalid) = check_inventory_variables(inventory, site, &roles) {
        problems.diagnostics.extend(invalid.diagnostics);
    }
    for host in hosts {
        let host_roles: Vec<&Role> = host
            .roles
            .iter()
            .filter_map(|name| roles.get(name)?.as_ref())
            .collect();
        let vars = match vars::resolve(inventory, host, &host_roles) {
            Ok(resolved) => {
                old_names.extend(resolved.old_names);
                resolved.values
            }
            Err(invalid) => {
                problems.diagnostics.extend(invalid.diagnostics);
                continue;
            }
        };
        let mut templates = BTreeMap::new();
        for role in &host_roles {
            templates.extend(
                role.template_sources()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        let renderer = match Renderer::new(&templates, SecretSource::Placeholder) {
            Ok(renderer) => renderer,
            Err(failure) => {
                problems.push(template_diagnostic(site, &failure, &host.name));
                continue;
            }
        };
        let data = template_data(&vars, &placeholder, &host.name);
        for role in &host_roles {
            for (list, tasks) in [
                ("tasks", &role.file.tasks),
                ("handlers", &role.file.handlers),
            ] {
                for (index, task) in tasks.iter().enumerate() {
                    let items = match loop_items(task, &data) {
                        Ok(items) => items,
                        Err(message) => {
                            problems.push(Diagnostic::at(
                                &role.source,
                                &format!("{list}[{index}].loop"),
                                format!("{message} (host {})", host.name),
                            ));
                            continue;
                        }
                    };
                    for item_data in items {
                        if let Err(failure) = render_task(&renderer, task, &item_data) {
                            problems.push(match &failure.template {
                                Some(_) => template_diagnostic(site, &failure, &host.name),
                                None => Diagnostic::at(
                                    &role.source,
                                    &format!("{list}[{index}].{}", failure.field),
                                    format!("{} (host {})", failure.message, host.name),
                                ),
                            });
                            break;
                        }
                    }
                }
            }
        }
        for role in &host_roles {
            for (index, check) in role.file.checks.iter().enumerate() {
                if let Err(message) = check.render(|text| renderer.render_string(text, &data)) {
                    problems.push(Diagnostic::at(
                        &role.source,
                        &format!("checks[{index}]"),
                        format!("{message} (host {})", host.name),
                    ));
                }
            }
        }
        for role in &host_roles {
            for (index, record) in role.file.dns.iter().enumerate() {
                if let Err(message) = render_record(&renderer, record, &data) {
                    problems.push(Diagnostic::at(
                        &role.source,
                        &format!("dns[{index}]"),
                        format!("{message} (host {})", host.name),
                    ));
                }
            }
        }
        bundles.push(Bundle {
            format: bundle::FORMAT,
            host: host.name.clone(),
            job: job.clone(),
            roles: host_roles
                .iter()
                .map(|role| RoleBundle {
                    name: role.name.clone(),
                    tasks: role.file.tasks.clone(),
                    handlers: role.file.handlers.clone(),
                    checks: role.file.checks.clone(),
                    dns: role.file.dns.clone(),
                })
                .collect(),
            vars,
            templates,
            operator: operator.to_string(),
        });
    }
    problems.into_result()?;
    Ok(Prepared {
        bundles,
        // A global or group variable warns once, not once per host.
        warnings: vars::old_name_warnings(inventory, &old_names),
    })
}

/// Global and group variables no role declares (see [`vars::check_declared`]). Those
/// reach hosts that may not be selected, so their roles are loaded too; one that does
/// not load leaves its scopes unchecked rather than failing a run that does not use it.
fn check_inventory_variables(
    inventory: &Inventory,
    site: &Site,
    loaded: &BTreeMap<String, Option<Role>>,
) -> Result<(), InvalidInput> {
    let mut others: BTreeMap<String, Role> = BTreeMap::new();
    for host in inventory.select(&[])? {
        for name in &host.roles {
            if loaded.contains_key(name) || others.contains_key(name) {
                continue;
            }
            if let Ok(role) = site.load_role(name) {
                others.insert(name.clone(), role);
            }
        }
    }
    let roles: BTreeMap<&str, &Role> = loaded
        .iter()
        .filter_map(|(name, role)| Some((name.as_str(), role.as_ref()?)))
        .chain(others.iter().map(|(name, role)| (name.as_str(), role)))
        .collect();
    vars::check_declared(inventory, &roles)
}

/// The template data for each run of `task`: once with `data`, or once per item of its
/// `loop` list, with the item as `item`.
pub fn loop_items(task: &Task, data: &Value) -> Result<Vec<Value>, String> {
    let Some(name) = &task.loop_over else {
        return Ok(vec![data.clone()]);
    };
    let items = match data.get(name) {
        None => {
            return Err(format!(
            "`loop: {name}` names no variable; write the name of a list variable, without braces"
        ))
        }
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("`loop: {name}`: the variable is not a list")),
    };
    Ok(items
        .iter()
        .map(|item| {
            let mut with_item = data.clone();
            if let Some(object) = with_item.as_object_mut() {
                object.insert("item".into(), item.clone());
            }
            with_item
        })
        .collect())
}

/// A DNS record with its fields rendered: none when its `when` is false, and one per
/// line when its name renders to several lines (a name for each domain of a list),
/// each name once.
pub fn render_record(
    renderer: &Renderer,
    record: &crate::dns::DnsRecord,
    data: &Value,
) -> Result<Vec<crate::dns::DnsRecord>, String> {
    if !crate::role::task::condition(record.when.as_deref(), |text| {
        renderer.render_string(text, data)
    })? {
        return Ok(Vec::new());
    }
    let names = renderer.render_string(&record.name, data)?;
    let value = renderer.render_string(&record.value, data)?;
    let mut lines: Vec<&str> = Vec::new();
    for line in names.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
    if lines.is_empty() && names.trim().is_empty() && !names.contains('\n') {
        lines.push("");
    }
    Ok(lines
        .into_iter()
        .map(|name| crate::dns::DnsRecord {
            name: name.to_string(),
            kind: record.kind.clone(),
            value: value.clone(),
            when: None,
        })
        .collect())
}

fn render_task(renderer: &Renderer, task: &Task, data: &Value) -> Result<(), RenderFailure> {
    let runs = crate::role::task::condition_holds(task, |text| renderer.render_string(text, data))
        .map_err(|message| RenderFailure {
            field: "when".into(),
            message,
            template: None,
        })?;
    // A task whose `when` is false is skipped on the host: its spec need not be valid
    // (an unpin task names no kernel while a pin is asked for, and the other way round).
    if runs {
        renderer.render_spec(&task.spec, data)?;
    }
    renderer
        .render_string(&task.name, data)
        .map_err(|message| RenderFailure {
            field: "name".into(),
            message,
            template: None,
        })?;
    Ok(())
}

/// Where in the inventory the host's `index`th role is listed.
fn role_reference(inventory: &Inventory, host: &Host, index: usize) -> String {
    let name = &host.roles[index];
    if let Some(position) = inventory
        .entry(&host.name)
        .roles
        .iter()
        .position(|r| r == name)
    {
        return format!("hosts.{}.roles[{position}]", host.name);
    }
    for group in &host.groups {
        if let Some(position) = inventory.file.groups[group]
            .roles
            .iter()
            .position(|r| r == name)
        {
            return format!("groups.{group}.roles[{position}]");
        }
    }
    format!("hosts.{}", host.name)
}

fn template_diagnostic(site: &Site, failure: &RenderFailure, host: &str) -> Diagnostic {
    let (name, line, column) = failure.template.clone().unwrap_or_default();
    let path = site.templates_dir.join(&name);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let source = SourceFile::new(&path, text);
    Diagnostic::new(&path, format!("{} (host {host})", failure.message))
        .with_position(&source, Some(crate::source::Position { line, column }))
}
