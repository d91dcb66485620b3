//! README's Configuration table: the one list of the environment variables gregor's
//! binaries, images and deployment files may use.

use std::collections::BTreeMap;

use anyhow::{Context, bail};

/// The rows of README's `## Configuration` table.
#[derive(Debug, Clone)]
pub struct ConfigTable {
    /// Documented names (several per row for `A` / `B` rows) with the row's default cell.
    defaults: BTreeMap<String, String>,
    /// Prefixes of rows like `OTEL_BSP_*`.
    prefixes: Vec<String>,
}

impl ConfigTable {
    /// The table of the workspace's README.md.
    pub fn load() -> anyhow::Result<Self> {
        Self::parse(&crate::repo::read("README.md")?)
    }

    /// Parses the table rows (`| `NAME` … | default | meaning |`) of the `## Configuration`
    /// section of `readme`.
    pub fn parse(readme: &str) -> anyhow::Result<Self> {
        let section = readme
            .split("\n## Configuration")
            .nth(1)
            .context("README has no `## Configuration` section")?;
        let section = section.split("\n## ").next().unwrap_or(section);
        let mut defaults = BTreeMap::new();
        let mut prefixes = Vec::new();
        for row in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split('|').collect();
            let default = cells.get(2).map_or("", |c| c.trim()).trim_matches('`');
            let names = cells.get(1).copied().unwrap_or("");
            // Names are the backticked words of the first cell.
            for token in names.split('`').skip(1).step_by(2) {
                if let Some(prefix) = token.strip_suffix('*') {
                    prefixes.push(prefix.to_owned());
                } else if !token.is_empty()
                    && token
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    defaults.insert(token.to_owned(), default.to_owned());
                }
            }
        }
        if !defaults.contains_key("DATABASE_URL") {
            bail!("README's Configuration table has no DATABASE_URL row: the parser lost it");
        }
        Ok(Self { defaults, prefixes })
    }

    /// Whether `var` may be set on our binaries: a documented name, a documented `FOO_*`
    /// prefix, `KAFKA_<property>` (passed to librdkafka) or the OpenTelemetry SDK's `OTEL_*`.
    pub fn documents(&self, var: &str) -> bool {
        self.defaults.contains_key(var)
            || self.prefixes.iter().any(|p| var.starts_with(p.as_str()))
            || var.starts_with("KAFKA_")
            || var.starts_with("OTEL_")
    }

    /// The default cell of `var`'s row, backticks removed.
    pub fn default_of(&self, var: &str) -> Option<&str> {
        self.defaults.get(var).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::ConfigTable;

    const README: &str = "# x\n\n## Configuration\n\n| variable | default | meaning |\n| --- | --- | --- |\n\
        | `DATABASE_URL` | — | required |\n| `GREGOR_RELAY_HTTP_ADDR` | `0.0.0.0:9464` | health |\n\
        | `SHIPPING_FLAKY_EVERY` / `SHIPPING_REJECT_EVERY` | — | example |\n\
        | `OTEL_BSP_*` | SDK | batching |\n\n## Next\n\n| `LATER_VAR` | x | y |\n";

    #[test]
    fn names_prefixes_and_defaults_come_from_the_configuration_section_only() {
        let table = ConfigTable::parse(README).expect("parses");
        assert!(table.documents("DATABASE_URL"));
        assert!(table.documents("SHIPPING_REJECT_EVERY"));
        assert!(table.documents("OTEL_BSP_MAX_QUEUE_SIZE"));
        assert!(table.documents("KAFKA_SESSION_TIMEOUT_MS"));
        assert!(!table.documents("LATER_VAR"));
        assert!(!table.documents("GREGOR_RELAY_HTTP_ADDRESS"));
        assert_eq!(
            table.default_of("GREGOR_RELAY_HTTP_ADDR"),
            Some("0.0.0.0:9464")
        );
    }

    #[test]
    fn the_real_readme_documents_what_the_stack_uses() {
        let table = ConfigTable::load().expect("README parses");
        for var in [
            "GREGOR_CONSUMER_GROUP",
            "GREGOR_CONSUMER_HTTP_ADDR",
            "SCHEMA_REGISTRY_URL",
            "SHIPPING_TOPIC",
            "GREGOR_ORDERS_ADDR",
            "OTEL_SERVICE_NAME",
        ] {
            assert!(table.documents(var), "{var} should be documented");
        }
        assert!(!table.documents("GREGOR_RELAY_BATCHSIZE"));
        assert!(!table.documents("SHIPPING_TOPICS"));
    }
}
