//! Fuzzing the loaders (issue 14, item 5): inventories, roles and templates mutated from
//! valid sites — flipped bytes, truncations, duplicated spans and lines, deep nesting,
//! long lines, stray YAML and handlebars tokens — are either accepted or refused with
//! diagnostics, never with a panic, and each one quickly.
//!
//! Every case writes a whole site to a temporary folder and goes through the library's
//! own loading: `Inventory::load`, every role with `Site::load_role`, its templates with
//! `Renderer::new`, then `plan::prepare`, which renders every task and template for every
//! host — all that `placard plan` does before contacting a host.
//!
//! The run is reproducible: the seed is fixed (PROPTEST_RNG_SEED chooses another) and
//! printed, PROPTEST_CASES sets the number of cases (256 by default). A stack overflow
//! aborts the process instead of failing the case: the site that did it is then left in
//! `$CARGO_TARGET_TMPDIR/fuzz-last-case`, rewritten before each case.
//!
//! ```text
//! PROPTEST_CASES=10000 PROPTEST_RNG_SEED=7 cargo test --test fuzz_loaders -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use placard::error::InvalidInput;
use placard::inventory::Inventory;
use placard::plan::{self, Job};
use placard::role::Site;
use placard::template::{Renderer, SecretSource};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// The seed when PROPTEST_RNG_SEED is not set: issue 14, item 5.
const DEFAULT_SEED: u64 = 1405;

/// The longest one case may take, loading and planning a site in a debug build on a busy
/// machine. Refusing a 100,000-deep list once took 45 s.
const CASE_TIME_LIMIT: Duration = Duration::from_secs(5);

/// The small valid site of tests/invalid_input.rs, with the loops and checks that the
/// loaders also parse.
const ROLE: &str = "\
description: A test site's web page.
variables:
  web_greeting: {description: What the page says., type: string}
  web_listen_port: {description: The port it listens on., default: 80, type: port}
  web_site_domain: {description: The site's domain., default: club.example, type: domain}
  web_members: {description: Who may edit it., default: [ann, bob], type: list, unique: true}
tasks:
  - name: Write the page.
    file: {path: /etc/web-page, template: web/page.hbs, mode: \"0644\"}
    notify: reload web
  - name: Write {{item}}'s page.
    loop: web_members
    when: '{{#if web_greeting}}true{{else}}false{{/if}}'
    file: {path: '/etc/web-{{item}}', content: '{{web_greeting}}, {{item}}'}
handlers:
  - name: reload web
    service: {name: nginx, state: reloaded}
checks:
  - name: The page answers.
    port: {port: 80, expect: HTTP}
";

const TEMPLATE: &str = "<h1>{{web_greeting}}</h1>\n{{#each web_members}}\n  <p>{{this}} on {{../web_site_domain}}</p>\n{{/each}}\n{{#if (eq web_listen_port 80)}}plain{{else}}other{{/if}}\n";

const INVENTORY: &str = "\
vars: {web_site_domain: club.example}
groups:
  www: {hosts: [web], vars: {web_listen_port: 8080}}
hosts:
  web:
    address: 127.0.0.1
    port: 22
    roles: [web]
    vars: {web_greeting: hi, web_members: [ann, bob]}
";

/// A site as files: path in the site → content.
type Files = BTreeMap<String, Vec<u8>>;

fn small_site() -> Files {
    [
        ("inventory.yml", INVENTORY),
        ("roles/web.yml", ROLE),
        ("templates/web/page.hbs", TEMPLATE),
    ]
    .into_iter()
    .map(|(path, text)| (path.to_string(), text.as_bytes().to_vec()))
    .collect()
}

/// The club example of inventory/ with the repository's roles and templates.
fn club_site() -> Files {
    let repository = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Files::new();
    files.insert(
        "inventory.yml".to_string(),
        fs::read(repository.join("inventory/club.yml")).expect("inventory/club.yml"),
    );
    let mut pending = vec![repository.join("roles"), repository.join("templates")];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("a folder of the repository") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(repository)
                    .expect("inside the repository");
                files.insert(
                    relative.to_string_lossy().into_owned(),
                    fs::read(&path).expect("a site file"),
                );
            }
        }
    }
    files
}

