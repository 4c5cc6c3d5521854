//! Sensor account passwords (`[[broker.users]] password_hash`): Argon2id hashes in PHC form.

use argon2::password_hash::PasswordHasher;
use argon2::Argon2;

/// Argon2id parameters for new hashes: OWASP's 7 MiB, 5 passes, 1 lane (the hash records
/// them, so a check uses whatever its hash names).
const HASH_PARAMS: (u32, u32, u32) = (7 * 1024, 5, 1);

/// Hashes a password for `broker.users` (`password_hash`), Argon2id in PHC form.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let (m, t, p) = HASH_PARAMS;
    let params = argon2::Params::new(m, t, p, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    Ok(argon
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?
        .to_string())
}

/// Checks that `hash` is an Argon2 hash in PHC form (for the configuration).
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = argon2::password_hash::phc::PasswordHash::new(hash).map_err(|e| {
        format!("not a PHC password hash ({e}); make one with `kiri password-hash`")
    })?;
    argon2::Algorithm::new(parsed.algorithm.as_str())
        .map(|_| ())
        .map_err(|_| format!("{} is not an Argon2 hash", parsed.algorithm))
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::PasswordVerifier;

    #[test]
    fn hashes_verify_their_password_only() {
        let hash = hash_password("correct horse").unwrap();
        assert!(check_hash(&hash).is_ok());
        assert!(hash.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{hash}");
        let argon = Argon2::default();
        assert!(argon
            .verify_password(b"correct horse", hash.as_str())
            .is_ok());
        assert!(argon
            .verify_password(b"correct horsf", hash.as_str())
            .is_err());
        assert!(check_hash("plain text").is_err());
        assert!(check_hash("$pbkdf2-sha256$i=1000$c2FsdA$aGFzaA").is_err());
    }
}
