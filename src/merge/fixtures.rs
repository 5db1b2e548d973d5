//! The merge on real Debian files: Debian 12 and 13 pristine versions of sshd_config,
//! Postfix's main.cf, Dovecot's conf.d files and sysctl.conf (tests/fixtures/etc/, see
//! its README for the packages and versions), with the site edits admins make.

use super::*;

macro_rules! fixture {
    ($suite:literal, $path:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/etc/",
            $suite,
            "/",
            $path
        ))
    };
}

/// `text` with the one line `from` replaced by `to` (which may be several lines).
fn edit(text: &str, from: &str, to: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.iter().filter(|l| **l == from).count(),
        1,
        "the fixture has exactly one line {from:?}"
    );
    text.split_inclusive('\n')
        .map(|line| {
            if line.trim_end_matches('\n') == from {
                format!("{to}\n")
            } else {
                line.to_string()
            }
        })
        .collect()
}

#[test]
fn issue_5_sshd_password_authentication_merges_by_setting_where_lines_conflict() {
    let base = fixture!("bookworm", "ssh/sshd_config");
    let new = fixture!("trixie", "ssh/sshd_config");
    let live = edit(
        base,
        "#PasswordAuthentication yes",
        "PasswordAuthentication no",
    );

    // Debian 13 rewrote the comment just above the setting: a line merge conflicts.
    let by_line = line::merge(base, &live, new);
    assert_eq!(by_line.conflicts, 1, "{}", by_line.text);

    let merged = merge("ssh/sshd_config", base, &live, Some(new));
    assert_eq!(merged.method, Method::Settings(Syntax::Sshd));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    // Debian 13's file, comments and all, with the site's setting after its example.
    assert_eq!(
        merged.text,
        edit(
            new,
            "#PasswordAuthentication yes",
            "#PasswordAuthentication yes\nPasswordAuthentication no"
        )
    );
    assert!(
        merged
            .text
            .contains("# To disable tunneled clear text passwords, change to \"no\" here!"),
        "the new comment"
    );
    assert!(
        merged
            .text
            .contains("AcceptEnv LANG LC_* COLORTERM NO_COLOR"),
        "the new release's own change"
    );
}

#[test]
fn issue_5_postfix_myhostname_merges_by_setting_where_lines_conflict() {
    // The main.cf each release's postinst generated for the same debconf answers.
    let base = fixture!("bookworm", "postfix/main.cf");
    let new = fixture!("trixie", "postfix/main.cf");
    let live = edit(base, "myhostname = mail", "myhostname = mx.club.example");

    let by_line = line::merge(base, &live, new);
    assert!(
        by_line.conflicts >= 1,
        "a line merge conflicts: {}",
        by_line.text
    );

    let merged = merge("postfix/main.cf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(
        merged.text,
        edit(new, "myhostname = mail", "myhostname = mx.club.example")
    );
    assert_eq!(
        merged.replayed,
        vec![settings::Replayed {
            section: String::new(),
            key: "myhostname".into(),
            values: vec!["mx.club.example".into()]
        }]
    );
}

#[test]
fn postfix_site_settings_with_continuation_lines_are_carried_whole() {
    let base = fixture!("bookworm", "postfix/main.cf");
    let new = fixture!("trixie", "postfix/main.cf");
    let restrictions = "smtpd_recipient_restrictions =\n    permit_mynetworks,\n    permit_sasl_authenticated,\n    reject_unauth_destination";
    let live = format!(
        "{}{restrictions}\n",
        edit(
            base,
            "mailbox_size_limit = 0",
            "mailbox_size_limit = 104857600"
        )
    );
    let merged = merge("postfix/main.cf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(
        merged.text,
        format!(
            "{}{restrictions}\n",
            edit(
                new,
                "mailbox_size_limit = 0",
                "mailbox_size_limit = 104857600"
            )
        )
    );
}

