//! A role's variables: the interface of the role, each documented, with its default.
//!
//! A variable without `default` is required: every host using the role must set it. A
//! `type` lets placard refuse a value that cannot work (a rate limit that is not a
//! number, a domain that is not a domain) before any host is contacted.

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
        };
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
    fn names_are_plain_and_not_reserved() {
        assert!(check_name("mail_domain").is_ok());
        assert!(check_name("facts").is_err());
        assert!(check_name("Mail-Domain").is_err());
    }
}
