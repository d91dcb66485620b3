//! `docker-compose.yml` is held to the rest of the repository without Docker (there is none on
//! the CI machine): every service has an image or a build target that is a stage of the
//! Dockerfile; `depends_on` names services, and a `service_healthy` dependency has a health
//! check (its own or its image's HEALTHCHECK); one-shot jobs are awaited with
//! `service_completed_successfully` (so `docker compose up --wait` succeeds); host paths in
//! volumes exist and named volumes are declared; no host port is published twice; our services
//! take only the variables of README's Configuration table (plus `KAFKA_*` pass-through and the
//! standard `OTEL_*`), with the required ones present; every host in a URL or bootstrap list is
//! a compose service listening on that port; and the Prometheus targets, the Grafana datasource
//! and the collector's exporter name compose services on ports they listen on.
//!
//! The file also validates against the Compose Specification's JSON Schema (the one shipped in
//! Debian's docker-compose package, with `check-jsonschema`; both installed into
//! `.services/tools` by `./scripts/services up`).
//!
//! The same checks run on deliberately broken copies (mutated in memory), which must fail.

use gregor_integration_tests::repo::{read, root};
use std::collections::{BTreeMap, BTreeSet};

use serde_norway::{Mapping, Value};

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

/// The binaries our images run, and the variables each one needs set.
const OUR_BINARIES: &[(&str, &[&str])] = &[
    ("gregor-relay", &["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"]),
    ("gregor", &["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"]),
    ("order-service", &["DATABASE_URL", "SCHEMA_REGISTRY_URL"]),
    (
        "shipping-service",
        &[
            "DATABASE_URL",
            "KAFKA_BOOTSTRAP_SERVERS",
            "GREGOR_CONSUMER_GROUP",
            "SCHEMA_REGISTRY_URL",
        ],
    ),
];

/// Variables of README's Configuration table: exact names, and prefixes for rows like
/// `OTEL_BSP_*`.
#[derive(Debug)]
struct Documented {
    names: BTreeSet<String>,
    prefixes: Vec<String>,
}

impl Documented {
    fn from_readme(readme: &str) -> Self {
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .expect("README has a Configuration section");
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut names = BTreeSet::new();
        let mut prefixes = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let first_cell = line.split('|').nth(1).unwrap_or("");
            for (i, token) in first_cell.split('`').enumerate() {
                if i % 2 == 0 {
                    continue; // outside backticks
                }
                if let Some(prefix) = token.strip_suffix('*') {
                    prefixes.push(prefix.to_owned());
                } else if token
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                    && !token.is_empty()
                {
                    names.insert(token.to_owned());
                }
            }
        }
        assert!(
            names.contains("DATABASE_URL") && names.contains("GREGOR_RELAY_HTTP_ADDR"),
            "the Configuration table was not found where expected: {names:?}"
        );
        Self { names, prefixes }
    }

    fn allows(&self, var: &str) -> bool {
        self.names.contains(var)
            || self.prefixes.iter().any(|p| var.starts_with(p.as_str()))
            // `KAFKA_<PROPERTY>` passes through to librdkafka; OTEL_* are the SDK's standard ones.
            || var.starts_with("KAFKA_")
            || var.starts_with("OTEL_")
    }
}

/// What the Dockerfile offers: its stages, which of them have a HEALTHCHECK, their ENTRYPOINT.
#[derive(Debug, Default)]
struct Dockerfile {
    stages: BTreeSet<String>,
    healthchecked: BTreeSet<String>,
    entrypoints: BTreeMap<String, Vec<String>>,
}

