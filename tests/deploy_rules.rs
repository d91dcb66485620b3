//! The operations files are checked with the real Prometheus tools: the alert rules parse and
//! pass their `promtool test rules` unit tests, the example Prometheus config loads, and broken
//! copies are refused (so the checks are real). The dashboard, the alerts and the runbooks are
//! held to the metrics contract of the binaries.
//!
//! Needs `promtool` (Debian's prometheus package, installed by `./scripts/services up`); a
//! missing promtool fails the test, it never skips.

use gregor_testkit::repo::{read, root};
use gregor_testkit::scratch_dir;
use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;

/// Counters and gauges the relay and consumers expose (README, issue "Observability").
const METRICS: &[&str] = &[
    "gregor_relay_published_total",
    "gregor_relay_publish_failures_total",
    "gregor_relay_parked_total",
    "gregor_outbox_backlog",
    "gregor_outbox_parked",
    "gregor_outbox_oldest_age_seconds",
    "gregor_relay_leases_held",
    "gregor_consumer_consumed_total",
    "gregor_consumer_messages_total",
    "gregor_consumer_failed_attempts_total",
    "gregor_consumer_dead_lettered_total",
    "gregor_consumer_lag",
    "gregor_consumer_in_flight",
    "gregor_consumer_paused_partitions",
    "gregor_consumer_assigned_partitions",
    "gregor_consumer_forward_failures_total",
    "gregor_consumer_producer_rebuilds_total",
    "gregor_dlq_depth",
];

/// Histograms: queried as `<name>_bucket`, `_sum` and `_count`.
const HISTOGRAMS: &[&str] = &[
    "gregor_relay_publish_latency_seconds",
    "gregor_consumer_handle_seconds",
];

/// Runs `promtool <args>`; returns whether it succeeded and its stdout + stderr.
fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "promtool is missing: run ./scripts/services up (it installs Debian's prometheus package)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
fn mutate(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once");
    text.replacen(from, to, 1)
}

#[test]
fn alert_rules_pass_promtool_checks_and_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(ok, "promtool check rules failed:\n{out}");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(ok, "promtool test rules failed:\n{out}");
    // The rule file path in the config resolves relative to the config file.
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], &dir);
    assert!(ok, "promtool check config failed:\n{out}");
    assert!(out.contains("1 rule files found"), "{out}");
}

#[test]
fn promtool_rejects_broken_rules_and_wrong_expectations() -> anyhow::Result<()> {
    let alerts = read("deploy/prometheus/alerts.yml")?;
    let tests = read("deploy/prometheus/alerts_test.yml")?;
    let age_expr = "max(gregor_outbox_oldest_age_seconds) > 60";

    let base = scratch_dir("gregor-deploy-rejects")?;

    // Invalid PromQL.
    let dir = base.join("bad-expr");
    std::fs::create_dir(&dir).expect("creating bad-expr");
    let broken = mutate(
        &alerts,
        age_expr,
        "max(gregor_outbox_oldest_age_seconds > 60",
    );
    std::fs::write(dir.join("alerts.yml"), broken).expect("writing alerts.yml");
    let (ok, out) = promtool(&["check", "rules", "alerts.yml"], &dir);
    assert!(!ok, "promtool accepted an invalid expression:\n{out}");
    assert!(out.contains("parse error"), "{out}");

    // A wrong expected alert.
    let dir = base.join("wrong-expectation");
    std::fs::create_dir(&dir).expect("creating wrong-expectation");
    std::fs::write(dir.join("alerts.yml"), &alerts).expect("writing alerts.yml");
    let wrong = mutate(&tests, "outbox row is 3m 0s old", "outbox row is 2m 0s old");
    std::fs::write(dir.join("alerts_test.yml"), wrong).expect("writing alerts_test.yml");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(!ok, "promtool passed a wrong expectation:\n{out}");
    assert!(out.contains("FAILED"), "{out}");

    // A changed threshold is caught by the unit tests.
    let dir = base.join("changed-threshold");
    std::fs::create_dir(&dir).expect("creating changed-threshold");
    let changed = mutate(
        &alerts,
        age_expr,
        "max(gregor_outbox_oldest_age_seconds) > 600",
    );
    std::fs::write(dir.join("alerts.yml"), changed).expect("writing alerts.yml");
    std::fs::write(dir.join("alerts_test.yml"), &tests).expect("writing alerts_test.yml");
    let (ok, out) = promtool(&["test", "rules", "alerts_test.yml"], &dir);
    assert!(!ok, "the unit tests missed a changed threshold:\n{out}");
    assert!(out.contains("GregorOutboxAgeHigh"), "{out}");

    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// Metric names (identifiers starting with `gregor_`) in a PromQL expression, outside string
/// literals.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' || c == '`' {
            let mut escaped = false;
            for d in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = c.to_string();
            while let Some(&d) = chars.peek() {
                if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                    break;
                }
                ident.push(d);
                chars.next();
            }
            if ident.starts_with("gregor_") {
                names.push(ident);
            }
        }
    }
    names
}

