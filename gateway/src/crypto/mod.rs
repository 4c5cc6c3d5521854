//! Key and secret formats the configuration, the CLI and the gateway share: ed25519 signing
//! keys for packages ([`keys`]), Argon2 password hashes for sensor accounts ([`password`]),
//! and random tokens ([`token`]). Leaves: nothing here imports another module of the gateway.

pub mod keys;
pub mod password;
pub mod token;
