//! Scratch directories under the temp directory, one per call.

use std::path::PathBuf;

/// A fresh, empty directory `<temp>/<prefix>-<12 random chars>`.
pub fn scratch_dir(prefix: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(crate::unique_name(prefix));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
