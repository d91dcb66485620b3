//! Files of the repository, for the tests that check them.

use std::path::{Path, PathBuf};

/// The workspace root (two levels above this crate's manifest).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A repository file's text (`rel` from the root); the error names the file.
pub fn read(rel: &str) -> anyhow::Result<String> {
    let path = root().join(rel);
    std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}
