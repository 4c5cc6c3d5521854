//! Random tokens: the dashboard token the gateway makes when `dashboard.token` is unset.

/// Makes a new random token: 32 bytes from the OS, hex-encoded.
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
