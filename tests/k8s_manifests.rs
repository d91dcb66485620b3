//! The Kubernetes manifests of `deploy/k8s` are rendered offline with a real kustomize and
//! validated against JSON Schemas: the built-in kinds with `kubernetes-validate --strict`
//! (PyPI; it ships the Kubernetes API schemas) for the oldest and the newest Kubernetes version
//! we claim, the custom resources (KEDA `ScaledObject`/`TriggerAuthentication`, Prometheus
//! Operator `ServiceMonitor`) with `check-jsonschema` (PyPI) against `deploy/k8s/schemas/`. Every
//! rendered object must be covered by one of the two. Then the operational rules: relay
//! replicas ≥ 2 and probes on its metrics port, a grace period longer than the shutdown
//! timeouts of the ConfigMaps, non-root read-only containers running the Dockerfile's user,
//! the relay image's port (the Dockerfile's EXPOSE) as the metrics port, a PDB that selects
//! the relay pods, a ScaledObject that scales the consumer Deployment on its
//! own group and topic, and only documented variables in the ConfigMaps.
//!
//! Broken copies (a `replicas: "two"`, a missing required field, an unknown field, a
//! ScaledObject without its target, a grace period shorter than the shutdown) must be refused.
//!
//! The renderer is the kustomize built into Debian's `kubectl` 1.20 (kustomize 2.0.3), which
//! `./scripts/services up` unpacks into `.services/tools/kubernetes-client` (the package cannot
//! be installed beside another `kubectl`); the validators come from PyPI, into the virtualenv
//! `.services/tools/venv`, through the same script. A missing tool fails the test with that
//! command.

use gregor_testkit::ConfigTable;
use gregor_testkit::dockerfile::Dockerfile;
use gregor_testkit::repo::root;
use std::collections::{BTreeMap, BTreeSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

/// The Kubernetes versions the built-in kinds are validated against: the oldest we claim and
/// the newest kubernetes-validate knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.29", "1.37"];

/// Custom resources and their schemas (deploy/k8s/schemas).
const CRD_SCHEMAS: &[(&str, &str, &str)] = &[
    (
        "keda.sh/v1alpha1",
        "ScaledObject",
        "scaledobject-keda-v1alpha1.json",
    ),
    (
        "keda.sh/v1alpha1",
        "TriggerAuthentication",
        "triggerauthentication-keda-v1alpha1.json",
    ),
    (
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        "servicemonitor-monitoring-v1.json",
    ),
];

const INSTALL: &str = "run ./scripts/services up (it installs kubernetes-validate and \
    check-jsonschema from PyPI and unpacks Debian's kubernetes-client into .services/tools)";

/// A repository file; a test failure naming it when unreadable.
fn read(rel: &str) -> String {
    gregor_testkit::repo::read(rel).expect("a repository file")
}

/// Runs a tool; returns success and stdout + stderr. A missing tool fails loudly.
fn run(program: &Path, args: &[&str]) -> (bool, String) {
    let out = match Command::new(program).args(args).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{} is missing: {INSTALL}", program.display())
        }
        Err(e) => panic!("cannot run {}: {e}", program.display()),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A tool installed by `./scripts/services up` under `.services/tools`.
fn tool(rel: &str) -> PathBuf {
    let path = root().join(".services/tools").join(rel);
    assert!(path.is_file(), "{} is missing: {INSTALL}", path.display());
    path
}

fn kubectl() -> PathBuf {
    tool("kubernetes-client/usr/bin/kubectl")
}

/// `kubectl kustomize <dir>`: the rendered objects.
fn render(dir: &Path) -> Vec<Value> {
    let (ok, out) = run(&kubectl(), &["kustomize", &dir.to_string_lossy()]);
    assert!(ok, "kustomize failed on {}:\n{out}", dir.display());
    parse_documents(&out)
}

fn parse_documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

fn s(v: &Value, path: &str) -> Option<String> {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(key)?,
        };
    }
    match cur {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get(i)?,
            Err(_) => cur.get(key)?,
        };
    }
    Some(cur)
}

