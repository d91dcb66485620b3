//! `gregor dlq inspect`

use chrono::{DateTime, Utc};
use gregor_wire::headers as h;
use rdkafka::Message;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage};
use serde_json::json;

use super::{read_to_end, show_key, timestamp};
use crate::escape::{json_safe, shown};
use crate::topics::{check_broker, kafka_settings};

/// What inspect shows of one message (payloads are not kept).
#[derive(Debug)]
struct Entry {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload_bytes: Option<usize>,
    timestamp: Option<DateTime<Utc>>,
    error_kind: Option<String>,
    error_message: Option<String>,
    original_topic: Option<String>,
    original_partition: Option<String>,
    original_offset: Option<String>,
    consumer_group: Option<String>,
    attempt: Option<String>,
    ce_id: Option<String>,
    first_failure_at: Option<DateTime<Utc>>,
}

impl Entry {
    fn from_message(msg: &BorrowedMessage<'_>) -> Self {
        let headers = msg.headers().map(BorrowedHeaders::detach);
        let headers = headers.as_ref();
        let text = |name: &str| h::get_str(headers, name).map(str::to_owned);
        Self {
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(<[u8]>::to_vec),
            payload_bytes: msg.payload().map(<[u8]>::len),
            timestamp: timestamp(msg),
            error_kind: text(h::ERROR_KIND),
            error_message: text(h::ERROR_MESSAGE),
            original_topic: text(h::ORIGINAL_TOPIC),
            original_partition: text(h::ORIGINAL_PARTITION),
            original_offset: text(h::ORIGINAL_OFFSET),
            consumer_group: text(h::CONSUMER_GROUP),
            attempt: text(h::ATTEMPT),
            ce_id: text(h::CE_ID),
            first_failure_at: h::get_time(headers, h::FIRST_FAILURE_AT),
        }
    }

    /// Since the first failure, else since the message was written.
    fn age(&self, now: DateTime<Utc>) -> Option<chrono::TimeDelta> {
        self.first_failure_at.or(self.timestamp).map(|t| now - t)
    }

    fn text_line(&self, now: DateTime<Utc>) -> String {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let original = match (
            &self.original_topic,
            &self.original_partition,
            &self.original_offset,
        ) {
            (None, None, None) => "-".to_owned(),
            (t, p, o) => format!("{}/{}/{}", dash(t), dash(p), dash(o)),
        };
        let payload = self
            .payload_bytes
            .map_or_else(|| "tombstone".to_owned(), |n| format!("{n} bytes"));
        let line = format!(
            "{}/{} key={} kind={} attempt={} original={} group={} ce_id={} age={} payload={} error={:?}",
            self.partition,
            self.offset,
            show_key(self.key.as_deref()),
            dash(&self.error_kind),
            dash(&self.attempt),
            original,
            dash(&self.consumer_group),
            dash(&self.ce_id),
            self.age(now).map_or_else(|| "-".to_owned(), format_age),
            payload,
            self.error_message.as_deref().unwrap_or("-"),
        );
        shown(&line).into_owned()
    }

    fn json(&self, topic: &str, now: DateTime<Utc>) -> serde_json::Value {
        let number = |v: &Option<String>| -> serde_json::Value {
            match v.as_deref().map(str::parse::<i64>) {
                Some(Ok(n)) => json!(n),
                Some(Err(_)) => json!(v),
                None => serde_json::Value::Null,
            }
        };
        json!({
            "topic": topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.as_deref().map(String::from_utf8_lossy),
            "payload_bytes": self.payload_bytes,
            "timestamp": self.timestamp.map(gregor_wire::headers::format_time),
            "error_kind": self.error_kind,
            "error_message": self.error_message,
            "original_topic": self.original_topic,
            "original_partition": number(&self.original_partition),
            "original_offset": number(&self.original_offset),
            "consumer_group": self.consumer_group,
            "attempt": number(&self.attempt),
            "ce_id": self.ce_id,
            "first_failure_at": self.first_failure_at.map(gregor_wire::headers::format_time),
            "age_seconds": self.age(now).map(|d| d.num_milliseconds() as f64 / 1000.0),
        })
    }
}

pub(super) async fn run(topic: &str, limit: Option<usize>, json: bool) -> anyhow::Result<()> {
    let kafka = kafka_settings()?;
    check_broker(&kafka).await?;
    let entries = read_to_end(&kafka, topic, Entry::from_message).await?;
    let now = Utc::now();
    if entries.is_empty() {
        if !json {
            println!("no messages in {topic}");
        }
        return Ok(());
    }
    let shown = limit.unwrap_or(usize::MAX).min(entries.len());
    for entry in &entries[..shown] {
        if json {
            println!("{}", json_safe(&entry.json(topic, now).to_string()));
        } else {
            println!("{}", entry.text_line(now));
        }
    }
    if shown < entries.len() {
        let note = format!("showing {shown} of {} messages in {topic}", entries.len());
        if json {
            eprintln!("gregor: {note}");
        } else {
            println!("{note}");
        }
    } else if !json {
        println!("{} message(s) in {topic}", entries.len());
    }
    Ok(())
}

/// `3d4h`, `5m12s`, `42s`, `850ms`; negative ages (clock skew) show as `0s`.
fn format_age(age: chrono::TimeDelta) -> String {
    let ms = age.num_milliseconds();
    if ms < 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    #[test]
    fn ages_are_short() {
        assert_eq!(format_age(TimeDelta::milliseconds(850)), "850ms");
        assert_eq!(format_age(TimeDelta::seconds(42)), "42s");
        assert_eq!(format_age(TimeDelta::seconds(312)), "5m12s");
        assert_eq!(format_age(TimeDelta::seconds(3 * 3600 + 120)), "3h2m");
        assert_eq!(
            format_age(TimeDelta::seconds(3 * 86_400 + 4 * 3600)),
            "3d4h"
        );
        assert_eq!(format_age(TimeDelta::seconds(-5)), "0s");
    }
}
