//! `docker-compose.yml` without Docker (there is none on the CI machine). Debian's
//! docker-compose validates it against the Compose Specification and renders it
//! (`docker-compose config`: unknown keys, bad conditions, `depends_on` of unknown services
//! and undeclared named volumes are its errors); the tests read the rendered YAML and hold it
//! to the rest of the repository: builds are stages of the Dockerfile, a `service_healthy`
//! dependency has a health check (its own or its image's HEALTHCHECK), one-shot jobs are
//! awaited with `service_completed_successfully` (so `docker compose up --wait` succeeds),
//! bind-mounted files exist, no host port is published twice, our services take only the
//! variables of README's Configuration table with the required ones set, every host in a URL
//! or bootstrap list is a compose service listening on that port, our images publish only
//! ports their Dockerfile stage EXPOSEs, and the Prometheus targets, the Grafana datasource and
//! the collector's exporter name compose services on ports they listen on. Broken copies
//! must be refused.
//!
//! Needs docker-compose (Debian's package, installed by `./scripts/services up`, which
//! `./scripts/test` runs); a missing docker-compose fails the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::process::Command;

use gregor_testkit::dockerfile::{Dockerfile, argv};
use gregor_testkit::repo::{read, root};
use gregor_testkit::{ConfigTable, scratch_dir};
use serde_norway::{Mapping, Value};

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

/// `docker-compose config` of `text` (as if it were the repository's docker-compose.yml):
/// the rendered file, or the tool's complaint.
fn compose_config(text: &str) -> Result<Value, String> {
    let dir = scratch_dir("gregor-compose").map_err(|e| e.to_string())?;
    let file = dir.join("docker-compose.yml");
    std::fs::write(&file, text).map_err(|e| e.to_string())?;
    let out = match Command::new("docker-compose")
        .arg("--project-directory")
        .arg(root())
        .arg("--file")
        .arg(&file)
        .arg("config")
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "docker-compose is missing: run ./scripts/services up (it installs Debian's docker-compose)"
        ),
        Err(e) => panic!("cannot run docker-compose: {e}"),
    };
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_norway::from_slice(&out.stdout).map_err(|e| format!("rendered YAML: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_norway::from_str(&read(rel).expect("a repository file"))
        .unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
}

fn str_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn mapping<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = (String, &'a Value)> {
    v.get(key)
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
        .map(|(k, v)| (str_of(k), v))
}

fn list<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = String> + 'a {
    v.get(key)
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .map(str_of)
}

/// The rendered environment (docker-compose renders it as a mapping).
fn environment(service: &Value) -> BTreeMap<String, String> {
    mapping(service, "environment")
        .map(|(k, v)| (k, str_of(v)))
        .collect()
}