fn kind_name(doc: &Value) -> String {
    format!(
        "{}/{}",
        s(doc, "kind").unwrap_or_default(),
        s(doc, "metadata.name").unwrap_or_default()
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    docs.iter().find(|d| {
        s(d, "kind").as_deref() == Some(kind) && s(d, "metadata.name").as_deref() == Some(name)
    })
}

/// Validates every object; `Err` carries the validators' complaints.
fn validate(docs: &[Value], tag: &str) -> Result<(), String> {
    let dir =
        gregor_testkit::scratch_dir(&format!("gregor-k8s-{tag}")).expect("a scratch directory");
    let mut builtin = Vec::new();
    let mut custom: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (i, doc) in docs.iter().enumerate() {
        let file = dir.join(format!("{i:02}-{}.yaml", kind_name(doc).replace('/', "-")));
        std::fs::write(
            &file,
            serde_norway::to_string(doc).expect("serialising YAML"),
        )
        .expect("writing a manifest");
        let file = file.to_string_lossy().into_owned();
        let api = s(doc, "apiVersion").unwrap_or_default();
        let kind = s(doc, "kind").unwrap_or_default();
        match CRD_SCHEMAS.iter().find(|(a, k, _)| *a == api && *k == kind) {
            Some((_, _, schema)) => custom.entry(schema).or_default().push(file),
            None => builtin.push(file),
        }
    }
    let mut errors = Vec::new();
    for version in KUBERNETES_VERSIONS {
        let mut args = vec!["--strict", "-k", version];
        args.extend(builtin.iter().map(String::as_str));
        let (ok, out) = run(&tool("venv/bin/kubernetes-validate"), &args);
        // A kind without a schema is only a warning to kubernetes-validate: here it is an error.
        if !ok || out.contains("WARN") || out.contains("ERROR") {
            errors.push(format!("kubernetes-validate -k {version}:\n{out}"));
        }
    }
    for (schema, files) in &custom {
        let schema_path = root().join("deploy/k8s/schemas").join(schema);
        let schema_arg = schema_path.to_string_lossy().into_owned();
        let mut args = vec!["--schemafile", schema_arg.as_str()];
        args.extend(files.iter().map(String::as_str));
        let (ok, out) = run(&tool("venv/bin/check-jsonschema"), &args);
        if !ok {
            errors.push(format!("check-jsonschema {schema}:\n{out}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// The port of `host:port`.
fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The environment a container gets from its envFrom ConfigMaps and Secrets and its env.
fn container_env(
    docs: &[Value],
    container: &Value,
    problems: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for source in get(container, "envFrom")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let (kind, name) = if let Some(name) = s(source, "configMapRef.name") {
            ("ConfigMap", name)
        } else if let Some(name) = s(source, "secretRef.name") {
            ("Secret", name)
        } else {
            problems.push(format!("unknown envFrom source {source:?}"));
            continue;
        };
        let Some(object) = find(docs, kind, &name) else {
            problems.push(format!(
                "envFrom names {kind}/{name}, which is not rendered"
            ));
            continue;
        };
        for field in ["data", "stringData"] {
            for (k, v) in get(object, field)
                .and_then(Value::as_mapping)
                .into_iter()
                .flatten()
            {
                let key = k.as_str().unwrap_or_default().to_owned();
                env.insert(
                    key,
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| format!("{v:?}")),
                );
            }
        }
    }
    for var in get(container, "env")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        if let Some(name) = s(var, "name") {
            env.insert(name, s(var, "value").unwrap_or_default());
        }
    }
    env
}

/// The relay image's user (`USER <uid>[:<gid>]`, numeric: runAsNonRoot can only check a
/// numeric user) and the port it EXPOSEs.
fn relay_image() -> (i64, u16) {
    let dockerfile = Dockerfile::load().expect("the Dockerfile reads");
    let setting = |keyword: &str| {
        dockerfile
            .effective("relay", keyword)
            .expect("a relay stage")
            .unwrap_or_else(|| panic!("the relay stage has no {keyword}"))
            .args
            .clone()
    };
    let uid = setting("USER")
        .split(':')
        .next()
        .and_then(|u| u.trim().parse().ok())
        .expect("the Dockerfile's USER is numeric");
    let port = setting("EXPOSE")
        .split('/')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .expect("the relay image EXPOSEs one port");
    (uid, port)
}

/// The operational rules; empty when all hold.
fn semantic_problems(docs: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    let overlay = read("deploy/k8s/overlays/example/kustomization.yaml");
    let overlay: Value = serde_norway::from_str(&overlay).expect("overlay kustomization parses");
    let namespace = s(&overlay, "namespace").expect("the overlay sets a namespace");

    // Namespace: everything namespaced lives in the overlay's namespace, which is rendered.
    if find(docs, "Namespace", &namespace).is_none() {
        problems.push(format!("Namespace/{namespace} is not rendered"));
    }
    for doc in docs
        .iter()
        .filter(|d| s(d, "kind").as_deref() != Some("Namespace"))
    {
        if s(doc, "metadata.namespace").as_deref() != Some(namespace.as_str()) {
            problems.push(format!(
                "{} is not in namespace {namespace}",
                kind_name(doc)
            ));
        }
    }

    // Images: the overlay's names and tags.
    let mut images = BTreeSet::new();
    for image in get(&overlay, "images")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        images.insert(format!(
            "{}:{}",
            s(image, "newName").unwrap_or_default(),
            s(image, "newTag").unwrap_or_default()
        ));
    }

    let (uid, image_port) = relay_image();
    let readme = ConfigTable::load().expect("README's Configuration table");
    let workloads = [
        (
            "gregor-relay",
            "GREGOR_RELAY_HTTP_ADDR",
            "GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS",
        ),
        (
            "shipping-service",
            "GREGOR_CONSUMER_HTTP_ADDR",
            "GREGOR_CONSUMER_SHUTDOWN_TIMEOUT_MS",
        ),
    ];
    let mut consumer_env = BTreeMap::new();
    for (name, addr_var, timeout_var) in workloads {
        let Some(deployment) = find(docs, "Deployment", name) else {
            problems.push(format!("Deployment/{name} is not rendered"));
            continue;
        };
        let pod = get(deployment, "spec.template.spec")
            .cloned()
            .unwrap_or(Value::Null);
        let Some(container) = get(&pod, "containers.0") else {
            problems.push(format!("Deployment/{name} has no container"));
            continue;
        };
        let env = container_env(docs, container, &mut problems);
        for var in env.keys() {
            if !readme.documents(var) {
                problems.push(format!(
                    "Deployment/{name}: {var} is not a variable of README's Configuration table"
                ));
            }
        }
        for required in ["DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"] {
            if !env.contains_key(required) {
                problems.push(format!("Deployment/{name}: {required} is not set"));
            }
        }
        let image = s(container, "image").unwrap_or_default();
        if !images.contains(&image) {
            problems.push(format!(
                "Deployment/{name}: image {image} is not one of the overlay's {images:?}"
            ));
        }

        // Probes on the port the binary serves HTTP on.
        let http_port = env.get(addr_var).and_then(|a| port_of(a));
        let container_port = get(container, "ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .find(|p| s(p, "name").as_deref() == Some("metrics"))
            .and_then(|p| s(p, "containerPort"))
            .and_then(|p| p.parse::<u16>().ok());
        if http_port.is_none() || http_port != container_port {
            problems.push(format!(
                "Deployment/{name}: container port `metrics` {container_port:?} is not {addr_var}'s port {http_port:?}"
            ));
        }
        if name == "gregor-relay" && container_port != Some(image_port) {
            problems.push(format!(
                "Deployment/{name}: container port `metrics` {container_port:?} is not the port the relay image EXPOSEs ({image_port})"
            ));
        }
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let probe_path = s(container, &format!("{probe}.httpGet.path"));
            let probe_port = s(container, &format!("{probe}.httpGet.port"));
            if probe_path.as_deref() != Some(path) || probe_port.as_deref() != Some("metrics") {
                problems.push(format!(
                    "Deployment/{name}: {probe} must GET {path} on port metrics, not {probe_path:?} on {probe_port:?}"
                ));
            }
        }

        // The grace period covers the shutdown timeout (default 10 s).
        let timeout_ms: i64 = env
            .get(timeout_var)
            .map_or(10_000, |v| v.parse().unwrap_or(i64::MAX));
        let grace_s: i64 =
            s(&pod, "terminationGracePeriodSeconds").map_or(30, |v| v.parse().unwrap_or(0));
        if grace_s * 1000 <= timeout_ms {
            problems.push(format!(
                "Deployment/{name}: terminationGracePeriodSeconds {grace_s} is not longer than {timeout_var} {timeout_ms} ms"
            ));
        }

        // Non-root (the image's numeric user), read-only root, resources.
        if s(&pod, "securityContext.runAsNonRoot").as_deref() != Some("true") {
            problems.push(format!("Deployment/{name}: runAsNonRoot is not true"));
        }
        if s(&pod, "securityContext.runAsUser").and_then(|u| u.parse::<i64>().ok()) != Some(uid) {
            problems.push(format!(
                "Deployment/{name}: runAsUser is not the Dockerfile's user {uid}"
            ));
        }
        if s(container, "securityContext.readOnlyRootFilesystem").as_deref() != Some("true") {
            problems.push(format!(
                "Deployment/{name}: readOnlyRootFilesystem is not true"
            ));
        }
        for field in ["requests.cpu", "requests.memory", "limits.memory"] {
            if s(container, &format!("resources.{field}")).is_none() {
                problems.push(format!("Deployment/{name}: resources.{field} is not set"));
            }
        }

        // The metrics Service selects these pods and serves the port; a ServiceMonitor scrapes it.
        let pod_labels = get(deployment, "spec.template.metadata.labels")
            .cloned()
            .unwrap_or(Value::Null);
        let selects = |selector: Option<&Value>| {
            selector.and_then(Value::as_mapping).is_some_and(|m| {
                !m.is_empty() && m.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
            })
        };
        match docs.iter().find(|d| {
            s(d, "kind").as_deref() == Some("Service") && selects(get(d, "spec.selector"))
        }) {
            None => problems.push(format!("no Service selects the pods of Deployment/{name}")),
            Some(service) => {
                let service_labels = get(service, "metadata.labels")
                    .cloned()
                    .unwrap_or(Value::Null);
                let monitored = docs.iter().any(|d| {
                    s(d, "kind").as_deref() == Some("ServiceMonitor")
                        && get(d, "spec.selector.matchLabels")
                            .and_then(Value::as_mapping)
                            .is_some_and(|m| {
                                m.iter().all(|(k, v)| service_labels.get(k) == Some(v))
                            })
                        && s(d, "spec.endpoints.0.port").as_deref() == Some("metrics")
                });
                if !monitored {
                    problems.push(format!(
                        "no ServiceMonitor scrapes port metrics of {}",
                        kind_name(service)
                    ));
                }
            }
        }

        if name == "gregor-relay" {
            let replicas: i64 = s(deployment, "spec.replicas")
                .and_then(|r| r.parse().ok())
                .unwrap_or(1);
            if replicas < 2 {
                problems.push(format!(
                    "Deployment/{name}: {replicas} replica(s), fewer than 2"
                ));
            }
            match docs.iter().find(|d| {
                s(d, "kind").as_deref() == Some("PodDisruptionBudget")
                    && selects(get(d, "spec.selector.matchLabels"))
            }) {
                None => problems.push("no PodDisruptionBudget selects the relay pods".to_owned()),
                Some(pdb) => {
                    let min: i64 = s(pdb, "spec.minAvailable")
                        .and_then(|m| m.parse().ok())
                        .unwrap_or(0);
                    if min < 1 || min >= replicas {
                        problems.push(format!(
                            "{}: minAvailable {min} must be at least 1 and below the {replicas} replicas",
                            kind_name(pdb)
                        ));
                    }
                }
            }
        } else {
            consumer_env = env;
        }
    }

    // KEDA scales the consumer Deployment on its own group's lag.
    match docs
        .iter()
        .find(|d| s(d, "kind").as_deref() == Some("ScaledObject"))
    {
        None => problems.push("no ScaledObject".to_owned()),
        Some(so) => {
            let target_kind =
                s(so, "spec.scaleTargetRef.kind").unwrap_or_else(|| "Deployment".to_owned());
            let target = s(so, "spec.scaleTargetRef.name").unwrap_or_default();
            if target_kind != "Deployment"
                || find(docs, "Deployment", &target).is_none()
                || target != "shipping-service"
            {
                problems.push(format!(
                    "{}: scaleTargetRef {target_kind}/{target} is not the consumer Deployment",
                    kind_name(so)
                ));
            }
            let trigger = get(so, "spec.triggers.0").cloned().unwrap_or(Value::Null);
            let expect = [
                ("type", "kafka".to_owned()),
                (
                    "metadata.consumerGroup",
                    consumer_env
                        .get("GREGOR_CONSUMER_GROUP")
                        .cloned()
                        .unwrap_or_default(),
                ),
                (
                    "metadata.topic",
                    consumer_env
                        .get("SHIPPING_TOPIC")
                        .cloned()
                        .unwrap_or_default(),
                ),
                (
                    "metadata.bootstrapServers",
                    consumer_env
                        .get("KAFKA_BOOTSTRAP_SERVERS")
                        .cloned()
                        .unwrap_or_default(),
                ),
            ];
            for (field, want) in expect {
                if s(&trigger, field).as_deref() != Some(want.as_str()) || want.is_empty() {
                    problems.push(format!(
                        "{}: trigger {field} is {:?}, the consumer's is {want:?}",
                        kind_name(so),
                        s(&trigger, field)
                    ));
                }
            }
            if s(&trigger, "metadata.lagThreshold")
                .and_then(|l| l.parse::<u64>().ok())
                .is_none_or(|l| l == 0)
            {
                problems.push(format!(
                    "{}: lagThreshold is not a positive number",
                    kind_name(so)
                ));
            }
            if let Some(auth) = s(&trigger, "authenticationRef.name") {
                match find(docs, "TriggerAuthentication", &auth) {
                    None => problems.push(format!(
                        "{}: TriggerAuthentication/{auth} is not rendered",
                        kind_name(so)
                    )),
                    Some(ta) => {
                        for r in get(ta, "spec.secretTargetRef")
                            .and_then(Value::as_sequence)
                            .into_iter()
                            .flatten()
                        {
                            let secret = s(r, "name").unwrap_or_default();
                            let key = s(r, "key").unwrap_or_default();
                            let has = find(docs, "Secret", &secret).is_some_and(|sec| {
                                get(sec, &format!("stringData.{key}")).is_some()
                                    || get(sec, &format!("data.{key}")).is_some()
                            });
                            if !has {
                                problems.push(format!(
                                    "{}: Secret/{secret} has no key {key}",
                                    kind_name(ta)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    problems
}

fn overlay_dir() -> PathBuf {
    root().join("deploy/k8s/overlays/example")
}

#[test]
fn the_example_overlay_renders_and_validates() {
    let docs = render(&overlay_dir());
    let kinds: BTreeSet<String> = docs.iter().map(kind_name).collect();
    for expected in [
        "Deployment/gregor-relay",
        "PodDisruptionBudget/gregor-relay",
        "Service/gregor-relay",
        "ServiceMonitor/gregor-relay",
        "ConfigMap/gregor-relay",
        "Secret/gregor-relay",
        "Deployment/shipping-service",
        "ScaledObject/shipping-service",
    ] {
        assert!(
            kinds.contains(expected),
            "{expected} is not rendered: {kinds:?}"
        );
    }
    if let Err(e) = validate(&docs, "valid") {
        panic!("the rendered manifests do not validate:\n{e}");
    }
    let problems = semantic_problems(&docs);
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // The overlay's replica patch took effect.
    let patch: Value =
        serde_norway::from_str(&read("deploy/k8s/overlays/example/relay-replicas.yaml"))
            .expect("the replica patch parses");
    let relay = find(&docs, "Deployment", "gregor-relay").expect("relay");
    assert_eq!(s(relay, "spec.replicas"), s(&patch, "spec.replicas"));
}

#[test]
fn the_base_renders_on_its_own() {
    let docs = render(&root().join("deploy/k8s/base"));
    assert!(find(&docs, "Deployment", "gregor-relay").is_some());
    let relay = find(&docs, "Deployment", "gregor-relay").expect("relay");
    assert_eq!(
        s(relay, "spec.replicas").as_deref(),
        Some("2"),
        "the base runs two relays"
    );
}

/// A copy of the rendered objects with `edit` applied to the object `kind/name`.
fn mutated(docs: &[Value], kind: &str, name: &str, edit: impl FnOnce(&mut Value)) -> Vec<Value> {
    let mut copy = docs.to_vec();
    let doc = copy
        .iter_mut()
        .find(|d| {
            s(d, "kind").as_deref() == Some(kind) && s(d, "metadata.name").as_deref() == Some(name)
        })
        .unwrap_or_else(|| panic!("{kind}/{name} is not rendered"));
    edit(doc);
    copy
}

fn at<'a>(v: &'a mut Value, path: &str) -> &'a mut Value {
    let mut cur = v;
    for key in path.split('.') {
        cur = match key.parse::<usize>() {
            Ok(i) => cur.get_mut(i),
            Err(_) => cur.get_mut(key),
        }
        .unwrap_or_else(|| panic!("no {path}"));
    }
    cur
}

fn set(v: &mut Value, path: &str, value: Value) {
    *at(v, path) = value;
}

fn remove(v: &mut Value, path: &str) {
    let (parent, key) = path.rsplit_once('.').expect("a nested path");
    at(v, parent)
        .as_mapping_mut()
        .expect("a mapping")
        .remove(key)
        .unwrap_or_else(|| panic!("no {path}"));
}

fn assert_rejected(result: Result<(), String>, expected: &str) {
    match result {
        Ok(()) => panic!("a broken manifest was accepted (expected {expected:?})"),
        Err(e) => assert!(e.contains(expected), "expected {expected:?} in:\n{e}"),
    }
}

#[test]
fn the_validators_reject_broken_manifests() {
    let docs = render(&overlay_dir());

    let broken = mutated(&docs, "Deployment", "gregor-relay", |d| {
        set(d, "spec.replicas", Value::from("two"));
    });
    assert_rejected(
        validate(&broken, "replicas"),
        "'two' is not of type 'integer'",
    );

    let broken = mutated(&docs, "Deployment", "gregor-relay", |d| {
        remove(d, "spec.selector")
    });
    assert_rejected(
        validate(&broken, "selector"),
        "'selector' is a required property",
    );

    let broken = mutated(&docs, "Deployment", "gregor-relay", |d| {
        at(d, "spec.template.spec.containers.0.livenessProbe.httpGet")
            .as_mapping_mut()
            .expect("a mapping")
            .insert(Value::from("paht"), Value::from("/healthz"));
    });
    assert_rejected(validate(&broken, "unknown-field"), "'paht' was unexpected");

    let broken = mutated(&docs, "ScaledObject", "shipping-service", |d| {
        remove(d, "spec.scaleTargetRef")
    });
    assert_rejected(
        validate(&broken, "scaled-object"),
        "'scaleTargetRef' is a required property",
    );

    let broken = mutated(&docs, "ScaledObject", "shipping-service", |d| {
        set(d, "spec.triggers.0.metadata.lagThreshold", Value::from(100));
    });
    assert_rejected(
        validate(&broken, "lag-threshold"),
        "100 is not of type 'string'",
    );

    let broken = mutated(&docs, "ServiceMonitor", "gregor-relay", |d| {
        set(d, "spec.endpoints.0.interval", Value::from("15 seconds"));
    });
    assert_rejected(validate(&broken, "interval"), "does not match");

    // An object of a kind no schema covers is not waved through.
    let mut broken = docs.clone();
    broken.push(
        serde_norway::from_str(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: gregor-example\nspec: {}\n",
        )
        .expect("yaml"),
    );
    assert_rejected(
        validate(&broken, "unknown-kind"),
        "Couldn't find schema for kind Widget",
    );
}

#[test]
fn the_semantic_rules_reject_broken_manifests() {
    let docs = render(&overlay_dir());
    let check = |broken: Vec<Value>, expected: &str| {
        let problems = semantic_problems(&broken);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "expected {expected:?} in {problems:#?}"
        );
    };

    check(
        mutated(&docs, "Deployment", "gregor-relay", |d| {
            set(d, "spec.replicas", Value::from(1))
        }),
        "Deployment/gregor-relay: 1 replica(s), fewer than 2",
    );
    check(
        mutated(&docs, "Deployment", "gregor-relay", |d| {
            set(
                d,
                "spec.template.spec.terminationGracePeriodSeconds",
                Value::from(10),
            );
        }),
        "terminationGracePeriodSeconds 10 is not longer than GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS 10000 ms",
    );
    check(
        mutated(&docs, "ConfigMap", "gregor-relay", |d| {
            set(
                d,
                "data.GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS",
                Value::from("45000"),
            );
        }),
        "terminationGracePeriodSeconds 30 is not longer than GREGOR_RELAY_SHUTDOWN_TIMEOUT_MS 45000 ms",
    );
    check(
        mutated(&docs, "Deployment", "gregor-relay", |d| {
            remove(d, "spec.template.spec.containers.0.readinessProbe")
        }),
        "readinessProbe must GET /readyz",
    );
    check(
        mutated(&docs, "ConfigMap", "gregor-relay", |d| {
            set(
                d,
                "data.GREGOR_RELAY_HTTP_ADDR",
                Value::from("0.0.0.0:9474"),
            );
        }),
        "container port `metrics` Some(9464) is not GREGOR_RELAY_HTTP_ADDR's port Some(9474)",
    );
    check(
        mutated(&docs, "Deployment", "gregor-relay", |d| {
            set(
                d,
                "spec.template.spec.containers.0.ports.0.containerPort",
                Value::from(9474),
            );
        }),
        "is not the port the relay image EXPOSEs (9464)",
    );
    check(
        mutated(&docs, "PodDisruptionBudget", "gregor-relay", |d| {
            set(
                d,
                "spec.selector.matchLabels",
                serde_norway::from_str("{app.kubernetes.io/name: relay}").expect("yaml"),
            );
        }),
        "no PodDisruptionBudget selects the relay pods",
    );
    check(
        mutated(&docs, "ScaledObject", "shipping-service", |d| {
            set(d, "spec.scaleTargetRef.name", Value::from("gregor-relay"));
        }),
        "scaleTargetRef Deployment/gregor-relay is not the consumer Deployment",
    );
    check(
        mutated(&docs, "ScaledObject", "shipping-service", |d| {
            set(
                d,
                "spec.triggers.0.metadata.consumerGroup",
                Value::from("shipping-v2"),
            );
        }),
        "trigger metadata.consumerGroup is Some(\"shipping-v2\"), the consumer's is \"shipping\"",
    );
    check(
        mutated(&docs, "ConfigMap", "shipping-service", |d| {
            at(d, "data").as_mapping_mut().expect("a mapping").insert(
                Value::from("GREGOR_CONSUMER_LAG_THRESHOLD"),
                Value::from("100"),
            );
        }),
        "GREGOR_CONSUMER_LAG_THRESHOLD is not a variable of README's Configuration table",
    );
    check(
        mutated(&docs, "Deployment", "shipping-service", |d| {
            set(
                d,
                "spec.template.spec.securityContext.runAsUser",
                Value::from(0),
            );
        }),
        "runAsUser is not the Dockerfile's user 10001",
    );
}
