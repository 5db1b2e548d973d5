//! Roles as written: `roles/<name>.yml`, deserialized strictly, then checked.
//!
//! A role is documentation as much as code: a description, every variable with its
//! documentation and default, tasks whose names are sentences, handlers, and the checks
//! `placard verify` runs. Loading keeps each file's [`SourceFile`] so that problems
//! found later (in [`crate::inventory::resolve`]) still point at `file:line:col`.

pub mod checks;
pub mod task;
pub mod variable;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Diagnostic, InvalidInput};
use crate::source::SourceFile;
pub use checks::CheckSpec;
pub use task::Task;
pub use variable::{Variable, VariableType};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFile {
    pub description: String,
    #[serde(default)]
    pub variables: indexmap::IndexMap<String, Variable>,
    #[serde(default)]
    pub tasks: Vec<Task>,
    #[serde(default)]
    pub handlers: Vec<Task>,
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// The DNS records the role needs published, printed by `placard dns`.
    #[serde(default)]
    pub dns: Vec<crate::dns::DnsRecord>,
}

/// A loaded role with its source, for positions, and the templates it ships.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub file: RoleFile,
    pub source: SourceFile,
    /// Template name (`base/sshd.conf.hbs`) → source text.
    pub templates: BTreeMap<String, String>,
}

/// Where roles and their templates are found.
#[derive(Debug, Clone)]
pub struct Site {
    pub roles_dir: PathBuf,
    pub templates_dir: PathBuf,
}

impl Site {
    pub fn new(root: &Path) -> Site {
        Site {
            roles_dir: root.join("roles"),
            templates_dir: root.join("templates"),
        }
    }

    /// The names of the roles in the roles folder, sorted.
    pub fn role_names(&self) -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(&self.roles_dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".yml")
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Loads and checks one role. Every problem found is reported, not just the first.
    pub fn load_role(&self, name: &str) -> Result<Role, InvalidInput> {
        if let Err(message) = check_role_name(name) {
            return Err(Diagnostic::new(&self.roles_dir, message).into());
        }
        let path = self.roles_dir.join(format!("{name}.yml"));
        let text = std::fs::read_to_string(&path).map_err(|e| {
            let known = self.role_names().map(|n| n.join(", ")).unwrap_or_default();
            Diagnostic::new(&path, format!("cannot read role `{name}`: {e}")).help(format!(
                "the roles in {} are: {known}",
                self.roles_dir.display()
            ))
        })?;
        let source = SourceFile::new(&path, text);
        source.check_structure()?;
        let file: RoleFile =
            serde_yaml::from_str(&source.text).map_err(|e| Diagnostic::from_yaml(&source, &e))?;
        let templates = self.load_templates(name).map_err(|e| {
            Diagnostic::new(
                &self.templates_dir.join(name),
                format!("cannot read the role's templates: {e}"),
            )
        })?;
        let role = Role {
            name: name.to_string(),
            file,
            source,
            templates,
        };
        role.check()?;
        Ok(role)
    }

    /// Every file under `templates/<role>/`, keyed `<role>/<relative path>`.
    fn load_templates(&self, role: &str) -> std::io::Result<BTreeMap<String, String>> {
        let mut templates = BTreeMap::new();
        let root = self.templates_dir.join(role);
        if !root.is_dir() {
            return Ok(templates);
        }
        let mut pending = vec![root];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let path = entry?.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(&self.templates_dir) {
                    templates.insert(
                        relative.to_string_lossy().into_owned(),
                        std::fs::read_to_string(&path)?,
                    );
                }
            }
        }
        Ok(templates)
    }
}

/// The conventions that make a role readable as documentation (roles/web.yml and
/// roles/certs.yml are the models): every task's name is a sentence saying what it
/// does, every variable is documented, and every variable carries the role's prefix.
/// Checked at load, so that a role that breaks them is refused like any other
/// malformed role.
///
/// The prefix keeps the one namespace of an inventory's variables readable: a host's
/// roles share it, so `hostname` or `admin_email` would say neither which role reads
/// it nor whether two roles read the same one. A variable renamed to gain its prefix
/// keeps its old name in `renamed_from:`, which inventories may still use.
fn lint_conventions(role: &Role, problems: &mut InvalidInput) {
    for (index, task) in role.file.tasks.iter().enumerate() {
        if let Err(message) = sentence(&task.name) {
            problems.push(
                Diagnostic::at(
                    &role.source,
                    &format!("tasks[{index}].name"),
                    format!("the task name `{}` is not a sentence: {message}", task.name),
                )
                .help("task names are the role's documentation: say what the task does, as in `Install nginx.`"),
            );
        }
    }
    let prefix = variable_prefix(&role.name);
    for name in role
        .file
        .variables
        .keys()
        .filter(|n| !n.starts_with(&prefix))
    {
        problems.push(
            Diagnostic::at_key(
                &role.source,
                &format!("variables.{name}"),
                format!("variable `{name}` does not start with the role's prefix `{prefix}`"),
            )
            .help(format!(
                "rename it `{prefix}{name}` (or another name starting with `{prefix}`) in the role, its templates and the inventories; add `renamed_from: {name}` to it so that inventories setting `{name}` keep working"
            )),
        );
    }
    for (name, variable) in &role.file.variables {
        // A variable without `default:` is required, which `placard roles show` says;
        // serde already insists on `description:`, so what is left is an empty one.
        if variable.description.trim().is_empty() {
            problems.push(
                Diagnostic::at(
                    &role.source,
                    &format!("variables.{name}.description"),
                    format!("variable `{name}` has an empty description"),
                )
                .help("document every variable with a sentence (or more): what it is for, and its limits"),
            );
        }
    }
}

