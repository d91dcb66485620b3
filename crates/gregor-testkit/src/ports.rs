//! Free TCP ports on 127.0.0.1.

/// A port that was free a moment ago on 127.0.0.1 (the OS picked it; nothing holds it now).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
