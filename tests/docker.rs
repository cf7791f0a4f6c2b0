//! The container files in `docker/`, checked without a Docker engine: the configuration file
//! documents every key and equals the defaults, the compose file wires the gateways to the broker,
//! the database and the configuration, the Dockerfile runs as a non-root user with the mappings
//! where its environment says, and the binary starts with the image's environment and command.
//!
//! No test sets an environment variable of its own process; the one that starts the binary gives
//! it a cleared environment.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde_json::Value;
use sociogate::config::Config;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docker_dir() -> PathBuf {
    repo().join("docker")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The configuration of `docker/sociogate.toml` as the defaults would have it.
fn expected_config() -> Config {
    let mut expected = Config::default();
    expected.http.listen = "0.0.0.0:8080".into();
    expected
}

/// `Config::default()` as JSON: section -> key -> default value.
fn default_keys() -> BTreeMap<String, serde_json::Map<String, Value>> {
    let value = serde_json::to_value(Config::default())
        .unwrap_or_else(|e| panic!("serialising the defaults: {e}"));
    let Value::Object(sections) = value else {
        panic!("Config does not serialise to an object: {value}");
    };
    sections
        .into_iter()
        .map(|(name, section)| match section {
            Value::Object(keys) => (name, keys),
            other => panic!("section {name} is not a table: {other}"),
        })
        .collect()
}

/// The port of an `address:port`.
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("{address:?} has no port"))
}

// ---- docker/sociogate.toml ----------------------------------------------------------------

#[test]
fn config_file_equals_the_defaults_except_the_listen_address() {
    let path = docker_dir().join("sociogate.toml");

    // The file alone over the defaults, independent of this process's environment.
    let from_file: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::file_exact(&path))
        .extract()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(from_file, expected_config());

    // The way `serve --config` loads it. Only the two URL shortcuts are tolerated in the
    // environment (the service tests read AMQP_URL); they override the file by design.
    let overriding: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("SOCIOGATE_"))
        .collect();
    let loaded = Config::load(Some(&path)).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (SOCIOGATE_* variables in this environment: {overriding:?})",
            path.display()
        )
    });
    let mut expected = expected_config();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        expected.store.database_url = url;
    }
    if let Ok(url) = std::env::var("AMQP_URL") {
        expected.amqp.url = url;
    }
    assert_eq!(
        loaded, expected,
        "SOCIOGATE_* variables in this environment: {overriding:?}"
    );
    assert!(loaded.problems().is_empty(), "{:?}", loaded.problems());
}

/// `[section]` -> the lines of that section.
fn toml_sections(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut sections: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            current = name.trim().to_owned();
            assert!(
                !sections.contains_key(&current),
                "section [{current}] appears twice"
            );
            sections.insert(current.clone(), Vec::new());
        } else {
            sections
                .entry(current.clone())
                .or_default()
                .push(trimmed.to_owned());
        }
    }
    sections
}

#[test]
fn config_file_shows_and_explains_every_key() {
    let text = read(&docker_dir().join("sociogate.toml"));
    let sections = toml_sections(&text);
    for (section, keys) in default_keys() {
        let lines = sections
            .get(&section)
            .unwrap_or_else(|| panic!("docker/sociogate.toml has no [{section}]"));
        for (key, default) in keys {
            // A key without a value (None) cannot be written in TOML: it is shown commented out.
            let pattern = if default.is_null() {
                format!("# {key} = ")
            } else {
                format!("{key} = ")
            };
            let at = lines
                .iter()
                .position(|l| l.starts_with(&pattern))
                .unwrap_or_else(|| panic!("[{section}] does not show `{pattern}...`"));
            assert!(
                at > 0 && lines[at - 1].starts_with('#'),
                "[{section}] {key} has no comment above it"
            );
            let variable = format!(
                "SOCIOGATE_{}__{}",
                section.to_uppercase(),
                key.to_uppercase()
            );
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with('#') && l.contains(&variable)),
                "[{section}] does not name {variable}, which overrides {key}"
            );
        }
    }
    for shortcut in ["DATABASE_URL", "AMQP_URL"] {
        assert!(text.contains(shortcut), "the file does not name {shortcut}");
    }
}

