//! Keys map to one of [`SHARDS`] shards; a shard has one relay owner at a time.

use uuid::Uuid;

/// The number of shards. Fixed by the schema (`CHECK (shard < 64)`), so that every writer
/// and relay agree without coordination.
pub const SHARDS: i16 = 64;

/// The shard of a key: FNV-1a (64 bit) of the key bytes, modulo [`SHARDS`]. Keyless events
/// have no order to keep and spread by their event id.
pub fn shard_of(key: Option<&[u8]>, event_id: Uuid) -> i16 {
    let bytes = key.unwrap_or(event_id.as_bytes());
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    // The remainder is < 64, so it always fits.
    i16::try_from(hash % 64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_shard_and_spread() {
        let id = Uuid::now_v7();
        assert_eq!(
            shard_of(Some(b"order-1"), id),
            shard_of(Some(b"order-1"), Uuid::now_v7())
        );
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c; 0x8c % 64 = 12. Pinned: changing it would
        // move keys between shards across versions.
        assert_eq!(shard_of(Some(b"a"), id), 12);
        let used: std::collections::HashSet<i16> = (0..1000)
            .map(|i| shard_of(Some(format!("k{i}").as_bytes()), id))
            .collect();
        assert_eq!(used.len(), 64);
    }
}
