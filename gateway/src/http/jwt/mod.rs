//! Caller identities: besides the admin token, the HTTP API accepts JWTs signed by a
//! configured issuer (`[dashboard.jwt]`), as serverless platforms do. A token is accepted
//! only when its signature verifies with one of the issuer's keys (EdDSA or ES256; the
//! algorithm is taken from the key, never from the token), it has not expired (`exp`, with
//! `leeway_s`), is already valid (`nbf`), and names the configured audience and issuer.
//!
//! Its `scope` claim (space-separated, or an array) decides what the caller may do:
//!
//! | scope | grants |
//! |---|---|
//! | `read` | the read routes (when `dashboard.auth_reads` is on) |
//! | `invoke:<function>` / `invoke:*` | `POST /invoke/<function>` |
//! | `dead-letters` | listing, replaying and dropping dead letters |
//! | `prefix:<p>` | topics and key-value keys starting with `p` in the invocations it makes |
//!
//! Other scopes are ignored (tokens from an identity provider carry their own).
//!
//! jsonwebtoken parses and checks the claims; the signatures go through ring (the
//! [`RING`] provider below), which the TLS stack links anyway.

use std::path::Path;

use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::signature;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use ring::signature as sig;
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::runtime::Caller;

/// The one provider jsonwebtoken uses in this process: ring, EdDSA and ES256 only.
static RING: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

fn install() {
    // An Err means it is installed already (the only provider this build has).
    let _ = RING.install_default();
}

struct RingVerifier {
    algorithm: Algorithm,
    params: &'static dyn sig::VerificationAlgorithm,
    key: Vec<u8>,
}

impl signature::Verifier<Vec<u8>> for RingVerifier {
    fn verify(&self, msg: &[u8], signature: &Vec<u8>) -> Result<(), signature::Error> {
        sig::UnparsedPublicKey::new(self.params, &self.key)
            .verify(msg, signature)
            .map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RingVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}

fn verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtVerifier>> {
    let params: &'static dyn sig::VerificationAlgorithm = match (algorithm, key.family()) {
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => &sig::ED25519,
        (Algorithm::ES256, AlgorithmFamily::Ec) => &sig::ECDSA_P256_SHA256_FIXED,
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(RingVerifier {
        algorithm: *algorithm,
        params,
        key: key.try_get_as_bytes()?.to_vec(),
    }))
}

enum RingSigner {
    Ed(sig::Ed25519KeyPair),
    Es(sig::EcdsaKeyPair),
}

impl signature::Signer<Vec<u8>> for RingSigner {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        match self {
            RingSigner::Ed(k) => Ok(k.sign(msg).as_ref().to_vec()),
            RingSigner::Es(k) => k
                .sign(&ring::rand::SystemRandom::new(), msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| signature::Error::new()),
        }
    }
}

impl JwtSigner for RingSigner {
    fn algorithm(&self) -> Algorithm {
        match self {
            RingSigner::Ed(_) => Algorithm::EdDSA,
            RingSigner::Es(_) => Algorithm::ES256,
        }
    }
}

fn signer(
    algorithm: &Algorithm,
    key: &EncodingKey,
) -> jsonwebtoken::errors::Result<Box<dyn JwtSigner>> {
    let der = key.as_bytes();
    let signer = match (algorithm, key.family()) {
        (Algorithm::EdDSA, AlgorithmFamily::Ed) => RingSigner::Ed(
            sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                .map_err(|_| ErrorKind::InvalidEddsaKey)?,
        ),
        (Algorithm::ES256, AlgorithmFamily::Ec) => RingSigner::Es(
            sig::EcdsaKeyPair::from_pkcs8(
                &sig::ECDSA_P256_SHA256_FIXED_SIGNING,
                der,
                &ring::rand::SystemRandom::new(),
            )
            .map_err(|_| ErrorKind::InvalidEcdsaKey)?,
        ),
        _ => return Err(ErrorKind::InvalidAlgorithm.into()),
    };
    Ok(Box::new(signer))
}

/// The `scope` claim: a space-separated string (OAuth 2.0) or a list.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(untagged)]
enum ScopeClaim {
    #[default]
    None,
    Text(String),
    List(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    scope: ScopeClaim,
    iat: Option<u64>,
}

/// What a token's scopes grant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    /// The read routes.
    pub read: bool,
    /// The dead-letter routes.
    pub dead_letters: bool,
    /// The function state routes.
    pub state: bool,
    /// The configuration reload.
    pub reload: bool,
    /// Functions it may invoke (`*` for all).
    pub invoke: Vec<String>,
    /// Topic and key prefixes its invocations may use.
    pub prefixes: Vec<String>,
}