/// Host and port of `host:port`, `scheme://[user[:pw]@]host:port[/…]`; `None` without a port.
fn host_port(addr: &str) -> Option<(String, u16)> {
    let rest = addr.split_once("://").map_or(addr, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The rendered stack and the files it points at, checked together.
#[derive(Debug)]
struct Stack {
    compose: Value,
    prometheus: Value,
    grafana_datasources: Value,
    dockerfile: Dockerfile,
    readme: ConfigTable,
}

impl Stack {
    fn load() -> Self {
        Self::from_compose(&read("docker-compose.yml").expect("docker-compose.yml"))
    }

    /// The stack with `text` as its compose file, which docker-compose must accept.
    fn from_compose(text: &str) -> Self {
        Self {
            compose: compose_config(text)
                .unwrap_or_else(|e| panic!("docker-compose config refused the file:\n{e}")),
            prometheus: yaml("deploy/prometheus/prometheus.yml"),
            grafana_datasources: yaml("deploy/grafana/provisioning/datasources/prometheus.yml"),
            dockerfile: Dockerfile::load().expect("the Dockerfile reads"),
            readme: ConfigTable::load().expect("README's Configuration table"),
        }
    }

    fn services(&self) -> &Mapping {
        self.compose
            .get("services")
            .and_then(Value::as_mapping)
            .expect("compose has services")
    }

    /// The Dockerfile stage behind a service: its own build target, or the target of the
    /// service that builds its image.
    fn target_of(&self, service: &Value) -> Option<String> {
        if let Some(build) = service.get("build") {
            return Some(build.get("target").map_or(String::new(), str_of));
        }
        let image = service.get("image").map(str_of)?;
        self.services().values().find_map(|s| {
            (s.get("image").map(str_of).as_deref() == Some(&image))
                .then(|| s.get("build")?.get("target").map(str_of))
                .flatten()
        })
    }

    /// The image setting (`ENTRYPOINT`, `CMD`, `HEALTHCHECK`, `EXPOSE`) of a service's stage.
    fn image_setting(&self, service: &Value, keyword: &str) -> Option<String> {
        let target = self.target_of(service)?;
        let ins = self.dockerfile.effective(&target, keyword).ok()??;
        Some(ins.args.clone())
    }

    /// Which of our binaries a service runs: words of its entrypoint and command (or its
    /// image's ENTRYPOINT and CMD) that name one.
    fn binaries(&self, service: &Value) -> BTreeSet<String> {
        if self.target_of(service).is_none() {
            return BTreeSet::new();
        }
        let entrypoint = service.get("entrypoint").map_or_else(
            || {
                self.image_setting(service, "ENTRYPOINT")
                    .map_or_else(Vec::new, |e| argv(&e))
            },
            |_| list(service, "entrypoint").collect(),
        );
        let command = service.get("command").map_or_else(
            || {
                self.image_setting(service, "CMD")
                    .map_or_else(Vec::new, |c| argv(&c))
            },
            |_| list(service, "command").collect(),
        );
        entrypoint
            .iter()
            .chain(&command)
            .flat_map(|w| w.split_whitespace())
            .filter(|w| OUR_BINARIES.iter().any(|(b, _)| b == w))
            .map(str::to_owned)
            .collect()
    }

    fn has_healthcheck(&self, service: &Value) -> bool {
        match service.get("healthcheck") {
            Some(h) => {
                let test: Vec<String> = list(h, "test").collect();
                !test.is_empty() && test != ["NONE"]
            }
            None => self
                .image_setting(service, "HEALTHCHECK")
                .is_some_and(|h| !h.eq_ignore_ascii_case("none")),
        }
    }

    /// The ports a service listens on, as far as the files tell. Ours: the all-interfaces
    /// `*_ADDR` variables (and the relay's README default). Others: published and exposed
    /// container ports, listener variables (`…://:9092`, `http://0.0.0.0:8081`) and, for the
    /// collector, the receivers of its mounted config.
    fn listening_ports(&self, service: &Value) -> BTreeSet<u16> {
        let env = environment(service);
        let all_interfaces = |addr: &str| {
            addr.strip_prefix("0.0.0.0:")
                .or_else(|| addr.strip_prefix("[::]:"))
                .and_then(|p| p.parse::<u16>().ok())
        };
        let binaries = self.binaries(service);
        if !binaries.is_empty() {
            let mut addrs: Vec<String> = env
                .iter()
                .filter(|(k, _)| k.ends_with("_ADDR"))
                .map(|(_, v)| v.clone())
                .collect();
            if binaries.contains("gregor-relay") && !env.contains_key("GREGOR_RELAY_HTTP_ADDR") {
                addrs.extend(
                    self.readme
                        .default_of("GREGOR_RELAY_HTTP_ADDR")
                        .map(str::to_owned),
                );
            }
            return addrs.iter().filter_map(|a| all_interfaces(a)).collect();
        }
        let mut ports: BTreeSet<u16> = list(service, "ports")
            .chain(list(service, "expose"))
            .filter_map(|p| p.split('/').next()?.rsplit(':').next()?.parse().ok())
            .collect();
        for item in env.values().flat_map(|v| v.split(',')) {
            let listener = item
                .trim()
                .split_once("://")
                .map_or(item.trim(), |(_, r)| r);
            if let Some(port) = all_interfaces(listener).or_else(|| {
                listener
                    .strip_prefix(':')
                    .and_then(|p| p.trim_end_matches('/').parse().ok())
            }) {
                ports.insert(port);
            }
        }
        if let Some(config) = Self::mounted_collector_config(service) {
            for (_, protocol) in mapping(&config["receivers"]["otlp"], "protocols") {
                if let Some((_, port)) = protocol
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
        if !service
            .get("image")
            .map(str_of)?
            .contains("opentelemetry-collector")
        {
            return None;
        }
        list(service, "volumes").find_map(|v| {
            let source = v.split(':').next()?.to_owned();
            (source.ends_with(".yaml") || source.ends_with(".yml"))
                .then(|| serde_norway::from_str(&std::fs::read_to_string(source).ok()?).ok())
                .flatten()
        })
    }

    /// Everything wrong with the stack; empty when it is right.
    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let services = self.services();
        let names: BTreeSet<String> = services.keys().map(str_of).collect();
        let listening: BTreeMap<String, BTreeSet<u16>> = services
            .iter()
            .map(|(n, s)| (str_of(n), self.listening_ports(s)))
            .collect();
        let check_peer = |problems: &mut Vec<String>, what: &str, host: &str, port: u16| {
            if !names.contains(host) {
                problems.push(format!("{what}: host {host} is not a compose service"));
            } else if !listening.get(host).is_some_and(|p| p.contains(&port)) {
                problems.push(format!(
                    "{what}: {host} does not listen on port {port} (it listens on {:?})",
                    listening.get(host)
                ));
            }
        };
        let stages = self.dockerfile.stage_names();
        let mut published: BTreeMap<u16, String> = BTreeMap::new();
        let mut awaited_one_shots = BTreeSet::new();

        for (name, service) in services {
            let name = str_of(name);
            let listens = &listening[&name];
            if let Some(build) = service.get("build") {
                let context = build.get("context").map(str_of).unwrap_or_default();
                let file = build
                    .get("dockerfile")
                    .map_or("Dockerfile".to_owned(), str_of);
                if std::path::Path::new(&context) != root() || file != "Dockerfile" {
                    problems.push(format!("{name}: builds {context}/{file}, not ./Dockerfile"));
                }
                match build.get("target").map(str_of) {
                    None => problems.push(format!("{name}: build without a target stage")),
                    Some(t) if !stages.contains(&t.as_str()) => problems.push(format!(
                        "{name}: build target {t} is not a stage of the Dockerfile"
                    )),
                    Some(_) => {}
                }
            }

            for (dep, condition) in mapping(service, "depends_on") {
                let condition = condition.get("condition").map(str_of).unwrap_or_default();
                let dep_service = &services[dep.as_str()]; // docker-compose checked it exists
                if condition == "service_healthy" && !self.has_healthcheck(dep_service) {
                    problems.push(format!(
                        "{name}: waits for {dep} to be healthy, but {dep} has no health check"
                    ));
                }
                if condition == "service_completed_successfully" {
                    let restart = dep_service.get("restart").map_or("no".to_owned(), str_of);
                    if restart != "no" {
                        problems.push(format!(
                            "{name}: waits for {dep} to complete, but {dep} restarts ({restart})"
                        ));
                    }
                    awaited_one_shots.insert(dep);
                }
            }

            // Bind mounts (docker-compose made them absolute) are files of the repository.
            for volume in list(service, "volumes") {
                let source = volume.split(':').next().unwrap_or("");
                if source.starts_with('/') {
                    let path = std::path::Path::new(source);
                    if !path.starts_with(root()) {
                        problems.push(format!(
                            "{name}: volume source {source} is outside the repository"
                        ));
                    } else if !path.exists() {
                        problems.push(format!("{name}: volume source {source} does not exist"));
                    }
                }
            }

            // Published ports: host ports once, container ports listened on (and, for our
            // images, EXPOSEd by their stage).
            let exposed: Option<BTreeSet<u16>> = self.image_setting(service, "EXPOSE").map(|e| {
                e.split_whitespace()
                    .filter_map(|p| p.split('/').next()?.parse().ok())
                    .collect()
            });
            for spec in list(service, "ports") {
                let parts: Vec<&str> = spec.split('/').next().unwrap_or("").split(':').collect();
                let container = parts.last().and_then(|c| c.parse::<u16>().ok());
                if let Some(container) = container {
                    if !listens.contains(&container) {
                        problems.push(format!(
                            "{name}: publishes container port {container}, which it does not listen on"
                        ));
                    }
                    if let Some(exposed) = &exposed
                        && !exposed.contains(&container)
                    {
                        problems.push(format!(
                            "{name}: publishes container port {container}, which its image does not EXPOSE ({exposed:?})"
                        ));
                    }
                }
                if let [.., host, _] = parts.as_slice()
                    && let Ok(host) = host.parse::<u16>()
                    && let Some(other) = published.insert(host, name.clone())
                {
                    problems.push(format!(
                        "host port {host} is published by both {other} and {name}"
                    ));
                }
            }

            // Health checks that probe a port probe one the service listens on.
            if let Some(h) = service.get("healthcheck") {
                let test = list(h, "test").collect::<Vec<_>>().join(" ");
                for (i, _) in test.match_indices("/dev/tcp/127.0.0.1/") {
                    let digits: String = test[i + "/dev/tcp/127.0.0.1/".len()..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Ok(port) = digits.parse::<u16>()
                        && !listens.contains(&port)
                    {
                        problems.push(format!(
                            "{name}: the health check probes port {port}, which it does not listen on"
                        ));
                    }
                }
            }

            // Our binaries: documented variables, the required ones, peers that listen.
            let env = environment(service);
            let binaries = self.binaries(service);
            for var in env.keys().filter(|_| !binaries.is_empty()) {
                if !self.readme.documents(var) {
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
                for var in required.iter().filter(|v| !env.contains_key(**v)) {
                    problems.push(format!("{name}: {binary} needs {var}, which is not set"));
                }
            }
            for (var, value) in &env {
                let addresses: Vec<(String, u16)> =
                    if var == "KAFKA_BOOTSTRAP_SERVERS" && !binaries.is_empty() {
                        value
                            .split(',')
                            .filter_map(|a| host_port(a.trim()))
                            .collect()
                    } else if value.contains("://") && !value.contains(',') {
                        host_port(value).into_iter().collect()
                    } else {
                        Vec::new()
                    };
                for (host, port) in addresses {
                    if binaries.is_empty()
                        && matches!(host.as_str(), "" | "localhost" | "0.0.0.0" | "127.0.0.1")
                    {
                        continue; // another image's own listener
                    }
                    check_peer(&mut problems, &format!("{name}: {var}"), &host, port);
                }
            }
        }

        for (name, service) in services {
            let name = str_of(name);
            if service.get("restart").map(str_of).as_deref() == Some("no")
                && !awaited_one_shots.contains(&name)
            {
                problems.push(format!(
                    "{name} is a one-shot job nothing waits for with service_completed_successfully \
                     (`docker compose up --wait` would fail when it exits)"
                ));
            }
        }

        // Prometheus scrape targets, the Grafana datasource, the collector's exporters.
        for job in self
            .prometheus
            .get("scrape_configs")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let job_name = job.get("job_name").map_or(String::new(), str_of);
            for sc in job
                .get("static_configs")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                for target in list(sc, "targets") {
                    match host_port(&target) {
                        Some((host, _)) if host == "localhost" && job_name == "prometheus" => {}
                        Some((host, port)) => check_peer(
                            &mut problems,
                            &format!("prometheus job {job_name}"),
                            &host,
                            port,
                        ),
                        None => problems.push(format!(
                            "prometheus job {job_name}: target {target} has no port"
                        )),
                    }
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
                Some((host, port)) => check_peer(&mut problems, "grafana datasource", &host, port),
                None => problems.push(format!("grafana datasource url {url} has no port")),
            }
        }
        match services.values().find_map(Self::mounted_collector_config) {
            Some(collector) => {
                for (exporter, config) in mapping(&collector, "exporters") {
                    if let Some(endpoint) = config.get("endpoint").map(str_of) {
                        match host_port(&endpoint) {
                            Some((host, port)) => check_peer(
                                &mut problems,
                                &format!("collector exporter {exporter}"),
                                &host,
                                port,
                            ),
                            None => problems.push(format!(
                                "collector exporter endpoint {endpoint} has no port"
                            )),
                        }
                    }
                }
            }
            None => problems.push("no service mounts an OpenTelemetry collector config".to_owned()),
        }
        problems
    }
}

/// `docker-compose.yml` with `from` (which must occur) replaced by `to` at its first occurrence.
fn edited(from: &str, to: &str) -> String {
    let text = read("docker-compose.yml").expect("docker-compose.yml");
    assert!(text.contains(from), "{from:?} is in docker-compose.yml");
    text.replacen(from, to, 1)
}

#[test]
fn docker_compose_accepts_the_stack_and_refuses_broken_copies() {
    let services = Stack::load();
    let names: BTreeSet<String> = services.services().keys().map(str_of).collect();
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
        assert!(names.contains(name), "service {name} is missing");
    }
    for (from, to, expected) in [
        (
            "    environment:\n      OTEL_EXPORTER",
            "    enviroment:\n      OTEL_EXPORTER",
            "'enviroment'",
        ),
        (
            "condition: service_completed_successfully",
            "condition: service_done",
            "service_done",
        ),
        (
            "      topics:\n        condition",
            "      topicz:\n        condition",
            "depends on service 'topicz' which is undefined",
        ),
        ("- pgdata:/var", "- pg-data:/var", "pg-data"),
    ] {
        match compose_config(&edited(from, to)) {
            Ok(_) => panic!("docker-compose config accepted {to:?} for {from:?}"),
            Err(e) => assert!(e.contains(expected), "expected {expected:?} in:\n{e}"),
        }
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

    let services = stack.services();
    let kafka = environment(&services["kafka"]);
    assert_eq!(
        kafka.get("KAFKA_PROCESS_ROLES").map(String::as_str),
        Some("broker,controller")
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
    assert!(stack.has_healthcheck(relay));
}

fn assert_caught(stack: &Stack, expected: &str) {
    let problems = stack.problems();
    assert!(
        problems.iter().any(|p| p.contains(expected)),
        "expected a problem containing {expected:?}, got {problems:#?}"
    );
}

/// The stack with its compose file edited (and accepted by docker-compose).
fn broken(from: &str, to: &str) -> Stack {
    Stack::from_compose(&edited(from, to))
}

#[test]
fn broken_copies_of_the_stack_are_rejected() {
    let relay_deps =
        "      otel-collector:\n        condition: service_started\n\n  order-service:";
    assert_caught(
        &broken(
            "      GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS",
            "      GREGOR_RELAY_BATCHSIZE: \"100\"\n      GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS",
        ),
        "relay: GREGOR_RELAY_BATCHSIZE is not a variable of README's Configuration table",
    );
    assert_caught(
        &broken("      GREGOR_CONSUMER_GROUP: shipping\n", ""),
        "shipping-service: shipping-service needs GREGOR_CONSUMER_GROUP",
    );
    assert_caught(
        &broken(
            "./deploy/grafana/gregor-dashboard.json:",
            "./deploy/grafana/gregor-dashbaord.json:",
        ),
        "gregor-dashbaord.json does not exist",
    );
    assert_caught(
        &broken("\"127.0.0.1:3000:3000\"", "\"127.0.0.1:9090:3000\""),
        "host port 9090 is published by both",
    );
    assert_caught(
        &broken(
            relay_deps,
            "      otel-collector:\n        condition: service_started\n      jaeger:\n        condition: service_healthy\n\n  order-service:",
        ),
        "relay: waits for jaeger to be healthy, but jaeger has no health check",
    );
    assert_caught(
        &broken(
            "      target: examples\n    command: [\"order-service\"",
            "      target: example\n    command: [\"order-service\"",
        ),
        "order-service: build target example is not a stage of the Dockerfile",
    );
    assert_caught(
        &broken(
            "DATABASE_URL: postgres://gregor:gregor@postgres:5432/gregor\n      KAFKA_BOOTSTRAP_SERVERS: kafka:9092\n      GREGOR_RELAY_HTTP_ADDR",
            "DATABASE_URL: postgres://gregor:gregor@db:5432/gregor\n      KAFKA_BOOTSTRAP_SERVERS: kafka:9092\n      GREGOR_RELAY_HTTP_ADDR",
        ),
        "relay: DATABASE_URL: host db is not a compose service",
    );
    assert_caught(
        &broken(
            "KAFKA_BOOTSTRAP_SERVERS: kafka:9092\n      SCHEMA_REGISTRY_URL: http://schema-registry:8081\n      GREGOR_CONSUMER_GROUP",
            "KAFKA_BOOTSTRAP_SERVERS: kafka:9093x,kafka:29092\n      SCHEMA_REGISTRY_URL: http://schema-registry:8081\n      GREGOR_CONSUMER_GROUP",
        ),
        "shipping-service: KAFKA_BOOTSTRAP_SERVERS: kafka does not listen on port 29092",
    );
    assert_caught(
        &Stack::load().with_nothing_awaiting("topics"),
        "topics is a one-shot job nothing waits for",
    );
    // The relay's own address moved without its port, its scrape target, ...
    let moved = broken(
        "GREGOR_RELAY_HTTP_ADDR: 0.0.0.0:9464",
        "GREGOR_RELAY_HTTP_ADDR: 0.0.0.0:9474",
    );
    assert_caught(
        &moved,
        "prometheus job gregor-relay: relay does not listen on port 9464",
    );
    assert_caught(
        &moved,
        "relay: publishes container port 9464, which it does not listen on",
    );
    // ... or a port its image does not EXPOSE.
    assert_caught(
        &broken(
            "      - \"127.0.0.1:9464:9464\"",
            "      - \"127.0.0.1:9464:9464\"\n      - \"127.0.0.1:9474:9474\"",
        ),
        "relay: publishes container port 9474, which its image does not EXPOSE",
    );
    // ... or the consumer's without its health check (or listening on loopback only).
    assert_caught(
        &broken(
            "GREGOR_CONSUMER_HTTP_ADDR: 0.0.0.0:9465",
            "GREGOR_CONSUMER_HTTP_ADDR: 127.0.0.1:9465",
        ),
        "shipping-service: the health check probes port 9465, which it does not listen on",
    );
    // Prometheus scraping a service that does not exist, or a port it does not serve.
    let mut stack = Stack::load();
    stack.prometheus = serde_norway::from_str(
        "scrape_configs:\n  - job_name: gregor-consumer\n    static_configs:\n      - targets: [\"shipping:9465\", \"relay:9465\"]\n",
    )
    .expect("yaml");
    assert_caught(
        &stack,
        "prometheus job gregor-consumer: host shipping is not a compose service",
    );
    assert_caught(
        &stack,
        "prometheus job gregor-consumer: relay does not listen on port 9465",
    );
}

impl Stack {
    /// The stack with `one_shot` removed from every `depends_on` (a rendered-file edit:
    /// docker-compose itself refuses nothing here).
    fn with_nothing_awaiting(mut self, one_shot: &str) -> Self {
        let services = self
            .compose
            .get_mut("services")
            .and_then(Value::as_mapping_mut)
            .expect("services");
        for service in services.values_mut() {
            if let Some(deps) = service
                .get_mut("depends_on")
                .and_then(Value::as_mapping_mut)
            {
                deps.remove(one_shot);
            }
        }
        self
    }
}
