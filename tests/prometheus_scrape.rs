//! A real Prometheus (Debian's package) scrapes a relay and a shipping-service while orders
//! flow; queried through its HTTP API, the relay's and the consumer's counters rise to the
//! number of orders, the consumer's lag rises while the (deliberately slow) handler falls
//! behind and returns to zero, and the outbox backlog drains.
//!
//! Needs `prometheus` (installed by `./scripts/services up`); missing, the test fails.

use gregor_testkit::{env_plus, free_port};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gregor_testkit::process::{self, Proc};
use gregor_testkit::{PrivateRegistry, TestDb, kafka, kafka_bootstrap, unique_name, wait_until};

const WAIT: Duration = Duration::from_secs(90);
const ORDERS: u64 = 200;

/// A Prometheus server with its own config and storage, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(relay: u16, consumer: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("prometheus"));
        std::fs::create_dir_all(dir.join("data"))?;
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n\
                 \x20 - job_name: gregor-relay\n    static_configs: [{{targets: ['127.0.0.1:{relay}']}}]\n\
                 \x20 - job_name: gregor-consumer\n    static_configs: [{{targets: ['127.0.0.1:{consumer}']}}]\n"
            ),
        )?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.join("prometheus.log"))?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => anyhow::anyhow!(
                    "prometheus is not installed: run ./scripts/services up (it installs Debian's prometheus package)"
                ),
                _ => e.into(),
            })?;
        Ok(Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        })
    }

    /// The value of an instant query returning one series, `None` when it returns none.
    async fn value(&self, client: &reqwest::Client, query: &str) -> anyhow::Result<Option<f64>> {
        let Ok(response) = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
        else {
            return Ok(None); // not listening yet
        };
        if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Ok(None); // still starting
        }
        let body: serde_json::Value = response.json().await?;
        anyhow::ensure!(body["status"] == "success", "query {query} failed: {body}");
        let result = body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        match result.as_slice() {
            [] => Ok(None),
            [one] => Ok(one["value"][1].as_str().and_then(|v| v.parse().ok())),
            many => anyhow::bail!("query {query} returned {} series", many.len()),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn prometheus_sees_counters_and_lag_move_as_orders_flow() -> anyhow::Result<()> {
    let db = TestDb::create("scrape").await?;
    let registry = PrivateRegistry::start().await?;
    let bootstrap = kafka_bootstrap()?;
    let topic = unique_name("scraped-orders");
    let group = unique_name("shipping");
    kafka::create_topic_family(&topic, 2, 1).await?;
    let (relay_port, consumer_port) = (free_port()?, free_port()?);
    let relay_addr = format!("127.0.0.1:{relay_port}");
    let consumer_addr = format!("127.0.0.1:{consumer_port}");
    let registry_url = registry.url();
    let common = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("SCHEMA_REGISTRY_URL", registry_url.as_str()),
        ("GREGOR_ORDERS_TOPIC", topic.as_str()),
    ];
    let relay = Proc::spawn(
        "gregor-relay",
        &env_plus(&common, &[("GREGOR_RELAY_HTTP_ADDR", &relay_addr)]),
    )?;
    let shipping = Proc::spawn(
        "shipping-service",
        &env_plus(
            &common,
            &[
                ("GREGOR_CONSUMER_GROUP", group.as_str()),
                ("GREGOR_CONSUMER_HTTP_ADDR", consumer_addr.as_str()),
                ("SHIPPING_TOPIC", topic.as_str()),
                ("GREGOR_CONSUMER_RETRY_TIERS", "1s"),
                // The handler is slower than the orders arrive, so lag builds up.
                ("SHIPPING_DELAY_MS", "40"),
                ("SHIPPING_BATCH_SIZE", "1"),
                ("KAFKA_STATISTICS_INTERVAL_MS", "500"),
            ],
        ),
    )?;
    let prometheus = Prometheus::start(relay_port, consumer_port)?;
    let client = reqwest::Client::new();
    let logs = |p: &Prometheus| {
        format!(
            "relay:\n{}\nshipping:\n{}\nprometheus:\n{}",
            relay.log(),
            shipping.log(),
            p.log()
        )
    };
    let query = |q: String| {
        let (prometheus, client) = (&prometheus, &client);
        async move { prometheus.value(client, &q).await }
    };
    let ready = wait_until(WAIT, "both targets scraped and up", || async {
        let up = query("sum(up)".into()).await?;
        let assigned = query("sum(gregor_consumer_assigned_partitions)".into()).await?;
        // Two partitions of the topic and two of its retry tier.
        Ok((up == Some(2.0) && assigned == Some(4.0)).then_some(()))
    })
    .await;
    ready.map_err(|e| e.context(logs(&prometheus)))?;
    let published_before = query("sum(gregor_relay_published_total)".into()).await?;
    assert_eq!(published_before, Some(0.0), "nothing flowed yet");

    let orders = ORDERS.to_string();
    let placed = process::run(
        "order-service",
        &["generate", "--orders", &orders, "--rate", "400"],
        &common,
    )?;
    anyhow::ensure!(
        placed.status.success(),
        "order-service: {}",
        String::from_utf8_lossy(&placed.stderr)
    );

    let lag_query = format!("sum(gregor_consumer_lag{{group=\"{group}\"}})");
    let peak_lag = wait_until(WAIT, "the consumer's lag to rise", || async {
        Ok(query(lag_query.clone()).await?.filter(|lag| *lag > 0.0))
    })
    .await
    .map_err(|e| e.context(logs(&prometheus)))?;
    let n = ORDERS as f64;
    wait_until(
        WAIT,
        "every order published, handled and the lag back to zero",
        || async {
            let published = query("sum(gregor_relay_published_total)".into()).await?;
            let consumed = query(format!(
                "sum(gregor_consumer_consumed_total{{topic=\"{topic}\"}})"
            ))
            .await?;
            let handled = query(format!(
                "sum(gregor_consumer_messages_total{{topic=\"{topic}\",outcome=\"handled\"}})"
            ))
            .await?;
            let lag = query(lag_query.clone()).await?;
            let backlog = query("max(gregor_outbox_backlog)".into()).await?;
            Ok((published == Some(n)
                && consumed == Some(n)
                && handled == Some(n)
                && lag == Some(0.0)
                && backlog == Some(0.0))
            .then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(logs(&prometheus)))?;
    assert!(peak_lag <= n, "lag {peak_lag} above the {ORDERS} orders");
    let handled_rate = query(format!(
        "sum(increase(gregor_consumer_messages_total{{topic=\"{topic}\",outcome=\"handled\"}}[5m]))"
    ))
    .await?;
    assert!(
        handled_rate.is_some_and(|v| v > 0.0),
        "increase() over the run: {handled_rate:?}"
    );
    Ok(())
}