/// Fragments that mean something to YAML or to handlebars, to insert anywhere.
const TOKENS: &[&str] = &[
    ": ",
    "- ",
    "\n",
    "  ",
    "\t",
    "[",
    "]",
    "{",
    "}",
    ",",
    "# ",
    "&a ",
    "*a",
    "<<: *a",
    "!!str ",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "---\n",
    "...\n",
    "? ",
    "~",
    "null",
    "0",
    "-1",
    "65536",
    "99999999999999999999",
    "1e999",
    "port: 0\n",
    "roles: [../web]\n",
    "\u{feff}",
    "é",
    "\r\n",
    "%YAML 1.2\n",
    "{{",
    "}}",
    "{{#if web_greeting}}",
    "{{/if}}",
    "{{else}}",
    "{{^}}",
    "{{#each web_members}}",
    "{{/each}}",
    "{{> partial}}",
    "{{#> layout}}",
    "{{!-- ",
    " --}}",
    "{{{{raw}}}}",
    "{{{{/raw}}}}",
    "(",
    ")",
    "{{lookup this 'x'}}",
    "{{secret \"x\"}}",
    "{{host_file \"/etc/x\"}}",
    "\\{{",
    "{{~",
    "~}}",
    "@root",
    "../",
    "{{item}}",
    "{{undefined}}",
];

