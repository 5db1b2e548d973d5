//! The subset of OpenSSH's client configuration placard honours (`Host`, `HostName`,
//! `User`, `Port`, `IdentityFile`, `ProxyJump`, `Include`), and the resolution of an
//! inventory target through it: inventory values win, the first value found wins.

use super::*;

/// The parsed subset of an OpenSSH client config.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<ConfigBlock>,
}

#[derive(Debug, Clone)]
pub(super) struct ConfigBlock {
    /// All must match. More than one only inside an `Include` that sits in a
    /// Host block: as in OpenSSH, the included blocks apply only when the
    /// enclosing block does too.
    conditions: Vec<BlockCondition>,
    entries: Vec<(String, Vec<String>)>,
}

impl ConfigBlock {
    fn matches(&self, host: &str) -> bool {
        self.conditions.iter().all(|c| c.matches(host))
    }
}

#[derive(Debug, Clone)]
pub(super) enum BlockCondition {
    Always,
    Hosts(Vec<String>),
    /// A `Match` we cannot evaluate: treating it as never matching is the
    /// conservative choice (its settings are usually host-specific).
    Never,
}

impl BlockCondition {
    fn matches(&self, host: &str) -> bool {
        match self {
            BlockCondition::Always => true,
            BlockCondition::Never => false,
            BlockCondition::Hosts(patterns) => {
                let mut positive = false;
                for p in patterns {
                    let p = p.to_ascii_lowercase();
                    if let Some(neg) = p.strip_prefix('!') {
                        if wildcard_match(neg, host) {
                            return false;
                        }
                    } else if wildcard_match(&p, host) {
                        positive = true;
                    }
                }
                positive
            }
        }
    }
}

/// The settings that apply to one alias, first value winning as in OpenSSH.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSettings {
    pub host_name: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Unexpanded, in config order (OpenSSH accumulates IdentityFile).
    pub identity_files: Vec<String>,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
}

impl SshConfig {
    /// Reads and parses a config file, following `Include`.
    pub fn load(path: &Path) -> Result<SshConfig, SshError> {
        let text = std::fs::read_to_string(path).map_err(|source| SshError::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        SshConfig::parse(&text, path)
    }

    /// Parses config text; `origin` names it in error messages.
    pub fn parse(text: &str, origin: &Path) -> Result<SshConfig, SshError> {
        let mut config = SshConfig::default();
        config.parse_into(text, origin, &[], 0)?;
        Ok(config)
    }

    fn parse_into(
        &mut self,
        text: &str,
        origin: &Path,
        scope: &[BlockCondition],
        depth: usize,
    ) -> Result<(), SshError> {
        // Lines before the first Host line apply to every host in scope.
        self.blocks.push(ConfigBlock {
            conditions: scope.to_vec(),
            entries: Vec::new(),
        });
        let scoped = |c: BlockCondition| {
            let mut all = scope.to_vec();
            all.push(c);
            all
        };
        let err = |line: usize, message: String| SshError::Config {
            path: origin.to_path_buf(),
            line,
            message,
        };
        for (idx, raw) in text.lines().enumerate() {
            let lineno = idx + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = split_keyword(line);
            let keyword = keyword.to_ascii_lowercase();
            let args = split_args(rest).map_err(|m| err(lineno, m))?;
            match keyword.as_str() {
                "host" => {
                    if args.is_empty() {
                        return Err(err(lineno, "Host needs at least one pattern".into()));
                    }
                    self.blocks.push(ConfigBlock {
                        conditions: scoped(BlockCondition::Hosts(args)),
                        entries: Vec::new(),
                    });
                }
                "match" => {
                    let condition = if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                        BlockCondition::Always
                    } else {
                        tracing::warn!(
                            "{}:{}: `Match {}` is not supported by placard; its settings are ignored",
                            origin.display(),
                            lineno,
                            args.join(" ")
                        );
                        BlockCondition::Never
                    };
                    self.blocks.push(ConfigBlock {
                        conditions: scoped(condition),
                        entries: Vec::new(),
                    });
                }
                "include" => {
                    if depth >= INCLUDE_DEPTH {
                        return Err(err(lineno, "Include nested too deeply (a loop?)".into()));
                    }
                    let parent = self
                        .blocks
                        .last()
                        .map(|b| b.conditions.clone())
                        .unwrap_or_default();
                    for arg in &args {
                        for file in expand_include(arg).map_err(|m| err(lineno, m))? {
                            let text = std::fs::read_to_string(&file).map_err(|source| {
                                SshError::ConfigRead {
                                    path: file.clone(),
                                    source,
                                }
                            })?;
                            self.parse_into(&text, &file, &parent, depth + 1)?;
                        }
                    }
                    // Lines after an Include still belong to the block that
                    // contained it, whatever Host lines the included file had.
                    self.blocks.push(ConfigBlock {
                        conditions: parent,
                        entries: Vec::new(),
                    });
                }
                _ => {
                    if keyword == "port" {
                        let valid = args.first().map(|p| p.parse::<u16>().map(|n| n > 0));
                        if valid != Some(Ok(true)) {
                            return Err(err(lineno, format!("invalid Port `{}`", rest.trim())));
                        }
                    }
                    if args.is_empty() {
                        return Err(err(lineno, format!("`{keyword}` needs a value")));
                    }
                    if let Some(block) = self.blocks.last_mut() {
                        block.entries.push((keyword, args));
                    }
                }
            }
        }
        Ok(())
    }

