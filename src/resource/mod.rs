//! The task vocabulary: small, typed, idempotent resources.
//!
//! Each resource lives in its own file and has two halves, in the pyinfra manner: a
//! *spec* (what the role's YAML said, deserialized strictly — an unknown key is an
//! error) and `run`, which asks "what is there?", compares it with the spec and, unless
//! this is a check run, changes the host. Every run ends in an [`Outcome`] that says
//! whether something changed and why — "service ssh is running" — and that reason is
//! what the report shows.
//!
//! Specs are rendered (handlebars) and validated before they run: see
//! [`crate::template`] and [`Spec::validate`]. Resources only run inside the agent, on
//! the host; the controller only validates them.
//!
//! Every resource implements [`Resource`] and is named once, in [`resources!`]: a new
//! resource is its file, `pub mod` and one line of that list. All but grub_pin (which
//! has its own pure `plan_pin`) split their run with [`Planned`] into observe, a pure
//! plan that tables of cases test without a host, and apply.

pub mod command;
pub mod directory;
pub mod file;
pub mod group;
pub mod grub_pin;
pub mod line;
pub mod package;
pub mod secret;
pub mod service;
pub mod symlink;
pub mod user;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// The one list of resources: the key a task writes, the variant of [`Spec`], the spec
/// type (which implements [`Resource`]). Everything else that names every resource —
/// [`Spec`], [`KINDS`], the task's YAML fields in [`crate::role::task`] — is generated
/// from it: a new resource is its file and one line here.
///
/// `resources!(callback)` calls `callback! { key => Variant(Type), … }`.
#[macro_export]
macro_rules! resources {
    ($callback:ident) => {
        $callback! {
            package => Package($crate::resource::package::PackageSpec),
            file => File($crate::resource::file::FileSpec),
            directory => Directory($crate::resource::directory::DirectorySpec),
            symlink => Symlink($crate::resource::symlink::SymlinkSpec),
            line => Line($crate::resource::line::LineSpec),
            setting => Setting($crate::resource::line::SettingSpec),
            service => Service($crate::resource::service::ServiceSpec),
            user => User($crate::resource::user::UserSpec),
            group => Group($crate::resource::group::GroupSpec),
            command => Command($crate::resource::command::CommandSpec),
            secret => Secret($crate::resource::secret::SecretSpec),
            grub_pin => GrubPin($crate::resource::grub_pin::GrubPinSpec),
        }
    };
}
pub use resources;

/// What a resource is: a spec that can be checked before any host is contacted, and
/// run on the host. Resources that split their run implement [`Planned`] and get
/// `run` from it.
pub trait Resource {
    /// Fields copied into the bundle as the role wrote them, never rendered: scripts,
    /// so that no value is spliced into shell code.
    const UNRENDERED: &'static [&'static str] = &[];
    /// Whether `template:` and `copy:` name a file of the role, whose (rendered) text
    /// becomes `content:` before the spec is checked and shipped.
    const READS_ROLE_FILES: bool = false;

    /// Checks what serde cannot: absolute paths, octal modes, names that are names.
    /// Runs on rendered specs, on the controller before any host is contacted and
    /// again on the agent.
    fn validate(&self) -> Result<(), FieldError>;

    /// Brings the host to the spec (or, in a check run, says what would change).
    fn run(&self, context: &mut Context) -> anyhow::Result<Outcome>;

    /// The file this resource writes, for resources that write one.
    fn path(&self) -> Option<&str> {
        None
    }

    /// Whether the spec itself says its content is secret (`file: {secret: true}`).
    fn holds_secret(&self) -> bool {
        false
    }
}

/// A resource whose run is three steps: look at the host, decide (pure, so it is
/// unit-tested with no host), change the host. `run` is [`run_planned`].
pub trait Planned {
    /// What the host has now, as far as this resource cares.
    type Current;
    /// What must be done to bring the host to the spec.
    type Action;