impl Dockerfile {
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        let mut current: Option<String> = None;
        let joined = text.replace("\\\n", " ");
        for line in joined.lines().map(str::trim) {
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let instruction = words.next().unwrap_or("").to_ascii_uppercase();
            let rest: Vec<&str> = words.collect();
            match instruction.as_str() {
                "FROM" => {
                    let name = match rest.as_slice() {
                        [_, kw, name] if kw.eq_ignore_ascii_case("as") => (*name).to_owned(),
                        _ => format!("#{}", out.stages.len()),
                    };
                    // A stage inherits its base stage's HEALTHCHECK and ENTRYPOINT.
                    if let Some(base) = rest.first() {
                        if out.healthchecked.contains(*base) {
                            out.healthchecked.insert(name.clone());
                        }
                        if let Some(ep) = out.entrypoints.get(*base).cloned() {
                            out.entrypoints.insert(name.clone(), ep);
                        }
                    }
                    out.stages.insert(name.clone());
                    current = Some(name);
                }
                "HEALTHCHECK" => {
                    if let Some(stage) = &current {
                        if rest.first().is_some_and(|w| w.eq_ignore_ascii_case("none")) {
                            out.healthchecked.remove(stage);
                        } else {
                            out.healthchecked.insert(stage.clone());
                        }
                    }
                }
                "ENTRYPOINT" => {
                    if let Some(stage) = &current {
                        let raw = rest.join(" ");
                        let words: Vec<String> = serde_json::from_str(&raw)
                            .unwrap_or_else(|_| rest.iter().map(|w| (*w).to_owned()).collect());
                        out.entrypoints.insert(stage.clone(), words);
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn as_map<'a>(v: &'a Value, what: &str) -> &'a Mapping {
    v.as_mapping()
        .unwrap_or_else(|| panic!("{what} is not a mapping"))
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// A service's environment as name → value (mapping or `KEY=value` list syntax).
fn environment(service: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    match service.get("environment") {
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                env.insert(str_of(k), str_of(v));
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let item = str_of(item);
                let (k, v) = item.split_once('=').unwrap_or((&item, ""));
                env.insert(k.to_owned(), v.to_owned());
            }
        }
        _ => {}
    }
    env
}

/// `depends_on` as name → condition (list syntax means `service_started`).
fn depends_on(service: &Value) -> Vec<(String, String)> {
    match service.get("depends_on") {
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| (str_of(i), "service_started".to_owned()))
            .collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| {
                let condition = v
                    .get("condition")
                    .map_or("service_started".to_owned(), str_of);
                (str_of(k), condition)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A list-or-string field (`command`, `entrypoint`) as words.
fn words(v: Option<&Value>) -> Option<Vec<String>> {
    match v? {
        Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
        Value::Sequence(items) => Some(items.iter().map(str_of).collect()),
        _ => None,
    }
}

/// Host and port of `host:port`, `scheme://[user[:pw]@]host:port[/…]`; `None` without a port.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The whole stack and the files it points at, checked together.
#[derive(Debug)]
struct Stack {
    compose: Value,
    prometheus: Value,
    grafana_datasources: Value,
    dockerfile: Dockerfile,
    documented: Documented,
}

impl Stack {
    fn load() -> Self {
        Self {
            compose: yaml("docker-compose.yml"),
            prometheus: yaml("deploy/prometheus/prometheus.yml"),
            grafana_datasources: yaml("deploy/grafana/provisioning/datasources/prometheus.yml"),
            dockerfile: Dockerfile::parse(&read("Dockerfile")),
            documented: Documented::from_readme(&read("README.md")),
        }
    }

    fn services(&self) -> &Mapping {
        as_map(
            self.compose.get("services").expect("compose has services"),
            "services",
        )
    }

    fn service_mut(&mut self, name: &str) -> &mut Value {
        self.compose
            .get_mut("services")
            .and_then(|s| s.get_mut(name))
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// The Dockerfile target a service is built from (only builds of this repository).
    fn build_target(service: &Value) -> Option<String> {
        let build = service.get("build")?;
        match build {
            Value::String(_) => Some(String::new()),
            _ => Some(build.get("target").map_or(String::new(), str_of)),
        }
    }

    /// Everything wrong with the stack; empty when it is right.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let services = self.services();
        let names: BTreeSet<String> = services.keys().map(str_of).collect();

        // Images this repository builds, by tag, with the target they come from.
        let mut built_images = BTreeMap::new();
        for (name, service) in services {
            if let (Some(image), Some(target)) = (service.get("image"), Self::build_target(service))
            {
                built_images.insert(str_of(image), (str_of(name), target));
            }
        }

        let mut listening: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
        for (name, service) in services {
            let ours = !self.binaries(service, &built_images).is_empty();
            listening.insert(str_of(name), self.listening_ports(service, ours));
        }

        let mut published: BTreeMap<u16, String> = BTreeMap::new();
        let declared_volumes: BTreeSet<String> = self
            .compose
            .get("volumes")
            .and_then(Value::as_mapping)
            .map(|m| m.keys().map(str_of).collect())
            .unwrap_or_default();
        let mut adopted_one_shots = BTreeSet::new();

        for (name, service) in services {
            let name = str_of(name);
            // Image or build, and the build's context, Dockerfile and target.
            let target = Self::build_target(service);
            if service.get("image").is_none() && target.is_none() {
                problems.push(format!("{name}: neither image nor build"));
            }
            if let Some(build) = service.get("build") {
                let context = match build {
                    Value::String(s) => s.clone(),
                    _ => build.get("context").map_or(".".to_owned(), str_of),
                };
                let dockerfile = build
                    .get("dockerfile")
                    .map_or("Dockerfile".to_owned(), str_of);
                if !root().join(&context).join(&dockerfile).is_file() {
                    problems.push(format!(
                        "{name}: build {context}/{dockerfile} does not exist"
                    ));
                } else if context != "." || dockerfile != "Dockerfile" {
                    problems.push(format!("{name}: builds something other than ./Dockerfile"));
                }
                match target.as_deref() {
                    Some("") | None => {
                        problems.push(format!("{name}: build without a target stage"));
                    }
                    Some(t) if !self.dockerfile.stages.contains(t) => problems.push(format!(
                        "{name}: build target {t} is not a stage of the Dockerfile"
                    )),
                    Some(_) => {}
                }
            }

            // depends_on.
            for (dep, condition) in depends_on(service) {
                let Some(dep_service) = services.get(dep.as_str()) else {
                    problems.push(format!("{name}: depends_on unknown service {dep}"));
                    continue;
                };
                match condition.as_str() {
                    "service_started" => {}
                    "service_healthy" => {
                        if !self.has_healthcheck(dep_service, &built_images) {
                            problems.push(format!(
                                "{name}: waits for {dep} to be healthy, but {dep} has no health check"
                            ));
                        }
                    }
                    "service_completed_successfully" => {
                        let restart = dep_service.get("restart").map_or("no".to_owned(), str_of);
                        if restart != "no" {
                            problems.push(format!(
                                "{name}: waits for {dep} to complete, but {dep} restarts ({restart})"
                            ));
                        }
                        adopted_one_shots.insert(dep.clone());
                    }
                    other => problems.push(format!("{name}: unknown depends_on condition {other}")),
                }
            }

            // Volumes: host paths exist in the repository, named volumes are declared.
            if let Some(Value::Sequence(volumes)) = service.get("volumes") {
                for volume in volumes {
                    let source = match volume {
                        Value::String(s) => s.split(':').next().unwrap_or("").to_owned(),
                        _ => volume.get("source").map_or(String::new(), str_of),
                    };
                    if source.starts_with('.') {
                        if !root().join(&source).exists() {
                            problems.push(format!("{name}: volume source {source} does not exist"));
                        }
                    } else if source.starts_with('/') {
                        problems.push(format!(
                            "{name}: volume source {source} is an absolute host path"
                        ));
                    } else if !declared_volumes.contains(&source) {
                        problems.push(format!("{name}: named volume {source} is not declared"));
                    }
                }
            }

            // Published host ports: each at most once.
            if let Some(Value::Sequence(ports)) = service.get("ports") {
                for port in ports {
                    let spec = str_of(port);
                    let parts: Vec<&str> =
                        spec.split('/').next().unwrap_or("").split(':').collect();
                    let host = match parts.as_slice() {
                        [.., host, _container] => host.parse::<u16>().ok(),
                        _ => None,
                    };
                    let container = parts.last().and_then(|c| c.parse::<u16>().ok());
                    if let Some(container) = container
                        && !listening.get(&name).is_some_and(|l| l.contains(&container))
                    {
                        problems.push(format!(
                                "{name}: publishes container port {container}, which it does not listen on"
                            ));
                    }
                    if let Some(host) = host
                        && let Some(other) = published.insert(host, name.clone())
                    {
                        problems.push(format!(
                            "host port {host} is published by both {other} and {name}"
                        ));
                    }
                }
            }

            // Health checks that probe a port probe one the service listens on.
            if let Some(test) = service
                .get("healthcheck")
                .and_then(|h| words(h.get("test")))
            {
                let test = test.join(" ");
                for (i, _) in test.match_indices("/dev/tcp/127.0.0.1/") {
                    let digits: String = test[i + "/dev/tcp/127.0.0.1/".len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(port) = digits.parse::<u16>()
                        && !listening.get(&name).is_some_and(|l| l.contains(&port))
                    {
                        problems.push(format!(
                                "{name}: the health check probes port {port}, which it does not listen on"
                            ));
                    }
                }
            }

            // Environment of our binaries.
            let env = environment(service);
            let binaries = self.binaries(service, &built_images);
            if !binaries.is_empty() {
                for var in env.keys() {
                    if !self.documented.allows(var) {
                        problems.push(format!(
                            "{name}: {var} is not a variable of README's Configuration table"
                        ));
                    }
                }
                for binary in &binaries {
                    let required = OUR_BINARIES
                        .iter()
                        .find(|(b, _)| b == binary)
                        .map_or(&[][..], |(_, r)| *r);
                    for var in required {
                        if !env.contains_key(*var) {
                            problems
                                .push(format!("{name}: {binary} needs {var}, which is not set"));
                        }
                    }
                }
                for (var, value) in &env {
                    for (host, port) in Self::addresses(var, value) {
                        Self::check_peer(
                            &mut problems,
                            &listening,
                            &names,
                            &format!("{name}: {var}"),
                            &host,
                            port,
                        );
                    }
                }
            } else {
                // Other services: hosts in URLs are services (or themselves / localhost).
                for (var, value) in &env {
                    if value.contains("://")
                        && let Some((host, _)) = host_port(value)
                        && !host.is_empty()
                        && !matches!(host.as_str(), "localhost" | "0.0.0.0" | "127.0.0.1")
                        && !names.contains(&host)
                    {
                        problems.push(format!("{name}: {var} names host {host}, not a service"));
                    }
                }
            }
        }

        // One-shots (restart: "no") must be awaited by a long-running service.
        for (name, service) in services {
            let name = str_of(name);
            if service.get("restart").map(str_of).as_deref() == Some("no")
                && !adopted_one_shots.contains(&name)
            {
                problems.push(format!(
                    "{name} is a one-shot job nothing waits for with service_completed_successfully \
                     (`docker compose up --wait` would fail when it exits)"
                ));
            }
        }

        // Prometheus scrape targets, the Grafana datasource, the collector's exporters.
        let scrape_configs = self
            .prometheus
            .get("scrape_configs")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        for job in &scrape_configs {
            let job_name = job.get("job_name").map_or(String::new(), str_of);
            for sc in job
                .get("static_configs")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                for target in sc
                    .get("targets")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                {
                    let target = str_of(target);
                    let Some((host, port)) = host_port(&target) else {
                        problems.push(format!(
                            "prometheus job {job_name}: target {target} has no port"
                        ));
                        continue;
                    };
                    if host == "localhost" && job_name == "prometheus" {
                        continue;
                    }
                    Self::check_peer(
                        &mut problems,
                        &listening,
                        &names,
                        &format!("prometheus job {job_name}"),
                        &host,
                        port,
                    );
                }
            }
        }
        for ds in self
            .grafana_datasources
            .get("datasources")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let url = ds.get("url").map_or(String::new(), str_of);
            match host_port(&url) {
                Some((host, port)) => Self::check_peer(
                    &mut problems,
                    &listening,
                    &names,
                    "grafana datasource",
                    &host,
                    port,
                ),
                None => problems.push(format!("grafana datasource url {url} has no port")),
            }
        }
        if let Some(collector) = self.collector_config() {
            for (exporter, config) in collector
                .get("exporters")
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
            {
                if let Some(endpoint) = config.get("endpoint").map(str_of) {
                    match host_port(&endpoint) {
                        Some((host, port)) => Self::check_peer(
                            &mut problems,
                            &listening,
                            &names,
                            &format!("collector exporter {}", str_of(exporter)),
                            &host,
                            port,
                        ),
                        None => problems.push(format!(
                            "collector exporter endpoint {endpoint} has no port"
                        )),
                    }
                }
            }
        } else {
            problems.push("no service mounts an OpenTelemetry collector config".to_owned());
        }
        problems
    }

    /// Reports `host:port` unless `host` is a service listening on `port`.
    fn check_peer(
        problems: &mut Vec<String>,
        listening: &BTreeMap<String, BTreeSet<u16>>,
        names: &BTreeSet<String>,
        what: &str,
        host: &str,
        port: u16,
    ) {
        if !names.contains(host) {
            problems.push(format!("{what}: host {host} is not a compose service"));
        } else if !listening.get(host).is_some_and(|p| p.contains(&port)) {
            problems.push(format!(
                "{what}: {host} does not listen on port {port} (it listens on {:?})",
                listening.get(host)
            ));
        }
    }

    /// Addresses in one of our variables: URLs and bootstrap lists.
    fn addresses(var: &str, value: &str) -> Vec<(String, u16)> {
        if var == "KAFKA_BOOTSTRAP_SERVERS" {
            return value
                .split(',')
                .filter_map(|a| host_port(a.trim()))
                .collect();
        }
        if value.contains("://") {
            return host_port(value).into_iter().collect();
        }
        Vec::new()
    }

    /// The ports a service listens on, as far as the file tells. Ours: the all-interfaces
    /// `*_ADDR` variables (and the relay's default, 0.0.0.0:9464). Others: published and exposed
    /// container ports, listener variables (`…://:9092`, `http://0.0.0.0:8081`) and, for the
    /// collector, the receivers of its mounted config.
    fn listening_ports(&self, service: &Value, ours: bool) -> BTreeSet<u16> {
        let mut ports = BTreeSet::new();
        if ours {
            let env = environment(service);
            let mut addrs: Vec<&String> = env
                .iter()
                .filter(|(k, _)| k.ends_with("_ADDR"))
                .map(|(_, v)| v)
                .collect();
            let relay_default = "0.0.0.0:9464".to_owned();
            let runs_relay = words(service.get("entrypoint")).is_none()
                && words(service.get("command")).is_none()
                && service
                    .get("build")
                    .and_then(|b| b.get("target"))
                    .map(str_of)
                    .as_deref()
                    == Some("relay");
            if runs_relay && !env.contains_key("GREGOR_RELAY_HTTP_ADDR") {
                addrs.push(&relay_default);
            }
            for addr in addrs {
                if let Some(port) = addr
                    .strip_prefix("0.0.0.0:")
                    .or_else(|| addr.strip_prefix("[::]:"))
                    && let Ok(port) = port.parse()
                {
                    ports.insert(port);
                }
            }
            return ports;
        }
        for field in ["ports", "expose"] {
            for p in service
                .get(field)
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let spec = str_of(p);
                if let Some(container) = spec.split('/').next().and_then(|s| s.rsplit(':').next())
                    && let Ok(port) = container.parse()
                {
                    ports.insert(port);
                }
            }
        }
        for value in environment(service).values() {
            for item in value.split(',') {
                let item = item.trim();
                let listener = item.split_once("://").map_or(item, |(_, r)| r);
                if let Some(addr) = listener
                    .strip_prefix("0.0.0.0:")
                    .or_else(|| listener.strip_prefix(':'))
                    && let Ok(port) = addr.trim_end_matches('/').parse()
                {
                    ports.insert(port);
                }
            }
        }
        if let Some(config) = Self::mounted_collector_config(service) {
            for protocol in config
                .get("receivers")
                .and_then(|r| r.get("otlp"))
                .and_then(|o| o.get("protocols"))
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
            {
                if let Some((_, port)) = protocol
                    .1
                    .get("endpoint")
                    .map(str_of)
                    .and_then(|e| host_port(&e))
                {
                    ports.insert(port);
                }
            }
        }
        ports
    }

    fn mounted_collector_config(service: &Value) -> Option<Value> {
        let image = service.get("image").map(str_of)?;
        if !image.contains("opentelemetry-collector") {
            return None;
        }
        for volume in service
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let source = str_of(volume).split(':').next().unwrap_or("").to_owned();
            if source.ends_with(".yaml") || source.ends_with(".yml") {
                let text = std::fs::read_to_string(root().join(&source)).ok()?;
                return serde_norway::from_str(&text).ok();
            }
        }
        None
    }

    fn collector_config(&self) -> Option<Value> {
        self.services()
            .values()
            .find_map(Self::mounted_collector_config)
    }

    /// Whether a service has a health check: its own (not disabled) or its image's HEALTHCHECK.
    fn has_healthcheck(&self, service: &Value, built: &BTreeMap<String, (String, String)>) -> bool {
        match service.get("healthcheck") {
            Some(h) if h.get("disable").and_then(Value::as_bool) == Some(true) => false,
            Some(h) => h.get("test").is_some(),
            None => self
                .target_of(service, built)
                .is_some_and(|t| self.dockerfile.healthchecked.contains(&t)),
        }
    }

    /// The Dockerfile target behind a service: its own build, or the build of the service that
    /// makes its image.
    fn target_of(
        &self,
        service: &Value,
        built: &BTreeMap<String, (String, String)>,
    ) -> Option<String> {
        Self::build_target(service).or_else(|| {
            let image = service.get("image").map(str_of)?;
            built.get(&image).map(|(_, target)| target.clone())
        })
    }

    /// Which of our binaries a service runs: the words of its entrypoint and command (or the
    /// image's ENTRYPOINT) that name one.
    fn binaries(
        &self,
        service: &Value,
        built: &BTreeMap<String, (String, String)>,
    ) -> BTreeSet<String> {
        let Some(target) = self.target_of(service, built) else {
            return BTreeSet::new();
        };
        let mut all = words(service.get("entrypoint"))
            .or_else(|| self.dockerfile.entrypoints.get(&target).cloned())
            .unwrap_or_default();
        all.extend(words(service.get("command")).unwrap_or_default());
        let ours: BTreeSet<&str> = OUR_BINARIES.iter().map(|(b, _)| *b).collect();
        all.iter()
            .flat_map(|w| w.split_whitespace())
            .filter(|w| ours.contains(w))
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn compose_stack_is_consistent_with_the_repository() {
    let stack = Stack::load();
    let problems = stack.problems();
    assert!(
        problems.is_empty(),
        "docker-compose.yml:\n{}",
        problems.join("\n")
    );

    // The parts the issue asks for are there.
    let services = stack.services();
    for name in [
        "postgres",
        "kafka",
        "schema-registry",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
        "topics",
        "relay",
        "order-service",
        "shipping-service",
    ] {
        assert!(services.contains_key(name), "service {name} is missing");
    }
    let kafka = environment(&services["kafka"]);
    assert_eq!(
        kafka.get("KAFKA_PROCESS_ROLES").map(String::as_str),
        Some("broker,controller")
    );
    assert!(
        kafka.contains_key("KAFKA_CONTROLLER_QUORUM_VOTERS"),
        "{kafka:?}"
    );
    // The relay's grace period covers its shutdown timeout.
    let relay = &services["relay"];
    let timeout_ms: u64 = environment(relay)
        .get("GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS")
        .map_or(10_000, |v| v.parse().expect("a number"));
    let grace = relay
        .get("stop_grace_period")
        .map(str_of)
        .expect("relay stop_grace_period");
    let grace_s: u64 = grace
        .trim_end_matches('s')
        .parse()
        .expect("stop_grace_period in seconds");
    assert!(
        grace_s * 1000 > timeout_ms,
        "stop_grace_period {grace} <= {timeout_ms} ms"
    );
    // The relay image's HEALTHCHECK is what relay's dependants wait on.
    assert!(
        stack.dockerfile.healthchecked.contains("relay"),
        "{:?}",
        stack.dockerfile.healthchecked
    );
}

/// Applies `mutate` to a fresh copy of the stack and returns its problems.
fn broken(mutate: impl FnOnce(&mut Stack)) -> Vec<String> {
    let mut stack = Stack::load();
    mutate(&mut stack);
    stack.problems()
}

fn assert_caught(problems: &[String], expected: &str) {
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

fn set(map: &mut Value, key: &str, value: Value) {
    map.as_mapping_mut()
        .expect("a mapping")
        .insert(Value::String(key.to_owned()), value);
}

fn env_mut<'a>(stack: &'a mut Stack, service: &str) -> &'a mut Value {
    stack
        .service_mut(service)
        .get_mut("environment")
        .expect("the service has an environment")
}

#[test]
fn broken_copies_of_the_stack_are_rejected() {
    // depends_on a service that does not exist.
    let p = broken(|s| {
        let deps = s
            .service_mut("relay")
            .get_mut("depends_on")
            .expect("relay depends_on");
        set(
            deps,
            "kafka-broker",
            serde_norway::from_str("{condition: service_healthy}").expect("yaml"),
        );
    });
    assert_caught(&p, "relay: depends_on unknown service kafka-broker");

    // A variable the README does not document (a typo of GREGOR_RELAY_BATCH_SIZE).
    let p = broken(|s| {
        set(
            env_mut(s, "relay"),
            "GREGOR_RELAY_BATCHSIZE",
            Value::from("100"),
        )
    });
    assert_caught(
        &p,
        "relay: GREGOR_RELAY_BATCHSIZE is not a variable of README's Configuration table",
    );

    // A required variable missing.
    let p = broken(|s| {
        env_mut(s, "shipping-service")
            .as_mapping_mut()
            .expect("mapping")
            .remove("GREGOR_CONSUMER_GROUP");
    });
    assert_caught(
        &p,
        "shipping-service: shipping-service needs GREGOR_CONSUMER_GROUP",
    );

    // A volume whose host file is not in the repository.
    let p = broken(|s| {
        let volumes = s
            .service_mut("grafana")
            .get_mut("volumes")
            .expect("volumes");
        volumes.as_sequence_mut().expect("a list")[1] = Value::from(
            "./deploy/grafana/gregor-dashbaord.json:/var/lib/grafana/dashboards/gregor/gregor-dashboard.json:ro",
        );
    });
    assert_caught(
        &p,
        "grafana: volume source ./deploy/grafana/gregor-dashbaord.json does not exist",
    );

    // A named volume that is not declared.
    let p = broken(|s| {
        let volumes = s
            .service_mut("postgres")
            .get_mut("volumes")
            .expect("volumes");
        volumes.as_sequence_mut().expect("a list")[0] =
            Value::from("pg-data:/var/lib/postgresql/data");
    });
    assert_caught(&p, "postgres: named volume pg-data is not declared");

    // The same host port twice.
    let p = broken(|s| {
        let ports = s.service_mut("grafana").get_mut("ports").expect("ports");
        ports.as_sequence_mut().expect("a list")[0] = Value::from("127.0.0.1:9090:3000");
    });
    assert_caught(&p, "host port 9090 is published by both");

    // Waiting for a service without a health check to be healthy.
    let p = broken(|s| {
        let deps = s
            .service_mut("relay")
            .get_mut("depends_on")
            .expect("relay depends_on");
        set(
            deps,
            "jaeger",
            serde_norway::from_str("{condition: service_healthy}").expect("yaml"),
        );
    });
    assert_caught(
        &p,
        "relay: waits for jaeger to be healthy, but jaeger has no health check",
    );

    // A build target the Dockerfile does not have.
    let p = broken(|s| {
        let build = s
            .service_mut("order-service")
            .get_mut("build")
            .expect("build");
        set(build, "target", Value::from("example"));
    });
    assert_caught(
        &p,
        "order-service: build target example is not a stage of the Dockerfile",
    );

    // A URL whose host is not a service, and a bootstrap port nothing listens on.
    let p = broken(|s| {
        set(
            env_mut(s, "relay"),
            "DATABASE_URL",
            Value::from("postgres://gregor:gregor@db:5432/gregor"),
        );
        set(
            env_mut(s, "shipping-service"),
            "KAFKA_BOOTSTRAP_SERVERS",
            Value::from("kafka:9093x,kafka:29092"),
        );
    });
    assert_caught(&p, "relay: DATABASE_URL: host db is not a compose service");
    assert_caught(
        &p,
        "shipping-service: KAFKA_BOOTSTRAP_SERVERS: kafka does not listen on port 29092",
    );

    // A one-shot job nobody waits for.
    let p = broken(|s| {
        for service in ["relay", "order-service", "shipping-service"] {
            s.service_mut(service)
                .get_mut("depends_on")
                .and_then(Value::as_mapping_mut)
                .expect("depends_on")
                .remove("topics");
        }
    });
    assert_caught(&p, "topics is a one-shot job nothing waits for");

    // Prometheus scraping a service that does not exist, or a port it does not serve.
    let p = broken(|s| {
        s.prometheus = serde_norway::from_str(
            "scrape_configs:\n  - job_name: gregor-consumer\n    static_configs:\n      - targets: [\"shipping:9465\", \"relay:9465\"]\n",
        )
        .expect("yaml");
    });
    assert_caught(
        &p,
        "prometheus job gregor-consumer: host shipping is not a compose service",
    );
    assert_caught(
        &p,
        "prometheus job gregor-consumer: relay does not listen on port 9465",
    );

    // The relay's own address moved without its port, its scrape target, ...
    let p = broken(|s| {
        set(
            env_mut(s, "relay"),
            "GREGOR_RELAY_HTTP_ADDR",
            Value::from("0.0.0.0:9474"),
        )
    });
    assert_caught(
        &p,
        "prometheus job gregor-relay: relay does not listen on port 9464",
    );
    assert_caught(
        &p,
        "relay: publishes container port 9464, which it does not listen on",
    );

    // ... or the consumer's without its health check (or listening on loopback only).
    let p = broken(|s| {
        set(
            env_mut(s, "shipping-service"),
            "GREGOR_CONSUMER_HTTP_ADDR",
            Value::from("127.0.0.1:9465"),
        )
    });
    assert_caught(
        &p,
        "shipping-service: the health check probes port 9465, which it does not listen on",
    );
}

const COMPOSE_SCHEMA: &str =
    ".services/tools/docker-compose/usr/lib/python3/dist-packages/compose/config/compose_spec.json";
const INSTALL: &str = "run ./scripts/services up (it installs check-jsonschema from PyPI into \
    .services/tools/venv and unpacks Debian's docker-compose, for its Compose Specification \
    schema, into .services/tools)";

/// `check-jsonschema` of `compose` against the Compose Specification schema.
fn schema_check(compose: &Value, tag: &str) -> (bool, String) {
    let checker = root().join(".services/tools/venv/bin/check-jsonschema");
    let schema = root().join(COMPOSE_SCHEMA);
    assert!(
        checker.is_file(),
        "{} is missing: {INSTALL}",
        checker.display()
    );
    assert!(
        schema.is_file(),
        "{} is missing: {INSTALL}",
        schema.display()
    );
    let file =
        std::env::temp_dir().join(format!("gregor-compose-{}-{tag}.yml", std::process::id()));
    std::fs::write(
        &file,
        serde_norway::to_string(compose).expect("serialising YAML"),
    )
    .expect("writing the compose copy");
    let out = std::process::Command::new(&checker)
        .arg("--schemafile")
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", checker.display()));
    let _ = std::fs::remove_file(&file);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn compose_file_follows_the_compose_specification() {
    let stack = Stack::load();
    let (ok, out) = schema_check(&stack.compose, "valid");
    assert!(ok, "docker-compose.yml does not validate:\n{out}");

    // A misspelt key and an unknown depends_on condition are refused.
    let mut broken = Stack::load();
    let relay = broken.service_mut("relay");
    let env = relay
        .as_mapping_mut()
        .expect("a mapping")
        .remove("environment")
        .expect("relay has an environment");
    set(relay, "enviroment", env);
    let (ok, out) = schema_check(&broken.compose, "typo");
    assert!(!ok, "a misspelt key was accepted:\n{out}");
    assert!(out.contains("enviroment"), "{out}");

    let mut broken = Stack::load();
    let deps = broken
        .service_mut("relay")
        .get_mut("depends_on")
        .expect("relay depends_on");
    set(
        deps,
        "topics",
        serde_norway::from_str("{condition: service_done}").expect("yaml"),
    );
    let (ok, out) = schema_check(&broken.compose, "condition");
    assert!(!ok, "an unknown condition was accepted:\n{out}");
}

#[test]
fn readme_table_parsing_finds_the_documented_variables() {
    let documented = Documented::from_readme(&read("README.md"));
    for var in [
        "GREGOR_CONSUMER_GROUP",
        "GREGOR_CONSUMER_HTTP_ADDR",
        "SCHEMA_REGISTRY_URL",
        "SHIPPING_TOPIC",
        "GREGOR_ORDERS_ADDR",
        "OTEL_SERVICE_NAME",
        "OTEL_BSP_MAX_QUEUE_SIZE",
    ] {
        assert!(documented.allows(var), "{var} should be documented");
    }
    assert!(!documented.allows("GREGOR_RELAY_BATCHSIZE"));
    assert!(!documented.allows("SHIPPING_TOPICS"));
}