impl Scopes {
    /// Parses scope words; unknown ones are ignored.
    pub fn parse<'a>(words: impl IntoIterator<Item = &'a str>) -> Scopes {
        let mut s = Scopes::default();
        for w in words {
            match w {
                "read" => s.read = true,
                "dead-letters" => s.dead_letters = true,
                "state" => s.state = true,
                "reload" => s.reload = true,
                _ => {
                    if let Some(f) = w.strip_prefix("invoke:").filter(|f| !f.is_empty()) {
                        s.invoke.push(f.to_string());
                    } else if let Some(p) = w.strip_prefix("prefix:").filter(|p| !p.is_empty()) {
                        s.prefixes.push(p.to_string());
                    }
                }
            }
        }
        s
    }

    /// Whether it may invoke `function`.
    pub fn may_invoke(&self, function: &str) -> bool {
        self.invoke.iter().any(|f| f == "*" || f == function)
    }
}

/// A caller whose token verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's `sub`.
    pub subject: String,
    /// What it may do.
    pub scopes: Scopes,
}

impl Identity {
    /// The caller as an invocation sees it.
    pub fn caller(&self) -> Caller {
        Caller {
            subject: self.subject.clone(),
            prefixes: self.scopes.prefixes.clone(),
        }
    }
}

/// Why a token was refused; [`Rejected::reason`] is the API's `reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// Past its `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before its `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// No configured key verifies it.
    #[error("the token's signature does not verify with any of the issuer's keys")]
    BadSignature,
    /// Another audience.
    #[error("the token is for another audience")]
    WrongAudience,
    /// Another issuer.
    #[error("the token is from another issuer")]
    WrongIssuer,
    /// An algorithm other than EdDSA and ES256, or one no configured key has.
    #[error("the token's algorithm {0} is not accepted (EdDSA or ES256, as the issuer's keys)")]
    Algorithm(String),
    /// Not a well-formed token.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The gateway's clock has not been set, so expiry cannot be judged.
    #[error("the gateway's clock has not been set (no RTC, no NTP yet): tokens cannot be checked for expiry until it is")]
    ClockUnset,
    /// Issued in the future: the gateway's clock is behind.
    #[error("the token was issued after the gateway's clock (the clock is behind?)")]
    IssuedInTheFuture,
}

impl Rejected {
    /// A short word for the API and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejected::Expired => "token_expired",
            Rejected::NotYetValid => "token_not_yet_valid",
            Rejected::BadSignature => "token_bad_signature",
            Rejected::WrongAudience => "token_wrong_audience",
            Rejected::WrongIssuer => "token_wrong_issuer",
            Rejected::Algorithm(_) => "token_algorithm",
            Rejected::Malformed(_) => "token_malformed",
            Rejected::ClockUnset => "token_clock_unset",
            Rejected::IssuedInTheFuture => "token_issued_in_the_future",
        }
    }

    /// Whether this looks like guessing (and so counts towards the lockout): a token whose
    /// signature verified but that is stale or meant for elsewhere does not.
    pub fn is_forgery(&self) -> bool {
        matches!(
            self,
            Rejected::BadSignature | Rejected::Algorithm(_) | Rejected::Malformed(_)
        )
    }
}

struct IssuerKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

/// The configured issuer: its keys and the checks every token gets.
pub struct Issuer {
    keys: Vec<IssuerKey>,
    config: JwtConfig,
}

/// Reads a public key PEM: Ed25519 (EdDSA) or P-256 (ES256).
fn read_public_key(path: &Path) -> anyhow::Result<IssuerKey> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read JWT key {}: {e}", path.display()))?;
    if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        return Ok(IssuerKey {
            algorithm: Algorithm::EdDSA,
            key,
        });
    }
    match DecodingKey::from_ec_pem(&pem) {
        Ok(key) if key.try_get_as_bytes().is_ok_and(|b| b.len() == 65) => Ok(IssuerKey {
            algorithm: Algorithm::ES256,
            key,
        }),
        _ => anyhow::bail!(
            "JWT key {} is not an Ed25519 or P-256 public key in PEM (`-----BEGIN PUBLIC KEY-----`)",
            path.display()
        ),
    }
}

impl Issuer {
    /// Loads the issuer's keys.
    pub fn load(config: &JwtConfig) -> anyhow::Result<Issuer> {
        install();
        if config.keys.is_empty() {
            anyhow::bail!("dashboard.jwt.keys is empty: give the issuer's public key files");
        }
        let keys = config
            .keys
            .iter()
            .map(|p| read_public_key(p))
            .collect::<anyhow::Result<_>>()?;
        Ok(Issuer {
            keys,
            config: config.clone(),
        })
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut v = Validation::new(algorithm);
        v.set_audience(&[&self.config.audience]);
        v.set_issuer(&[&self.config.issuer]);
        v.set_required_spec_claims(&["exp", "sub", "aud", "iss"]);
        v.leeway = self.config.leeway_s;
        v.validate_nbf = true;
        v
    }