    /// Reads the host; changes nothing (a check run calls it too).
    fn observe(&self, context: &mut Context) -> anyhow::Result<Self::Current>;

    /// Compares what is there with the spec: nothing to do and why, or what to do. No
    /// I/O. An error stops the task with nothing changed.
    fn plan(
        &self,
        current: &Self::Current,
        context: &Context,
    ) -> anyhow::Result<Change<Self::Action>>;

    /// Does what [`Planned::plan`] decided; never called in a check run.
    fn apply(&self, action: &Self::Action, context: &mut Context) -> anyhow::Result<()>;
}

/// What a plan decided: the sentence the report shows, and the action, when there is
/// one (None: the host is already as the spec says).
#[derive(Debug, Clone, PartialEq)]
pub struct Change<A> {
    pub reason: String,
    pub action: Option<A>,
    /// What the report says once the action was done, when it differs from `reason`
    /// ("run x" in a check run, "ran x" after).
    pub done: Option<String>,
    /// A unified diff of the change, for resources that write a file (see
    /// [`Outcome::diff`]).
    pub diff: Option<String>,
}

impl<A> Change<A> {
    pub fn none(reason: impl Into<String>) -> Change<A> {
        Change {
            reason: reason.into(),
            action: None,
            done: None,
            diff: None,
        }
    }

    pub fn to(action: A, reason: impl Into<String>) -> Change<A> {
        Change {
            reason: reason.into(),
            action: Some(action),
            done: None,
            diff: None,
        }
    }

    /// See [`Change::done`].
    pub fn once_done(mut self, done: impl Into<String>) -> Change<A> {
        self.done = Some(done.into());
        self
    }

    /// See [`Change::diff`].
    pub fn with_diff(mut self, diff: Option<String>) -> Change<A> {
        self.diff = diff;
        self
    }
}

/// observe → plan → apply (unless this is a check run) → the outcome.
pub fn run_planned<R: Planned>(resource: &R, context: &mut Context) -> anyhow::Result<Outcome> {
    let current = resource.observe(context)?;
    let change = resource.plan(&current, context)?;
    match change.action {
        None => Ok(Outcome::unchanged(change.reason)),
        Some(_) if context.check => Ok(Outcome::changed(change.reason).with_diff(change.diff)),
        Some(action) => {
            resource.apply(&action, context)?;
            let reason = change.done.unwrap_or(change.reason);
            Ok(Outcome::changed(reason).with_diff(change.diff))
        }
    }
}

/// For the tables of plan cases in the resources' tests.
#[cfg(test)]
pub mod testing {
    use super::{Change, Context, Planned};

    /// Asserts that `resource` plans `action` for `current` and says `says`, or, when
    /// no action is expected, maybe fails with an error that contains `says`. Returns
    /// the change, when there is one, for further checks.
    pub fn expect_plan<R: Planned>(
        resource: &R,
        current: &R::Current,
        context: &Context,
        action: Option<R::Action>,
        says: &str,
    ) -> Option<Change<R::Action>>
    where
        R::Current: std::fmt::Debug,
        R::Action: std::fmt::Debug + PartialEq,
    {
        match resource.plan(current, context) {
            Ok(change) => {
                assert_eq!(change.action, action, "{current:?}");
                assert_eq!(change.reason, says, "{current:?}");
                Some(change)
            }
            Err(error) => {
                assert!(action.is_none(), "{current:?}: {error}");
                assert!(error.to_string().contains(says), "{error}");
                None
            }
        }
    }
}

