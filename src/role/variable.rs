//! A role's variables: the interface of the role, each documented, with its default.
//!
//! A variable without `default` is required: every host using the role must set it. A
//! `type` lets placard refuse a value that cannot work (a rate limit that is not a
//! number, a domain that is not a domain) before any host is contacted.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    pub description: String,
    /// Absent: the variable is required. `default: ~` is a default of null.
    #[serde(default, deserialize_with = "present")]
    pub default: Option<Value>,
    #[serde(default, rename = "type")]
    pub kind: Option<VariableType>,
    /// For lists: the items must be distinct.
    #[serde(default)]
    pub unique: bool,
    /// The only values allowed, e.g. a mode: `choices: [bmc, systemd, none]`.
    #[serde(default)]
    pub choices: Vec<Value>,
    /// For lists of plain values: the type of each value (`type: list`, `each: domain`).
    #[serde(default)]
    pub each: Option<VariableType>,
    /// For lists of mappings (sites, certificates): the fields of each item. A field
    /// not listed here is refused.
    #[serde(default)]
    pub items: BTreeMap<String, ItemField>,
    /// A role the host must have when this variable is set, not empty (the mail role's
    /// `mail_certificate` needs the certs role).
    #[serde(default)]
    pub needs_role: Option<String>,
    /// The variable must be given a value other than its default on a host where
    /// every variable named here has the value beside it: `required_when: {relay_side:
    /// club}` (a side of a role that the other side does not need).
    #[serde(default)]
    pub required_when: BTreeMap<String, Value>,
    /// For a `lineage`: the variable holding the domain the lineage must cover (the
    /// mail role's `mail_hostname`). Left at its default, such a variable becomes the
    /// lineage that covers it, when the host has one (see [`pick_lineage`]).
    #[serde(default)]
    pub covers: Option<String>,
    /// The variable's old name, from before it carried the role's prefix (base's
    /// `hostname`, now `base_hostname`): an inventory that still sets the old name keeps
    /// working, with a warning naming both (see [`crate::inventory::vars::resolve`]).
    #[serde(default)]
    pub renamed_from: Option<String>,
}

impl Variable {
    /// The condition of `required_when`, as `a = "x", b = 1`, when `values` meets it.
    pub fn required_by(&self, values: &serde_json::Map<String, Value>) -> Option<String> {
        if self.required_when.is_empty() {
            return None;
        }
        let met = self
            .required_when
            .iter()
            .all(|(name, wanted)| values.get(name) == Some(wanted));
        met.then(|| {
            self.required_when
                .iter()
                .map(|(name, wanted)| format!("{name} is {}", show(wanted)))
                .collect::<Vec<_>>()
                .join(" and ")
        })
    }
}

/// One field of the items of a list variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemField {
    #[serde(rename = "type")]
    pub kind: VariableType,
    /// The field is a list, each of whose values has the type.
    #[serde(default)]
    pub list: bool,
    #[serde(default)]
    pub required: bool,
    /// No value may appear in two items (a domain in two certificates).
    #[serde(default)]
    pub distinct: bool,
    /// The only values allowed, as for a variable.
    #[serde(default)]
    pub choices: Vec<Value>,
    /// Fields an item having this one may not have (a site's `root` and `proxy`).
    #[serde(default)]
    pub excludes: Vec<String>,
    /// For domains: a wildcard (`*.DOMAIN`) is accepted only in an item whose fields
    /// have these values (`{challenge: dns}`: only DNS-01 proves a wildcard).
    #[serde(default)]
    pub wildcard_when: BTreeMap<String, Value>,
    /// Per value of this field (`"*"`: any value), the variables of the host that must
    /// then be set and not empty (`{dns: [certs_dns_server]}`).
    #[serde(default)]
    pub needs: BTreeMap<String, Vec<String>>,
    /// A role the host must have when an item has this field (a site's `certificate`
    /// needs the certs role, which orders it).
    #[serde(default)]
    pub needs_role: Option<String>,
}

impl Variable {
    /// Whether `value` fits the variable's type and choices; the message says what was
    /// expected.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        if let Some(kind) = self.kind {
            kind.check(value, self.unique)?;
        }
        if let (Some(each), Some(values)) = (self.each, value.as_array()) {
            for (index, one) in values.iter().enumerate() {
                each.check(one, false)
                    .map_err(|message| format!("item {}: {message}", index + 1))?;
            }
        }
        if !self.items.is_empty() {
            check_items(&self.items, value)?;
        }
        if !self.choices.is_empty() && !self.choices.contains(value) {
            let choices: Vec<String> = self.choices.iter().map(show).collect();
            return Err(format!(
                "{} is not one of {}",
                show(value),
                choices.join(", ")
            ));
        }
        Ok(())
    }
}