/// Whether a task name is a sentence: it starts with a capital letter (or a template
/// value) and ends with a period.
fn sentence(name: &str) -> Result<(), &'static str> {
    let name = name.trim();
    let capital = name.starts_with("{{") || name.chars().next().is_some_and(char::is_uppercase);
    if !capital {
        return Err("start it with a capital letter");
    }
    if !name.ends_with('.') {
        return Err("end it with a period");
    }
    Ok(())
}

/// The prefix of a role's variables: `grub-pin` → `grub_pin_`.
fn variable_prefix(role: &str) -> String {
    format!("{}_", role.replace('-', "_"))
}

/// The role's variables whose names do not start with the role's prefix.
/// A role is named by a plain name — letters, digits, `-` and `_` — because the name
/// becomes a path (`roles/<name>.yml`, `templates/<name>/`): `../x` or `/x` would load
/// files from outside the site.
pub fn check_role_name(name: &str) -> Result<(), String> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if plain {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a role name: letters, digits, `-` and `_` only"
        ))
    }
}

impl Role {
    /// What serde cannot check: references between tasks and handlers, and the rules
    /// that keep a role idempotent.
    fn check(&self) -> Result<(), InvalidInput> {
        let mut problems = InvalidInput::default();
        let source = &self.source;
        for (name, variable) in &self.file.variables {
            if let Err(message) = variable::check_name(name) {
                problems.push(Diagnostic::at_key(
                    source,
                    &format!("variables.{name}"),
                    message,
                ));
            }
            for condition in variable.required_when.keys() {
                if !self.file.variables.contains_key(condition) {
                    problems.push(Diagnostic::at_key(
                        source,
                        &format!("variables.{name}.required_when.{condition}"),
                        format!("`{condition}` is not a variable of this role"),
                    ));
                }
            }
            if let Some(old) = &variable.renamed_from {
                let at = format!("variables.{name}.renamed_from");
                if let Err(message) = variable::check_name(old) {
                    problems.push(Diagnostic::at(source, &at, message));
                } else if self.file.variables.contains_key(old) {
                    problems.push(
                        Diagnostic::at(source, &at, format!("`{old}` is still a variable of this role, so it cannot be the old name of `{name}`"))
                            .help("an old name is one the role no longer declares"),
                    );
                } else if let Some((other, _)) = self.file.variables.iter().find(|(other, v)| {
                    *other != name && v.renamed_from.as_deref() == Some(old.as_str())
                }) {
                    problems.push(
                        Diagnostic::at(source, &at, format!("`{old}` is already the old name of `{other}`: an inventory setting it would set both"))
                            .help("give each variable its own old name, or none"),
                    );
                }
            }
            if let Some(covered) = &variable.covers {
                if !self.file.variables.contains_key(covered) {
                    problems.push(Diagnostic::at(
                        source,
                        &format!("variables.{name}.covers"),
                        format!("`{covered}` is not a variable of this role: `covers` names the variable holding the domain the lineage must cover"),
                    ));
                }
            }
            let roles_needed = variable
                .needs_role
                .iter()
                .map(|role| (format!("variables.{name}.needs_role"), role))
                .chain(variable.items.iter().filter_map(|(field_name, field)| {
                    let role = field.needs_role.as_ref()?;
                    Some((
                        format!("variables.{name}.items.{field_name}.needs_role"),
                        role,
                    ))
                }));
            for (at, role) in roles_needed {
                if let Err(message) = check_role_name(role) {
                    problems.push(Diagnostic::at(source, &at, message));
                }
            }
            for (field_name, field) in &variable.items {
                let unknown = field
                    .excludes
                    .iter()
                    .chain(field.wildcard_when.keys())
                    .find(|other| !variable.items.contains_key(other.as_str()));
                if let Some(other) = unknown {
                    problems.push(Diagnostic::at_key(
                        source,
                        &format!("variables.{name}.items.{field_name}"),
                        format!("field `{field_name}` names `{other}`, which is not a field of these items"),
                    ));
                }
            }
            if let Some(default) = &variable.default {
                if let Err(message) = variable.check(default) {
                    problems.push(Diagnostic::at(
                        source,
                        &format!("variables.{name}.default"),
                        format!("default of `{name}`: {message}"),
                    ));
                }
            }
        }
        lint_conventions(self, &mut problems);
        let mut handler_names = BTreeSet::new();
        for (index, handler) in self.file.handlers.iter().enumerate() {
            if !handler_names.insert(handler.name.as_str()) {
                problems.push(Diagnostic::at(
                    source,
                    &format!("handlers[{index}].name"),
                    format!("a second handler is named `{}`", handler.name),
                ));
            }
            if !handler.notify.is_empty() {
                problems.push(Diagnostic::at_key(
                    source,
                    &format!("handlers[{index}].notify"),
                    "handlers do not notify other handlers; list both in the task's `notify`",
                ));
            }
        }
        for (list, tasks) in [
            ("tasks", &self.file.tasks),
            ("handlers", &self.file.handlers),
        ] {
            for (index, task) in tasks.iter().enumerate() {
                let at = format!("{list}[{index}]");
                for (n, notified) in task.notify.iter().enumerate() {
                    if !handler_names.contains(notified.as_str()) {
                        let known: Vec<&str> = handler_names.iter().copied().collect();
                        problems.push(
                            Diagnostic::at(
                                source,
                                &format!("{at}.notify[{n}]"),
                                format!("no handler named `{notified}` in role {}", self.name),
                            )
                            .help(if known.is_empty() {
                                "the role has no handlers; add one under `handlers:`".to_string()
                            } else {
                                format!("the handlers are: {}", known.join(", "))
                            }),
                        );
                    }
                }
                if list == "tasks" {
                    task::check_task_rules(task, source, &at, &mut problems);
                }
                task::check_template_names(task, &self.templates, source, &at, &mut problems);
            }
        }
        for (index, record) in self.file.dns.iter().enumerate() {
            if let Err(message) = record.validate() {
                problems.push(Diagnostic::at(
                    source,
                    &format!("dns[{index}].type"),
                    message,
                ));
            }
        }
        for (index, check) in self.file.checks.iter().enumerate() {
            if let Err(message) = check.validate() {
                problems.push(Diagnostic::at(source, &format!("checks[{index}]"), message));
            }
            if check.port.as_ref().is_some_and(|p| p.port == 0) {
                problems.push(
                    Diagnostic::at(
                        source,
                        &format!("checks[{index}].port.port"),
                        format!(
                            "check `{}`: port 0 is not a port one can connect to",
                            check.name
                        ),
                    )
                    .help("give the port the service listens on (1-65535)"),
                );
            }
        }
        problems.into_result()
    }