    /// The settings for `alias`, as `ssh alias` would apply them.
    pub fn lookup(&self, alias: &str) -> HostSettings {
        let host = alias.to_ascii_lowercase();
        let mut s = HostSettings::default();
        for block in self.blocks.iter().filter(|b| b.matches(&host)) {
            for (keyword, args) in &block.entries {
                let first = args.first().cloned();
                match keyword.as_str() {
                    "hostname" if s.host_name.is_none() => s.host_name = first,
                    "user" if s.user.is_none() => s.user = first,
                    "port" if s.port.is_none() => {
                        s.port = first.and_then(|p| p.parse().ok());
                    }
                    "identityfile" => {
                        if let Some(f) = first {
                            if !f.eq_ignore_ascii_case("none") && !s.identity_files.contains(&f) {
                                s.identity_files.push(f);
                            }
                        }
                    }
                    "proxyjump" if s.proxy_jump.is_none() => s.proxy_jump = first,
                    "proxycommand" if s.proxy_command.is_none() => {
                        s.proxy_command = Some(args.join(" "));
                    }
                    _ => {}
                }
            }
        }
        s
    }
}

/// `Keyword value`, `Keyword=value` and `Keyword = value` are all valid.
pub(super) fn split_keyword(line: &str) -> (&str, &str) {
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (kw, rest) = line.split_at(end);
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    (kw, rest.trim())
}

pub(super) fn split_args(s: &str) -> Result<Vec<String>, String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_token = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if has_token {
                    args.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if in_quotes {
        return Err("unterminated quote".into());
    }
    if has_token {
        args.push(cur);
    }
    Ok(args)
}

/// OpenSSH-style glob: `*` any run, `?` one character.
pub(super) fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

pub(super) fn home_dir() -> PathBuf {
    dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"))
}

pub(super) fn expand_tilde(path: &str) -> PathBuf {
    if path == "~" {
        home_dir()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home_dir().join(rest)
    } else {
        PathBuf::from(path)
    }
}

/// Include paths are relative to ~/.ssh for the user config, as in OpenSSH;
/// wildcards are honoured in the file name only.
pub(super) fn expand_include(arg: &str) -> Result<Vec<PathBuf>, String> {
    let path = expand_tilde(arg);
    let path = if path.is_absolute() {
        path
    } else {
        home_dir().join(".ssh").join(path)
    };
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.to_string_lossy().contains(['*', '?']) {
        return Err(format!(
            "Include `{arg}`: wildcards are only supported in the file name"
        ));
    }
    if !file_name.contains(['*', '?']) {
        return Ok(if path.is_file() {
            vec![path]
        } else {
            Vec::new()
        });
    }
    let mut found: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .filter(|e| wildcard_match(&file_name, &e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    found.sort();
    Ok(found)
}

/// The few `%` tokens that make sense in IdentityFile and HostName.
pub(super) fn expand_tokens(value: &str, alias: &str, host: &str, user: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some('h') => out.push_str(host),
            Some('n') => out.push_str(alias),
            Some('r') => out.push_str(user),
            Some('d') => out.push_str(&home_dir().to_string_lossy()),
            Some('u') => out.push_str(&std::env::var("USER").unwrap_or_default()),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// One hop of a ProxyJump value: `[ssh://][user@]host[:port]`, host possibly
/// `[v6]`.
pub fn parse_jump_spec(spec: &str) -> Result<(Option<String>, String, Option<u16>), String> {
    let s = spec.trim();
    let s = s.strip_prefix("ssh://").unwrap_or(s);
    let (user, hostport) = match s.rfind('@') {
        Some(i) => (Some(s[..i].to_string()), &s[i + 1..]),
        None => (None, s),
    };
    let bad_port = |p: &str| format!("invalid port `{p}` in ProxyJump `{spec}`");
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let close = rest
            .find(']')
            .ok_or_else(|| format!("unbalanced `[` in ProxyJump `{spec}`"))?;
        let host = &rest[..close];
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse::<u16>().map_err(|_| bad_port(p))?),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected `{after}` in ProxyJump `{spec}`")),
        };
        (host.to_string(), port)
    } else if hostport.matches(':').count() == 1 {
        let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
        (
            h.to_string(),
            Some(p.parse::<u16>().map_err(|_| bad_port(p))?),
        )
    } else {
        (hostport.to_string(), None)
    };
    if host.is_empty() || user.as_deref() == Some("") {
        return Err(format!("invalid ProxyJump `{spec}`"));
    }
    Ok((user, host, port))
}