/// Every `SOCIOGATE_NAME` in `text` (a bare `SOCIOGATE_` before a placeholder is skipped).
fn sociogate_variables(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("SOCIOGATE_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if end > "SOCIOGATE_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end.max(1)..];
    }
    names
}

/// Environment variables with the prefix that are not configuration keys.
const NOT_CONFIG_KEYS: &[&str] = &[
    // Read by `Mappings::default_dir` (every subcommand) when pipeline.mappings is unset.
    "SOCIOGATE_MAPPINGS",
];

#[test]
fn every_sociogate_variable_named_in_docker_files_is_a_real_key() {
    let keys = default_keys();
    let mut checked = 0;
    for file in ["compose.yaml", "sociogate.toml", "Dockerfile", "README.md"] {
        let text = read(&docker_dir().join(file));
        for name in sociogate_variables(&text) {
            if NOT_CONFIG_KEYS.contains(&name.as_str()) {
                continue;
            }
            let path = name.trim_start_matches("SOCIOGATE_").to_lowercase();
            let (section, key) = path
                .split_once("__")
                .unwrap_or_else(|| panic!("{file}: {name} is not SOCIOGATE_<SECTION>__<KEY>"));
            let known = keys
                .get(section)
                .is_some_and(|section_keys| section_keys.contains_key(key));
            assert!(known, "{file}: {name} names no key ({section}.{key})");
            checked += 1;
        }
    }
    // The configuration file names one variable per key, so this cannot pass vacuously.
    let key_count: usize = keys.values().map(serde_json::Map::len).sum();
    assert!(checked >= key_count, "only {checked} variables found");
}

// ---- a small YAML reader -------------------------------------------------------------------

/// The part of YAML that the compose file may use: block mappings, block sequences of scalars,
/// plain and quoted scalars, JSON-style flow sequences, and comments. Anything else is refused,
/// so the file stays inside what this test can check.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Scalar(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The node at a path of keys, or a panic naming the path.
    fn at(&self, path: &[&str]) -> &Yaml {
        path.iter().fold(self, |node, key| {
            node.get(key)
                .unwrap_or_else(|| panic!("compose.yaml has no {}", path.join(".")))
        })
    }

    fn str(&self) -> &str {
        match self {
            Yaml::Scalar(s) => s,
            other => panic!("expected a scalar, found {other:?}"),
        }
    }

    fn keys(&self) -> Vec<&str> {
        match self {
            Yaml::Map(entries) => entries.iter().map(|(k, _)| k.as_str()).collect(),
            other => panic!("expected a mapping, found {other:?}"),
        }
    }

    fn list(&self) -> Vec<&str> {
        match self {
            Yaml::List(items) => items.iter().map(Yaml::str).collect(),
            other => panic!("expected a list, found {other:?}"),
        }
    }
}

struct Line {
    number: usize,
    indent: usize,
    text: String,
}

/// Removes a trailing comment and unquotes a scalar.
fn scalar(raw: &str, number: usize) -> Result<Yaml, String> {
    let raw = raw.trim();
    for quote in ['"', '\''] {
        if let Some(inner) = raw.strip_prefix(quote) {
            let close = inner
                .find(quote)
                .ok_or_else(|| format!("line {number}: unterminated quote"))?;
            let after = inner[close + 1..].trim();
            if !(after.is_empty() || after.starts_with('#')) {
                return Err(format!("line {number}: text after a quoted scalar"));
            }
            if inner[..close].contains('\\') {
                return Err(format!("line {number}: escapes are not supported"));
            }
            return Ok(Yaml::Scalar(inner[..close].to_owned()));
        }
    }
    let value = match raw.find(" #") {
        Some(at) => raw[..at].trim_end(),
        None => raw,
    };
    if value.starts_with('[') {
        let items: Vec<String> = serde_json::from_str(value)
            .map_err(|e| format!("line {number}: flow sequence {value}: {e}"))?;
        return Ok(Yaml::List(items.into_iter().map(Yaml::Scalar).collect()));
    }
    if value.starts_with(['{', '&', '*', '!', '|', '>', '%', '@', '`']) {
        return Err(format!("line {number}: unsupported YAML: {value}"));
    }
    if value.is_empty() {
        return Ok(Yaml::Null);
    }
    Ok(Yaml::Scalar(value.to_owned()))
}

