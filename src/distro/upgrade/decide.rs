//! The per-file decision of `etc upgrade`, pure: given the three versions of one
//! conffile (the old pristine, the live one, the new pristine), what to do with it.
//! No I/O: [`super::apply`] writes what is decided, and its tests run the two together
//! against a temporary directory.

use crate::merge::{self, Issue, Method};

use super::markers;

/// What becomes of one locally modified (or pristine) conffile.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Nothing to merge, and why.
    Nothing(&'static str),
    /// A clean merge, to be written after its validator's check.
    Clean(merge::Merged),
    /// Left for the admin: the text with markers, and why (empty: the merge's issues say).
    Conflict(merge::Merged, String),
    /// The new release dropped a file the site changed: its settings must keep working
    /// (issue 13, item 1; [`super::apply`] moves them to a successor or keeps the file).
    Dropped { base: String, ours: String },
}

/// Decides for `path` (relative to /etc). `base`: the old release's pristine file (`None`
/// when the old distro commit lacks it); `ours`: the live file (or the one dpkg moved to
/// `.dpkg-bak`; `None` when the site deleted it); `theirs`: the new release's pristine
/// file (`None` when the new release no longer ships it).
pub fn decide(
    path: &str,
    release: &str,
    base: Option<&[u8]>,
    ours: Option<&[u8]>,
    theirs: Option<&[u8]>,
) -> Decision {
    let Some(base) = base else {
        return Decision::Nothing("not a conffile of the old release");
    };
    if theirs == Some(base) {
        return Decision::Nothing("the pristine file did not change");
    }
    let Some(ours) = ours else {
        return Decision::Nothing("the site deleted it");
    };
    if theirs.is_none() && ours == base {
        return Decision::Nothing("an unmodified file the new release dropped");
    }
    if theirs == Some(ours) {
        return Decision::Nothing("dpkg installed the new file, or the site already had it");
    }
    let texts = (
        std::str::from_utf8(base),
        std::str::from_utf8(ours),
        theirs.map(std::str::from_utf8).transpose(),
    );
    let (Ok(base), Ok(ours), Ok(theirs)) = texts else {
        let merged = merge::Merged {
            method: Method::Lines,
            text: String::new(),
            replayed: Vec::new(),
            notices: Vec::new(),
            translations: Vec::new(),
            issues: vec![Issue::Lines { conflicts: 1 }],
        };
        return Decision::Conflict(merged, "not a text file: merge it by hand".into());
    };
    let Some(theirs) = theirs else {
        return Decision::Dropped {
            base: base.to_string(),
            ours: ours.to_string(),
        };
    };
    let mut merged = merge::merge(path, base, ours, Some(theirs));
    if merged.is_clean() {
        return Decision::Clean(merged);
    }
    merged.text = markers::conflict_text(&merged, base, ours, release);
    Decision::Conflict(merged, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(decision: &Decision) -> String {
        match decision {
            Decision::Nothing(why) => format!("nothing: {why}"),
            Decision::Clean(merged) => format!("clean: {}", merged.text),
            Decision::Conflict(_, why) => format!("conflict: {why}"),
            Decision::Dropped { ours, .. } => format!("dropped: {ours}"),
        }
    }

    /// The table of the decision's cases, by which of the three versions differ.
    #[test]
    fn each_case_of_a_conffile() {
        let sshd = |lines: &str| format!("# sshd\n{lines}");
        let base = sshd("#PermitRootLogin prohibit-password\n");
        let site = sshd("PermitRootLogin no\n");
        let debian =
            sshd("#PermitRootLogin prohibit-password\nInclude /etc/ssh/sshd_config.d/*.conf\n");
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: &[Case] = &[
            // (what, base, ours, theirs, expected)
            (
                "kept by both",
                Some(&base),
                Some(&base),
                Some(&base),
                "nothing: the pristine file did not change",
            ),
            (
                "changed by the site only",
                Some(&base),
                Some(&site),
                Some(&base),
                "nothing: the pristine file did not change",
            ),
            (
                "changed by the package only",
                Some(&base),
                Some(&base),
                Some(&debian),
                &format!("clean: {debian}"),
            ),
            (
                "changed by both, by setting",
                Some(&base),
                Some(&site),
                Some(&debian),
                "clean: # sshd\n#PermitRootLogin prohibit-password\nPermitRootLogin no\nInclude /etc/ssh/sshd_config.d/*.conf\n",
            ),
            (
                "both made the same change",
                Some(&base),
                Some(&debian),
                Some(&debian),
                "nothing: dpkg installed the new file, or the site already had it",
            ),
            (
                "deleted by the site",
                Some(&base),
                None,
                Some(&debian),
                "nothing: the site deleted it",
            ),
            (
                "dropped by the release, unmodified",
                Some(&base),
                Some(&base),
                None,
                "nothing: an unmodified file the new release dropped",
            ),
            (
                "dropped by the release, modified",
                Some(&base),
                Some(&site),
                None,
                &format!("dropped: {site}"),
            ),
            (
                "not in the old release",
                None,
                Some(&site),
                Some(&debian),
                "nothing: not a conffile of the old release",
            ),
        ];
        for (what, base, ours, theirs, expected) in cases {
            let decision = decide(
                "ssh/sshd_config",
                "trixie",
                base.map(str::as_bytes),
                ours.map(str::as_bytes),
                theirs.map(str::as_bytes),
            );
            assert_eq!(shape(&decision), *expected, "{what}");
        }
    }

    #[test]
    fn lines_changed_by_both_are_a_conflict_with_markers() {
        let decision = decide(
            "club/motd",
            "trixie",
            Some(b"Welcome\n"),
            Some(b"Welcome to the club\n"),
            Some(b"Welcome to Debian\n"),
        );
        let Decision::Conflict(merged, why) = decision else {
            panic!("{decision:?}")
        };
        assert_eq!(why, "");
        assert!(merged.text.contains("<<<<<<<"), "{}", merged.text);
        assert!(markers::has_markers(&merged.text));
    }

    #[test]
    fn a_binary_file_is_left_to_the_admin() {
        let decision = decide(
            "club/logo",
            "trixie",
            Some(b"\xff1"),
            Some(b"\xff2"),
            Some(b"\xff3"),
        );
        assert!(
            matches!(&decision, Decision::Conflict(_, why) if why.contains("not a text file")),
            "{decision:?}"
        );
    }

    /// A setting the new release renamed is translated by rule (merge::renames) and the
    /// merge stays clean, naming the translation.
    #[test]
    fn a_renamed_setting_is_translated_by_rule() {
        let base = "#ChallengeResponseAuthentication no\n";
        let ours = "ChallengeResponseAuthentication no\n";
        let theirs = "#KbdInteractiveAuthentication no\n";
        let decision = decide(
            "ssh/sshd_config",
            "trixie",
            Some(base.as_bytes()),
            Some(ours.as_bytes()),
            Some(theirs.as_bytes()),
        );
        let Decision::Clean(merged) = decision else {
            panic!("{decision:?}")
        };
        assert!(
            merged.text.contains("KbdInteractiveAuthentication no"),
            "{}",
            merged.text
        );
        assert!(
            !merged.text.contains("\nChallengeResponseAuthentication"),
            "{}",
            merged.text
        );
        assert_eq!(merged.translations.len(), 1, "{:?}", merged.translations);
    }
}