    /// Every template the role ships, for the bundle.
    pub fn template_sources(&self) -> &BTreeMap<String, String> {
        &self.templates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names_are_sentences() {
        assert_eq!(sentence("Install nginx."), Ok(()));
        assert_eq!(sentence("{{name}} gets its keys."), Ok(()));
        assert!(sentence("install nginx.").is_err());
        assert!(sentence("Install nginx").is_err());
        assert!(sentence("").is_err());
    }

    /// Every shipped role loads, so it passes the lint, prefix included. The old names
    /// below are the roles' interface before the prefix rule: inventories still set
    /// them, so they stay until a release says they go.
    #[test]
    fn shipped_roles_keep_the_conventions() {
        let site = Site::new(Path::new(env!("CARGO_MANIFEST_DIR")));
        let mut renamed = Vec::new();
        for name in site.role_names().expect("the roles folder") {
            let role = site
                .load_role(&name)
                .unwrap_or_else(|e| panic!("role {name}: {e:?}"));
            // Loading passed the lint: every variable carries the role's prefix.
            for (variable, declared) in &role.file.variables {
                if let Some(old) = &declared.renamed_from {
                    renamed.push(format!("{name}.{old} → {variable}"));
                }
            }
        }
        assert_eq!(
            renamed,
            [
                "base.hostname → base_hostname",
                "base.admin_users → base_admin_users",
                "base.admin_email → base_admin_email",
                "base.permit_root_login → base_permit_root_login",
                "base.timezone → base_timezone",
                "base.journal_max_use → base_journal_max_use",
                "base.automatic_reboot → base_automatic_reboot",
                "ups.upsd_port → ups_upsd_port",
                "ups.admin_email → ups_admin_email",
                "watchdog.bmc_watchdog_timeout → watchdog_bmc_timeout",
                "watchdog.bmc_watchdog_action → watchdog_bmc_action",
                "watchdog.bmc_watchdog_reset_interval → watchdog_bmc_reset_interval",
                "watchdog.bmc_watchdog_log → watchdog_bmc_log",
                "watchdog.bmc_watchdog_clear_flags → watchdog_bmc_clear_flags",
                "watchdog.systemd_watchdog_runtime → watchdog_systemd_runtime",
                "watchdog.systemd_watchdog_reboot → watchdog_systemd_reboot",
                "watchdog.systemd_watchdog_module → watchdog_systemd_module",
            ]
        );
    }
}