/// The contract name a series name belongs to, if any.
fn contract_name(name: &str) -> Option<&'static str> {
    if let Some(m) = METRICS.iter().find(|m| **m == name) {
        return Some(m);
    }
    HISTOGRAMS.iter().copied().find(|h| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix) == Some(h))
    })
}

/// Every `targets[].expr` anywhere in the dashboard (rows may nest panels).
fn target_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(targets) = map.get("targets").and_then(|t| t.as_array()) {
                for t in targets {
                    let expr = t["expr"].as_str().expect("every target has an expr");
                    out.push(expr.to_owned());
                }
            }
            map.values().for_each(|v| target_exprs(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| target_exprs(v, out)),
        _ => {}
    }
}

#[test]
fn dashboard_queries_use_the_metrics_contract_and_parse() -> anyhow::Result<()> {
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/gregor-dashboard.json")?).expect("valid JSON");
    assert_eq!(dash["uid"], "gregor-overview");
    assert!(dash["schemaVersion"].as_u64().expect("schemaVersion") >= 39);
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "a prometheus datasource variable"
    );

    let mut exprs = Vec::new();
    target_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 20, "only {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            let known = contract_name(&name).unwrap_or_else(|| {
                panic!("{name} (in `{expr}`) is not a metric the binaries expose")
            });
            used.insert(known);
        }
    }
    let all: BTreeSet<&str> = METRICS.iter().chain(HISTOGRAMS).copied().collect();
    let missing: Vec<_> = all.difference(&used).collect();
    assert!(missing.is_empty(), "metrics without a panel: {missing:?}");

    // promtool parses each query as a recording rule (Grafana's interval variables set to 5m).
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs.iter().enumerate() {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "5m")
            .replace("$__range", "5m");
        let quoted = serde_json::to_string(&expr).expect("a JSON string is a YAML string");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = scratch_dir("gregor-deploy-dashboard")?;
    std::fs::write(dir.join("dashboard_rules.yml"), rules).expect("writing dashboard_rules.yml");
    let (ok, out) = promtool(&["check", "rules", "dashboard_rules.yml"], &dir);
    assert!(ok, "a dashboard query does not parse:\n{out}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_unit_tests_and_known_metrics() -> anyhow::Result<()> {
    let alerts = read("deploy/prometheus/alerts.yml")?;
    let tests = read("deploy/prometheus/alerts_test.yml")?;
    let runbooks = read("docs/runbooks.md")?;

    let names: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(str::trim)
        .collect();
    let urls: Vec<&str> = alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url:"))
        .map(|u| u.trim().trim_matches('"'))
        .collect();
    assert!(names.len() >= 7, "alerts: {names:?}");
    assert_eq!(names.len(), urls.len(), "one runbook_url per alert");

    let mut in_code = false;
    let mut sections = BTreeSet::new();
    for line in runbooks.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            sections.insert(anchor(line.trim_start_matches('#')));
        }
    }

    for (name, url) in names.iter().zip(&urls) {
        let section = url
            .strip_prefix("docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not docs/runbooks.md#…"));
        assert_eq!(section, anchor(name), "{name}: runbook anchor");
        assert!(
            sections.contains(section),
            "{name}: no section #{section} in docs/runbooks.md"
        );

        // At least one case where it fires and one where it must not.
        let lines: Vec<&str> = tests.lines().map(str::trim).collect();
        let cases: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {name}"))
            .map(|w| w[1])
            .collect();
        assert!(
            cases.contains(&"exp_alerts: []"),
            "{name}: no unit test where it stays quiet"
        );
        assert!(
            cases.contains(&"exp_alerts:"),
            "{name}: no unit test where it fires"
        );
    }

    // Expressions use only the metrics the binaries expose (comments and strings aside).
    for line in alerts.lines().filter(|l| !l.trim_start().starts_with('#')) {
        for metric in metric_names(line) {
            assert!(
                contract_name(&metric).is_some(),
                "alerts.yml uses {metric}, which no binary exposes"
            );
        }
    }
    Ok(())
}