/// `key: value` or `key:`; None when the line is not a mapping entry.
fn mapping_entry(text: &str) -> Option<(&str, &str)> {
    let (key, value) = if let Some(key) = text.strip_suffix(':') {
        (key, "")
    } else {
        let at = text.find(": ")?;
        (&text[..at], &text[at + 2..])
    };
    let plain_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    plain_key.then_some((key, value))
}

fn parse_block(lines: &[Line], i: &mut usize, indent: usize) -> Result<Yaml, String> {
    let is_item = |l: &Line| l.text == "-" || l.text.starts_with("- ");
    let node = if is_item(&lines[*i]) {
        let mut items = Vec::new();
        while *i < lines.len() && lines[*i].indent == indent && is_item(&lines[*i]) {
            let line = &lines[*i];
            let item = line.text[1..].trim();
            if item.is_empty() || mapping_entry(item).is_some() {
                return Err(format!("line {}: only scalar list items", line.number));
            }
            items.push(scalar(item, line.number)?);
            *i += 1;
        }
        Yaml::List(items)
    } else {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        while *i < lines.len() && lines[*i].indent == indent {
            let line = &lines[*i];
            let (key, value) = mapping_entry(&line.text)
                .ok_or_else(|| format!("line {}: not `key: value`: {}", line.number, line.text))?;
            if entries.iter().any(|(k, _)| k == key) {
                return Err(format!("line {}: duplicate key {key}", line.number));
            }
            let mut node = scalar(value, line.number)?;
            *i += 1;
            if node == Yaml::Null
                && let Some(next) = lines.get(*i)
                && (next.indent > indent || (next.indent == indent && is_item(next)))
            {
                node = parse_block(lines, i, next.indent)?;
            }
            entries.push((key.to_owned(), node));
        }
        Yaml::Map(entries)
    };
    match lines.get(*i) {
        Some(next) if next.indent > indent => {
            Err(format!("line {}: unexpected indentation", next.number))
        }
        _ => Ok(node),
    }
}

fn parse_yaml(text: &str) -> Result<Yaml, String> {
    let mut lines = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let content = raw.trim_start_matches(' ');
        if content.starts_with('\t') {
            return Err(format!("line {}: tab in indentation", n + 1));
        }
        let content = content.trim_end();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        if content == "---" || content == "..." {
            return Err(format!("line {}: one document only", n + 1));
        }
        lines.push(Line {
            number: n + 1,
            indent: raw.len() - raw.trim_start_matches(' ').len(),
            text: content.to_owned(),
        });
    }
    if lines.is_empty() {
        return Ok(Yaml::Null);
    }
    let mut i = 0;
    let root = parse_block(&lines, &mut i, lines[0].indent)?;
    match lines.get(i) {
        Some(line) => Err(format!("line {}: unexpected {}", line.number, line.text)),
        None => Ok(root),
    }
}

