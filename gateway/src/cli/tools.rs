//! Small tools: configuration checks, the dashboard's address, a sensor reading, decoding
//! envelopes, password hashes and JWTs.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;
use kiri::uplink::Envelope;
use kiri::Config;

/// `kiri config check`: loads and validates the configuration (and the JWT issuer's key
/// files, as `kiri run` would), prints it resolved as TOML with its secrets masked, and fails
/// if a function's module is missing or does not load.
pub fn config_check(file: Option<&Path>) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    for line in &config.ignored_env {
        eprintln!("warning: {line}");
    }
    if let Some(jwt) = &config.dashboard.jwt {
        kiri::http::jwt::Issuer::load(jwt)?;
    }
    print!("{}", config.to_toml_masked()?);
    // Each function's module, as the gateway would load it: a missing file or a module that
    // does not load fails the check (the gateway would run without that function).
    let mut failed = Vec::new();
    for f in &config.functions {
        let checked = kiri::runtime::Runtime::read_module(&f.module)
            .and_then(|wasm| kiri::runtime::check_module(&wasm, Some(f)));
        if let Err(e) = checked {
            failed.push(format!("function {} ({}): {e}", f.name, f.module.display()));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("{}", failed.join("\n"));
    }
    Ok(())
}

/// `kiri check MODULE`: the gateway's load check, offline; prints what the module is.
pub fn check(module: &Path, json: bool) -> anyhow::Result<()> {
    let checked = kiri::runtime::Runtime::read_module(module)
        .and_then(|wasm| kiri::runtime::check_module(&wasm, None));
    if json {
        // Scripts get an answer on stdout either way.
        let answer = match &checked {
            Ok(report) => {
                let mut v = serde_json::to_value(report)?;
                v["ok"] = true.into();
                v
            }
            Err(e) => serde_json::json!({ "ok": false, "error": e.to_string() }),
        };
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    let report = checked.with_context(|| format!("{} does not load", module.display()))?;
    if json {
        return Ok(());
    }
    println!(
        "{}: loads (ABI v{}, version {}, {} bytes{})",
        module.display(),
        report.abi_version,
        report.version,
        report.bytes,
        if report.wasi {
            ", WASI preview 1 reactor"
        } else {
            ""
        }
    );
    println!("imports:");
    for i in &report.imports {
        println!("  {i}");
    }
    println!("exports: {}", report.exports.join(", "));
    Ok(())
}

/// Prints where the dashboard is, with the token in the fragment when there is one yet.
pub fn dashboard_url(config: &Config) -> anyhow::Result<()> {
    let g = &config.gateway;
    let kept = || {
        kiri::store::read_dashboard_token(&g.data_dir).with_context(|| {
            format!(
                "cannot read {} (the gateway's user, or root, can)",
                kiri::store::token_path(&g.data_dir).display()
            )
        })
    };
    let token = match &config.dashboard.token {
        Some(t) => t.clone(),
        // The one the gateway generated (it need not be stopped), or, before it ever ran,
        // made now for it to find. Never logged.
        None => match kept()? {
            Some(t) => t,
            None => {
                kiri::store::Store::open(&g.data_dir, g.cache_bytes, 0)
                    .context("cannot open the data directory to make the token")?
                    .dashboard_token()?
                    .0
            }
        },
    };
    println!("Dashboard: {}", kiri::http::page::url(config, Some(&token)));
    Ok(())
}

/// `kiri reading`: one CBOR sensor reading (the documented format) on stdout.
pub fn reading(
    sensor: &str,
    kind: &str,
    value: f64,
    unit: &str,
    seq: Option<u64>,
) -> anyhow::Result<()> {
    let r = kiri_reading::Reading {
        sensor,
        kind,
        value,
        unit,
        ts: Some(kiri::now_ms()),
        uptime_ms: None,
        seq,
    };
    // The map's keys, headers and numbers take under 128 bytes; the text is copied as it is.
    let mut buf = vec![0u8; 128 + sensor.len() + kind.len() + unit.len()];
    let n = r
        .encode(&mut buf)
        .map_err(|e| anyhow::anyhow!("cannot encode the reading: {e:?}"))?;
    std::io::stdout().write_all(&buf[..n])?;
    Ok(())
}

/// `kiri decode`: every message on stdin, Kiri's CBOR result envelopes and batch messages back
/// to back (as `mosquitto_sub -N` writes them; the newline plain `mosquitto_sub` adds after
/// each is skipped), one line per result; with `json`, one JSON object per line. With
/// `reading`: bare CBOR values (readings, HTTP responses) back to back, each as JSON.
pub fn decode(reading: bool, json: bool) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes)?;
    let mut out = std::io::stdout().lock();
    let mut rest = &bytes[..];
    let mut messages = 0;
    loop {
        if !reading {
            // No envelope starts with a newline byte (they are CBOR maps).
            while let [b'\n', tail @ ..] = rest {
                rest = tail;
            }
        }
        if rest.is_empty() {
            break;
        }
        let start = rest;
        messages += 1;
        let value: ciborium::Value = ciborium::de::from_reader(&mut rest)
            .with_context(|| format!("message {messages} on stdin is not CBOR"))?;
        if reading {
            writeln!(out, "{}", serde_json::to_string(&value)?)?;
            continue;
        }
        let item = &start[..start.len() - rest.len()];
        let envelopes = match Envelope::decode(item) {
            Ok(e) => vec![e],
            Err(_) => Envelope::decode_batch(item).with_context(|| {
                format!("message {messages} on stdin is not a Kiri result envelope or batch")
            })?,
        };
        for e in envelopes {
            let payload = readable(&e.payload);
            if json {
                let line = serde_json::json!({
                    "id": e.id, "gateway": e.gateway, "seq": e.seq, "function": e.function,
                    "topic": e.topic, "ts": e.ts, "payload": payload,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "id={} gateway={} function={} topic={} ts={} payload={}",
                    e.id, e.gateway, e.function, e.topic, e.ts, payload
                )?;
            }
        }
    }
    if messages == 0 {
        anyhow::bail!("nothing on stdin");
    }
    Ok(())
}

/// A payload for a person or a script: JSON as itself, CBOR as JSON, other text as a string,
/// anything else as `{"hex": "..."}`.
fn readable(payload: &[u8]) -> serde_json::Value {
    use kiri::formats::View;
    match kiri::formats::view(payload) {
        View::Json(v) => v,
        View::Text(text) => serde_json::Value::String(text),
        View::Binary => {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// `kiri password-hash`: the Argon2id hash of the password on the first line of stdin.
pub fn password_hash() -> anyhow::Result<()> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        anyhow::bail!("no password on stdin (e.g. `printf '%s' \"$PW\" | kiri password-hash`)");
    }
    println!("{}", kiri::crypto::password::hash_password(password)?);
    Ok(())
}

/// `kiri token`: a JWT for the HTTP API, signed with `key`.
pub fn token(
    key: &Path,
    issuer: String,
    audience: String,
    subject: String,
    scopes: &[String],
    ttl: humantime::Duration,
) -> anyhow::Result<()> {
    let pem = std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?;
    let now = kiri::now_ms() / 1000;
    let claims = kiri::http::jwt::MintClaims {
        iss: issuer,
        aud: audience,
        sub: subject,
        scope: scopes.join(" "),
        iat: now,
        nbf: now,
        exp: now.saturating_add(ttl.as_secs()),
    };
    println!("{}", kiri::http::jwt::mint(&pem, &claims)?);
    Ok(())
}