macro_rules! define_spec {
    ($($key:ident => $variant:ident($spec:ty)),* $(,)?) => {
        /// One resource as written in a task: exactly one of these keys appears in a task.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(rename_all = "snake_case")]
        pub enum Spec {
            $($variant($spec),)*
        }

        /// The resource keys a task may use, for error messages.
        pub const KINDS: &[&str] = &[$(stringify!($key)),*];

        impl Spec {
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Spec::$variant(_) => stringify!($key),)*
                }
            }

            /// The fields rendering leaves as written (see [`Resource::UNRENDERED`]).
            pub fn unrendered(&self) -> &'static [&'static str] {
                match self {
                    $(Spec::$variant(_) => <$spec as Resource>::UNRENDERED,)*
                }
            }

            /// See [`Resource::READS_ROLE_FILES`].
            pub fn reads_role_files(&self) -> bool {
                match self {
                    $(Spec::$variant(_) => <$spec as Resource>::READS_ROLE_FILES,)*
                }
            }

            /// See [`Resource::path`].
            pub fn path(&self) -> Option<&str> {
                match self {
                    $(Spec::$variant(spec) => Resource::path(spec),)*
                }
            }

            /// See [`Resource::holds_secret`].
            pub fn holds_secret(&self) -> bool {
                match self {
                    $(Spec::$variant(spec) => Resource::holds_secret(spec),)*
                }
            }

            /// See [`Resource::validate`].
            pub fn validate(&self) -> Result<(), FieldError> {
                match self {
                    $(Spec::$variant(spec) => Resource::validate(spec),)*
                }
            }

            /// See [`Resource::run`].
            pub fn run(&self, context: &mut Context) -> anyhow::Result<Outcome> {
                match self {
                    $(Spec::$variant(spec) => Resource::run(spec, context),)*
                }
            }
        }
    };
}
resources!(define_spec);

/// A problem with one field of a rendered spec, e.g. a mode that is not octal.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The field, relative to the resource (`mode`, `validate[0]`).
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What a resource run found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub changed: bool,
    /// Why nothing needed doing, or what was (or would be) done: a short sentence.
    pub reason: String,
    /// A unified diff of the change, when the resource has one and it holds no secret.
    pub diff: Option<String>,
}

impl Outcome {
    pub fn unchanged(reason: impl Into<String>) -> Outcome {
        Outcome {
            changed: false,
            reason: reason.into(),
            diff: None,
        }
    }

    pub fn changed(reason: impl Into<String>) -> Outcome {
        Outcome {
            changed: true,
            reason: reason.into(),
            diff: None,
        }
    }

    pub fn with_diff(mut self, diff: Option<String>) -> Outcome {
        self.diff = diff;
        self
    }
}

/// What resources share during one run on one host.
#[derive(Debug, Default)]
pub struct Context {
    /// Check mode: look, compare and report, change nothing.
    pub check: bool,
    /// Whether the rendered content of the current task used a secret: its diff is never
    /// shown and the file is kept out of /etc's git history.
    pub sensitive: bool,
    /// Files whose content holds secrets, to keep out of git.
    pub sensitive_paths: BTreeSet<PathBuf>,
    /// Set when a unit file changed, so that systemd rereads units before the next
    /// service operation.
    pub daemon_reload_needed: bool,
    /// Whether `apt-get update` already ran in this run.
    pub apt_updated: bool,
    /// The current task's `timeout:`, which replaces the default deadline of every
    /// program it runs.
    pub timeout: Option<Duration>,
    /// Where file writes record what they are about to leave on disk; None in unit
    /// tests that need no recovery.
    pub journal: Option<crate::system::journal::Journal>,
    /// The states of service units asked for before the tasks ran (one program for
    /// all), until the host changes.
    pub unit_states: service::UnitStates,
}

impl Context {
    pub fn new(check: bool) -> Context {
        Context {
            check,
            ..Context::default()
        }
    }

    /// The deadline of a program of a kind whose default is `default`.
    pub fn deadline(&self, default: Duration) -> Duration {
        self.timeout.unwrap_or(default)
    }

    /// Records that `path` changed, and what follows from it.
    pub fn record_change(&mut self, path: &Path) {
        if path.starts_with("/etc/systemd")
            || path.starts_with("/lib/systemd")
            || path.starts_with("/usr/lib/systemd")
        {
            self.daemon_reload_needed = true;
        }
        if self.sensitive {
            self.sensitive_paths.insert(path.to_path_buf());
        }
    }
}

