//! Variable resolution for one host: defaults, then inventory, group and host values.
//!
//! Each value remembers where it was set, so that a value of the wrong type points at
//! the line that set it, and a missing required variable says which role needs it.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{Host, Inventory};
use crate::error::{Diagnostic, InvalidInput};
use crate::role::variable::{VariableType, LINEAGES_ROLE};
use crate::role::Role;
use crate::source::SourceFile;

/// Where a variable's value came from.
#[derive(Debug, Clone)]
enum Origin<'a> {
    Role(&'a Role),
    Inventory(String),
}

/// A host's variables, and where the inventory set them under an old name.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub values: Map<String, Value>,
    /// Variables set under an old name (see [`old_names`]): they work, but should be
    /// renamed before the old name goes. [`old_name_warnings`] says so.
    pub old_names: Vec<OldNameUse>,
}

/// An inventory line that sets variables under their old name.
#[derive(Debug, Clone)]
pub struct OldNameUse {
    /// Where, as a path in the inventory: `hosts.cupboard.vars.hostname`.
    pub at: String,
    pub old: String,
    /// The variables it sets, each with its role.
    pub new: Vec<(String, String)>,
}

/// One warning per inventory line setting an old name, naming every variable it sets
/// for any of the hosts: a global `admin_email` sets base's for one host and base's
/// and ups's for another.
pub fn old_name_warnings(inventory: &Inventory, uses: &[OldNameUse]) -> Vec<Diagnostic> {
    let mut merged: Vec<OldNameUse> = Vec::new();
    for found in uses {
        match merged.iter_mut().find(|m| m.at == found.at) {
            Some(known) => {
                for new in &found.new {
                    if !known.new.contains(new) {
                        known.new.push(new.clone());
                    }
                }
            }
            None => merged.push(found.clone()),
        }
    }
    // In the file's order: serde's maps keep their keys sorted.
    let position = |found: &OldNameUse| {
        inventory
            .source
            .key_position(&found.at)
            .map(|p| (p.line, p.column))
    };
    merged.sort_by_key(position);
    merged
        .iter()
        .map(|found| {
            let named = |with_role: bool| {
                found
                    .new
                    .iter()
                    .map(|(name, role)| match with_role {
                        true => format!("`{name}` (role {role})"),
                        false => format!("`{name}`"),
                    })
                    .collect::<Vec<_>>()
                    .join(" and ")
            };
            Diagnostic::at_key(
                &inventory.source,
                &found.at,
                format!(
                    "variable `{}` is now called {}; the old name still works, for now",
                    found.old,
                    named(true)
                ),
            )
            .help(format!("rename `{}` to {}", found.old, named(false)))
            .warning()
        })
        .collect()
}

/// The old names (`renamed_from:`) of the variables of `roles`, each with the new
/// names it sets and their roles. One old name may set several variables: base and
/// ups both read the shared `admin_email` before each had its own. A name that is
/// still a variable of one of `roles` is that variable, not an old name.
pub fn old_names<'a>(roles: &[&'a Role]) -> BTreeMap<&'a str, Vec<(&'a str, &'a str)>> {
    let mut names: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
    for role in roles {
        for (name, variable) in &role.file.variables {
            if let Some(old) = &variable.renamed_from {
                names
                    .entry(old.as_str())
                    .or_default()
                    .push((name.as_str(), role.name.as_str()));
            }
        }
    }
    names.retain(|old, _| !roles.iter().any(|r| r.file.variables.contains_key(*old)));
    names
}

