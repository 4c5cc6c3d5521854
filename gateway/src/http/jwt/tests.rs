use super::*;

struct Keys {
    private: String,
    public: tempfile::NamedTempFile,
}

fn keys(alg: &'static rcgen::SignatureAlgorithm) -> Keys {
    let pair = rcgen::KeyPair::generate_for(alg).unwrap();
    let public = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(public.path(), pair.public_key_pem()).unwrap();
    Keys {
        private: pair.serialize_pem(),
        public,
    }
}

fn issuer(keys: &[&Keys]) -> Issuer {
    Issuer::load(&JwtConfig {
        issuer: "https://id.test".into(),
        audience: "kiri".into(),
        keys: keys.iter().map(|k| k.public.path().to_path_buf()).collect(),
        leeway_s: 5,
    })
    .unwrap()
}

fn claims(scope: &str) -> MintClaims {
    let now = crate::now_ms() / 1000;
    MintClaims {
        iss: "https://id.test".into(),
        aud: "kiri".into(),
        sub: "alice".into(),
        scope: scope.into(),
        iat: now,
        nbf: now,
        exp: now + 600,
    }
}

#[test]
fn eddsa_and_es256_tokens_verify_and_carry_their_scopes() {
    let ed = keys(&rcgen::PKCS_ED25519);
    let es = keys(&rcgen::PKCS_ECDSA_P256_SHA256);
    let iss = issuer(&[&ed, &es]);
    for k in [&ed, &es] {
        let token = mint(
            k.private.as_bytes(),
            &claims("read invoke:notes prefix:alice/ openid"),
        )
        .unwrap();
        let id = iss.verify(&token).unwrap();
        assert_eq!(id.subject, "alice");
        assert!(id.scopes.read && !id.scopes.dead_letters);
        assert!(id.scopes.may_invoke("notes") && !id.scopes.may_invoke("other"));
        assert_eq!(id.caller().prefixes, ["alice/"]);
        assert!(id.caller().grants(b"alice/x") && !id.caller().grants(b"bob/x"));
    }
    let all = mint(ed.private.as_bytes(), &claims("invoke:* dead-letters")).unwrap();
    let id = iss.verify(&all).unwrap();
    assert!(id.scopes.may_invoke("anything") && id.scopes.dead_letters);
    assert!(id.scopes.prefixes.is_empty(), "no prefix scope grants none");
}

#[test]
fn bad_tokens_are_refused_with_their_reason() {
    let ed = keys(&rcgen::PKCS_ED25519);
    let other = keys(&rcgen::PKCS_ED25519);
    let iss = issuer(&[&ed]);
    let sign = |c: &MintClaims| mint(ed.private.as_bytes(), c).unwrap();

    let mut expired = claims("read");
    expired.exp = crate::now_ms() / 1000 - 60;
    assert_eq!(iss.verify(&sign(&expired)), Err(Rejected::Expired));

    let forged = mint(other.private.as_bytes(), &claims("read")).unwrap();
    assert_eq!(iss.verify(&forged), Err(Rejected::BadSignature));

    let mut aud = claims("read");
    aud.aud = "someone-else".into();
    assert_eq!(iss.verify(&sign(&aud)), Err(Rejected::WrongAudience));

    let mut from = claims("read");
    from.iss = "https://evil.test".into();
    assert_eq!(iss.verify(&sign(&from)), Err(Rejected::WrongIssuer));

    // A payload edited after signing (scope widened).
    let token = sign(&claims("read"));
    let parts: Vec<&str> = token.split('.').collect();
    let widened = {
        use base64ct::{Base64UrlUnpadded, Encoding};
        let mut json: serde_json::Value =
            serde_json::from_slice(&Base64UrlUnpadded::decode_vec(parts[1]).unwrap()).unwrap();
        json["scope"] = "read invoke:* dead-letters".into();
        Base64UrlUnpadded::encode_string(json.to_string().as_bytes())
    };
    let edited = format!("{}.{}.{}", parts[0], widened, parts[2]);
    assert_eq!(iss.verify(&edited), Err(Rejected::BadSignature));

    // `alg: none` and HMAC tokens are refused before any key is tried.
    let none = format!("eyJhbGciOiJub25lIn0.{}.", parts[1]);
    assert!(matches!(
        iss.verify(&none),
        Err(Rejected::Malformed(_) | Rejected::Algorithm(_))
    ));
    let hs = format!("eyJhbGciOiJIUzI1NiJ9.{}.{}", parts[1], parts[2]);
    assert!(matches!(iss.verify(&hs), Err(Rejected::Algorithm(_))));
    // An ES256 token when the issuer has only an Ed25519 key.
    let es = keys(&rcgen::PKCS_ECDSA_P256_SHA256);
    let es_token = mint(es.private.as_bytes(), &claims("read")).unwrap();
    assert!(matches!(iss.verify(&es_token), Err(Rejected::Algorithm(_))));

    assert!(matches!(iss.verify("garbage"), Err(Rejected::Malformed(_))));
    let mut nobody = claims("read");
    nobody.sub = String::new();
    assert!(matches!(
        iss.verify(&sign(&nobody)),
        Err(Rejected::Malformed(_))
    ));
    for r in [Rejected::BadSignature, Rejected::Malformed(String::new())] {
        assert!(r.is_forgery());
    }
    assert!(!Rejected::Expired.is_forgery() && !Rejected::WrongAudience.is_forgery());
}

#[test]
fn no_token_passes_while_the_clock_is_unset_or_behind() {
    let ed = keys(&rcgen::PKCS_ED25519);
    let iss = issuer(&[&ed]);
    let token = mint(ed.private.as_bytes(), &claims("read")).unwrap();
    let now = crate::now_ms() / 1000;
    assert!(iss.verify_at(&token, false, now).is_ok());
    assert_eq!(
        iss.verify_at(&token, true, 86_400),
        Err(Rejected::ClockUnset)
    );
    // A clock an hour behind: the token looks issued in the future.
    assert_eq!(
        iss.verify_at(&token, false, now - 3600),
        Err(Rejected::IssuedInTheFuture)
    );
    assert!(!Rejected::ClockUnset.is_forgery());
}

#[test]
fn a_second_key_verifies_during_rotation() {
    let old = keys(&rcgen::PKCS_ED25519);
    let new = keys(&rcgen::PKCS_ED25519);
    let iss = issuer(&[&old, &new]);
    let token = mint(new.private.as_bytes(), &claims("read")).unwrap();
    assert_eq!(iss.verify(&token).unwrap().subject, "alice");
}

#[test]
fn keys_that_are_not_public_keys_are_refused_at_load() {
    let ed = keys(&rcgen::PKCS_ED25519);
    let private = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(private.path(), &ed.private).unwrap();
    let err = Issuer::load(&JwtConfig {
        issuer: "i".into(),
        audience: "a".into(),
        keys: vec![private.path().to_path_buf()],
        leeway_s: 0,
    })
    .err()
    .unwrap();
    assert!(
        err.to_string()
            .contains("not an Ed25519 or P-256 public key"),
        "{err}"
    );
}
