//! `etc upgrade` and `etc resolve` for people: what was upgraded, each file merged with
//! the site settings carried over, each conflict with what the admin must decide (the
//! settings by name, renamed ones with their new names) and where its file waits.
//! Reads the JSON the agent sent, so that an older controller never misreads it.

use std::io::Write;

use serde_json::Value;

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

fn values(value: &Value) -> String {
    match value.as_array() {
        Some(list) if !list.is_empty() => list.iter().map(text).collect::<Vec<_>>().join(" | "),
        _ => "(not set)".to_string(),
    }
}

/// One line per thing the admin must decide about a file.
pub fn describe_issue(issue: &Value) -> String {
    let key = text(&issue["key"]);
    match issue["kind"].as_str().unwrap_or_default() {
        "conflict" => {
            let section = text(&issue["section"]);
            let place = if section.is_empty() {
                String::new()
            } else {
                format!(" in `{section}`")
            };
            format!(
                "setting {key}{place}: site {}, was {}, now {}",
                values(&issue["ours"]),
                values(&issue["base"]),
                values(&issue["theirs"])
            )
        }
        "renamed" => {
            let new: Vec<String> = issue["new_names"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            let now = if new.is_empty() {
                "removed".to_string()
            } else {
                format!("renamed to {}", new.join(", "))
            };
            format!(
                "setting {key} = {} {now} ({})",
                values(&issue["values"]),
                text(&issue["note"])
            )
        }
        "lines" => format!("{} conflicting hunk(s) of lines", issue["conflicts"]),
        "file_removed" => "the new release no longer ships this file".to_string(),
        other => other.to_string(),
    }
}

pub fn print_upgrade(out: &mut dyn Write, upgrade: &Value) {
    let list = |value: &Value| -> Vec<Value> { value.as_array().cloned().unwrap_or_default() };
    let _ = writeln!(
        out,
        "  Debian {} → {}{}",
        text(&upgrade["from"]),
        text(&upgrade["to"]),
        if upgrade["upgraded"] == true {
            ": packages upgraded, local conffiles kept"
        } else {
            ": no package to upgrade"
        }
    );
    for source in list(&upgrade["sources"]) {
        let _ = writeln!(out, "  apt source switched: /etc/{}", text(&source));
    }
    let packages = list(&upgrade["packages"]);
    if !packages.is_empty() {
        let _ = writeln!(
            out,
            "  distro branch: {} package changes recorded",
            packages.len()
        );
    }
    for missing in list(&upgrade["unavailable"]) {
        let _ = writeln!(
            out,
            "  unavailable: {} {}: {}",
            text(&missing["package"]),
            text(&missing["version"]),
            text(&missing["message"])
        );
    }
    let unconfigured = list(&upgrade["unconfigured"]);
    if !unconfigured.is_empty() {
        let _ = writeln!(
            out,
            "  dpkg could not configure with the kept configuration: {}",
            unconfigured.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(error) = upgrade["apt_error"].as_str() {
        let _ = writeln!(out, "  still unconfigured after the merge: {error}");
    }
    let merged = list(&upgrade["merged"]);
    if !merged.is_empty() {
        let _ = writeln!(out, "  merged ({}):", merged.len());
        for file in merged {
            let kept: Vec<String> = list(&file["replayed"])
                .iter()
                .map(|r| text(&r["key"]))
                .collect();
            let kept = if kept.is_empty() {
                String::new()
            } else {
                format!("; site settings kept: {}", kept.join(", "))
            };
            let _ = writeln!(
                out,
                "    /etc/{} ({}{kept})",
                text(&file["path"]),
                text(&file["validated"])
            );
            for notice in list(&file["notices"]) {
                let _ = writeln!(out, "        {}", text(&notice["message"]));
            }
            for translation in list(&file["translations"]) {
                let _ = writeln!(out, "        translated: {}", text(&translation["message"]));
            }
        }
    }
    for moved in list(&upgrade["moved"]) {
        let settings: Vec<String> = list(&moved["settings"]).iter().map(text).collect();
        let _ = writeln!(
            out,
            "  moved: /etc/{} (dropped by the new release) → /etc/{}: {}",
            text(&moved["path"]),
            text(&moved["successor"]),
            settings.join(", ")
        );
    }
    for kept in list(&upgrade["kept"]) {
        let _ = writeln!(
            out,
            "  for you: /etc/{}: {}",
            text(&kept["path"]),
            text(&kept["reason"])
        );
    }
    let conflicts = list(&upgrade["conflicts"]);
    let pending = list(&upgrade["pending"]);
    print_still_invalid(
        out,
        &upgrade["still_invalid"],
        !conflicts.is_empty() || !pending.is_empty(),
    );
    if !conflicts.is_empty() {
        let _ = writeln!(
            out,
            "  conflicts ({}), live files kept; resolve them in {}, then run `placard etc resolve HOST`:",
            conflicts.len(),
            text(&upgrade["worktree"])
        );
        for conflict in conflicts {
            let _ = writeln!(out, "    /etc/{}", text(&conflict["path"]));
            if let Some(reason) = conflict["reason"].as_str() {
                let _ = writeln!(out, "        {reason}");
            }
            for issue in list(&conflict["issues"]) {
                let _ = writeln!(out, "        {}", describe_issue(&issue));
            }
        }
    }
    if !pending.is_empty() {
        let _ = writeln!(
            out,
            "  still waiting from an earlier run: {}",
            pending.iter().map(text).collect::<Vec<_>>().join(", ")
        );
    }
    for reloaded in list(&upgrade["reloaded"]) {
        let _ = writeln!(out, "  {}", text(&reloaded));
    }
    if upgrade["merged"].as_array().is_none_or(Vec::is_empty)
        && upgrade["conflicts"].as_array().is_none_or(Vec::is_empty)
        && upgrade["moved"].as_array().is_none_or(Vec::is_empty)
        && upgrade["kept"].as_array().is_none_or(Vec::is_empty)
    {
        let _ = writeln!(
            out,
            "  nothing to merge: no locally modified file's pristine version changed"
        );
    }
}

/// The groups of files written although their daemon's validator still fails (it
/// failed on the live configuration already, so there was nothing working to protect),
/// as the admin must read them: the daemon, the files, what the validator said, and
/// what to do (`conflicts_left`: conflicts still wait for `placard etc resolve`).
pub fn print_still_invalid(out: &mut dyn Write, still_invalid: &Value, conflicts_left: bool) {
    for group in still_invalid.as_array().into_iter().flatten() {
        let validator = text(&group["validator"]);
        let unit = group["unit"].as_str();
        let daemon = crate::distro::validate::daemon(unit, &validator);
        let _ = writeln!(
            out,
            "  STILL INVALID: {daemon}'s configuration failed `{validator}` before placard wrote these files, and still fails with them:"
        );
        for path in group["files"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "    /etc/{}", text(path));
        }
        let _ = writeln!(out, "    {}", text(&group["message"]));
        let _ = writeln!(
            out,
            "    They were written anyway, since there was no working configuration to replace; {daemon} was not reloaded."
        );
        let first = if conflicts_left {
            "resolve the conflicts still waiting (then `placard etc resolve HOST`); if it still fails then, "
        } else {
            ""
        };
        let reload = unit.map_or_else(String::new, |unit| {
            format!(", then `systemctl reload-or-restart {unit}`")
        });
        let _ = writeln!(
            out,
            "    To do: {first}run `{validator}` on the host and correct what it names until it passes{reload}."
        );
    }
}

pub fn print_resolve(out: &mut dyn Write, resolve: &Value) {
    let list = |value: &Value| -> Vec<Value> { value.as_array().cloned().unwrap_or_default() };
    for path in list(&resolve["resolved"]) {
        let _ = writeln!(out, "  taken into /etc: /etc/{}", text(&path));
    }
    for refused in list(&resolve["refused"]) {
        let _ = writeln!(
            out,
            "  not taken: /etc/{}: {}",
            text(&refused[0]),
            text(&refused[1])
        );
    }
    for path in list(&resolve["kept"]) {
        let _ = writeln!(
            out,
            "  kept as it is: /etc/{} (you deleted the proposed file)",
            text(&path)
        );
    }
    if let Some(error) = resolve["apt_error"].as_str() {
        let _ = writeln!(out, "  dpkg still cannot configure: {error}");
    }
    let pending = list(&resolve["pending"]);
    print_still_invalid(out, &resolve["still_invalid"], !pending.is_empty());
    for reloaded in list(&resolve["reloaded"]) {
        let _ = writeln!(out, "  {}", text(&reloaded));
    }
    if pending.is_empty() {
        let _ = writeln!(out, "  no conflict left in {}", text(&resolve["worktree"]));
    } else {
        let _ = writeln!(
            out,
            "  {} conflict(s) still waiting in {}",
            pending.len(),
            text(&resolve["worktree"])
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(print: impl Fn(&mut dyn Write)) -> String {
        let mut out = Vec::new();
        print(&mut out);
        String::from_utf8(out).expect("text")
    }

    fn dovecot_still_invalid() -> Value {
        serde_json::to_value([crate::distro::validate::StillInvalid {
            validator: "doveconf -n".into(),
            unit: Some("dovecot".into()),
            files: vec![
                "dovecot/conf.d/10-auth.conf".into(),
                "dovecot/dovecot.conf".into(),
            ],
            message: "`doveconf -n` failed: Fatal: Unknown setting: disable_plaintext_auth".into(),
        }])
        .expect("JSON")
    }

    /// `etc resolve` with conflicts left: the files written though dovecot's
    /// configuration still fails, why, and what to do next, in the human report.
    #[test]
    fn resolve_names_the_files_written_to_a_configuration_still_invalid() {
        let resolve = serde_json::json!({
            "resolved": ["dovecot/conf.d/10-auth.conf", "dovecot/dovecot.conf"],
            "refused": [],
            "reloaded": [],
            "still_invalid": dovecot_still_invalid(),
            "pending": ["dovecot/conf.d/10-ssl.conf"],
            "worktree": "/var/lib/placard/etc-upgrade/files",
        });
        let text = printed(|out| print_resolve(out, &resolve));
        assert!(text.contains("  STILL INVALID: dovecot's configuration failed `doveconf -n` before placard wrote these files, and still fails with them:\n    /etc/dovecot/conf.d/10-auth.conf\n    /etc/dovecot/dovecot.conf\n    `doveconf -n` failed: Fatal: Unknown setting: disable_plaintext_auth\n"), "{text}");
        assert!(text.contains("dovecot was not reloaded"), "{text}");
        assert!(text.contains("    To do: resolve the conflicts still waiting (then `placard etc resolve HOST`); if it still fails then, run `doveconf -n` on the host and correct what it names until it passes, then `systemctl reload-or-restart dovecot`.\n"), "{text}");
        assert!(text.contains("1 conflict(s) still waiting"), "{text}");
    }

    /// With no conflict left, the advice is the validator alone; a validator with no
    /// unit is named by its program and nothing is reloaded.
    #[test]
    fn with_no_conflict_left_the_advice_is_the_validator() {
        let mut still = dovecot_still_invalid();
        still[0]["unit"] = Value::Null;
        still[0]["validator"] = "visudo -c".into();
        still[0]["files"] = serde_json::json!(["sudoers.d/club"]);
        let text = printed(|out| print_still_invalid(out, &still, false));
        assert!(
            text.starts_with("  STILL INVALID: visudo's configuration failed `visudo -c`"),
            "{text}"
        );
        assert!(text.contains("    /etc/sudoers.d/club\n"), "{text}");
        assert!(text.ends_with("    To do: run `visudo -c` on the host and correct what it names until it passes.\n"), "{text}");
        assert_eq!(
            printed(|out| print_still_invalid(out, &Value::Null, true)),
            ""
        );
    }

    /// `etc upgrade` says it too, with the conflicts of this run counted as left.
    #[test]
    fn upgrade_names_the_files_written_to_a_configuration_still_invalid() {
        let upgrade = serde_json::json!({
            "from": "bookworm", "to": "trixie", "upgraded": true,
            "merged": [{"path": "dovecot/dovecot.conf", "validated": "dovecot: configuration still invalid until the conflicts are resolved: …", "replayed": []}],
            "conflicts": [{"path": "dovecot/conf.d/10-ssl.conf", "issues": []}],
            "still_invalid": dovecot_still_invalid(),
            "worktree": "/var/lib/placard/etc-upgrade/files",
        });
        let text = printed(|out| print_upgrade(out, &upgrade));
        assert!(
            text.contains("  STILL INVALID: dovecot's configuration failed `doveconf -n`"),
            "{text}"
        );
        assert!(
            text.contains("    /etc/dovecot/conf.d/10-auth.conf\n"),
            "{text}"
        );
        assert!(
            text.contains("To do: resolve the conflicts still waiting"),
            "{text}"
        );
    }

    #[test]
    fn issues_read_as_sentences() {
        let renamed = serde_json::json!({"kind": "renamed", "key": "disable_plaintext_auth", "values": ["no"], "new_names": ["auth_allow_cleartext"], "note": "Dovecot 2.4"});
        assert_eq!(
            describe_issue(&renamed),
            "setting disable_plaintext_auth = no renamed to auth_allow_cleartext (Dovecot 2.4)"
        );
        let conflict = serde_json::json!({"kind": "conflict", "section": "", "key": "auth_mechanisms", "base": ["plain"], "ours": ["plain login"], "theirs": null});
        assert_eq!(
            describe_issue(&conflict),
            "setting auth_mechanisms: site plain login, was plain, now (not set)"
        );
    }
}
