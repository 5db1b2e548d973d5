//! Rendering: handlebars, strict, with the host's variables and facts.
//!
//! Every string in a task may hold `{{…}}`; file content comes from templates under
//! `templates/`. Rendering is strict — a variable that is not defined is an error, never
//! an empty string — and does no HTML escaping, since these are config files.
//!
//! The same code renders on both sides: the controller renders every task with
//! placeholder facts and secrets to find errors before any host is contacted; the agent
//! renders with the host's facts and secrets just before each task runs (see
//! [`SecretSource`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use handlebars::{
    Context as HandlebarsContext, Handlebars, Helper, HelperDef, RenderContext, RenderError,
    RenderErrorReason, ScopedJson,
};
use serde_json::Value;

use crate::resource::{FieldError, Spec};

/// Where `{{secret "name"}}` gets its value, and the other helpers that look at the
/// host (`package_version`, `host_file`) theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// The controller: secrets never leave the host, so validation renders a placeholder.
    Placeholder,
    /// The agent: read from the host's secret store.
    Host,
}

/// Why rendering failed, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderFailure {
    /// The field of the spec, e.g. `file.content`.
    pub field: String,
    pub message: String,
    /// Set when the error is inside a template file: its name, line and column.
    pub template: Option<(String, usize, usize)>,
}

pub struct Renderer {
    handlebars: Handlebars<'static>,
    templates: BTreeMap<String, String>,
    used_secret: Arc<AtomicBool>,
}

impl Renderer {
    /// A renderer knowing `templates` (name → source). A template that does not parse is
    /// an error naming it and the position.
    pub fn new(
        templates: &BTreeMap<String, String>,
        secrets: SecretSource,
    ) -> Result<Renderer, RenderFailure> {
        let mut handlebars = Handlebars::new();
        handlebars.set_strict_mode(true);
        handlebars.register_escape_fn(handlebars::no_escape);
        let used_secret = Arc::new(AtomicBool::new(false));
        handlebars.register_helper(
            "secret",
            Box::new(SecretHelper {
                source: secrets,
                used: used_secret.clone(),
            }),
        );
        handlebars.register_helper(
            "package_version",
            Box::new(HostHelper {
                source: secrets,
                read: package_version,
            }),
        );
        handlebars.register_helper(
            "host_file",
            Box::new(HostHelper {
                source: secrets,
                read: host_file,
            }),
        );
        handlebars.register_helper("version_at_least", Box::new(version_at_least));
        handlebars.register_helper("strip_prefix", Box::new(strip_prefix));
        handlebars.register_helper("xml", Box::new(xml));
        handlebars.register_helper("json", Box::new(json));
        handlebars.register_helper("version_prefix", Box::new(version_prefix));
        for (name, source) in templates {
            check_nesting(source).map_err(|too_deep| RenderFailure {
                field: String::new(),
                message: too_deep.message,
                template: Some((name.clone(), too_deep.line, too_deep.column)),
            })?;
            handlebars
                .register_template_string(name, source)
                .map_err(|error| {
                    let (line, column) = error.pos().unwrap_or((1, 1));
                    RenderFailure {
                        field: String::new(),
                        message: describe_reason(&error.reason().to_string()),
                        template: Some((name.clone(), line, column)),
                    }
                })?;
        }
        Ok(Renderer {
            handlebars,
            templates: templates.clone(),
            used_secret,
        })
    }

    /// Whether a secret was read since the last call: the rendered text must be hidden.
    pub fn take_used_secret(&self) -> bool {
        self.used_secret.swap(false, Ordering::SeqCst)
    }

    /// Renders an inline string, such as a task's `content:`.
    pub fn render_string(&self, text: &str, data: &Value) -> Result<String, String> {
        if !text.contains("{{") {
            return Ok(text.to_string());
        }
        check_nesting(text).map_err(|too_deep| too_deep.message)?;
        self.handlebars
            .render_template(text, data)
            .map_err(|e| describe(&e))
    }

    /// Renders a template file; errors carry the template's name and position.
    pub fn render_template(&self, name: &str, data: &Value) -> Result<String, RenderFailure> {
        self.handlebars
            .render(name, data)
            .map_err(|error| RenderFailure {
                field: String::new(),
                message: describe(&error),
                template: Some((
                    error
                        .template_name
                        .clone()
                        .unwrap_or_else(|| name.to_string()),
                    error.line_no.unwrap_or(1),
                    error.column_no.unwrap_or(1),
                )),
            })
    }