    /// Verifies `token` and returns who it names and what it grants.
    pub fn verify(&self, token: &str) -> Result<Identity, Rejected> {
        self.verify_at(token, crate::clock::unset(), crate::now_ms() / 1000)
    }

    /// [`verify`](Self::verify) with the clock given: whether it is unset, and now in seconds.
    fn verify_at(&self, token: &str, clock_unset: bool, now_s: u64) -> Result<Identity, Rejected> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| refusal(&e))?;
        if !matches!(header.alg, Algorithm::EdDSA | Algorithm::ES256) {
            return Err(Rejected::Algorithm(format!("{:?}", header.alg)));
        }
        let mut result = Err(Rejected::Algorithm(format!("{:?}", header.alg)));
        for k in self.keys.iter().filter(|k| k.algorithm == header.alg) {
            result = jsonwebtoken::decode::<Claims>(token, &k.key, &self.validation(k.algorithm))
                .map_err(|e| refusal(&e));
            // A signature that does not verify may verify with the next key (rotation).
            if !matches!(result, Err(Rejected::BadSignature)) {
                break;
            }
        }
        // An unset clock (1970) would let every expired token through (and makes a token with
        // `nbf` look not valid yet); a clock that is behind shows as a token issued in the
        // future. A token whose signature verified is refused for the clock's reason.
        if clock_unset
            && matches!(
                result,
                Ok(_) | Err(Rejected::Expired | Rejected::NotYetValid)
            )
        {
            return Err(Rejected::ClockUnset);
        }
        let claims = result?.claims;
        if claims
            .iat
            .is_some_and(|iat| iat > now_s + self.config.leeway_s)
        {
            return Err(Rejected::IssuedInTheFuture);
        }
        if claims.sub.is_empty() || claims.sub.len() > kiri_abi::MAX_CALLER_BYTES {
            return Err(Rejected::Malformed(format!(
                "sub must be 1 to {} bytes",
                kiri_abi::MAX_CALLER_BYTES
            )));
        }
        let scopes = match &claims.scope {
            ScopeClaim::None => Scopes::default(),
            ScopeClaim::Text(t) => Scopes::parse(t.split_whitespace()),
            ScopeClaim::List(l) => Scopes::parse(l.iter().map(String::as_str)),
        };
        Ok(Identity {
            subject: claims.sub,
            scopes,
        })
    }
}

fn refusal(e: &jsonwebtoken::errors::Error) -> Rejected {
    match e.kind() {
        ErrorKind::ExpiredSignature => Rejected::Expired,
        ErrorKind::ImmatureSignature => Rejected::NotYetValid,
        ErrorKind::InvalidSignature => Rejected::BadSignature,
        ErrorKind::InvalidAudience => Rejected::WrongAudience,
        ErrorKind::InvalidIssuer => Rejected::WrongIssuer,
        ErrorKind::InvalidAlgorithm => Rejected::Algorithm("mismatch".into()),
        ErrorKind::MissingRequiredClaim(c) => Rejected::Malformed(format!("no {c} claim")),
        _ => Rejected::Malformed(e.to_string()),
    }
}

/// What [`mint`] puts in a token.
#[derive(Debug, Clone, Serialize)]
pub struct MintClaims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject.
    pub sub: String,
    /// Space-separated scopes.
    pub scope: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Not before (the issue time), seconds since the Unix epoch.
    pub nbf: u64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: u64,
}

/// Signs a token with a private key PEM (PKCS#8: Ed25519, as `kiri keygen` writes, or
/// P-256); for `kiri token` and for tests. Identity providers issue them in production.
pub fn mint(private_key_pem: &[u8], claims: &MintClaims) -> anyhow::Result<String> {
    install();
    let (algorithm, key) = if let Ok(k) = EncodingKey::from_ed_pem(private_key_pem) {
        (Algorithm::EdDSA, k)
    } else if let Ok(k) = EncodingKey::from_ec_pem(private_key_pem) {
        (Algorithm::ES256, k)
    } else {
        anyhow::bail!(
            "not an Ed25519 or P-256 private key in PEM (PKCS#8, `-----BEGIN PRIVATE KEY-----`)"
        );
    };
    Ok(jsonwebtoken::encode(&Header::new(algorithm), claims, &key)?)
}

#[cfg(test)]
mod tests;
