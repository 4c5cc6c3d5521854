//! The dashboard token: required (as `Authorization: Bearer <token>`) for every request that
//! changes something. Compared in constant time.

use subtle::ConstantTimeEq;

/// Makes a new random token: 32 bytes from the OS, hex-encoded.
pub fn generate() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(std::io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether `header` (the `Authorization` value) carries `token`.
pub fn bearer_matches(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    // ct_eq on slices of different lengths is false without comparing contents.
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let t = generate().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, generate().unwrap());
        assert!(bearer_matches(Some(&format!("Bearer {t}")), &t));
        assert!(!bearer_matches(Some(&format!("Bearer {}", &t[1..])), &t));
        assert!(!bearer_matches(Some(&t), &t), "scheme required");
        assert!(!bearer_matches(None, &t));
        assert!(!bearer_matches(Some("Bearer "), &t));
    }
}