    /// A task's spec with every string rendered, file templates turned into content,
    /// and the result checked by [`Spec::validate`].
    pub fn render_spec(&self, spec: &Spec, data: &Value) -> Result<Spec, RenderFailure> {
        let kind = spec.kind();
        let mut value = serde_json::to_value(spec).map_err(|e| failure(kind, e.to_string()))?;
        let inner = value
            .get_mut(kind)
            .ok_or_else(|| failure(kind, "internal: spec is not tagged".into()))?;
        self.render_value(inner, data, kind, spec.unrendered())?;

        if let Some(fields) = inner.as_object_mut() {
            if spec.reads_role_files() {
                if let Some(name) = fields
                    .get("template")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    let content = self.render_template(&name, data).map_err(|mut f| {
                        f.field = format!("{kind}.template");
                        f
                    })?;
                    fields.insert("content".into(), Value::String(content));
                    fields.remove("template");
                } else if let Some(name) = fields
                    .get("copy")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                {
                    let content =
                        self.templates
                            .get(&name)
                            .cloned()
                            .ok_or_else(|| RenderFailure {
                                field: format!("{kind}.copy"),
                                message: format!("no file `templates/{name}`"),
                                template: None,
                            })?;
                    fields.insert("content".into(), Value::String(content));
                    fields.remove("copy");
                }
            }
        }
        let rendered: Spec = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            RenderFailure {
                field: path,
                message: e.into_inner().to_string(),
                template: None,
            }
        })?;
        rendered
            .validate()
            .map_err(|FieldError { field, message }| RenderFailure {
                field: format!("{kind}.{field}"),
                message,
                template: None,
            })?;
        Ok(rendered)
    }

    fn render_value(
        &self,
        value: &mut Value,
        data: &Value,
        path: &str,
        verbatim: &[&str],
    ) -> Result<(), RenderFailure> {
        match value {
            Value::String(text) => {
                *text = self
                    .render_string(text, data)
                    .map_err(|message| failure(path, message))?;
            }
            Value::Array(items) => {
                for (index, item) in items.iter_mut().enumerate() {
                    self.render_value(item, data, &format!("{path}[{index}]"), &[])?;
                }
            }
            Value::Object(fields) => {
                for (key, field) in fields.iter_mut() {
                    if !verbatim.contains(&key.as_str()) {
                        self.render_value(field, data, &format!("{path}.{key}"), &[])?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The deepest nesting of blocks (`{{#if}}…{{/if}}`), and of sub-expressions and
/// literals within one `{{…}}`, a template may have. Handlebars parses and renders both
/// recursively, so thousands of levels overflow the stack and abort the process; real
/// templates stay under 10.
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// The largest template (or templated string) rendered; the shipped ones are under 4 KiB.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Where a template nests too deeply: 1-based line and column of the opening that is
/// one level too many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Refuses a template nested deeper than [`MAX_TEMPLATE_DEPTH`], before handlebars
/// parses it. A linear scan that follows handlebars' grammar only as far as nesting
/// goes: comments, raw blocks and string literals are skipped, since what they contain
/// does not nest; anything else malformed is left for handlebars to report.
pub fn check_nesting(text: &str) -> Result<(), TooDeep> {
    let bytes = text.as_bytes();
    let too_deep = |at: usize, what: &str| {
        let before = &text[..at];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        TooDeep {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
            message: format!(
                "{what} nested more than {MAX_TEMPLATE_DEPTH} levels deep; flatten the template (a partial or a variable computed in the inventory)"
            ),
        }
    };
    let find = |from: usize, needle: &str| {
        text.get(from..)
            .and_then(|rest| rest.find(needle))
            .map(|i| from + i)
    };
    let mut blocks = 0usize;
    let mut at = 0usize;
    while let Some(open) = find(at, "{{") {
        // `\{{` is literal text.
        if open > 0 && bytes[open - 1] == b'\\' {
            at = open + 2;
            continue;
        }
        let rest = &text[open..];
        if rest.starts_with("{{{{") {
            // A raw block: its text is not parsed up to the next `{{{{`.
            let Some(start_end) = find(open + 4, "}}}}") else {
                break;
            };
            at = find(start_end + 4, "{{{{")
                .and_then(|end| find(end, "}}}}"))
                .map_or(text.len(), |close| close + 4);
            continue;
        }
        if rest.starts_with("{{!--") {
            at = find(open + 5, "--}}").map_or(text.len(), |close| close + 4);
            continue;
        }
        if rest.starts_with("{{!") {
            at = find(open + 3, "}}").map_or(text.len(), |close| close + 2);
            continue;
        }
        let mut position = open + 2;
        if bytes.get(position) == Some(&b'~') {
            position += 1;
        }
        match bytes.get(position) {
            Some(b'#') => {
                blocks += 1;
                if blocks > MAX_TEMPLATE_DEPTH {
                    return Err(too_deep(open, "blocks are"));
                }
            }
            Some(b'/') => blocks = blocks.saturating_sub(1),
            _ => {}
        }
        // Inside the tag: sub-expressions, array and object literals nest; strings
        // may hold any bracket.
        let mut brackets = 0usize;
        let mut quote: Option<u8> = None;
        let mut end = text.len();
        while position < bytes.len() {
            let byte = bytes[position];
            match quote {
                Some(q) => {
                    if byte == b'\\' {
                        position += 1;
                    } else if byte == q {
                        quote = None;
                    }
                }
                None => match byte {
                    // A path key, `a.[any text]`, is not parsed up to its `]`: a quote in
                    // it starts no string.
                    b'[' if position > 0 && matches!(bytes[position - 1], b'.' | b'/') => {
                        match find(position, "]") {
                            Some(close) => position = close,
                            None => break,
                        }
                    }
                    b'"' | b'\'' => quote = Some(byte),
                    b'(' | b'[' | b'{' => {
                        brackets += 1;
                        if brackets > MAX_TEMPLATE_DEPTH {
                            return Err(too_deep(position, "sub-expressions and literals are"));
                        }
                    }
                    b')' | b']' => brackets = brackets.saturating_sub(1),
                    b'}' if brackets > 0 => brackets -= 1,
                    b'}' if bytes.get(position + 1) == Some(&b'}') => {
                        end = position + 2;
                        break;
                    }
                    _ => {}
                },
            }
            position += 1;
        }
        at = end;
    }
    // Checked after the nesting, which is the more telling message. Handlebars
    // computes the line and column of every tag from the start of the text: compiling
    // takes quadratic time, and a 640 KB template took minutes.
    if text.len() > MAX_TEMPLATE_BYTES {
        return Err(TooDeep {
            line: 1,
            column: 1,
            message: format!(
                "the template is {} KiB, more than the {} KiB placard accepts; split it",
                text.len() / 1024,
                MAX_TEMPLATE_BYTES / 1024
            ),
        });
    }
    Ok(())
}

fn failure(field: &str, message: String) -> RenderFailure {
    RenderFailure {
        field: field.to_string(),
        message,
        template: None,
    }
}

/// A sysadmin's words for handlebars' errors.
fn describe(error: &RenderError) -> String {
    match error.reason() {
        RenderErrorReason::MissingVariable(Some(name)) => {
            format!("variable `{name}` is not defined; define it in the inventory (host, group or global vars) or give it a default in the role")
        }
        RenderErrorReason::MissingVariable(None) => "a variable used here is not defined".to_string(),
        RenderErrorReason::TemplateNotFound(name) => format!("no template `{name}` under templates/"),
        RenderErrorReason::HelperNotFound(name) => format!(
            "no helper `{name}`; the helpers are if, unless, each, with, lookup, eq, ne, and, or, not, len, secret, package_version, version_at_least, version_prefix, host_file, strip_prefix, xml, json"
        ),
        other => describe_reason(&other.to_string()),
    }
}

fn describe_reason(reason: &str) -> String {
    reason.trim_end_matches('.').to_string()
}

/// `{{secret "name"}}`: the value of a host secret.
struct SecretHelper {
    source: SecretSource,
    used: Arc<AtomicBool>,
}

impl HelperDef for SecretHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        helper: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc HandlebarsContext,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        // The name's parts are joined, so that a loop can name one secret per item:
        // {{secret "icecast-show-" item.mount}}.
        let parts: Option<Vec<&str>> = helper.params().iter().map(|p| p.value().as_str()).collect();
        let name = parts
            .filter(|parts| !parts.is_empty())
            .map(|parts| parts.concat())
            .ok_or_else(|| {
                RenderErrorReason::Other(
                    "secret takes the secret's name, in one or more strings: {{secret \"name\"}} or {{secret \"prefix-\" item.name}}".into(),
                )
            })?;
        let name = name.as_str();
        crate::resource::secret::valid_name(name).map_err(RenderErrorReason::Other)?;
        self.used.store(true, Ordering::SeqCst);
        let value = match self.source {
            SecretSource::Placeholder => format!("(secret {name})"),
            SecretSource::Host => match crate::resource::secret::read(name) {
                Ok(Some(value)) => value,
                // In a check run the secret task before this one did not generate it yet.
                Ok(None) => format!("(secret {name}, not generated yet)"),
                Err(error) => return Err(RenderErrorReason::Other(error.to_string()).into()),
            },
        };
        Ok(ScopedJson::Derived(Value::String(value)))
    }
}

// `{{strip_prefix name "*."}}`: the name without the prefix, or as it is without it
// (the name a wildcard's CAA record is published at).
handlebars::handlebars_helper!(strip_prefix: |text: str, prefix: str| {
    text.strip_prefix(prefix).unwrap_or(text).to_string()
});

// `{{json value}}`: the value as a JSON literal, quotes and escapes included: a string
// that is safe in YAML and JSON files whatever it holds (Synapse's homeserver.yaml).
handlebars::handlebars_helper!(json: |value: Json| {
    serde_json::to_string(value).unwrap_or_default()
});

// `{{xml value}}`: the value escaped for XML text and attributes (Icecast's icecast.xml).
handlebars::handlebars_helper!(xml: |value: str| {
    value
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
});

handlebars::handlebars_helper!(version_at_least: |version: str, minimum: str| {
    crate::facts::dpkg::compare_versions(version, minimum) != std::cmp::Ordering::Less
});

handlebars::handlebars_helper!(version_prefix: |version: str, fields: u64| {
    upstream_prefix(version, fields as usize)
});

/// The first `fields` numbers of a Debian version's upstream part: no epoch, nothing
/// after the first character that is neither a digit nor a dot. `2:8.2+93` (php-fpm)
/// gives `8.2` for 2 fields; `15+248` (postgresql) gives `15` for 1. Empty for an
/// empty version (a package not installed, or the controller, which never sees it).
pub fn upstream_prefix(version: &str, fields: usize) -> String {
    let upstream = version.split_once(':').map_or(version, |(_, rest)| rest);
    let numeric = upstream
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default();
    numeric
        .split('.')
        .filter(|part| !part.is_empty())
        .take(fields)
        .collect::<Vec<_>>()
        .join(".")
}

/// The installed version of a package, read from dpkg's status when the template is
/// rendered — not when facts were gathered — so that a task after the one installing
/// the package sees it, even on the first run. Empty when it is not installed.
fn package_version(name: &str) -> Result<String, String> {
    let status = crate::facts::dpkg::read_status().map_err(|e| e.to_string())?;
    Ok(status
        .get(name)
        .filter(|p| p.state == "installed")
        .map(|p| p.version.clone())
        .unwrap_or_default())
}

/// A file of the host, trimmed: for values only the host knows, such as a public key it
/// generated (`placard dns` reads the DKIM key this way).
fn host_file(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("host_file needs an absolute path, not `{path}`"));
    }
    // Secrets go through {{secret}}, which marks what it renders as secret; host_file
    // would hand them out unmarked.
    let private = path.starts_with(crate::resource::secret::SECRETS_DIR)
        || path.contains("/private/")
        || path.ends_with(".key")
        || path.starts_with("/etc/shadow")
        || path.starts_with("/etc/gshadow");
    if private || path.split('/').any(|part| part == "..") {
        return Err(format!("host_file does not read {path}: it is, or may be, a secret; use {{{{secret \"NAME\"}}}} for secrets"));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "{path} does not exist on the host yet; `placard apply` creates it"
        )),
        Err(e) => Err(format!("cannot read {path}: {e}")),
    }
}