/// Accepts `name: x` as well as `names: [x, y]` in YAML.
pub fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// Validation helpers shared by the resources.
pub mod check {
    use super::FieldError;

    pub fn absolute_path(field: &str, path: &str) -> Result<(), FieldError> {
        if !path.starts_with('/') {
            return Err(FieldError::new(
                field,
                format!("`{path}` is not an absolute path; write it from /"),
            ));
        }
        if path.split('/').any(|part| part == "..") {
            return Err(FieldError::new(
                field,
                format!("`{path}` contains `..`; write the path without it"),
            ));
        }
        Ok(())
    }

    /// An octal mode such as `0644` or `644` (setuid bits allowed, nothing above 07777).
    pub fn mode(field: &str, mode: &str) -> Result<u32, FieldError> {
        let digits = mode.trim();
        let parsed = if digits.len() >= 3
            && digits.len() <= 5
            && digits.chars().all(|c| ('0'..='7').contains(&c))
        {
            u32::from_str_radix(digits, 8).ok().filter(|m| *m <= 0o7777)
        } else {
            None
        };
        parsed.ok_or_else(|| {
            FieldError::new(field, format!("`{mode}` is not an octal file mode; write it like \"0644\" (quoted, so YAML keeps it a string)"))
        })
    }

    /// The `mode`, `owner` and `group` fields of a file or folder, when given.
    pub fn attributes(
        mode: Option<&str>,
        owner: Option<&str>,
        group: Option<&str>,
    ) -> Result<(), FieldError> {
        if let Some(mode) = mode {
            self::mode("mode", mode)?;
        }
        if let Some(owner) = owner {
            account_name("owner", owner)?;
        }
        if let Some(group) = group {
            account_name("group", group)?;
        }
        Ok(())
    }

    /// A user or group name as useradd accepts it.
    pub fn account_name(field: &str, name: &str) -> Result<(), FieldError> {
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if valid {
            Ok(())
        } else {
            Err(FieldError::new(field, format!("`{name}` is not a valid user or group name (lowercase letters, digits, _ and -, starting with a letter)")))
        }
    }

    /// A systemd unit or Debian package name: nothing a shell or an option parser could misread.
    pub fn plain_name(field: &str, name: &str) -> Result<(), FieldError> {
        let valid = !name.is_empty()
            && !name.starts_with('-')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "@._+:-".contains(c));
        if valid {
            Ok(())
        } else {
            Err(FieldError::new(
                field,
                format!("`{name}` is not a valid name"),
            ))
        }
    }

    pub fn not_empty(field: &str, values: &[String]) -> Result<(), FieldError> {
        if values.is_empty() {
            Err(FieldError::new(field, "needs at least one value"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn modes_are_octal_strings() {
        assert_eq!(check::mode("mode", "0644"), Ok(0o644));
        assert_eq!(check::mode("mode", "4755"), Ok(0o4755));
        assert!(check::mode("mode", "0984").is_err());
        assert!(check::mode("mode", "rw-r--r--").is_err());
        assert!(
            check::mode("mode", "420").is_ok(),
            "420 is valid octal, even if YAML read 0644 as decimal"
        );
    }

    #[test]
    fn paths_must_be_absolute_and_plain() {
        assert!(check::absolute_path("path", "/etc/ssh/sshd_config").is_ok());
        assert!(check::absolute_path("path", "etc/ssh").is_err());
        assert!(check::absolute_path("path", "/etc/../root").is_err());
    }

    #[test]
    fn names_reject_option_like_values() {
        assert!(check::plain_name("name", "postfix@-").is_ok());
        assert!(check::plain_name("name", "--force").is_err());
        assert!(check::plain_name("name", "a b").is_err());
        assert!(check::account_name("name", "alice").is_ok());
        assert!(check::account_name("name", "Alice").is_err());
    }
}
