//! The Confluent wire format: magic byte `0`, a 4-byte big-endian schema id, then the Avro
//! binary body.

use crate::AvroError;

/// The first byte of every framed message.
pub const MAGIC_BYTE: u8 = 0;

/// Length of the frame header (magic byte plus schema id).
pub const HEADER_LEN: usize = 5;

/// Prefixes an Avro body with the frame header for `schema_id`.
///
/// ```
/// let framed = gregor_avro::wire::frame(7, b"\x02");
/// assert_eq!(framed, [0, 0, 0, 0, 7, 2]);
/// ```
pub fn frame(schema_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(MAGIC_BYTE);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Splits a framed message into its schema id and Avro body.
///
/// ```
/// let (id, body) = gregor_avro::wire::split(&[0, 0, 0, 1, 0, 2]).expect("framed");
/// assert_eq!((id, body), (256, &[2u8][..]));
/// assert!(gregor_avro::wire::split(&[1, 0, 0, 0, 1]).is_err());
/// ```
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    let Some((&magic, rest)) = bytes.split_first() else {
        return Err(AvroError::Frame("empty payload".into()));
    };
    if magic != MAGIC_BYTE {
        return Err(AvroError::Frame(format!(
            "wrong magic byte 0x{magic:02x} (expected 0x00, the Confluent wire format)"
        )));
    }
    let Some((id, body)) = rest.split_first_chunk::<4>() else {
        return Err(AvroError::Frame(format!(
            "payload of {} bytes is shorter than the 5-byte frame header",
            bytes.len()
        )));
    };
    Ok((u32::from_be_bytes(*id), body))
}
