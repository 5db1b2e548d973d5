//! `placard dns`: the DNS records a host's roles need published, as zone-file lines.
//!
//! A role lists its records under `dns:`, with handlebars in every field. They are
//! rendered by the agent, on the host, because some values exist only there (the DKIM
//! public key the host generated, read with `{{host_file "…"}}`); the controller only
//! checks them with placeholders. This module owns the record type and the formatting:
//! TXT values split into strings of at most 255 bytes (the limit of one DNS
//! character-string), PTR names written in their `in-addr.arpa` / `ip6.arpa` form.
//! Publishing is left to the admin: placard never talks to a DNS provider.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One record as a role writes it, and, once rendered, as the agent sends it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// The owner name (`club.example`), or for a PTR the IP address it is for.
    pub name: String,
    /// MX, TXT, A, AAAA, CNAME, CAA, SRV, PTR, or `note`: a comment for the admin.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
    /// Rendered like a task's `when`: the record is printed when it says `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

const TYPES: &[&str] = &[
    "MX", "TXT", "A", "AAAA", "CNAME", "CAA", "SRV", "PTR", "note",
];

/// The most bytes one TXT character-string holds.
const TXT_STRING_MAX: usize = 255;

impl DnsRecord {
    pub fn validate(&self) -> Result<(), String> {
        if !TYPES.contains(&self.kind.as_str()) {
            return Err(format!(
                "`{}` is not a record type placard prints; use one of {}",
                self.kind,
                TYPES.join(", ")
            ));
        }
        Ok(())
    }

    /// The record as a zone-file line (TXT split into quoted strings), or a `;` comment
    /// for a note.
    pub fn zone_line(&self) -> String {
        match self.kind.as_str() {
            "note" => format!("; {}", self.value),
            "TXT" => format!(
                "{} IN TXT {}",
                absolute(&self.name),
                txt_strings(&self.value)
            ),
            "PTR" => format!(
                "{} IN PTR {}",
                reverse_name(&self.name),
                absolute(&self.value)
            ),
            kind => format!("{} IN {kind} {}", absolute(&self.name), self.value),
        }
    }
}

/// A TXT value as zone-file strings of at most 255 bytes each, split on character
/// boundaries; resolvers join them back without a separator.
pub fn txt_strings(value: &str) -> String {
    let mut strings = Vec::new();
    let mut current = String::new();
    for c in value.chars() {
        if current.len() + c.len_utf8() > TXT_STRING_MAX {
            strings.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    strings.push(current);
    strings
        .iter()
        .map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The name a PTR record lives at: `4.3.2.1.in-addr.arpa.` for 1.2.3.4. A name that is
/// not an address is printed as it is.
pub fn reverse_name(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let octets = v4.octets();
            format!(
                "{}.{}.{}.{}.in-addr.arpa.",
                octets[3], octets[2], octets[1], octets[0]
            )
        }
        Ok(IpAddr::V6(v6)) => {
            let nibbles: Vec<String> = v6
                .octets()
                .iter()
                .rev()
                .flat_map(|b| [format!("{:x}", b & 0xf), format!("{:x}", b >> 4)])
                .collect();
            format!("{}.ip6.arpa.", nibbles.join("."))
        }
        Err(_) => absolute(address),
    }
}

fn absolute(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: &str, name: &str, value: &str) -> DnsRecord {
        DnsRecord {
            name: name.into(),
            kind: kind.into(),
            value: value.into(),
            when: None,
        }
    }

    #[test]
    fn long_txt_values_are_split_into_255_byte_strings() {
        let key = "A".repeat(392);
        let line = record(
            "TXT",
            "mail._domainkey.club.example",
            &format!("v=DKIM1; k=rsa; p={key}"),
        )
        .zone_line();
        let strings: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        assert_eq!(strings.len(), 2);
        assert_eq!(strings[0].len(), 255);
        assert_eq!(strings.concat(), format!("v=DKIM1; k=rsa; p={key}"));
        assert!(
            line.starts_with("mail._domainkey.club.example. IN TXT \"v=DKIM1;"),
            "{line}"
        );
    }

    #[test]
    fn short_txt_values_are_one_string_with_quotes_escaped() {
        assert_eq!(txt_strings("v=spf1 mx -all"), "\"v=spf1 mx -all\"");
        assert_eq!(txt_strings("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn ptr_records_live_at_the_reverse_name() {
        assert_eq!(
            record("PTR", "192.0.2.10", "mail.club.example").zone_line(),
            "10.2.0.192.in-addr.arpa. IN PTR mail.club.example."
        );
        assert!(reverse_name("2001:db8::1").starts_with("1.0.0.0.0.0.0.0."));
        assert!(reverse_name("2001:db8::1").ends_with(".8.b.d.0.1.0.0.2.ip6.arpa."));
    }

    #[test]
    fn other_records_and_notes() {
        assert_eq!(
            record("MX", "club.example", "10 mail.club.example.").zone_line(),
            "club.example. IN MX 10 mail.club.example."
        );
        assert_eq!(
            record("note", "", "ask your provider").zone_line(),
            "; ask your provider"
        );
        assert!(record("SPF", "x", "y").validate().is_err());
    }
}