#[test]
fn issue_13_dovecot_settings_renamed_in_2_4_are_translated_by_rule() {
    let base = fixture!("bookworm", "dovecot/conf.d/10-auth.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-auth.conf");
    let live = edit(
        base,
        "#disable_plaintext_auth = yes",
        "disable_plaintext_auth = no",
    );
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(new));
    assert_eq!(merged.method, Method::Settings(Syntax::Dovecot));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    match &merged.translations[..] {
        [translation] => {
            assert_eq!(translation.old, "disable_plaintext_auth = no");
            assert_eq!(translation.new, ["auth_allow_cleartext = yes"]);
            assert!(translation.message.contains("inverted"), "{translation:?}");
        }
        other => panic!("expected one translation, got {other:?}"),
    }
    assert!(
        merged
            .text
            .contains("#auth_allow_cleartext = yes\nauth_allow_cleartext = yes\n"),
        "the new setting, next to Debian's example:\n{}",
        merged.text
    );
    assert!(!merged.text.contains("disable_plaintext_auth = no"));

    let base = fixture!("bookworm", "dovecot/conf.d/10-mail.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-mail.conf");
    let live = edit(
        base,
        "mail_location = mbox:~/mail:INBOX=/var/mail/%u",
        "mail_location = maildir:~/Maildir",
    );
    let merged = merge("dovecot/conf.d/10-mail.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(merged.translations.len(), 1, "{:?}", merged.translations);
    assert_eq!(merged.translations[0].unset, ["mail_inbox_path"]);
    let settings = settings::settings_of(&merged.text, Syntax::Dovecot);
    let value = |key: &str| settings.get(&(String::new(), key.to_string())).cloned();
    assert_eq!(value("mail_driver"), Some(vec!["maildir".to_string()]));
    assert_eq!(value("mail_path"), Some(vec!["~/Maildir".to_string()]));
    assert_eq!(
        value("mail_inbox_path"),
        None,
        "Debian's mbox INBOX is not the site's"
    );
    assert_eq!(value("mail_location"), None);
    assert!(merged
        .text
        .contains("\n#mail_inbox_path = /var/mail/%{user}\n"));

    // A value no rule knows is left for a human, by name.
    let live = edit(
        base,
        "mail_location = mbox:~/mail:INBOX=/var/mail/%u",
        "mail_location = maildir:~/Maildir:FANCY=yes",
    );
    let merged = merge("dovecot/conf.d/10-mail.conf", base, &live, Some(new));
    assert!(
        matches!(&merged.issues[..], [Issue::Renamed { key, new_names, .. }] if key == "mail_location" && new_names.starts_with(&["mail_driver".to_string(), "mail_path".to_string()])),
        "{:?}",
        merged.issues
    );
}

