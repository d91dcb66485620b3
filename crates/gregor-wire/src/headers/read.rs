//! Reading header values of rdkafka messages.

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, OwnedHeaders};

/// The first value of header `name` as UTF-8, if present and valid.
pub fn get_str<'a>(headers: Option<&'a OwnedHeaders>, name: &str) -> Option<&'a str> {
    let headers = headers?;
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// An RFC 3339 timestamp header.
pub fn get_time(headers: Option<&OwnedHeaders>, name: &str) -> Option<DateTime<Utc>> {
    get_str(headers, name)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Header;

    use super::*;
    use crate::headers::{CE_ID, NOT_BEFORE, format_time};

    #[test]
    fn reads_headers_and_times() {
        let t = Utc::now();
        let formatted = format_time(t);
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: CE_ID,
                value: Some("abc"),
            })
            .insert(Header {
                key: NOT_BEFORE,
                value: Some(formatted.as_str()),
            });
        assert_eq!(get_str(Some(&headers), CE_ID), Some("abc"));
        let back = get_time(Some(&headers), NOT_BEFORE).unwrap();
        assert_eq!(back.timestamp_millis(), t.timestamp_millis());
        assert!(get_str(Some(&headers), "missing").is_none());
    }
}