/// Openings and closings that nest; a missing closing leaves the nesting unbalanced.
const NESTINGS: &[(&str, &str)] = &[
    ("[", "]"),
    ("{a: ", "}"),
    ("- ", ""),
    ("{{#if web_greeting}}", "{{/if}}"),
    ("{{#each web_members}}", "{{/each}}"),
    ("{{len (not ", ")}}"),
    ("{{#*inline \"p\"}}", "{{/inline}}"),
    ("{{eq [", "] 1}}"),
];

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: Index,
        byte: u8,
    },
    Truncate {
        at: Index,
    },
    Duplicate {
        at: Index,
        length: usize,
        times: usize,
    },
    DuplicateLine {
        at: Index,
        times: usize,
    },
    Insert {
        at: Index,
        token: &'static str,
    },
    Nest {
        at: Index,
        nesting: (&'static str, &'static str),
        depth: usize,
        closed: bool,
    },
    LongLine {
        at: Index,
        byte: u8,
        length: usize,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Mostly printable bytes, so that most mutants still reach the parsers instead of
    // failing as invalid UTF-8.
    let byte = prop_oneof![9 => 0x20u8..0x7f, 1 => any::<u8>()];
    let depth = prop_oneof![8 => 1usize..200, 2 => 200usize..5_000, 1 => Just(100_000usize)];
    // Now and then thousands of copies: one mistake repeated must stay linear to report.
    let times = prop_oneof![19 => 1usize..40, 1 => 1_000usize..20_000];
    prop_oneof![
        4 => (any::<Index>(), byte.clone()).prop_map(|(at, byte)| Mutation::Flip { at, byte }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
        2 => (any::<Index>(), 1usize..200, times.clone())
            .prop_map(|(at, length, times)| Mutation::Duplicate { at, length, times }),
        2 => (any::<Index>(), times).prop_map(|(at, times)| Mutation::DuplicateLine { at, times }),
        4 => (any::<Index>(), prop::sample::select(TOKENS))
            .prop_map(|(at, token)| Mutation::Insert { at, token }),
        2 => (any::<Index>(), prop::sample::select(NESTINGS), depth, any::<bool>())
            .prop_map(|(at, nesting, depth, closed)| Mutation::Nest { at, nesting, depth, closed }),
        1 => (any::<Index>(), byte, 1usize..100_000)
            .prop_map(|(at, byte, length)| Mutation::LongLine { at, byte, length }),
    ]
}

fn apply(mutation: &Mutation, text: &mut Vec<u8>) {
    // An index into the text, or the end of it for an insertion.
    let point = |at: &Index, text: &Vec<u8>| at.index(text.len() + 1);
    match mutation {
        Mutation::Flip { at, byte } => {
            if !text.is_empty() {
                let at = at.index(text.len());
                text[at] = *byte;
            }
        }
        Mutation::Truncate { at } => text.truncate(point(at, text)),
        Mutation::Duplicate { at, length, times } => {
            let start = point(at, text);
            let end = (start + length).min(text.len());
            let span = text[start..end].to_vec();
            let copies: Vec<u8> = span.repeat(*times);
            text.splice(end..end, copies);
        }
        Mutation::DuplicateLine { at, times } => {
            let at = point(at, text);
            let start = text[..at]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            let end = text[at..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(text.len(), |i| at + i + 1);
            let mut line = text[start..end].to_vec();
            if !line.ends_with(b"\n") {
                line.insert(0, b'\n');
            }
            text.splice(end..end, line.repeat(*times));
        }
        Mutation::Insert { at, token } => {
            let at = point(at, text);
            text.splice(at..at, token.bytes());
        }
        Mutation::Nest {
            at,
            nesting: (open, close),
            depth,
            closed,
        } => {
            let at = point(at, text);
            let mut inserted = open.repeat(*depth);
            inserted.push('x');
            if *closed {
                inserted.push_str(&close.repeat(*depth));
            }
            text.splice(at..at, inserted.bytes());
        }
        Mutation::LongLine { at, byte, length } => {
            let at = point(at, text);
            text.splice(at..at, std::iter::repeat_n(*byte, *length));
        }
    }
}

fn write_site(root: &Path, files: &Files) -> std::io::Result<()> {
    for (name, content) in files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
    }
    Ok(())
}

/// Everything `placard plan` checks before contacting a host: Ok with the number of
/// bundles, or every problem found.
fn load_site(root: &Path) -> Result<usize, InvalidInput> {
    let inventory = Inventory::load(&root.join("inventory.yml"))?;
    let site = Site::new(root);
    let mut problems = InvalidInput::default();
    // Every role, used or not, and its templates, as `placard roles list` loads them.
    for name in site.role_names().unwrap_or_default() {
        match site.load_role(&name) {
            // A template that does not parse is reported by `prepare` with its position.
            Ok(role) => drop(Renderer::new(
                role.template_sources(),
                SecretSource::Placeholder,
            )),
            Err(invalid) => problems.diagnostics.extend(invalid.diagnostics),
        }
    }
    let hosts = inventory.select(&[])?;
    let job = Job::Apply {
        check: true,
        diff: true,
    };
    let prepared = plan::prepare(&inventory, &site, &hosts, &job, "fuzz@example")?;
    problems.into_result()?;
    Ok(prepared.bundles.len())
}

/// One case: the site with its mutations, loaded; a failure says why.
fn check_case(
    base: &Files,
    mutations: &[(Index, Mutation)],
    last_case: &Path,
    refused: &AtomicUsize,
) -> Result<(), TestCaseError> {
    let mut files = base.clone();
    let names: Vec<String> = files.keys().cloned().collect();
    for (file, mutation) in mutations {
        let name = file.get(&names);
        if let Some(text) = files.get_mut(name) {
            apply(mutation, text);
        }
    }
    // Kept outside the temporary folder: an abort (stack overflow) skips destructors,
    // and this is then the site that caused it.
    let _ = fs::remove_dir_all(last_case);
    let _ = write_site(last_case, &files);

    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    write_site(dir.path(), &files).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let started = Instant::now();
    let result = load_site(dir.path());
    let elapsed = started.elapsed();
    if let Err(invalid) = &result {
        refused.fetch_add(1, Ordering::Relaxed);
        prop_assert!(
            !invalid.diagnostics.is_empty(),
            "an error without diagnostics"
        );
        let rendered = invalid.to_string();
        prop_assert!(rendered.contains("no host was contacted"), "{rendered}");
        for diagnostic in &invalid.diagnostics {
            prop_assert!(
                diagnostic.file.starts_with(dir.path()),
                "a diagnostic about a file outside the site: {}",
                diagnostic.file.display()
            );
        }
    }
    prop_assert!(
        elapsed < CASE_TIME_LIMIT,
        "loading took {elapsed:?}: {:?}",
        result.map_err(|e| e.to_string().chars().take(2_000).collect::<String>())
    );
    Ok(())
}

#[test]
fn mutated_sites_load_or_are_refused_never_panic() {
    let default = Config::default();
    let seed = match default.rng_seed {
        RngSeed::Fixed(seed) => seed,
        RngSeed::Random => DEFAULT_SEED,
    };
    let config = Config {
        rng_seed: RngSeed::Fixed(seed),
        // The corpus of found cases is tests/invalid/cases.yml, not a regressions file.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..default
    };
    let cases = config.cases;
    println!("fuzz_loaders: seed {seed} (PROPTEST_RNG_SEED), {cases} cases (PROPTEST_CASES)");
    let last_case: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-last-case");
    let corpora = [small_site(), club_site()];
    let mut runner = TestRunner::new(config);
    let started = Instant::now();
    let strategy = (
        0..corpora.len(),
        prop::collection::vec((any::<Index>(), mutation()), 1..5),
    );
    // Counts every run, shrinking included: a rough measure that mutants reach past the
    // first parser, which a corpus refused every time would not.
    let (runs, refused) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let result = runner.run(&strategy, |(corpus, mutations)| {
        runs.fetch_add(1, Ordering::Relaxed);
        check_case(&corpora[corpus], &mutations, &last_case, &refused)
    });
    println!(
        "fuzz_loaders: {} runs in {:.1} s, {} refused with diagnostics, the others accepted",
        runs.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        refused.load(Ordering::Relaxed),
    );
    if let Err(failure) = result {
        panic!("seed {seed}: {failure}");
    }
    let _ = fs::remove_dir_all(&last_case);
}

#[test]
fn the_unmutated_corpora_load() {
    // The control case: the corpora are valid, so a refusal above comes from a mutation.
    for files in [small_site(), club_site()] {
        let dir = tempfile::tempdir().expect("a temporary folder");
        write_site(dir.path(), &files).expect("write the site");
        let loaded = load_site(dir.path());
        assert!(
            matches!(loaded, Ok(hosts) if hosts > 0),
            "{:?}",
            loaded.map_err(|e| e.to_string())
        );
    }
}