/// Applies the ssh config to an inventory target. Inventory values win.
pub fn resolve_target(target: &SshTarget, config: &SshConfig) -> Result<ResolvedTarget, SshError> {
    resolve_depth(target, config, 0)
}

pub(super) fn resolve_depth(
    target: &SshTarget,
    config: &SshConfig,
    depth: usize,
) -> Result<ResolvedTarget, SshError> {
    let invalid = |message: String| SshError::InvalidTarget {
        target: target.name.clone(),
        message,
    };
    if depth > MAX_JUMP_DEPTH {
        return Err(invalid(format!(
            "more than {MAX_JUMP_DEPTH} jump hosts in a row; is there a ProxyJump loop in the ssh config?"
        )));
    }
    let alias = target.address.trim();
    if alias.is_empty() {
        return Err(invalid("no address to connect to".into()));
    }
    let s = config.lookup(alias);
    let host = match &s.host_name {
        Some(h) => expand_tokens(h, alias, alias, ""),
        None => alias.to_string(),
    };
    let port = target.port.or(s.port).unwrap_or(22);
    if port == 0 {
        return Err(invalid("port 0 is not a valid SSH port".into()));
    }
    let user = target
        .user
        .clone()
        .or(s.user.clone())
        .unwrap_or_else(|| "root".to_string());
    let identities = match &target.identity {
        Some(p) => vec![expand_tilde(&p.to_string_lossy())],
        None => s
            .identity_files
            .iter()
            .map(|f| expand_tilde(&expand_tokens(f, alias, &host, &user)))
            .collect(),
    };
    if let (Some(cmd), None, None) = (&s.proxy_command, &s.proxy_jump, &target.via) {
        tracing::warn!(
            "{}: ssh config sets `ProxyCommand {cmd}`, which placard does not support; connecting directly (use ProxyJump instead)",
            target.name
        );
    }
    let via = match (&target.via, s.proxy_jump.as_deref()) {
        (Some(v), _) => Some(Box::new(resolve_depth(v, config, depth + 1)?)),
        (None, None) => None,
        (None, Some(spec)) if spec.eq_ignore_ascii_case("none") => None,
        (None, Some(spec)) => match jump_chain(spec, alias).map_err(invalid)? {
            Some(hop) => Some(Box::new(resolve_depth(&hop, config, depth + 1)?)),
            None => None,
        },
    };
    Ok(ResolvedTarget {
        name: target.name.clone(),
        host,
        port,
        user,
        identities,
        via,
    })
}

/// Turns `a,b,c` into c-via-b-via-a. Hops from the first mention of the
/// alias being resolved are dropped, so the usual `Host * / ProxyJump
/// bastion` does not make the bastion jump through itself.
pub(super) fn jump_chain(spec: &str, alias: &str) -> Result<Option<SshTarget>, String> {
    let mut chain: Option<SshTarget> = None;
    for hop in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
        let (user, host, port) = parse_jump_spec(hop)?;
        if host.eq_ignore_ascii_case(alias) {
            break;
        }
        chain = Some(SshTarget {
            name: hop.to_string(),
            address: host,
            port,
            user,
            identity: None,
            via: chain.map(Box::new),
        });
    }
    Ok(chain)
}

pub(super) fn load_config(options: &SshOptions) -> Result<SshConfig, SshError> {
    match &options.ssh_config {
        Some(path) => SshConfig::load(path),
        None => {
            let path = home_dir().join(".ssh").join("config");
            if path.is_file() {
                SshConfig::load(&path)
            } else {
                Ok(SshConfig::default())
            }
        }
    }
}