#[test]
fn the_yaml_reader_refuses_what_it_does_not_understand() {
    let good = "a:\n  b: 'x' # c\n  l:\n  - \"1:2\"\n  - y\n  f: [\"p\", \"q\"]\nz:\n";
    let parsed = parse_yaml(good).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(parsed.at(&["a", "b"]).str(), "x");
    assert_eq!(parsed.at(&["a", "l"]).list(), ["1:2", "y"]);
    assert_eq!(parsed.at(&["a", "f"]).list(), ["p", "q"]);
    assert_eq!(parsed.at(&["z"]), &Yaml::Null);
    for bad in [
        "a:\n  b: 1\n    c: 2\n",
        "a: 1\na: 2\n",
        "a:\n  - b: 1\n",
        "a: {b: 1}\n",
        "a:\n\tb: 1\n",
        "a: \"open\n",
        "a: 1\n  b: 2\n",
        "just text\n",
    ] {
        assert!(parse_yaml(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- docker/Dockerfile ---------------------------------------------------------------------

struct Instruction {
    keyword: String,
    args: String,
}

/// The instructions of each stage (continuation lines joined, comments dropped).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read(&docker_dir().join("Dockerfile"));
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && pending.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let full = std::mem::take(&mut pending);
        let (keyword, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let instruction = Instruction {
            keyword: keyword.to_uppercase(),
            args: args.trim().to_owned(),
        };
        if instruction.keyword == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .unwrap_or_else(|| panic!("the Dockerfile does not start with FROM"))
            .push(instruction);
    }
    assert!(pending.is_empty(), "the Dockerfile ends in a continuation");
    stages
}

fn all<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage
        .iter()
        .filter(|i| i.keyword == keyword)
        .map(|i| i.args.as_str())
        .collect()
}

fn last<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    all(stage, keyword)
        .last()
        .copied()
        .unwrap_or_else(|| panic!("the runtime stage has no {keyword}"))
}

fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("{args} is not exec form: {e}"))
}

/// `ENV` of a stage (`KEY=value` form).
fn env_of(stage: &[Instruction]) -> BTreeMap<String, String> {
    all(stage, "ENV")
        .into_iter()
        .flat_map(str::split_whitespace)
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("ENV {pair}: use KEY=value"));
            (k.to_owned(), v.trim_matches('"').to_owned())
        })
        .collect()
}

/// `COPY src dst` from the build context (not `--from`) of a stage: destination -> source.
fn context_copies(stage: &[Instruction]) -> BTreeMap<String, String> {
    all(stage, "COPY")
        .into_iter()
        .filter(|args| !args.starts_with("--from"))
        .filter_map(|args| {
            let parts: Vec<&str> = args.split_whitespace().collect();
            match parts.as_slice() {
                [src, dst] => Some(((*dst).to_owned(), (*src).to_owned())),
                _ => None,
            }
        })
        .collect()
}

/// The path after `--config` in the image's default command.
fn cmd_config_path(runtime: &[Instruction]) -> String {
    let cmd = exec_form(last(runtime, "CMD"));
    let at = cmd
        .iter()
        .position(|a| a == "--config")
        .unwrap_or_else(|| panic!("CMD {cmd:?} has no --config"));
    cmd.get(at + 1)
        .cloned()
        .unwrap_or_else(|| panic!("CMD {cmd:?} ends after --config"))
}

