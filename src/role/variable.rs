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
    /// For lists of mappings (sites, certificates): the fields of each item. A field
    /// not listed here is refused.
    #[serde(default)]
    pub items: BTreeMap<String, ItemField>,
    /// The variable must be given a value other than its default on a host where
    /// every variable named here has the value beside it: `required_when: {relay_side:
    /// club}` (a side of a role that the other side does not need).
    #[serde(default)]
    pub required_when: BTreeMap<String, Value>,
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
}

impl Variable {
    /// Whether `value` fits the variable's type and choices; the message says what was
    /// expected.
    pub fn check(&self, value: &Value) -> Result<(), String> {
        if let Some(kind) = self.kind {
            kind.check(value, self.unique)?;
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
        let label = match item.get("name").and_then(Value::as_str) {
            Some(name) => format!("item {} (`{name}`)", index + 1),
            None => format!("item {}", index + 1),
        };
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
                field
                    .kind
                    .check(one, false)
                    .map_err(|message| format!("{label}: field `{name}`: {message}"))?;
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
}

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

fn show(value: &Value) -> String {
    match value {
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

/// An http or https URL naming a host (a DNS name, an IPv4 address or [IPv6]), an
/// optional port, and an optional path.
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
    let host_ok = is_dns_name(host)
        || host.parse::<std::net::Ipv4Addr>().is_ok()
        || host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .is_some_and(|h| h.parse::<std::net::Ipv6Addr>().is_ok());
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    host_ok && port_ok && !url.contains(char::is_whitespace)
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
    fn names_are_plain_and_not_reserved() {
        assert!(check_name("mail_domain").is_ok());
        assert!(check_name("facts").is_err());
        assert!(check_name("Mail-Domain").is_err());
    }
}
