//! A task: a sentence naming what it does, one resource, and the handlers it notifies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, InvalidInput};
use crate::resource::{self, service, Spec};
use crate::source::SourceFile;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TaskFields", into = "TaskFields")]
pub struct Task {
    pub name: String,
    pub notify: Vec<String>,
    /// The name of a list variable: the task runs once per item, which templates see
    /// as `item`.
    pub loop_over: Option<String>,
    /// A condition, rendered like any string: the task runs when it renders to `true`,
    /// is skipped when `false`, e.g. `when: "{{eq watchdog_mode \"bmc\"}}"`.
    pub when: Option<String>,
    /// The deadline of every program the task runs, instead of the default for its
    /// kind (see [`crate::system::command::deadline`]).
    pub timeout: Option<Timeout>,
    pub spec: Spec,
}

/// A task's `timeout:`: seconds, or a number followed by `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TimeoutText", into = "u64")]
pub struct Timeout(u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum TimeoutText {
    Seconds(i64),
    Text(String),
}

impl Timeout {
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl From<Timeout> for u64 {
    fn from(timeout: Timeout) -> u64 {
        timeout.0
    }
}

impl TryFrom<TimeoutText> for Timeout {
    type Error = String;

    fn try_from(text: TimeoutText) -> Result<Timeout, String> {
        let seconds = match &text {
            TimeoutText::Seconds(seconds) => Some(*seconds),
            TimeoutText::Text(text) => {
                let text = text.trim();
                let (number, unit) = match text.char_indices().last() {
                    Some((at, 's')) => (&text[..at], 1),
                    Some((at, 'm')) => (&text[..at], 60),
                    Some((at, 'h')) => (&text[..at], 3600),
                    _ => (text, 1),
                };
                number
                    .trim()
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| n.checked_mul(unit))
            }
        };
        match seconds {
            Some(seconds) if seconds > 0 && seconds <= 7 * 24 * 3600 => Ok(Timeout(seconds as u64)),
            _ => Err(format!(
                "`timeout` must be a positive number of seconds, up to a week, such as 90, \"90s\", \"15m\" or \"2h\"; found {}",
                match text {
                    TimeoutText::Seconds(n) => n.to_string(),
                    TimeoutText::Text(t) => format!("\"{t}\""),
                }
            )),
        }
    }
}

macro_rules! task_fields {
    ($($key:ident => $variant:ident($spec:ty)),* $(,)?) => {
        /// A task as YAML writes it: `name`, `notify` and exactly one resource key.
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct TaskFields {
            name: String,
            #[serde(
                default,
                deserialize_with = "resource::one_or_many",
                skip_serializing_if = "Vec::is_empty"
            )]
            notify: Vec<String>,
            #[serde(default, rename = "loop", skip_serializing_if = "Option::is_none")]
            loop_over: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            when: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            timeout: Option<Timeout>,
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                $key: Option<$spec>,
            )*
        }

        impl TaskFields {
            /// Every resource key the task used, in the order of the list.
            fn take_specs(&mut self) -> Vec<Spec> {
                let mut specs = Vec::new();
                $(
                    if let Some(spec) = self.$key.take() {
                        specs.push(Spec::$variant(spec));
                    }
                )*
                specs
            }

            fn put_spec(&mut self, spec: Spec) {
                match spec {
                    $(Spec::$variant(spec) => self.$key = Some(spec),)*
                }
            }
        }
    };
}
crate::resources!(task_fields);

impl TryFrom<TaskFields> for Task {
    type Error = String;

    fn try_from(mut fields: TaskFields) -> Result<Task, String> {
        let specs = fields.take_specs();
        let name = fields.name;
        match <[Spec; 1]>::try_from(specs) {
            Ok([spec]) => Ok(Task {
                name,
                notify: fields.notify,
                loop_over: fields.loop_over,
                when: fields.when,
                timeout: fields.timeout,
                spec,
            }),
            Err(specs) if specs.is_empty() => Err(format!(
                "task `{name}` has no resource; give it one of: {}",
                resource::KINDS.join(", ")
            )),
            Err(specs) => {
                let kinds: Vec<&str> = specs.iter().map(Spec::kind).collect();
                Err(format!(
                    "task `{name}` has {} resources ({}); split it into one task each",
                    kinds.len(),
                    kinds.join(", ")
                ))
            }
        }
    }
}

