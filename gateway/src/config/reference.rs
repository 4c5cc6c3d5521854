//! The configuration reference exists once, in `docs/configuration.md`; the example
//! (`kiri.example.toml`, printed by `kiri config example`) shows every key too. These tests fail
//! when either and the structs of this module disagree: a key the structs accept that the page
//! or the example leaves out, or a key they name that the structs do not accept.

use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

/// Every key the structs accept, as `section.key` (`broker.users.name`,
/// `functions.limits.fuel`): from a configuration with every optional part present.
fn struct_keys() -> BTreeSet<String> {
    let hash = "$argon2id$v=19$m=7168,t=5,p=1$7UvXlwYyI9yF7YmvmFmNFg$rHoHAPYlIUIF13FC6o98+IIp6OcoAH3AoSNCAAAhb3U";
    let text = format!(
        r#"
[broker]
client_id = "c"
[[broker.users]]
name = "s1"
password_hash = "{hash}"
publish = ["sensors/s1/#"]
[cloud]
topic_prefix = "p"
client_id = "c"
ca_file = "ca.pem"
client_cert = "c.pem"
client_key = "c.key"
username = "u"
password = "p"
[outbox]
ttl = "7d"
[dashboard]
token = "a-token-of-sixteen-chars"
tls_cert = "d.pem"
tls_key = "d.key"
[dashboard.jwt]
issuer = "i"
audience = "a"
keys = ["k.pem"]
[[functions]]
name = "f"
module = "f.wasm"
every = "1m"
cron = "* * * * *"
format = "json"
deliver = "cbor"
"#
    );
    let config: Config = Figment::from(Serialized::defaults(Config::default()))
        .merge(Toml::string(&text))
        .extract()
        .unwrap();
    let mut keys = BTreeSet::new();
    collect(&serde_json::to_value(&config).unwrap(), "", &mut keys);
    keys
}

/// The keys of `value` under `prefix`. A function's `config` table is the function's own:
/// one key.
fn collect(value: &Value, prefix: &str, keys: &mut BTreeSet<String>) {
    let Value::Object(fields) = value else {
        return;
    };
    for (k, v) in fields {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(_) if key != "functions.config" => {
                if !prefix.is_empty() {
                    keys.insert(key.clone());
                }
                collect(v, &key, keys);
            }
            Value::Array(items) if items.first().is_some_and(Value::is_object) => {
                if !prefix.is_empty() {
                    keys.insert(key.clone());
                }
                collect(&items[0], &key, keys);
            }
            _ => {
                keys.insert(key);
            }
        }
    }
}

/// The keys `docs/configuration.md` documents: the first column of each table, under the
/// heading of its TOML table (`## \`[broker]\``, `### \`[[broker.users]]\``).
fn documented_keys() -> BTreeSet<String> {
    let page = include_str!("../../../docs/configuration.md");
    let mut keys = BTreeSet::new();
    let mut table = None;
    for line in page.lines() {
        if let Some(heading) = line.strip_prefix("## ").or(line.strip_prefix("### ")) {
            table = heading
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(|h| h.trim_matches(['[', ']']).to_string());
            continue;
        }
        let (Some(table), Some(row)) = (&table, line.strip_prefix("| `")) else {
            continue;
        };
        if let Some((key, _)) = row.split_once('`') {
            keys.insert(format!("{table}.{key}"));
        }
    }
    keys
}

/// The keys the example names, set or commented out, under its table headers (commented
/// ones too), with inline tables opened (`limits = { fuel = ... }`).
fn example_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut table = String::new();
    for line in EXAMPLE.lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') {
            table = line
                .split(']')
                .next()
                .unwrap_or("")
                .trim_matches(['[', ']'])
                .to_string();
            if table.contains('.') {
                // A nested table (`[[broker.users]]`, `[dashboard.jwt]`) is a key of its parent.
                keys.insert(table.clone());
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            continue;
        }
        let full = format!("{table}.{key}");
        let value = value.trim();
        if value.starts_with('{') && full != "functions.config" {
            let inner = value
                .trim_start_matches('{')
                .split('}')
                .next()
                .unwrap_or("");
            for pair in inner.split(',') {
                if let Some((k, _)) = pair.split_once('=') {
                    keys.insert(format!("{full}.{}", k.trim()));
                }
            }
        }
        keys.insert(full);
    }
    keys
}

fn differ(what: &str, keys: &BTreeSet<String>, reference: &BTreeSet<String>) -> Vec<String> {
    let missing = reference
        .difference(keys)
        .map(|k| format!("{what} lacks {k}"));
    let unknown = keys
        .difference(reference)
        .map(|k| format!("{what} names {k}, which is no key"));
    missing.chain(unknown).collect()
}

#[test]
fn the_reference_page_documents_every_key_and_no_other() {
    let problems = differ("docs/configuration.md", &documented_keys(), &struct_keys());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_example_shows_every_key_and_no_other() {
    let problems = differ("kiri.example.toml", &example_keys(), &struct_keys());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_key_lists_are_read_whole() {
    // Guards the parsers above: a table or a nested key they stopped seeing would make the
    // comparisons vacuous.
    let keys = struct_keys();
    for k in [
        "gateway.id",
        "broker.users.password_hash",
        "cloud.password",
        "dashboard.jwt.leeway_s",
        "functions.limits.fuel",
        "functions.config",
    ] {
        assert!(keys.contains(k), "{k} in {keys:?}");
    }
    assert!(keys.len() > 70, "{}", keys.len());
    assert!(documented_keys().contains("functions.limits.max_call_depth"));
    assert!(example_keys().contains("cloud.max_bytes_per_sec"));
}
