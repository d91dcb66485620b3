//! Avro decode: gregor's framed decode (frame check, schema-id cache, resolution plan) into a
//! typed struct vs bare apache-avro decoding the same bodies with pre-parsed schemas and a
//! datum reader built once — the registry and schema parsing fully off the hot path.
//! Run on an otherwise idle machine: a 200 000-message round takes about 0.2 s.

use std::time::Instant;

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use gregor_avro::{AvroDeserializer, AvroSerializer, RegistryClient, SerializerConfig, wire};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::report::{emit, quantile};

/// Options of `gregor-bench avro`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Messages decoded per round.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Rounds per side, alternating; the median round of each side counts.
    #[arg(long, default_value_t = 11)]
    rounds: usize,
}

const WRITER: &str = include_str!("../../../schemas/orders/order_placed.avsc");
const READER: &str = include_str!("../../../schemas/shipping-service/order_placed.avsc");

#[derive(Debug, Serialize, Deserialize)]
struct OrderPlaced {
    order_id: String,
    customer: String,
    customer_seq: i64,
    amount_cents: i64,
    currency: String,
}

/// What shipping-service reads (fields are only decoded, never looked at here).
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
struct ShippingView {
    order_id: String,
    customer: String,
    customer_seq: i64,
    amount_cents: i64,
}

pub(crate) async fn run(options: Options) -> anyhow::Result<()> {
    let client = RegistryClient::from_env(&gregor_config::Env::from_process())?;
    let topic = gregor_testkit::unique_name("bench-avro");
    let writer = AvroSerializer::new(client.clone(), WRITER, SerializerConfig::default())?;
    let mut framed = Vec::with_capacity(options.messages);
    for i in 0..options.messages {
        let order = OrderPlaced {
            order_id: uuid::Uuid::now_v7().to_string(),
            customer: format!("customer-{:03}", i % 500),
            customer_seq: i64::try_from(i)?,
            amount_cents: 100 + i64::try_from(i % 100_000)?,
            currency: "EUR".into(),
        };
        framed.push(writer.serialize(&topic, &order).await?);
    }
    let bodies: Vec<&[u8]> = framed.iter().map(|b| &b[wire::HEADER_LEN..]).collect();
    println!(
        "avro: {} messages of {} bytes on average, {} rounds per side",
        framed.len(),
        framed.iter().map(Vec::len).sum::<usize>() / framed.len().max(1),
        options.rounds
    );

    let writer_schema = Schema::parse_str(WRITER)?;
    let samples = Samples {
        framed: &framed,
        bodies: &bodies,
        rounds: options.rounds,
    };
    // Same schema on both sides.
    let (value, baseline) = samples
        .compare::<OrderPlaced>(&client, &writer_schema, None, WRITER)
        .await?;
    emit(
        "avro_decode",
        value,
        "messages/s",
        baseline,
        &[
            ("target_ratio", json!(0.9)),
            ("bytes", json!(framed[0].len())),
        ],
    );
    // Writer and reader differ: resolution on both sides.
    let reader_schema = Schema::parse_str(READER)?;
    let (value, baseline) = samples
        .compare::<ShippingView>(&client, &writer_schema, Some(&reader_schema), READER)
        .await?;
    emit(
        "avro_decode_resolving",
        value,
        "messages/s",
        baseline,
        &[("target_ratio", json!(0.9))],
    );
    Ok(())
}

/// The messages every scenario decodes: framed for gregor, bare bodies for the baseline.
struct Samples<'a> {
    framed: &'a [Vec<u8>],
    bodies: &'a [&'a [u8]],
    rounds: usize,
}

impl Samples<'_> {
    /// Decodes every message into `T` with gregor (reader schema `reader_text`) and with bare
    /// apache-avro (`writer` resolved to `reader`); returns the rates (ours, baseline).
    async fn compare<T: serde::de::DeserializeOwned>(
        &self,
        client: &RegistryClient,
        writer: &Schema,
        reader: Option<&Schema>,
        reader_text: &str,
    ) -> anyhow::Result<(f64, f64)> {
        let bare = GenericDatumReader::builder(writer)
            .maybe_reader_schema(reader)
            .build()?;
        let ours = AvroDeserializer::<T>::new(client.clone(), reader_text)?;
        ours.decode(&self.framed[0]).await?; // fetch and cache the writer schema
        compare(
            self.rounds,
            || {
                for body in self.bodies {
                    let mut rest = *body;
                    let v = bare.read_value(&mut rest)?;
                    std::hint::black_box(apache_avro::from_value::<T>(&v)?);
                }
                Ok(())
            },
            || async {
                for bytes in self.framed {
                    std::hint::black_box(ours.decode(bytes).await?);
                }
                Ok(())
            },
            self.framed.len(),
        )
        .await
    }
}

/// Alternates rounds of the baseline and of gregor; returns the median rates (ours, baseline),
/// which shrug off the rounds another process on the machine disturbed.
async fn compare<B, O, F>(
    rounds: usize,
    mut baseline: B,
    mut ours: O,
    messages: usize,
) -> anyhow::Result<(f64, f64)>
where
    B: FnMut() -> anyhow::Result<()>,
    O: FnMut() -> F,
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    let (mut base_rates, mut our_rates) = (Vec::new(), Vec::new());
    for _ in 0..rounds.max(1) {
        let started = Instant::now();
        baseline()?;
        base_rates.push(rate(messages, started));
        let started = Instant::now();
        ours().await?;
        our_rates.push(rate(messages, started));
    }
    Ok((
        quantile(&mut our_rates, 500),
        quantile(&mut base_rates, 500),
    ))
}

#[allow(clippy::cast_precision_loss)]
fn rate(messages: usize, started: Instant) -> f64 {
    messages as f64 / started.elapsed().as_secs_f64()
}