/// Each item of `value` against `fields`: known fields only, required ones present,
/// each of its type, distinct ones in one item only.
fn check_items(fields: &BTreeMap<String, ItemField>, value: &Value) -> Result<(), String> {
    let Some(items) = value.as_array() else {
        return Ok(());
    };
    let mut seen: BTreeMap<(&str, String), usize> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        let label = item_label(index, item);
        let Some(item) = item.as_object() else {
            return Err(format!("{label} is not a mapping of fields"));
        };
        for name in item.keys() {
            if !fields.contains_key(name) {
                let known: Vec<&str> = fields.keys().map(String::as_str).collect();
                return Err(format!(
                    "{label}: unknown field `{name}`; the fields are {}",
                    known.join(", ")
                ));
            }
        }
        for (name, field) in fields {
            for other in &field.excludes {
                if item.contains_key(name) && item.contains_key(other) {
                    return Err(format!(
                        "{label}: fields `{name}` and `{other}` exclude each other; keep one"
                    ));
                }
            }
            let Some(field_value) = item.get(name) else {
                if field.required {
                    return Err(format!("{label}: field `{name}` is required"));
                }
                continue;
            };
            let values: Vec<&Value> = match (field.list, field_value.as_array()) {
                (false, _) => vec![field_value],
                (true, Some(values)) => values.iter().collect(),
                (true, None) => return Err(format!("{label}: field `{name}` is not a list")),
            };
            for one in values {
                let wildcard = one
                    .as_str()
                    .and_then(|s| s.strip_prefix("*."))
                    .filter(|_| field.kind == VariableType::Domain);
                match wildcard {
                    Some(base) if !field.wildcard_when.is_empty() => {
                        VariableType::Domain
                            .check(&Value::String(base.to_string()), false)
                            .map_err(|message| format!("{label}: field `{name}`: {message}"))?;
                        let wanted: Vec<String> = field
                            .wildcard_when
                            .iter()
                            .filter(|(k, v)| item.get(k.as_str()) != Some(v))
                            .map(|(k, v)| format!("`{k}: {}`", plain(v)))
                            .collect();
                        if !wanted.is_empty() {
                            return Err(format!(
                                "{label}: field `{name}`: {} is a wildcard, which needs {} in the same item",
                                show(one),
                                wanted.join(" and ")
                            ));
                        }
                    }
                    _ => field
                        .kind
                        .check(one, false)
                        .map_err(|message| format!("{label}: field `{name}`: {message}"))?,
                }
                if !field.choices.is_empty() && !field.choices.contains(one) {
                    let choices: Vec<String> = field.choices.iter().map(show).collect();
                    return Err(format!(
                        "{label}: field `{name}`: {} is not one of {}",
                        show(one),
                        choices.join(", ")
                    ));
                }
                if field.distinct {
                    if let Some(first) = seen.insert((name.as_str(), one.to_string()), index) {
                        return Err(format!(
                            "{label}: field `{name}`: {} is already in item {}; a value may be in one item only",
                            show(one),
                            first + 1
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// What the items of `value` need from the rest of the host: variables set for some
/// field values (`needs`), and roles (`needs_role`). `values` are the host's variables,
/// `roles` the names of its roles.
pub fn check_needs(
    variable: &Variable,
    value: &Value,
    values: &serde_json::Map<String, Value>,
    roles: &[&str],
) -> Result<(), String> {
    if let Some(role) = &variable.needs_role {
        let set = !matches!(value, Value::Null) && value.as_str() != Some("");
        if set && !roles.contains(&role.as_str()) {
            return Err(format!(
                "{} needs the `{role}` role on this host, and it has none; add it to the host's roles (or leave this variable empty)",
                show(value)
            ));
        }
    }
    if let (Some(VariableType::Lineage), Some(name)) = (variable.kind, value.as_str()) {
        if !name.is_empty() {
            check_lineage(variable, name, values)?;
        }
    }
    let fields = &variable.items;
    let Some(items) = value.as_array() else {
        return Ok(());
    };
    for (index, item) in items.iter().enumerate() {
        let label = item_label(index, item);
        for (name, field) in fields {
            let Some(field_value) = item.get(name) else {
                continue;
            };
            if let Some(role) = &field.needs_role {
                if !roles.contains(&role.as_str()) {
                    return Err(format!(
                        "{label}: field `{name}` needs the `{role}` role on this host, and it has none; add it to the host's roles (or remove `{name}`)"
                    ));
                }
            }
            for (when, variables) in &field.needs {
                if when != "*" && field_value.as_str() != Some(when.as_str()) {
                    continue;
                }
                for variable in variables {
                    let set = match values.get(variable) {
                        None | Some(Value::Null) => false,
                        Some(Value::String(s)) => !s.is_empty(),
                        Some(Value::Array(a)) => !a.is_empty(),
                        Some(_) => true,
                    };
                    if !set {
                        return Err(format!(
                            "{label}: field `{name}`: {} needs variable `{variable}` set; it is not",
                            show(field_value)
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The host's certificates (the items of [`LINEAGES`]) as (name, domains).
fn lineages(values: &serde_json::Map<String, Value>) -> Vec<(&str, Vec<&str>)> {
    let items = values.get(LINEAGES).and_then(Value::as_array);
    items
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let name = item.get("name")?.as_str()?;
            let domains = item.get("domains")?.as_array()?;
            Some((name, domains.iter().filter_map(Value::as_str).collect()))
        })
        .collect()
}

/// Whether a certificate for `pattern` (a domain, or `*.DOMAIN`: one more label) is
/// valid for `name`. DNS names compare without regard to case.
pub fn domain_covers(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.to_ascii_lowercase(), name.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(base) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
        None => pattern == name,
    }
}

/// A lineage named by `variable` must be one of the host's certificates and cover the
/// domain in the variable it `covers`.
fn check_lineage(
    variable: &Variable,
    name: &str,
    values: &serde_json::Map<String, Value>,
) -> Result<(), String> {
    let known = lineages(values);
    let Some((_, domains)) = known.iter().find(|(lineage, _)| *lineage == name) else {
        let names: Vec<&str> = known.iter().map(|(lineage, _)| *lineage).collect();
        return Err(format!(
            "\"{name}\" is not a certificate of this host: `{LINEAGES}` has {}; name one of them, or leave it empty",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    };
    let Some(covers) = &variable.covers else {
        return Ok(());
    };
    let Some(domain) = values.get(covers).and_then(Value::as_str) else {
        return Ok(());
    };
    if domains.iter().any(|pattern| domain_covers(pattern, domain)) {
        return Ok(());
    }
    Err(format!(
        "certificate \"{name}\" does not cover `{covers}` (\"{domain}\"): its domains are {}; add \"{domain}\" to them, or name the certificate that covers it",
        domains.join(", ")
    ))
}

/// The lineage a `lineage` variable left at its default stands for: the one of the
/// host's certificates that covers the domain in the variable it `covers`; a name
/// written in a certificate wins over a wildcard. None when no certificate covers it.
pub fn pick_lineage(
    variable: &Variable,
    values: &serde_json::Map<String, Value>,
) -> Option<String> {
    if variable.kind != Some(VariableType::Lineage) {
        return None;
    }
    let domain = values
        .get(variable.covers.as_ref()?)?
        .as_str()?
        .to_ascii_lowercase();
    let known = lineages(values);
    let named = |exact: bool| {
        known.iter().find(|(_, domains)| {
            domains.iter().any(|pattern| {
                pattern.starts_with("*.") != exact && domain_covers(pattern, &domain)
            })
        })
    };
    named(true)
        .or_else(|| named(false))
        .map(|(name, _)| name.to_string())
}

/// A value as written in YAML, without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VariableType {
    String,
    Integer,
    Boolean,
    List,
    Map,
    /// A DNS name of at least two labels (club.example).
    Domain,
    /// A host name: one label or a DNS name.
    Hostname,
    Email,
    Port,
    /// An absolute path.
    Path,
    /// An http:// or https:// URL with a host (http://127.0.0.1:8008).
    Url,
    /// A plain name, safe in a path, a URL and a secret's name: letters, digits, `.`,
    /// `_` and `-`, not starting with `.` or `-` (an Icecast mount such as alice.ogg).
    Name,
    /// A release number: numbers separated by dots, optionally a pre-release suffix
    /// (1.163.0, 2.0rc1), as PyPI and Debian name releases.
    Version,
    /// A number above zero, whole or decimal (1.5).
    PositiveNumber,
    /// A duration: a whole number and a unit, s, m, h, d, w or y (30d, 1y).
    Duration,
    /// A SHA-256 digest: 64 hexadecimal characters.
    Sha256,
    /// An amount of memory as PHP and most daemons write it: a number, optionally
    /// followed by K, M or G (512M, 1G).
    Size,
    /// An OpenSSH public key on one line: its type, its base64 body, and an optional
    /// comment (what `ssh-keygen` writes to `.pub`); no options, no second line.
    SshPublicKey,
    /// The name of one of the certs role's certificates (a `name` in
    /// [`LINEAGES`]), or empty for none; [`check_needs`] checks that it is one.
    Lineage,
    /// One line of text: no line break or other control character (a name that goes
    /// into a mail header, a value pasted into a configuration line).
    Line,
    /// An IPv4 or IPv6 address, or empty for none.
    IpAddress,
    /// A path inside a checkout: relative, without `..`, so it cannot leave it.
    RelativePath,
    /// A git repository URL: git://, http://, https:// or ssh://, without a password or
    /// token in it (the URL is written to /etc, in its git history, and in mails).
    Repository,
}

/// The certs role's variable listing its certificates, which `lineage` values name.
pub const LINEAGES: &str = "certs_certificates";
/// The role that orders them.
pub const LINEAGES_ROLE: &str = "certs";

impl VariableType {
    pub fn name(self) -> &'static str {
        match self {
            VariableType::String => "a string",
            VariableType::Integer => "an integer",
            VariableType::Boolean => "true or false",
            VariableType::List => "a list",
            VariableType::Map => "a mapping",
            VariableType::Domain => "a domain name",
            VariableType::Hostname => "a host name",
            VariableType::Email => "an email address",
            VariableType::Port => "a port number (1-65535)",
            VariableType::Path => "an absolute path",
            VariableType::Url => "an http:// or https:// URL",
            VariableType::Name => {
                "a plain name (letters, digits, `.`, `_` and `-`; no slash, no space)"
            }
            VariableType::Version => "a version such as 1.163.0",
            VariableType::PositiveNumber => "a number above zero",
            VariableType::Duration => {
                "a duration such as 30d (a number and one of s, m, h, d, w, y)"
            }
            VariableType::Sha256 => "a SHA-256 checksum (64 hexadecimal characters)",
            VariableType::Size => "a size such as 512M or 1G (a number, then K, M or G)",
            VariableType::SshPublicKey => {
                "an OpenSSH public key on one line (ssh-ed25519 AAAA… comment)"
            }
            VariableType::Lineage => {
                "the name of a certificate of `certs_certificates`, or empty for none"
            }
            VariableType::Line => "one line of text (no line break or control character)",
            VariableType::IpAddress => "an IPv4 or IPv6 address, or empty for none",
            VariableType::RelativePath => "a relative path without `..` (inventory/hosts.yml)",
            VariableType::Repository => {
                "a git repository URL (git://, https:// or ssh://) without a password or token: \
                 the URL is written to /etc and its git history; give ssh:// a deploy key instead"
            }
        }
    }

    /// Whether `value` is of this type; the message says what was expected.
    pub fn check(self, value: &Value, unique: bool) -> Result<(), String> {
        let fits = match self {
            VariableType::String => value.is_string(),
            VariableType::Integer => value.is_i64() || value.is_u64(),
            VariableType::Boolean => value.is_boolean(),
            VariableType::List => value.is_array(),
            VariableType::Map => value.is_object(),
            VariableType::Domain => value
                .as_str()
                .is_some_and(|s| is_dns_name(s) && s.contains('.')),
            VariableType::Hostname => value.as_str().is_some_and(is_dns_name),
            VariableType::Email => value.as_str().is_some_and(|s| {
                s.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && !local.contains(char::is_whitespace) && is_dns_name(domain)
                })
            }),
            VariableType::Port => value.as_u64().is_some_and(|p| (1..=65535).contains(&p)),
            VariableType::Path => value.as_str().is_some_and(|s| s.starts_with('/')),
            VariableType::Url => value.as_str().is_some_and(is_url),
            VariableType::Name => value.as_str().is_some_and(is_plain_name),
            VariableType::Version => value.as_str().is_some_and(is_version),
            VariableType::PositiveNumber => value.as_f64().is_some_and(|n| n > 0.0),
            VariableType::Duration => value.as_str().is_some_and(is_duration),
            VariableType::Sha256 => value
                .as_str()
                .is_some_and(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())),
            VariableType::Size => value.as_str().is_some_and(is_size),
            VariableType::SshPublicKey => value.as_str().is_some_and(is_ssh_public_key),
            VariableType::Lineage => value
                .as_str()
                .is_some_and(|s| s.is_empty() || is_dns_name(s)),
            VariableType::Line => value.as_str().is_some_and(is_one_line),
            VariableType::IpAddress => value
                .as_str()
                .is_some_and(|s| s.is_empty() || s.parse::<std::net::IpAddr>().is_ok()),
            VariableType::RelativePath => value.as_str().is_some_and(is_relative_path),
            VariableType::Repository => value.as_str().is_some_and(is_repository),
        };
        if !fits && self == VariableType::Domain {
            if let Some(name) = value.as_str().filter(|s| s.starts_with("*.")) {
                return Err(format!("\"{name}\" is a wildcard, not a domain name"));
            }
        }
        if !fits {
            return Err(format!("{} is not {}", show(value), self.name()));
        }
        if unique {
            if let Some(items) = value.as_array() {
                for (index, item) in items.iter().enumerate() {
                    if items[..index].contains(item) {
                        return Err(format!(
                            "{} appears twice in the list; each item must be distinct",
                            show(item)
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// "item 2 (`alice`)": an item of a list, by its position and its name when it has one
/// (escaped like [`show`] when it holds control characters).
fn item_label(index: usize, item: &Value) -> String {
    match item.get("name").and_then(Value::as_str) {
        Some(name) if name.contains(char::is_control) => format!("item {} ({name:?})", index + 1),
        Some(name) => format!("item {} (`{name}`)", index + 1),
        None => format!("item {}", index + 1),
    }
}

/// A value as a message quotes it; control characters escaped (`\r\n`), so that a
/// value cannot break the message's lines or drive the terminal.
fn show(value: &Value) -> String {
    match value {
        Value::String(s) if s.contains(char::is_control) => format!("{s:?}"),
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

/// RFC 1123 host names: labels of letters, digits and inner hyphens, 63 at most each.
pub fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// A name of at most 64 letters, digits, `.`, `_` and `-`, not starting with `.` or `-`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// An http or https URL naming a host (a DNS name, an IPv4 address or [IPv6]), an
/// optional port, and an optional path.
/// A URL's host: a DNS name, an IPv4 address or a bracketed IPv6 one.
fn is_url_host(host: &str) -> bool {
    is_dns_name(host)
        || host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
}

fn is_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = is_url_host(host);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok && !url.contains(char::is_whitespace)
}

fn is_one_line(text: &str) -> bool {
    !text.contains(char::is_control)
}

fn is_relative_path(path: &str) -> bool {
    !path.is_empty()
        && is_one_line(path)
        && !path.starts_with('/')
        && path.split('/').all(|part| part != "..")
}

/// git://HOST/…, http(s)://HOST/… without user information, ssh://[USER@]HOST/… without
/// a password: a token in a URL would be written to /etc, its git history and mails.
fn is_repository(url: &str) -> bool {
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (user, host) = match authority.rsplit_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, authority),
    };
    let user_ok = match scheme {
        "git" | "http" | "https" => user.is_none(),
        "ssh" => user.is_none_or(|user| !user.is_empty() && !user.contains(':')),
        _ => false,
    };
    let host = host.rsplit_once(':').map_or(host, |(host, port)| {
        if port.parse::<u16>().is_ok() {
            host
        } else {
            authority
        }
    });
    let host_ok = is_url_host(host);
    user_ok && host_ok && rest.len() > authority.len() + 1 && is_one_line(url) && !url.contains(' ')
}

/// 1.163.0, 2.0rc1: numeric parts separated by dots (two at least), then an optional
/// suffix of letters and digits.
fn is_version(version: &str) -> bool {
    let numeric_end = version
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(version.len());
    let (numbers, suffix) = version.split_at(numeric_end);
    let parts: Vec<&str> = numbers.split('.').collect();
    parts.len() >= 2
        && parts.iter().all(|p| !p.is_empty())
        && suffix.chars().all(|c| c.is_ascii_alphanumeric())
        && suffix
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphabetic())
}

/// 30d, 1y: a whole number above zero, then one unit letter.
fn is_duration(duration: &str) -> bool {
    let Some(number) = duration.strip_suffix(['s', 'm', 'h', 'd', 'w', 'y']) else {
        return false;
    };
    number.parse::<u64>().is_ok_and(|n| n > 0)
}

/// `TYPE BASE64 [COMMENT]` on one line, TYPE one OpenSSH knows: written as is into
/// authorized_keys, so a second line or leading options would grant more than asked.
fn is_ssh_public_key(key: &str) -> bool {
    const TYPES: [&str; 7] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    ];
    let mut parts = key.splitn(3, ' ');
    let (Some(kind), Some(body)) = (parts.next(), parts.next()) else {
        return false;
    };
    let comment = parts.next().unwrap_or("");
    TYPES.contains(&kind)
        && body.len() >= 16
        && body
            .trim_end_matches('=')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '/')
        && !key.contains(['\n', '\r', '\0'])
        && !comment.chars().any(char::is_control)
}

/// A size: digits, then optionally one of K, M, G (either case), as php.ini takes it.
fn is_size(text: &str) -> bool {
    let digits = text
        .strip_suffix(['K', 'M', 'G', 'k', 'm', 'g'])
        .unwrap_or(text);
    !digits.is_empty() && digits.len() <= 12 && digits.chars().all(|c| c.is_ascii_digit())
}

/// Variable names are used in templates as `{{name}}`: keep them plain.
pub fn check_name(name: &str) -> Result<(), String> {
    if name == "facts" || name == "host" {
        return Err(format!(
            "`{name}` is reserved for what placard provides to templates"
        ));
    }
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(format!("`{name}` is not a variable name: lowercase letters, digits and _, starting with a letter"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn types_refuse_what_cannot_work() {
        assert!(VariableType::Domain
            .check(&json!("club.example"), false)
            .is_ok());
        assert!(VariableType::Domain
            .check(&json!("not a domain"), false)
            .is_err());
        assert!(VariableType::Domain
            .check(&json!("localhost"), false)
            .is_err());
        assert!(VariableType::Hostname
            .check(&json!("sandbox"), false)
            .is_ok());
        assert!(VariableType::Integer.check(&json!("fast"), false).is_err());
        assert!(VariableType::Port.check(&json!(70000), false).is_err());
        assert!(VariableType::Email
            .check(&json!("admin@club.example"), false)
            .is_ok());
        let duplicate = VariableType::List
            .check(&json!(["alice", "bob", "alice"]), true)
            .unwrap_err();
        assert!(duplicate.contains("\"alice\" appears twice"), "{duplicate}");
    }

    #[test]
    fn plain_names_have_no_slash_nor_space() {
        for good in ["alice.ogg", "bob_show-2", "a"] {
            assert!(
                VariableType::Name.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "alice/live",
            "alice show",
            "",
            ".hidden",
            "-x",
            "../x",
            "é",
            "a\n",
        ] {
            assert!(
                VariableType::Name.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
        assert!(VariableType::Name.check(&json!(3), false).is_err());
    }

    #[test]
    fn versions_numbers_and_durations() {
        for good in ["1.163.0", "1.98.0", "2.0rc1", "10.4"] {
            assert!(
                VariableType::Version.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "latest",
            "1",
            "1..2",
            "1.2.3; rm -rf /",
            ">=1.2",
            "v1.2",
            "1.2-rc1",
            "",
        ] {
            assert!(
                VariableType::Version.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
        assert!(VariableType::PositiveNumber
            .check(&json!(1.5), false)
            .is_ok());
        assert!(VariableType::PositiveNumber.check(&json!(2), false).is_ok());
        for bad in [json!(0), json!(-1.0), json!("high")] {
            assert!(
                VariableType::PositiveNumber.check(&bad, false).is_err(),
                "{bad}"
            );
        }
        for good in ["30d", "1y", "12h", "2w"] {
            assert!(
                VariableType::Duration.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in ["30", "30 days", "0d", "1.5d", "30x", "d"] {
            assert!(
                VariableType::Duration.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn choices_limit_the_values() {
        let mode: Variable = serde_yaml::from_str(
            "description: d\ndefault: none\ntype: string\nchoices: [bmc, systemd, none]\n",
        )
        .expect("a variable");
        assert!(mode.check(&json!("bmc")).is_ok());
        assert_eq!(
            mode.check(&json!("hardware")),
            Err("\"hardware\" is not one of \"bmc\", \"systemd\", \"none\"".to_string())
        );
        assert!(mode
            .check(&json!(3))
            .unwrap_err()
            .contains("is not a string"));
    }

    #[test]
    fn urls_name_a_host() {
        for good in [
            "http://127.0.0.1:8008",
            "https://club.example/x",
            "http://[::1]:80/",
        ] {
            assert!(
                VariableType::Url.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "127.0.0.1:8008",
            "ftp://club.example",
            "http://",
            "http://a b",
            "http://x:port",
        ] {
            assert!(
                VariableType::Url.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn items_have_known_typed_fields_and_distinct_values() {
        let certificates: Variable = serde_yaml::from_str(
            "description: d\ndefault: []\ntype: list\nitems:\n  name: {type: string, required: true}\n  domains: {type: domain, list: true, required: true, distinct: true}\n",
        )
        .expect("a variable");
        let good = json!([{"name": "a", "domains": ["a.example"]}, {"name": "b", "domains": ["b.example"]}]);
        assert_eq!(certificates.check(&good), Ok(()));
        let twice = json!([{"name": "a", "domains": ["a.example"]}, {"name": "b", "domains": ["a.example"]}]);
        assert_eq!(
            certificates.check(&twice),
            Err("item 2 (`b`): field `domains`: \"a.example\" is already in item 1; a value may be in one item only".to_string())
        );
        let wildcard = json!([{"name": "a", "domains": ["*.a.example"]}]);
        assert!(certificates
            .check(&wildcard)
            .unwrap_err()
            .contains("\"*.a.example\" is a wildcard"));
        let unknown = json!([{"name": "a", "domains": [], "domain": "x"}]);
        assert!(certificates
            .check(&unknown)
            .unwrap_err()
            .contains("unknown field `domain`"));
        let missing = json!([{"domains": ["a.example"]}]);
        assert_eq!(
            certificates.check(&missing),
            Err("item 1: field `name` is required".to_string())
        );
    }

    #[test]
    fn items_may_exclude_fields_allow_wildcards_and_need_variables_or_roles() {
        let certificates: Variable = serde_yaml::from_str(
            "description: d\ndefault: []\ntype: list\nitems:\n  name: {type: string, required: true}\n  \
             domains: {type: domain, list: true, wildcard_when: {challenge: dns}}\n  \
             challenge: {type: string, choices: [http, dns], needs: {dns: [dns_server]}}\n  \
             root: {type: path, excludes: [proxy]}\n  proxy: {type: url}\n  certificate: {type: hostname, needs_role: certs}\n",
        )
        .expect("a variable");
        let wildcard = json!([{"name": "a", "domains": ["*.a.example"], "challenge": "dns"}]);
        assert_eq!(certificates.check(&wildcard), Ok(()));
        let http = json!([{"name": "a", "domains": ["*.a.example"]}]);
        assert_eq!(
            certificates.check(&http),
            Err("item 1 (`a`): field `domains`: \"*.a.example\" is a wildcard, which needs `challenge: dns` in the same item".to_string())
        );
        let both = json!([{"name": "a", "root": "/srv", "proxy": "http://127.0.0.1:1"}]);
        assert!(certificates
            .check(&both)
            .unwrap_err()
            .contains("fields `root` and `proxy` exclude each other"));
        let mut values = serde_json::Map::new();
        values.insert("dns_server".into(), json!(""));
        let needs = check_needs(&certificates, &wildcard, &values, &["certs"]).unwrap_err();
        assert!(
            needs.contains("\"dns\" needs variable `dns_server` set"),
            "{needs}"
        );
        values.insert("dns_server".into(), json!("192.0.2.53"));
        assert_eq!(
            check_needs(&certificates, &wildcard, &values, &["certs"]),
            Ok(())
        );
        let site = json!([{"name": "a", "certificate": "club"}]);
        assert!(check_needs(&certificates, &site, &values, &["web"])
            .unwrap_err()
            .contains("needs the `certs` role"));
        assert_eq!(
            check_needs(&certificates, &site, &values, &["web", "certs"]),
            Ok(())
        );
    }

    #[test]
    fn a_lineage_covers_its_names_and_a_wildcard_one_label_more() {
        assert!(domain_covers("mail.club.example", "mail.club.example"));
        assert!(domain_covers("MAIL.club.example", "mail.CLUB.example"));
        assert!(domain_covers("*.club.example", "mail.club.example"));
        assert!(!domain_covers("*.club.example", "club.example"));
        assert!(!domain_covers("*.club.example", "a.mail.club.example"));
        assert!(!domain_covers("club.example", "mail.club.example"));
    }

    #[test]
    fn a_lineage_variable_names_a_certificate_covering_its_domain_or_is_picked() {
        let certificate: Variable = serde_yaml::from_str(
            "description: d\ndefault: \"\"\ntype: lineage\ncovers: hostname\nneeds_role: certs\n",
        )
        .expect("a variable");
        assert_eq!(certificate.check(&json!("")), Ok(()));
        assert_eq!(certificate.check(&json!("club")), Ok(()));
        assert!(certificate.check(&json!("../club")).is_err());
        let mut values = serde_json::Map::new();
        values.insert("hostname".into(), json!("mail.club.example"));
        values.insert(
            LINEAGES.into(),
            json!([
                {"name": "wild", "domains": ["*.club.example"]},
                {"name": "mx", "domains": ["mail.club.example"]},
                {"name": "other", "domains": ["other.example"]},
            ]),
        );
        let roles = ["certs", "mail"];
        assert_eq!(
            check_needs(&certificate, &json!("mx"), &values, &roles),
            Ok(())
        );
        assert_eq!(
            check_needs(&certificate, &json!("wild"), &values, &roles),
            Ok(())
        );
        assert_eq!(
            check_needs(&certificate, &json!(""), &values, &roles),
            Ok(())
        );
        let uncovered = check_needs(&certificate, &json!("other"), &values, &roles).unwrap_err();
        assert!(
            uncovered.contains("does not cover `hostname` (\"mail.club.example\")"),
            "{uncovered}"
        );
        let unknown = check_needs(&certificate, &json!("web"), &values, &roles).unwrap_err();
        assert!(unknown.contains("has wild, mx, other"), "{unknown}");
        // A name written in a certificate wins over a wildcard; none covering: none.
        assert_eq!(pick_lineage(&certificate, &values).as_deref(), Some("mx"));
        values.insert(
            LINEAGES.into(),
            json!([{"name": "wild", "domains": ["*.club.example"]}]),
        );
        assert_eq!(pick_lineage(&certificate, &values).as_deref(), Some("wild"));
        values.insert("hostname".into(), json!("mx.other.example"));
        assert_eq!(pick_lineage(&certificate, &values), None);
    }

    #[test]
    fn repositories_carry_no_credentials() {
        for good in [
            "git://127.0.0.1:9418/site",
            "https://git.club.example/club/site.git",
            "ssh://git@git.club.example/club/site.git",
            "ssh://git.club.example:2222/site",
        ] {
            assert!(
                VariableType::Repository.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "https://alice:token@git.club.example/site.git",
            "https://token@git.club.example/site.git",
            "ssh://git:secret@git.club.example/site",
            "git.club.example:site.git",
            "file:///srv/site",
            "https://git.club.example",
            "https://git.club.example/site\nX-Header: y",
        ] {
            assert!(
                VariableType::Repository.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_paths_stay_inside_and_lines_stay_one() {
        assert!(is_relative_path("inventory/hosts.yml"));
        assert!(!is_relative_path("/etc/placard/hosts.yml"));
        assert!(!is_relative_path("inventory/../../etc/x.yml"));
        assert!(!is_relative_path(""));
        assert!(is_one_line("the backup is less than a day old"));
        assert!(!is_one_line("down\r\nBcc: someone@else.example"));
        assert!(VariableType::IpAddress.check(&json!(""), false).is_ok());
        assert!(VariableType::IpAddress.check(&json!("::1"), false).is_ok());
        assert!(VariableType::IpAddress
            .check(&json!("ns.club.example"), false)
            .is_err());
    }

    #[test]
    fn ssh_public_keys_are_one_plain_line() {
        let good = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl club@host";
        assert!(VariableType::SshPublicKey
            .check(&json!(good), false)
            .is_ok());
        let no_comment =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert!(VariableType::SshPublicKey
            .check(&json!(no_comment), false)
            .is_ok());
        for bad in [
            format!("{good}\ncommand=\"sh\" {no_comment}"),
            format!("restrict {good}"),
            "ssh-ed25519".to_string(),
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP1 old".to_string(),
            "ssh-ed25519 not*base64*at*all".to_string(),
            String::new(),
        ] {
            assert!(
                VariableType::SshPublicKey
                    .check(&json!(bad), false)
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn checksums_and_sizes_have_their_form() {
        let digest = "a".repeat(64);
        assert!(VariableType::Sha256.check(&json!(digest), false).is_ok());
        for bad in ["a".repeat(63), "g".repeat(64), format!("{digest}0")] {
            assert!(
                VariableType::Sha256.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
        for good in ["512M", "1G", "128m", "1048576"] {
            assert!(
                VariableType::Size.check(&json!(good), false).is_ok(),
                "{good}"
            );
        }
        for bad in ["", "M", "512 M", "1.5G", "lots", "512MB"] {
            assert!(
                VariableType::Size.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
        assert!(VariableType::Version.check(&json!("31.0.9"), false).is_ok());
        for bad in ["", "31..0", "../31", "31.0.9-rc1", "v31"] {
            assert!(
                VariableType::Version.check(&json!(bad), false).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn each_value_of_a_list_has_the_type() {
        let domains: Variable =
            serde_yaml::from_str("description: d\ndefault: []\ntype: list\neach: domain\n")
                .expect("a variable");
        assert_eq!(domains.check(&json!(["cloud.club.example"])), Ok(()));
        assert_eq!(
            domains.check(&json!(["cloud.club.example", "not a domain"])),
            Err("item 2: \"not a domain\" is not a domain name".to_string())
        );
    }

    #[test]
    fn names_are_plain_and_not_reserved() {
        assert!(check_name("mail_domain").is_ok());
        assert!(check_name("facts").is_err());
        assert!(check_name("Mail-Domain").is_err());
    }
}