#[test]
fn dockerfile_builds_with_the_crate_toolchain_and_runs_unprivileged() {
    let stages = dockerfile_stages();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (&stages[0], &stages[1]);

    let cargo_toml = read(&repo().join("Cargo.toml"));
    let rust_version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .unwrap_or_else(|| panic!("Cargo.toml has no rust-version"));
    assert_eq!(
        last(build, "FROM"),
        format!("rust:{rust_version}-slim-bookworm AS build"),
        "the build image must be the crate's rust-version"
    );
    assert!(
        all(build, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "the build stage must build with --release --locked"
    );
    for (_, src) in context_copies(build) {
        assert!(repo().join(&src).exists(), "COPY {src}: not in the context");
    }
    assert_eq!(last(runtime, "FROM"), "debian:bookworm-slim AS runtime");

    // Not root, and the user is the one created with a fixed uid.
    let user = last(runtime, "USER");
    let uid = user.split(':').next().unwrap_or(user);
    assert!(uid != "root" && uid != "0", "USER {user} is root");
    let useradd = all(runtime, "RUN")
        .into_iter()
        .find(|r| r.contains("useradd"))
        .unwrap_or_else(|| panic!("the runtime stage creates no user"));
    assert!(
        useradd.contains(&format!("--uid {uid} ")) || useradd.contains(&format!(" {uid} ")),
        "USER {user} is not the uid given to useradd: {useradd}"
    );
    assert!(
        useradd.contains("sociogate"),
        "the user is not sociogate: {useradd}"
    );
    let workdir = last(runtime, "WORKDIR");
    assert!(
        all(runtime, "RUN")
            .iter()
            .any(|r| r.contains(workdir) && (r.contains("-o sociogate") || r.contains("chown"))),
        "WORKDIR {workdir} is not given to the user"
    );

    // The binary is on PATH and is the entry point; the default command serves.
    assert!(
        all(runtime, "COPY")
            .iter()
            .any(|c| c.starts_with("--from=build") && c.ends_with(" /usr/local/bin/sociogate")),
        "the binary is not copied to /usr/local/bin/sociogate"
    );
    assert_eq!(exec_form(last(runtime, "ENTRYPOINT")), ["sociogate"]);
    let cmd = exec_form(last(runtime, "CMD"));
    assert_eq!(cmd.first().map(String::as_str), Some("serve"));
    assert!(cmd.iter().any(|a| a == "--log-json"), "CMD {cmd:?}");

    // The mappings are copied to where SOCIOGATE_MAPPINGS points.
    let env = env_of(runtime);
    let mappings = env
        .get("SOCIOGATE_MAPPINGS")
        .unwrap_or_else(|| panic!("the runtime stage sets no SOCIOGATE_MAPPINGS"));
    assert_eq!(
        context_copies(runtime).get(mappings).map(String::as_str),
        Some("mappings"),
        "mappings/ is not copied to SOCIOGATE_MAPPINGS ({mappings})"
    );
    assert!(repo().join("mappings/common").is_dir());

    // The exposed port is the one the configuration listens on.
    let listen = expected_config().http.listen;
    assert_eq!(last(runtime, "EXPOSE"), port_of(&listen).to_string());
}

// ---- docker/compose.yaml -------------------------------------------------------------------

fn compose() -> Yaml {
    let path = docker_dir().join("compose.yaml");
    parse_yaml(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `environment:` as a map, in either compose form (mapping or `KEY=value` list).
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match service.get("environment") {
        Some(Yaml::Map(entries)) => entries
            .iter()
            .map(|(k, v)| (k.clone(), v.str().to_owned()))
            .collect(),
        Some(Yaml::List(items)) => items
            .iter()
            .map(|i| {
                let (k, v) = i.str().split_once('=').unwrap_or((i.str(), ""));
                (k.to_owned(), v.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `scheme://user:password@host:port/path` split up.
struct Url {
    scheme: String,
    user: String,
    password: String,
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Url {
    fn bad<T>(url: &str) -> T {
        panic!("{url} is not scheme://user:password@host:port/path")
    }
    let (scheme, rest) = url.split_once("://").unwrap_or_else(|| bad(url));
    let (credentials, rest) = rest.split_once('@').unwrap_or_else(|| bad(url));
    let (user, password) = credentials.split_once(':').unwrap_or_else(|| bad(url));
    let (authority, path) = rest.split_once('/').unwrap_or_else(|| bad(url));
    let (host, port) = authority.split_once(':').unwrap_or_else(|| bad(url));
    Url {
        scheme: scheme.to_owned(),
        user: user.to_owned(),
        password: password.to_owned(),
        host: host.to_owned(),
        port: port.parse().unwrap_or_else(|_| bad(url)),
        path: path.to_owned(),
    }
}

fn depends_on_healthy(service: &Yaml, name: &str, dependency: &str) {
    let condition = service
        .get("depends_on")
        .and_then(|d| d.get(dependency))
        .and_then(|d| d.get("condition"))
        .map(Yaml::str);
    assert_eq!(
        condition,
        Some("service_healthy"),
        "{name} must wait until {dependency} is healthy"
    );
}

#[test]
fn compose_runs_broker_database_and_two_gateways() {
    let compose = compose();
    let services = compose.at(&["services"]);
    let names: BTreeSet<&str> = services.keys().into_iter().collect();
    assert_eq!(
        names,
        BTreeSet::from(["gateway-1", "gateway-2", "postgres", "rabbitmq"])
    );

    let rabbitmq = services.at(&["rabbitmq"]);
    assert_eq!(rabbitmq.at(&["image"]).str(), "rabbitmq:3.13-management");
    assert_eq!(rabbitmq.at(&["ports"]).list(), ["5672:5672", "15672:15672"]);
    let probe = rabbitmq.at(&["healthcheck", "test"]).list().join(" ");
    assert!(probe.contains("rabbitmq-diagnostics -q ping"), "{probe}");
    let broker_env = environment(rabbitmq);

    let postgres = services.at(&["postgres"]);
    assert_eq!(postgres.at(&["image"]).str(), "postgres:16");
    let probe = postgres.at(&["healthcheck", "test"]).list().join(" ");
    assert!(probe.contains("pg_isready"), "{probe}");
    let db_env = environment(postgres);
    let db_name = db_env
        .get("POSTGRES_DB")
        .unwrap_or_else(|| panic!("postgres has no POSTGRES_DB"));
    assert_eq!(db_name, "sociogate");
    let db_password = db_env
        .get("POSTGRES_PASSWORD")
        .unwrap_or_else(|| panic!("postgres has no POSTGRES_PASSWORD"));
    let volume = postgres.at(&["volumes"]).list();
    let named: Vec<&str> = volume
        .iter()
        .filter_map(|v| v.split_once(':').map(|(name, _)| name))
        .filter(|name| !name.starts_with(['.', '/']))
        .collect();
    assert!(
        !named.is_empty(),
        "postgres keeps its data in no named volume"
    );
    for name in named {
        assert!(
            compose.at(&["volumes"]).keys().contains(&name),
            "volume {name} is not declared"
        );
    }

    let stages = dockerfile_stages();
    let runtime = stages.last().map_or(&[][..], Vec::as_slice);
    let config_target = cmd_config_path(runtime);
    let container_port = port_of(&expected_config().http.listen);
    let mut host_ports = BTreeSet::new();
    for name in ["gateway-1", "gateway-2"] {
        let gateway = services.at(&[name]);
        let context = gateway.at(&["build", "context"]).str();
        let dockerfile = gateway.at(&["build", "dockerfile"]).str();
        assert_eq!(
            docker_dir()
                .join(context)
                .join(dockerfile)
                .canonicalize()
                .ok(),
            docker_dir().join("Dockerfile").canonicalize().ok(),
            "{name} is not built from docker/Dockerfile"
        );
        assert_eq!(
            docker_dir().join(context).canonicalize().ok(),
            repo().canonicalize().ok(),
            "{name}: the build context must be the repository root"
        );
        assert_eq!(gateway.at(&["restart"]).str(), "unless-stopped");
        depends_on_healthy(gateway, name, "rabbitmq");
        depends_on_healthy(gateway, name, "postgres");

        let env = environment(gateway);
        let database = parse_url(
            env.get("DATABASE_URL")
                .unwrap_or_else(|| panic!("{name} has no DATABASE_URL")),
        );
        assert_eq!(database.scheme, "postgres", "{name}");
        assert_eq!(database.user, "postgres", "{name}: the image's superuser");
        assert_eq!(&database.password, db_password, "{name}");
        assert_eq!((database.host.as_str(), database.port), ("postgres", 5432));
        assert_eq!(&database.path, db_name, "{name}");

        let broker = parse_url(
            env.get("AMQP_URL")
                .unwrap_or_else(|| panic!("{name} has no AMQP_URL")),
        );
        assert_eq!(broker.scheme, "amqp", "{name}");
        assert_ne!(
            broker.user, "guest",
            "{name}: guest may only connect from localhost"
        );
        assert_eq!(
            Some(&broker.user),
            broker_env.get("RABBITMQ_DEFAULT_USER"),
            "{name}"
        );
        assert_eq!(
            Some(&broker.password),
            broker_env.get("RABBITMQ_DEFAULT_PASS"),
            "{name}"
        );
        assert_eq!((broker.host.as_str(), broker.port), ("rabbitmq", 5672));
        assert_eq!(broker.path, "%2f", "{name}: the default vhost");

        // The configuration is mounted read-only where the image's command reads it.
        let mount = format!("./sociogate.toml:{config_target}:ro");
        assert!(
            gateway.at(&["volumes"]).list().contains(&mount.as_str()),
            "{name} does not mount {mount}"
        );
        assert!(docker_dir().join("sociogate.toml").is_file());

        let ports = gateway.at(&["ports"]).list();
        let [mapping] = ports.as_slice() else {
            panic!("{name} must publish one port: {ports:?}");
        };
        let (host, container) = mapping
            .split_once(':')
            .unwrap_or_else(|| panic!("{name}: port {mapping}"));
        assert_eq!(container, container_port.to_string(), "{name}");
        assert!(
            host_ports.insert(host.to_owned()),
            "{name}: host port {host} taken"
        );
    }
    assert_eq!(
        host_ports,
        BTreeSet::from(["8081".to_owned(), "8082".to_owned()])
    );
}

// ---- the binary with the image's environment -----------------------------------------------

/// Answers `GET path` on `addr` with the status code, or None when nothing answers.
fn http_status(addr: &str, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_image_command_starts_with_the_image_environment() {
    let stages = dockerfile_stages();
    let runtime = stages.last().map_or(&[][..], Vec::as_slice);
    // The image's paths, mapped back to the repository: what COPY put there, and the mount.
    let copies = context_copies(runtime);
    let config_target = cmd_config_path(runtime);
    let host_path = |value: &str| -> String {
        if let Some(src) = copies.get(value) {
            return repo().join(src).display().to_string();
        }
        if value == config_target {
            return docker_dir().join("sociogate.toml").display().to_string();
        }
        value.to_owned()
    };
    let mut args: Vec<String> = exec_form(last(runtime, "CMD"));
    for arg in &mut args {
        *arg = host_path(arg);
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"));
    let addr = format!("127.0.0.1:{port}");
    // The working directory stands in for WORKDIR: the default SQLite file goes there.
    let workdir = std::env::temp_dir().join(format!(
        "sociogate-docker-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&workdir).unwrap_or_else(|e| panic!("{}: {e}", workdir.display()));

    let mut command = Command::new(env!("CARGO_BIN_EXE_sociogate"));
    command
        .args(&args)
        .env_clear()
        .current_dir(&workdir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env_of(runtime) {
        command.env(key, host_path(&value));
    }
    // What compose adds, made local: a free port, and no broker (HTTP only).
    command
        .env("SOCIOGATE_HTTP__LISTEN", &addr)
        .env("AMQP_URL", "");
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting sociogate: {e}"));
    let stderr = child.stderr.take();
    let logs = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = None;
    let mut exited = None;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            break;
        }
        if let Some(status) = http_status(&addr, "/ready") {
            ready = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let health = http_status(&addr, "/health");
    let _ = child.kill();
    let _ = child.wait();
    let logs = logs.join().unwrap_or_default();
    let _ = std::fs::remove_dir_all(&workdir);

    assert!(
        exited.is_none() && ready == Some(200) && health == Some(200),
        "`sociogate {}` with the image's environment: exited {exited:?}, /ready {ready:?}, \
         /health {health:?}; log:\n{logs}",
        args.join(" ")
    );
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<Value>(line).is_ok(),
            "--log-json printed a line that is not JSON: {line}"
        );
    }
}