#[test]
fn issue_13_sshd_challenge_response_becomes_kbd_interactive() {
    // Debian 11's name for it, migrated onto Debian 13's file.
    let base = fixture!("bookworm", "ssh/sshd_config").replace(
        "KbdInteractiveAuthentication no",
        "ChallengeResponseAuthentication no",
    );
    let live = edit(
        &base,
        "ChallengeResponseAuthentication no",
        "ChallengeResponseAuthentication yes",
    );
    let new = fixture!("trixie", "ssh/sshd_config");
    let merged = merge("ssh/sshd_config", &base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(merged.translations.len(), 1, "{:?}", merged.translations);
    let settings = settings::settings_of(&merged.text, Syntax::Sshd);
    assert_eq!(
        settings.get(&(String::new(), "kbdinteractiveauthentication".to_string())),
        Some(&vec!["yes".to_string()])
    );
    assert!(!merged.text.contains("ChallengeResponseAuthentication"));
}

#[test]
fn issue_13_postfix_deprecated_tls_settings_become_security_levels() {
    let base = fixture!("bookworm", "postfix/main.cf");
    let live = format!("{base}smtpd_use_tls = yes\nsmtp_enforce_tls = yes\n");
    let new = fixture!("trixie", "postfix/main.cf");
    let merged = merge("postfix/main.cf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(merged.translations.len(), 2, "{:?}", merged.translations);
    let settings = settings::settings_of(&merged.text, Syntax::Postfix);
    let value = |key: &str| settings.get(&(String::new(), key.to_string())).cloned();
    assert_eq!(
        value("smtpd_tls_security_level"),
        Some(vec!["may".to_string()])
    );
    assert_eq!(
        value("smtp_tls_security_level"),
        Some(vec!["encrypt".to_string()])
    );
    assert_eq!(value("smtpd_use_tls"), None);
    // The bookworm host's postinst set smtpd_tls_security_level itself (the template
    // lacks it): that value stays, and the translation names it.
    let base = fixture!("bookworm", "postfix/main.cf.debian");
    let live = format!("{base}smtpd_tls_security_level=encrypt\nsmtpd_use_tls = yes\n");
    let merged = merge("postfix/main.cf", base, &live, Some(new));
    let settings = settings::settings_of(&merged.text, Syntax::Postfix);
    assert_eq!(
        settings.get(&(String::new(), "smtpd_tls_security_level".to_string())),
        Some(&vec!["encrypt".to_string()])
    );
    assert_eq!(
        merged.translations[0].new,
        ["smtpd_tls_security_level = encrypt (the site's own value, kept)"]
    );
}

#[test]
fn dovecot_a_setting_both_sides_changed_keeps_the_sites_value_and_names_it() {
    // Debian 12 sets auth_mechanisms = plain; Debian 13 leaves it commented out.
    let base = fixture!("bookworm", "dovecot/conf.d/10-auth.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-auth.conf");
    let live = edit(
        base,
        "auth_mechanisms = plain",
        "auth_mechanisms = plain login",
    );
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    match &merged.notices[..] {
        [Notice {
            key,
            base,
            ours,
            theirs,
            message,
            ..
        }] => {
            assert_eq!(key, "auth_mechanisms");
            assert_eq!(
                (base.as_deref(), ours.as_deref(), theirs.as_deref()),
                (
                    Some(&["plain".to_string()][..]),
                    Some(&["plain login".to_string()][..]),
                    None
                )
            );
            assert!(
                message.contains("Debian's new default is unset"),
                "{message}"
            );
        }
        other => panic!("expected one notice, got {other:?}"),
    }
    assert!(!merged.text.contains("<<<<<<<"));
    assert_eq!(
        merged
            .text
            .lines()
            .filter(|l| l.trim() == "auth_mechanisms = plain login")
            .count(),
        1,
        "{}",
        merged.text
    );
}

#[test]
fn issue_5_postfix_main_cf_keeps_the_hosts_debconf_values_over_debian_13s_new_template() {
    // The pristine source of main.cf is the template: Debian 12's leaves alias_maps,
    // myorigin, mydestination and mynetworks unset, Debian 13's sets them; the host's
    // postinst set them from debconf. Both sides set them, differently: the host's
    // values stay, each named in a notice.
    let base = fixture!("bookworm", "postfix/main.cf.debian");
    let new = fixture!("trixie", "postfix/main.cf.debian");
    let live = edit(
        fixture!("bookworm", "postfix/main.cf"),
        "myhostname = mail",
        "myhostname = mx.club.example",
    );
    let merged = merge("postfix/main.cf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    let ours_settings = settings::settings_of(&live, Syntax::Postfix);
    let base_settings = settings::settings_of(base, Syntax::Postfix);
    let merged_settings = settings::settings_of(&merged.text, Syntax::Postfix);
    let host_set = ours_settings
        .iter()
        .filter(|(id, values)| base_settings.get(*id) != Some(*values));
    for ((_, key), values) in host_set {
        assert_eq!(
            merged_settings.get(&(String::new(), key.clone())),
            Some(values),
            "the host's {key} is kept:\n{}",
            merged.text
        );
    }
    for key in ["alias_maps", "myorigin", "mydestination", "mynetworks"] {
        let notice = merged
            .notices
            .iter()
            .find(|n| n.key == key)
            .unwrap_or_else(|| panic!("a notice for {key}: {:?}", merged.notices));
        assert!(
            notice
                .message
                .starts_with(&format!("{key}: kept the site's value `"))
                && notice.message.contains("Debian's new default is `"),
            "{}",
            notice.message
        );
    }
    assert!(merged.text.contains("\nmyhostname = mx.club.example\n"));
    assert!(merged.text.contains("\nalias_maps = hash:/etc/aliases\n"));
    assert!(!merged
        .text
        .contains("\nalias_maps = $alias_database, nis:mail.aliases\n"));
    assert!(
        merged.text.contains("\nmynetworks_style = host\n"),
        "Debian 13's new setting"
    );
}

/// Issue 13: Debian 13's login.defs no longer sets UMASK (nor explains it); the line
/// merge conflicts, the merge by setting keeps the site's value.
#[test]
fn issue_13_login_defs_merges_by_setting() {
    let base = fixture!("bookworm", "login.defs");
    let new = fixture!("trixie", "login.defs");
    let live = edit(base, "UMASK\t\t022", "UMASK\t\t027");
    assert!(
        line::merge(base, &live, new).conflicts > 0,
        "the line merge conflicts"
    );
    let merged = merge("login.defs", base, &live, Some(new));
    assert_eq!(merged.method, Method::Settings(Syntax::Spaced));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert!(merged.text.contains("\nUMASK\t\t027\n"), "{}", merged.text);
    // Everything else is Debian 13's file.
    let settings = settings::settings_of(&merged.text, Syntax::Spaced);
    let theirs = settings::settings_of(new, Syntax::Spaced);
    for (id, values) in &theirs {
        assert_eq!(settings.get(id), Some(values), "{id:?}");
    }
    assert_eq!(settings.len(), theirs.len() + 1);
}

#[test]
fn dovecot_ssl_paths_renamed_in_2_4() {
    let base = fixture!("bookworm", "dovecot/conf.d/10-ssl.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-ssl.conf");
    let live = edit(
        base,
        "ssl_cert = </etc/dovecot/private/dovecot.pem",
        "ssl_cert = </etc/letsencrypt/live/club.example/fullchain.pem",
    );
    let merged = merge("dovecot/conf.d/10-ssl.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    let settings = settings::settings_of(&merged.text, Syntax::Dovecot);
    assert_eq!(
        settings.get(&(String::new(), "ssl_server_cert_file".to_string())),
        Some(&vec![
            "/etc/letsencrypt/live/club.example/fullchain.pem".to_string()
        ]),
        "{}",
        merged.text
    );
}

#[test]
fn sysctl_site_settings_apply_and_a_file_debian_13_dropped_is_reported() {
    let base = fixture!("bookworm", "sysctl.conf");
    let live = edit(base, "#net.ipv4.ip_forward=1", "net.ipv4.ip_forward=1");
    // Onto a new release that only reworded a comment, the setting merges by setting.
    let reworded = base.replacen(
        "# Uncomment the next line to enable packet forwarding for IPv4",
        "# Uncomment to forward IPv4 packets",
        1,
    );
    assert_ne!(reworded, base);
    let merged = merge("sysctl.conf", base, &live, Some(&reworded));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert!(
        merged.text.contains(
            "# Uncomment to forward IPv4 packets\n#net.ipv4.ip_forward=1\nnet.ipv4.ip_forward=1\n"
        ),
        "{}",
        merged.text
    );
    assert_eq!(
        line::merge(base, &live, &reworded).conflicts,
        1,
        "where a line merge conflicts"
    );
    // Debian 13's procps no longer ships /etc/sysctl.conf (remove-on-upgrade).
    let gone = merge("sysctl.conf", base, &live, None);
    assert_eq!(gone.issues, vec![Issue::FileRemoved]);
    assert_eq!(gone.text, live);
}

#[test]
fn an_unchanged_file_takes_the_new_release_and_other_files_merge_by_line() {
    let base = fixture!("bookworm", "ssh/sshd_config");
    let new = fixture!("trixie", "ssh/sshd_config");
    assert_eq!(merge("ssh/sshd_config", base, base, Some(new)).text, new);
    let lines = merge(
        "nginx/nginx.conf",
        "a\nb\nc\nd\n",
        "a\nB\nc\nd\n",
        Some("a\nb\nc\nD\n"),
    );
    assert_eq!(
        (lines.method, lines.text.as_str(), lines.is_clean()),
        (Method::Lines, "a\nB\nc\nD\n", true)
    );
}

/// The measurement behind issue 5's claim, printed with
/// `cargo test --lib merge::fixtures::measured -- --nocapture`: for each site edit, the
/// conflicts a line merge leaves onto Debian 13's file, and what the merge by setting
/// leaves (issues to decide, each named).
#[test]
fn measured_line_merge_against_merge_by_setting_on_debian_13_files() {
    let cases: Vec<(&str, &str, &str, String)> = vec![
        (
            "ssh/sshd_config",
            fixture!("bookworm", "ssh/sshd_config"),
            fixture!("trixie", "ssh/sshd_config"),
            edit(
                fixture!("bookworm", "ssh/sshd_config"),
                "#PasswordAuthentication yes",
                "PasswordAuthentication no",
            ),
        ),
        (
            "postfix/main.cf",
            fixture!("bookworm", "postfix/main.cf"),
            fixture!("trixie", "postfix/main.cf"),
            edit(
                fixture!("bookworm", "postfix/main.cf"),
                "myhostname = mail",
                "myhostname = mx.club.example",
            ),
        ),
        (
            "dovecot/conf.d/10-auth.conf",
            fixture!("bookworm", "dovecot/conf.d/10-auth.conf"),
            fixture!("trixie", "dovecot/conf.d/10-auth.conf"),
            edit(
                fixture!("bookworm", "dovecot/conf.d/10-auth.conf"),
                "#disable_plaintext_auth = yes",
                "disable_plaintext_auth = no",
            ),
        ),
        (
            "dovecot/conf.d/10-mail.conf",
            fixture!("bookworm", "dovecot/conf.d/10-mail.conf"),
            fixture!("trixie", "dovecot/conf.d/10-mail.conf"),
            edit(
                fixture!("bookworm", "dovecot/conf.d/10-mail.conf"),
                "mail_location = mbox:~/mail:INBOX=/var/mail/%u",
                "mail_location = maildir:~/Maildir",
            ),
        ),
    ];
    eprintln!(
        "{:<30} {:>15} {:>22}",
        "file (site edit)", "line conflicts", "by-setting issues"
    );
    let mut totals = (0, 0);
    for (path, base, new, live) in &cases {
        let by_line = line::merge(base, live, new);
        let by_setting = merge(path, base, live, Some(new));
        let named: Vec<String> = by_setting
            .issues
            .iter()
            .map(|i| match i {
                Issue::Renamed { key, new_names, .. } => {
                    format!("renamed {key} → {}", new_names.join("/"))
                }
                other => format!("{other:?}"),
            })
            .collect();
        eprintln!(
            "{path:<30} {:>15} {:>22}  {}",
            by_line.conflicts,
            by_setting.issues.len(),
            named.join("; ")
        );
        totals.0 += by_line.conflicts;
        totals.1 += usize::from(
            !by_setting.is_clean()
                && by_setting
                    .issues
                    .iter()
                    .any(|i| !matches!(i, Issue::Renamed { .. })),
        );
        // A clean line merge here would be worse than a conflict: it would keep a
        // setting Dovecot 2.4 refuses.
        if path.starts_with("dovecot") && by_line.conflicts == 0 {
            assert!(
                by_line.text.contains("disable_plaintext_auth = no")
                    || by_line.text.contains("mail_location = maildir"),
                "the old name survives a line merge"
            );
        }
    }
    eprintln!(
        "line conflicts: {}; files left in conflict by setting (renames aside): {}",
        totals.0, totals.1
    );
    assert_eq!(totals.1, 0);
    assert!(totals.0 >= 2, "sshd_config and main.cf conflict by line");
}

#[test]
fn dovecot_postfix_auth_listener_lands_inside_service_auth_after_its_example() {
    // The edit every Postfix + Dovecot SASL guide makes in 10-master.conf.
    let base = fixture!("bookworm", "dovecot/conf.d/10-master.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-master.conf");
    let example = "  #unix_listener /var/spool/postfix/private/auth {\n  #  mode = 0666\n  #}\n";
    let listener = "  unix_listener /var/spool/postfix/private/auth {\n    mode = 0660\n    user = postfix\n    group = postfix\n  }\n";
    assert_eq!(base.matches(example).count(), 1);
    assert_eq!(new.matches(example).count(), 1);
    let live = base.replacen(example, listener, 1);
    let merged = merge("dovecot/conf.d/10-master.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    assert_eq!(
        merged.text,
        new.replacen(example, &format!("{example}{listener}"), 1)
    );
    // Debian 13 left this block alone, so a line merge is clean here too.
    assert_eq!(line::merge(base, &live, new).conflicts, 0);
}

#[test]
fn dovecot_switching_the_password_database_by_include_lines() {
    let base = fixture!("bookworm", "dovecot/conf.d/10-auth.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-auth.conf");
    let live = edit(
        &edit(
            base,
            "!include auth-system.conf.ext",
            "#!include auth-system.conf.ext",
        ),
        "#!include auth-passwdfile.conf.ext",
        "!include auth-passwdfile.conf.ext",
    );
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    let expected = edit(
        &edit(
            new,
            "!include auth-system.conf.ext",
            "#!include auth-system.conf.ext",
        ),
        "#!include auth-passwdfile.conf.ext",
        "#!include auth-passwdfile.conf.ext\n!include auth-passwdfile.conf.ext",
    );
    assert_eq!(merged.text, expected);
}

#[test]
fn issue_13_a_kept_dovecot_setting_gets_2_4_variables() {
    let base = fixture!("bookworm", "dovecot/conf.d/10-auth.conf");
    let new = fixture!("trixie", "dovecot/conf.d/10-auth.conf");
    let live = edit(
        base,
        "#auth_username_format = %Lu",
        "auth_username_format = %Lu",
    );
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(new));
    assert!(merged.is_clean(), "{:?}", merged.issues);
    match &merged.translations[..] {
        [translation] => {
            assert_eq!(translation.old, "auth_username_format = %Lu");
            assert_eq!(translation.new, ["auth_username_format = %{user|lower}"]);
        }
        other => panic!("expected one translation, got {other:?}"),
    }
    let settings = settings::settings_of(&merged.text, Syntax::Dovecot);
    assert_eq!(
        settings.get(&(String::new(), "auth_username_format".to_string())),
        Some(&vec!["%{user|lower}".to_string()])
    );

    // A variable the table does not know is left for a human, by name.
    let live = edit(
        base,
        "#auth_username_format = %Lu",
        "auth_username_format = %Lu@%Z",
    );
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(new));
    assert!(
        matches!(&merged.issues[..], [Issue::Renamed { key, .. }] if key == "auth_username_format"),
        "{:?}",
        merged.issues
    );

    // Onto a Dovecot 2.3 file (Debian 12 to 12), the site's value stays as it is.
    let merged = merge("dovecot/conf.d/10-auth.conf", base, &live, Some(base));
    assert!(merged.is_clean() && merged.translations.is_empty());
    assert!(merged.text.contains("\nauth_username_format = %Lu@%Z\n"));
}