impl From<Task> for TaskFields {
    fn from(task: Task) -> TaskFields {
        let mut fields = TaskFields {
            name: task.name,
            notify: task.notify,
            loop_over: task.loop_over,
            when: task.when,
            timeout: task.timeout,
            ..TaskFields::default()
        };
        fields.put_spec(task.spec);
        fields
    }
}

/// Whether a task runs with `data`: its `when`, rendered, must say `true` or `false`.
pub fn condition_holds(
    task: &Task,
    render: impl Fn(&str) -> Result<String, String>,
) -> Result<bool, String> {
    condition(task.when.as_deref(), render)
}

/// Whether a `when` condition holds (no condition always does); shared by tasks,
/// handlers and DNS records.
pub fn condition(
    when: Option<&str>,
    render: impl Fn(&str) -> Result<String, String>,
) -> Result<bool, String> {
    let Some(when) = when else {
        return Ok(true);
    };
    let rendered = render(when)?;
    match rendered.trim() {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        other => Err(format!("`when` must render to true or false, not `{other}`; use a helper such as {{{{eq a \"b\"}}}}")),
    }
}

/// Rules that keep a second run from changing anything: tasks describe states.
pub fn check_task_rules(task: &Task, source: &SourceFile, at: &str, problems: &mut InvalidInput) {
    match &task.spec {
        Spec::Service(s) if s.state.is_some_and(service::ServiceState::is_action) => {
            problems.push(
                Diagnostic::at(source, &format!("{at}.service.state"), "restarting or reloading is an action, not a state: a task doing it would change the host on every run")
                    .help("move it to a handler and `notify:` it from the task that changes the configuration"),
            );
        }
        Spec::Command(c) if !c.is_guarded() => {
            problems.push(
                Diagnostic::at_key(source, &format!("{at}.command"), "a command task needs a guard, or it runs (and reports a change) on every run")
                    .help("add `creates: /path/it/makes` or `unless: [a, command, that, succeeds, when, done]`"),
            );
        }
        _ => {}
    }
}

/// `template:` and `copy:` must name a file the role ships, literally (so that it can be
/// checked now and shipped in the bundle).
pub fn check_template_names(
    task: &Task,
    templates: &BTreeMap<String, String>,
    source: &SourceFile,
    at: &str,
    problems: &mut InvalidInput,
) {
    let Spec::File(file) = &task.spec else { return };
    for (field, name) in [("template", &file.template), ("copy", &file.copy)] {
        let Some(name) = name else { continue };
        let path = format!("{at}.file.{field}");
        if name.contains("{{") {
            problems.push(Diagnostic::at(
                source,
                &path,
                format!("the {field} name is not templated; write it literally"),
            ));
        } else if !templates.contains_key(name) {
            let mut known: Vec<&str> = templates.keys().map(String::as_str).collect();
            known.truncate(12);
            problems.push(
                Diagnostic::at(
                    source,
                    &path,
                    format!("no template `{name}`: templates/{name} does not exist"),
                )
                .help(if known.is_empty() {
                    "this role has no templates folder".to_string()
                } else {
                    format!("this role's templates are: {}", known.join(", "))
                }),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::{Renderer, SecretSource};
    use serde_json::json;

    #[test]
    fn conditions_render_to_true_or_false() {
        let renderer =
            Renderer::new(&BTreeMap::new(), SecretSource::Placeholder).expect("a renderer");
        let task: Task = serde_yaml::from_str("name: Load the watchdog module.\nwhen: '{{eq mode \"systemd\"}}'\ncommand: {argv: [modprobe, softdog], unless: [true]}\n").expect("a task");
        let holds = |mode: &str| {
            condition_holds(&task, |t| renderer.render_string(t, &json!({"mode": mode})))
        };
        assert_eq!(holds("systemd"), Ok(true));
        assert_eq!(holds("bmc"), Ok(false));
        let odd: Task =
            serde_yaml::from_str("name: x\nwhen: '{{mode}}'\nsecret: {name: s}\n").expect("a task");
        let error = condition_holds(&odd, |t| {
            renderer.render_string(t, &json!({"mode": "maybe"}))
        })
        .unwrap_err();
        assert!(error.contains("not `maybe`"), "{error}");
    }
}