/// The variables of `host` for `roles`, or every problem with them.
pub fn resolve(
    inventory: &Inventory,
    host: &Host,
    roles: &[&Role],
) -> Result<Resolved, InvalidInput> {
    let mut problems = InvalidInput::default();
    let mut uses = Vec::new();
    let mut values: Map<String, Value> = Map::new();
    let mut origins: BTreeMap<String, Origin> = BTreeMap::new();
    for role in roles {
        for (name, variable) in &role.file.variables {
            if let (Some(default), false) = (&variable.default, values.contains_key(name)) {
                values.insert(name.clone(), default.clone());
                origins.insert(name.clone(), Origin::Role(role));
            }
        }
    }
    let mut layers: Vec<(String, &Map<String, Value>)> =
        vec![("vars".to_string(), &inventory.file.vars)];
    for group in &host.groups {
        layers.push((
            format!("groups.{group}.vars"),
            &inventory.file.groups[group].vars,
        ));
    }
    layers.push((
        format!("hosts.{}.vars", host.name),
        &inventory.entry(&host.name).vars,
    ));
    let old = old_names(roles);
    // Where each name is first set for this host, to tell an old name set beside its
    // new one.
    let mut set_at: BTreeMap<&str, String> = BTreeMap::new();
    for (path, layer) in &layers {
        for name in layer.keys() {
            set_at
                .entry(name.as_str())
                .or_insert_with(|| format!("{path}.{name}"));
        }
    }
    for (path, layer) in &layers {
        for (name, value) in *layer {
            let at = format!("{path}.{name}");
            let Some(new_names) = old.get(name.as_str()) else {
                values.insert(name.clone(), value.clone());
                origins.insert(name.clone(), Origin::Inventory(at));
                continue;
            };
            for (new_name, role) in new_names {
                match set_at.get(new_name) {
                    // Which of the two the admin means is anyone's guess.
                    Some(new_at) => problems.push(
                        Diagnostic::at_key(
                            &inventory.source,
                            &at,
                            format!(
                                "host `{}` sets both `{name}` and `{new_name}`, its new name (role {role}): which value is meant is not clear",
                                host.name
                            ),
                        )
                        .help(format!(
                            "remove `{name}` and keep `{new_name}` (set at {}:{})",
                            inventory.source.path.display(),
                            inventory
                                .source
                                .key_position(new_at)
                                .map(|p| p.to_string())
                                .unwrap_or_else(|| new_at.clone())
                        )),
                    ),
                    None => {
                        values.insert(new_name.to_string(), value.clone());
                        origins.insert(new_name.to_string(), Origin::Inventory(at.clone()));
                    }
                }
            }
            uses.push(OldNameUse {
                at,
                old: name.clone(),
                new: new_names
                    .iter()
                    .map(|(new_name, role)| (new_name.to_string(), role.to_string()))
                    .collect(),
            });
        }
    }

    // A certificate variable left at its default (the mail role's `mail_certificate`)
    // stands for the certs lineage that covers its domain, when the host has one.
    let certs_at = roles.iter().position(|r| r.name == LINEAGES_ROLE);
    let mut picked: BTreeMap<&str, String> = BTreeMap::new();
    if certs_at.is_some() {
        for role in roles {
            for (name, variable) in &role.file.variables {
                if !matches!(origins.get(name), Some(Origin::Role(_))) {
                    continue;
                }
                if let Some(lineage) = crate::role::variable::pick_lineage(variable, &values) {
                    values.insert(name.clone(), Value::String(lineage));
                    picked.insert(name, variable.covers.clone().unwrap_or_default());
                }
            }
        }
    }

    // A variable the host must set and did not; `since` says why, when not always.
    let missing = |name: &str, role: &Role, description: &str, since: Option<String>| {
        Diagnostic::at_key(
            &inventory.source,
            &format!("hosts.{}", host.name),
            format!(
                "host `{}` needs variable `{name}` for role {}{}: {}",
                host.name,
                role.name,
                since.map(|c| format!(", since {c}")).unwrap_or_default(),
                description.trim()
            ),
        )
        .help(format!(
            "set `{name}` under hosts.{}.vars, a group's vars, or the global vars",
            host.name
        ))
    };
    for role in roles {
        for (name, variable) in &role.file.variables {
            match values.get(name) {
                None => problems.push(missing(name, role, &variable.description, None)),
                Some(value) => {
                    // Left at its default, wherever it was written: an inventory that
                    // spells out the empty default has not given a value either.
                    if let (true, Some(condition)) = (
                        variable.default.as_ref() == Some(value),
                        variable.required_by(&values),
                    ) {
                        problems.push(missing(name, role, &variable.description, Some(condition)));
                    }
                    let role_names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
                    let checked = variable
                        .check(value)
                        .and_then(|()| {
                            crate::role::variable::check_needs(variable, value, &values, &role_names)
                        })
                        .and_then(|()| lineage_order(role, variable, value, roles, certs_at))
                        .map_err(|message| match picked.get(name.as_str()) {
                            Some(covers) => format!(
                                "{message} (it names certificate {value} because that one covers `{covers}`; set `{name}: \"\"` to keep the self-signed certificate)"
                            ),
                            None => message,
                        });
                    if let Err(message) = checked {
                        // Set under its old name: say so, since the line shows that one.
                        let old_name = match &origins[name] {
                            Origin::Inventory(path) => path
                                .rsplit('.')
                                .next()
                                .filter(|set| set != name)
                                .map(|old| format!(", set as `{old}`, its old name")),
                            _ => None,
                        };
                        let (source, path): (&SourceFile, String) = match &origins[name] {
                            _ if picked.contains_key(name.as_str()) => {
                                (&inventory.source, format!("hosts.{}.roles", host.name))
                            }
                            Origin::Role(r) => (&r.source, format!("variables.{name}.default")),
                            Origin::Inventory(path) => (&inventory.source, path.clone()),
                        };
                        problems.push(
                            Diagnostic::at(
                                source,
                                &path,
                                format!(
                                    "variable `{name}` (role {}{}): {message}",
                                    role.name,
                                    old_name.unwrap_or_default()
                                ),
                            )
                            .help(format!("`{name}`: {}", variable.description.trim())),
                        );
                    }
                }
            }
        }
    }
    // A host variable no role declares is most likely a typo.
    for name in inventory.entry(&host.name).vars.keys() {
        let declared = roles.iter().any(|r| r.file.variables.contains_key(name))
            || old.contains_key(name.as_str());
        if !declared {
            let close: Vec<&str> = roles
                .iter()
                .flat_map(|r| r.file.variables.keys())
                .filter(|known| similar_names(known, name))
                .map(String::as_str)
                .collect();
            let mut diagnostic = Diagnostic::at_key(
                &inventory.source,
                &format!("hosts.{}.vars.{name}", host.name),
                format!("no role of host `{}` has a variable `{name}`", host.name),
            );
            diagnostic = match close.first() {
                Some(known) => diagnostic.help(format!("did you mean `{known}`?")),
                None => diagnostic.help(format!("the roles of this host are: {}; `placard roles show ROLE` lists their variables", host.roles.join(", "))),
            };
            problems.push(diagnostic);
        }
    }
    problems.into_result()?;
    Ok(Resolved {
        values,
        old_names: uses,
    })
}