/// A helper taking one string and answering from the host. On the controller, which
/// never sees the host, it answers an empty string, so templates can still be checked.
struct HostHelper {
    source: SecretSource,
    read: fn(&str) -> Result<String, String>,
}

impl HelperDef for HostHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        helper: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc HandlebarsContext,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        // The arguments are joined, so that a path can be built from variables:
        // {{host_file "/etc/dkimkeys/" selector ".public"}}.
        let parts: Option<Vec<&str>> = helper.params().iter().map(|p| p.value().as_str()).collect();
        let argument = parts
            .filter(|parts| !parts.is_empty())
            .map(|parts| parts.concat())
            .ok_or_else(|| {
                RenderErrorReason::Other(format!(
                    "{} takes strings: {{{{{} \"…\"}}}}",
                    helper.name(),
                    helper.name()
                ))
            })?;
        let value = match self.source {
            SecretSource::Placeholder => String::new(),
            SecretSource::Host => (self.read)(&argument).map_err(RenderErrorReason::Other)?,
        };
        Ok(ScopedJson::Derived(Value::String(value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn renderer(templates: &[(&str, &str)]) -> Renderer {
        let templates = templates
            .iter()
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect();
        Renderer::new(&templates, SecretSource::Placeholder).expect("templates parse")
    }

    #[test]
    fn version_prefix_takes_the_upstream_numbers() {
        assert_eq!(upstream_prefix("2:8.2+93", 2), "8.2");
        assert_eq!(upstream_prefix("2:8.4+96", 2), "8.4");
        assert_eq!(upstream_prefix("15+248", 1), "15");
        assert_eq!(upstream_prefix("17+278", 2), "17");
        assert_eq!(upstream_prefix("", 2), "");
        let rendered = renderer(&[])
            .render_string(
                "/etc/php/{{version_prefix v 2}}/fpm",
                &json!({"v": "2:8.2+93"}),
            )
            .expect("renders");
        assert_eq!(rendered, "/etc/php/8.2/fpm");
    }

    #[test]
    fn strict_mode_names_the_missing_variable() {
        let error = renderer(&[])
            .render_string("Port {{ssh_port}}", &json!({}))
            .unwrap_err();
        assert!(error.contains("`ssh_port` is not defined"), "{error}");
    }

    #[test]
    fn versions_choose_configuration_forms() {
        let r = renderer(&[]);
        let when = "{{version_at_least v \"1:2.4\"}}";
        assert_eq!(
            r.render_string(when, &json!({"v": "1:2.4.1+dfsg1-6"}))
                .unwrap(),
            "true"
        );
        assert_eq!(
            r.render_string(when, &json!({"v": "1:2.3.19.1+dfsg1-2.1"}))
                .unwrap(),
            "false"
        );
        // The controller never reads the host: no package is installed there.
        assert_eq!(
            r.render_string("{{package_version \"dovecot-core\"}}", &json!({}))
                .unwrap(),
            ""
        );
        assert_eq!(
            r.render_string(
                "{{not (version_at_least (package_version \"dovecot-core\") \"1:2.4\")}}",
                &json!({})
            )
            .unwrap(),
            "true"
        );
    }

    #[test]
    fn no_html_escaping_in_config_files() {
        let text = renderer(&[])
            .render_string("{{v}}", &json!({"v": "a<b & \"c\""}))
            .unwrap();
        assert_eq!(text, "a<b & \"c\"");
    }

    #[test]
    fn template_errors_carry_their_position() {
        let r = renderer(&[("base/x.hbs", "line one\nvalue {{missing}}\n")]);
        let failure = r.render_template("base/x.hbs", &json!({})).unwrap_err();
        assert_eq!(failure.template, Some(("base/x.hbs".to_string(), 2, 7)));
    }

    #[test]
    fn a_broken_template_is_refused_when_loaded() {
        let templates = [("base/bad.hbs".to_string(), "{{#if x}}unclosed".to_string())]
            .into_iter()
            .collect();
        let failure = Renderer::new(&templates, SecretSource::Placeholder)
            .err()
            .expect("parse error");
        assert_eq!(
            failure.template.as_ref().map(|t| t.0.as_str()),
            Some("base/bad.hbs")
        );
    }

    #[test]
    fn nesting_is_bounded_before_handlebars_parses() {
        // Issue 14: 5,000 nested blocks overflowed the stack (exit 134).
        let deep = format!(
            "a\n  {}x{}",
            "{{#if v}}".repeat(5_000),
            "{{/if}}".repeat(5_000)
        );
        let templates = [("web/deep.hbs".to_string(), deep.clone())]
            .into_iter()
            .collect();
        let failure = Renderer::new(&templates, SecretSource::Placeholder)
            .err()
            .expect("too deep");
        let column = 3 + MAX_TEMPLATE_DEPTH * "{{#if v}}".len();
        assert_eq!(
            failure.template,
            Some(("web/deep.hbs".to_string(), 2, column))
        );
        assert!(
            failure.message.contains("nested more than 64"),
            "{}",
            failure.message
        );
        let error = renderer(&[])
            .render_string(&deep, &json!({"v": true}))
            .unwrap_err();
        assert!(error.contains("nested more than 64"), "{error}");
        let parens = format!("{{{{v {}w{}}}}}", "(not ".repeat(5_000), ")".repeat(5_000));
        assert!(check_nesting(&parens).is_err());
        let huge = "{{v}}\n".repeat(MAX_TEMPLATE_BYTES);
        assert!(check_nesting(&huge).is_err());
        let arrays = format!("{{{{len {}1{}}}}}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(check_nesting(&arrays).is_err());
    }

    #[test]
    fn nesting_up_to_the_bound_renders() {
        let depth = MAX_TEMPLATE_DEPTH;
        let blocks = format!("{}x{}", "{{#if v}}".repeat(depth), "{{/if}}".repeat(depth));
        assert_eq!(
            renderer(&[])
                .render_string(&blocks, &json!({"v": true}))
                .unwrap(),
            "x"
        );
        // Closed blocks do not add up, and what comments, strings and raw blocks hold
        // is not nesting.
        let siblings = "{{#if v}}x{{/if}}".repeat(1_000);
        let hidden = format!(
            "{{{{!-- {} --}}}}{{{{! {} }}}}{{{{{{{{raw}}}}}}}}{}{{{{{{{{/raw}}}}}}}}{{{{v \"{}\"}}}}",
            "{{#if v}}".repeat(100),
            "(".repeat(100),
            "{{#if v}}".repeat(100),
            "(".repeat(100)
        );
        assert_eq!(check_nesting(&siblings), Ok(()));
        // A quote in a path key must not hide the blocks after it.
        let keyed = format!("{{{{a.[it's]}}}}{}", "{{#if v}}".repeat(100));
        assert!(check_nesting(&keyed).is_err());
        assert_eq!(check_nesting(&hidden), Ok(()));
        assert_eq!(
            check_nesting("{{{triple}}} {{#each (a (b c))}}{{/each}} \\{{#x"),
            Ok(())
        );
    }

    #[test]
    fn specs_render_then_validate() {
        let spec: Spec = serde_json::from_value(
            json!({"file": {"path": "/etc/{{name}}", "content": "x", "mode": "{{mode}}"}}),
        )
        .unwrap();
        let r = renderer(&[]);
        let rendered = r
            .render_spec(&spec, &json!({"name": "motd", "mode": "0644"}))
            .unwrap();
        let Spec::File(file) = rendered else {
            panic!("a file spec")
        };
        assert_eq!(file.path, "/etc/motd");
        let failure = r
            .render_spec(&spec, &json!({"name": "motd", "mode": "rwx"}))
            .unwrap_err();
        assert_eq!(failure.field, "file.mode");
    }

    #[test]
    fn secrets_mark_the_render_and_scripts_stay_verbatim() {
        let r = renderer(&[]);
        let text = r
            .render_string("password = {{secret \"ups\"}}", &json!({}))
            .unwrap();
        assert_eq!(text, "password = (secret ups)");
        assert!(r.take_used_secret());
        assert!(!r.take_used_secret());
        let spec: Spec =
            serde_json::from_value(json!({"command": {"shell": "echo {{x}}", "creates": "/x"}}))
                .unwrap();
        let Spec::Command(command) = r.render_spec(&spec, &json!({})).unwrap() else {
            panic!()
        };
        assert_eq!(command.shell.as_deref(), Some("echo {{x}}"));
    }

    #[test]
    fn a_secret_name_may_be_joined_from_parts_and_xml_is_escaped() {
        let r = renderer(&[]);
        let data = json!({"item": {"mount": "alice.ogg", "name": "Rock & <Roll> \"live\""}});
        let text = r
            .render_string("{{secret \"icecast-show-\" item.mount}}", &data)
            .unwrap();
        assert_eq!(text, "(secret icecast-show-alice.ogg)");
        assert!(r.take_used_secret());
        assert!(r
            .render_string("{{secret \"show-\" item.missing}}", &data)
            .is_err());
        let bad = r
            .render_string("{{secret \"show/\" item.mount}}", &data)
            .unwrap_err();
        assert!(bad.contains("not a secret name"), "{bad}");
        assert_eq!(
            r.render_string("{{xml item.name}}", &data).unwrap(),
            "Rock &amp; &lt;Roll&gt; &quot;live&quot;"
        );
        assert_eq!(
            r.render_string("{{json item.name}}", &data).unwrap(),
            "\"Rock & <Roll> \\\"live\\\"\""
        );
    }
}
