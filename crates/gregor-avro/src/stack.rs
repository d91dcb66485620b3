//! Deeply nested values are decoded on a thread with a stack sized for their depth.
//!
//! apache-avro's decoding, its schema resolution, serde and `Drop` recurse once per level (a
//! recursive record costs three decoder frames per level). Measured in a debug build, 25 levels
//! of a recursive record overflow a 2 MiB stack — the size of a tokio worker's — and a stack
//! overflow aborts the whole process. The budget walk knows a body's depth before decoding, so
//! shallow bodies (nearly all) decode in place and deeper ones on a scoped thread whose stack
//! grows with the depth (reserved, not committed: only the pages used are backed).

use crate::AvroError;

/// Depths decoded on the caller's stack.
const INLINE_DEPTH: usize = 8;
/// Stack per level beyond that: above the ~80 KiB a level of a recursive record took in a
/// debug build.
const STACK_PER_LEVEL: usize = 128 * 1024;
/// Stack for everything else on the decoding thread.
const STACK_BASE: usize = 1024 * 1024;

/// Runs `decode` on a stack deep enough for a value of `depth` levels.
pub(crate) fn with_stack_for<R: Send>(
    depth: usize,
    decode: impl FnOnce() -> R + Send,
) -> Result<R, AvroError> {
    if depth <= INLINE_DEPTH {
        return Ok(decode());
    }
    let size = STACK_BASE.saturating_add(depth.saturating_mul(STACK_PER_LEVEL));
    std::thread::scope(|scope| {
        let handle = std::thread::Builder::new()
            .name("gregor-avro-deep".into())
            .stack_size(size)
            .spawn_scoped(scope, decode)
            .map_err(|e| AvroError::Resources(format!("starting a decoding thread: {e}")))?;
        // A panic in the decoder goes on as it would have on the caller's stack.
        match handle.join() {
            Ok(value) => Ok(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recurse(n: usize) -> usize {
        // About 64 KiB of stack per call, kept from being optimized away.
        let pad = std::hint::black_box([0u8; 64 * 1024]);
        if n == 0 {
            return usize::from(pad[0]);
        }
        recurse(n - 1) + usize::from(pad[n % pad.len()])
    }

    #[test]
    fn deep_work_gets_a_deep_stack() {
        // 200 × 64 KiB = 12.5 MiB: far beyond the test thread's 2 MiB.
        assert_eq!(with_stack_for(200, || recurse(200)).expect("ran"), 0);
        assert_eq!(with_stack_for(1, || 7).expect("ran inline"), 7);
    }
}