/// A role naming a certificate uses it from its first run: the certs role, which orders
/// it, must come before that role in the host's roles.
fn lineage_order(
    role: &Role,
    variable: &crate::role::variable::Variable,
    value: &Value,
    roles: &[&Role],
    certs_at: Option<usize>,
) -> Result<(), String> {
    if variable.kind != Some(VariableType::Lineage) || value.as_str().is_none_or(str::is_empty) {
        return Ok(());
    }
    let role_at = roles.iter().position(|r| r.name == role.name);
    match (certs_at, role_at) {
        (Some(certs), Some(this)) if certs > this => Err(format!(
            "certificate {value} is ordered by the `{LINEAGES_ROLE}` role, which comes after `{}` in the host's roles: put `{LINEAGES_ROLE}` before `{}`, so that the certificate exists when `{}` uses it",
            role.name, role.name, role.name
        )),
        _ => Ok(()),
    }
}

/// Global and group variables that no role of the hosts they reach declares: most
/// likely typos, as undeclared host variables are (see [`resolve`]). `roles` holds the
/// roles the inventory names; a scope reaching a role missing from it (one that could
/// not be loaded) is not checked, since that role's variables are unknown.
pub fn check_declared(
    inventory: &Inventory,
    roles: &BTreeMap<&str, &Role>,
) -> Result<(), InvalidInput> {
    let all_hosts = inventory.select(&[])?;
    let mut scopes = vec![Scope {
        path: "vars".to_string(),
        subject: "no role of any host".to_string(),
        hosts: all_hosts.iter().collect(),
        vars: &inventory.file.vars,
    }];
    for (group, entry) in &inventory.file.groups {
        scopes.push(Scope {
            path: format!("groups.{group}.vars"),
            subject: format!("no role of the hosts of group `{group}`"),
            hosts: all_hosts
                .iter()
                .filter(|h| h.groups.contains(group))
                .collect(),
            vars: &entry.vars,
        });
    }
    let mut problems = InvalidInput::default();
    for Scope {
        path,
        subject,
        hosts,
        vars: layer,
    } in scopes
    {
        // A group without hosts sets nothing: its variables cannot be wrong yet.
        if layer.is_empty() || hosts.is_empty() {
            continue;
        }
        let mut role_names: Vec<&str> = hosts
            .iter()
            .flat_map(|h| h.roles.iter().map(String::as_str))
            .collect();
        role_names.sort_unstable();
        role_names.dedup();
        let Some(scope_roles) = role_names
            .iter()
            .map(|name| roles.get(name).copied())
            .collect::<Option<Vec<&Role>>>()
        else {
            continue;
        };
        let old = old_names(&scope_roles);
        for name in layer.keys() {
            let declared = scope_roles
                .iter()
                .any(|r| r.file.variables.contains_key(name));
            if declared || old.contains_key(name.as_str()) {
                continue;
            }
            let close = scope_roles
                .iter()
                .flat_map(|r| r.file.variables.keys())
                .find(|known| similar_names(known, name));
            let diagnostic = Diagnostic::at_key(
                &inventory.source,
                &format!("{path}.{name}"),
                format!("{subject} has a variable `{name}`"),
            );
            problems.push(match close {
                Some(known) => diagnostic.help(format!("did you mean `{known}`?")),
                None => diagnostic.help(format!(
                    "the roles concerned are: {}; `placard roles show ROLE` lists their variables",
                    role_names.join(", ")
                )),
            });
        }
    }
    problems.into_result()
}

