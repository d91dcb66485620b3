//! Environments of spawned processes, as `(name, value)` lists.

/// `common` followed by `extra`: the environment of one spawned process (a later entry wins,
/// as with `Command::envs`).
pub fn env_plus<'a>(
    common: &[(&'a str, &'a str)],
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    common.iter().chain(extra).copied().collect()
}

/// Borrowed view of an owned environment list, for [`crate::process`].
pub fn as_pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