/// Variables set for several hosts at once: the global `vars` or a group's.
struct Scope<'a> {
    /// Where they are set, such as `groups.www.vars`.
    path: String,
    /// Who lacks a variable, for the message: "no role of any host".
    subject: String,
    hosts: Vec<&'a Host>,
    vars: &'a Map<String, Value>,
}

/// Names one edit apart, or equal but for `-`/`_`: the usual typos.
fn similar_names(a: &str, b: &str) -> bool {
    if a.replace('-', "_") == b.replace('-', "_") {
        return true;
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            current.push(
                (previous[j] + usize::from(ca != cb))
                    .min(previous[j + 1] + 1)
                    .min(current[j] + 1),
            );
        }
        previous = current;
    }
    previous[b.len()] <= 2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::RoleFile;
    use serde_json::json;
    use std::path::Path;

    fn role(name: &str, text: &str) -> Role {
        Role {
            name: name.to_string(),
            file: serde_yaml::from_str::<RoleFile>(text).expect("a role"),
            source: SourceFile::new(Path::new(&format!("roles/{name}.yml")), text.to_string()),
            templates: Default::default(),
        }
    }

    fn inventory(text: &str) -> Inventory {
        Inventory {
            file: serde_yaml::from_str(text).expect("an inventory"),
            source: SourceFile::new(Path::new("inventory.yml"), text.to_string()),
        }
    }

    fn roles() -> (Role, Role) {
        (
            role(
                "base",
                "description: d\nvariables:\n  base_hostname: {description: d, type: hostname, renamed_from: hostname}\n  base_admin_email: {description: d, default: root, renamed_from: admin_email}\n",
            ),
            role(
                "ups",
                "description: d\nvariables:\n  ups_admin_email: {description: d, default: root, renamed_from: admin_email}\n",
            ),
        )
    }

    #[test]
    fn an_old_name_sets_every_variable_renamed_from_it_and_is_recorded() {
        let (base, ups) = roles();
        let inventory = inventory(
            "vars: {admin_email: admins@club.example}\nhosts:\n  cupboard: {roles: [base, ups], vars: {hostname: cupboard}}\n",
        );
        let host = &inventory.select(&[]).expect("hosts")[0];
        let resolved = resolve(&inventory, host, &[&base, &ups]).expect("resolves");
        assert_eq!(resolved.values["base_hostname"], json!("cupboard"));
        assert_eq!(
            resolved.values["base_admin_email"],
            json!("admins@club.example")
        );
        assert_eq!(
            resolved.values["ups_admin_email"],
            json!("admins@club.example")
        );
        // The old names themselves are no variables the templates see.
        assert!(!resolved.values.contains_key("hostname"));
        assert!(!resolved.values.contains_key("admin_email"));
        let warnings = old_name_warnings(&inventory, &resolved.old_names);
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].starts_with("warning: inventory.yml:1:8: variable `admin_email` is now called `base_admin_email` (role base) and `ups_admin_email` (role ups)"), "{}", text[0]);
        assert!(text[1].starts_with("warning: inventory.yml:3:41: variable `hostname` is now called `base_hostname` (role base)"), "{}", text[1]);
    }

    #[test]
    fn an_old_name_beside_its_new_one_is_refused_wherever_each_is_set() {
        let (base, ups) = roles();
        for text in [
            "hosts:\n  cupboard: {roles: [base], vars: {hostname: a, base_hostname: b}}\n",
            "vars: {hostname: a}\nhosts:\n  cupboard: {roles: [base], vars: {base_hostname: b}}\n",
            "vars: {base_hostname: b}\nhosts:\n  cupboard: {roles: [base], vars: {hostname: a}}\n",
        ] {
            let inventory = inventory(text);
            let host = &inventory.select(&[]).expect("hosts")[0];
            let invalid = resolve(&inventory, host, &[&base, &ups]).expect_err(text);
            assert!(
                invalid
                    .to_string()
                    .contains("sets both `hostname` and `base_hostname`, its new name (role base)"),
                "{invalid}"
            );
        }
    }

    #[test]
    fn a_name_that_a_role_still_has_is_that_variable() {
        // A site's role `admin` may have `admin_email`: it is its variable, not base's
        // old name, so it sets neither base's nor ups's.
        let (base, ups) = roles();
        let admin = role(
            "admin",
            "description: d\nvariables:\n  admin_email: {description: d, default: x}\n",
        );
        let inventory = inventory(
            "hosts:\n  cupboard: {roles: [base, ups, admin], vars: {base_hostname: c, admin_email: me}}\n",
        );
        let host = &inventory.select(&[]).expect("hosts")[0];
        let resolved = resolve(&inventory, host, &[&base, &ups, &admin]).expect("resolves");
        assert_eq!(resolved.values["admin_email"], json!("me"));
        assert_eq!(resolved.values["base_admin_email"], json!("root"));
        assert!(resolved.old_names.is_empty());
    }
}
