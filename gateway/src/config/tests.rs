//! The configuration as a whole: defaults, the file, the environment, checks across sections.

use super::*;
use std::path::PathBuf;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kiri.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn err(text: &str, vars: &[(&str, &str)]) -> String {
    let (_dir, path) = file(text);
    Config::load_with_env(Some(&path), env(vars))
        .unwrap_err()
        .to_string()
}

#[test]
fn no_file_gives_the_embedded_defaults() {
    let c = Config::load_with_env(None, env(&[])).unwrap();
    assert_eq!(c.broker.mode, BrokerMode::Embedded);
    assert_eq!(c.broker.listen.to_string(), "127.0.0.1:1883");
    assert_eq!(c.gateway.data_dir, PathBuf::from("kiri-data"));
    assert_eq!(c.topic_prefix(), "kiri/gw-01");
    assert!(c.functions.is_empty());
}

#[test]
fn the_shipped_example_parses_and_module_paths_follow_the_file() {
    let (dir, path) = file(EXAMPLE);
    let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(c.functions.len(), 4);
    assert!(c.functions[0].module.starts_with(dir.path()));
    assert_eq!(c.functions[1].config["limit"], serde_json::json!(30.0));
    assert_eq!(c.functions[0].config["temperature_unit"], "F");
}

#[test]
fn environment_variables_override_keys() {
    let (_dir, path) = file("[cloud]\nurl = \"mqtt://a:1\"\n");
    let vars = env(&[
        ("KIRI_CLOUD_URL", "mqtt://b:2"),
        ("KIRI_GATEWAY_DATA_DIR", "/tmp/x"),
        ("KIRI_BROKER_QUEUE", "10"),
        ("KIRI_GATEWAY_ID", "site-7"),
        ("KIRI_LOG", "debug"),
        ("KIRI_CONFIG_FILE", "not-a-key"),
        ("KIRI_DEAD_LETTERS_MAX_RECORDS", "5"),
        ("OTHER", "ignored"),
    ]);
    let c = Config::load_with_env(Some(&path), vars).unwrap();
    assert_eq!(c.cloud.url, "mqtt://b:2");
    assert_eq!(c.gateway.data_dir, PathBuf::from("/tmp/x"));
    assert_eq!(c.broker.queue, 10);
    assert_eq!(c.topic_prefix(), "kiri/site-7");
    assert_eq!(c.dead_letters.max_records, 5);
    let numeric = Config::load_with_env(None, env(&[("KIRI_GATEWAY_ID", "42")])).unwrap();
    assert_eq!(numeric.gateway.id, "42");
}

#[test]
fn an_escape_after_a_non_ascii_character_is_an_error_not_a_panic() {
    let vars = env(&[("KIRI_DEPLOY_GROUPS", "[\"é\\n\"]")]);
    let e = Config::load_with_env(None, vars).unwrap_err().to_string();
    assert!(e.contains("groups"), "{e}");
    let vars = env(&[("KIRI_GATEWAY_ID", "\"é\\u0041\"")]);
    let c = Config::load_with_env(None, vars).unwrap();
    assert_eq!(c.gateway.id, "\"é\\u0041\"", "kept as the text it is");
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e = err("[cloud]\nulr = \"mqtt://a:1\"\n", &[]);
    assert!(e.contains("ulr"), "{e}");
    let e = err("[clod]\n", &[]);
    assert!(e.contains("clod"), "{e}");
}

#[test]
fn variables_that_name_no_key_are_reported_and_not_taken() {
    let vars = [
        ("KIRI_CLOUD_URLL", "x"),
        ("KIRI_URL", "http://127.0.0.1:8080"),
        ("KIRI_DEPLOY_BROKER", "mqtt://a:1"),
        ("KIRI_DEPLOY_PASSWORD", "p"),
        ("KIRI_NOPE", "1"),
        ("KIRI_DASHBOARD_JWT__ISSUERR", "x"),
        ("KIRI_CLOUD__URL", "x"),
    ];
    let c = Config::load_with_env(None, env(&vars)).unwrap();
    assert_eq!(c.cloud.url, CloudConfig::default().url);
    let lines = c.ignored_env.join("\n");
    assert_eq!(c.ignored_env.len(), 4, "{lines}");
    assert!(
        lines.contains("KIRI_CLOUD_URLL is not taken: it names no configuration key (`cloud.urll`); did you mean KIRI_CLOUD_URL?"),
        "{lines}"
    );
    assert!(
        lines.contains("KIRI_NOPE is not taken: it names no configuration key (`nope`)"),
        "{lines}"
    );
    assert!(lines.contains("KIRI_DASHBOARD_JWT__ISSUERR"), "{lines}");
    assert!(lines.contains("KIRI_CLOUD__URL"), "{lines}");
    // The commands' own variables are passed over without a word.
    assert!(
        !lines.contains("KIRI_URL ") && !lines.contains("KIRI_DEPLOY"),
        "{lines}"
    );
}

#[test]
fn nested_keys_take_a_double_underscore_and_errors_name_the_variable() {
    let (dir, path) =
        file("[dashboard.jwt]\nissuer = \"a\"\naudience = \"kiri\"\nkeys = [\"k.pem\"]\n");
    let vars = env(&[("KIRI_DASHBOARD_JWT__ISSUER", "https://id.example")]);
    let c = Config::load_with_env(Some(&path), vars).unwrap();
    let jwt = c.dashboard.jwt.expect("the file's [dashboard.jwt]");
    assert_eq!(jwt.issuer, "https://id.example");
    assert_eq!(jwt.keys, vec![dir.path().join("k.pem")]);
    let e = err("", &[("KIRI_BROKER_QUEUE", "many")]);
    assert!(
        e.contains("`broker.queue` (from environment variable KIRI_BROKER_QUEUE)"),
        "{e}"
    );
}

#[test]
fn inconsistent_values_are_explained() {
    let f = |extra: &str| {
        format!("[[functions]]\nname = \"a\"\nmodule = \"a.wasm\"\ntriggers = [\"x/#\"]\n{extra}")
    };
    assert!(err(
        &f("[[functions]]\nname = \"a\"\nmodule = \"b.wasm\"\ntriggers = [\"y\"]\n"),
        &[]
    )
    .contains("defined twice"));
    assert!(err(&f("").replace("x/#", "x/#/y"), &[]).contains("trigger"));
    assert!(
        err(&f("").replace("triggers = [\"x/#\"]", "triggers = []"), &[]).contains("no triggers")
    );
    let (_d, timer_only) = file(&f("").replace(
        "triggers = [\"x/#\"]",
        "every = \"10s\"\ncron = \"*/5 * * * *\"",
    ));
    let c = Config::load_with_env(Some(&timer_only), env(&[])).unwrap();
    assert_eq!(c.functions[0].every.as_deref(), Some("10s"));
    assert!(err(&f("every = \"soon\""), &[]).contains("every"));
    assert!(err(&f("limits = { timeout_ms = 0 }"), &[]).contains("timeout_ms"));
    assert!(err(&f("limits = { max_call_depth = 1 }"), &[]).contains("max_call_depth"));
    assert!(err(&f("every = \"1ms\""), &[]).contains("100ms"));
    assert!(err(&f("every = \"300000000000y\""), &[]).contains("100 years"));
    assert!(err(&f("cron = \"61 * * * *\""), &[]).contains("cron"));
    for fields in ["* * *", "0 0 0 1 1 * 2030"] {
        let e = err(&f(&format!("cron = \"{fields}\"")), &[]);
        assert!(
            e.contains("5 fields") && e.contains("or 6 with seconds first"),
            "{e}"
        );
    }
    assert!(err("[cloud]\nca_file = \"ca.pem\"\n", &[]).contains("mqtts://"));
    assert!(err(
        "",
        &[
            ("KIRI_CLOUD_URL", "mqtts://a"),
            ("KIRI_CLOUD_CLIENT_CERT", "c.pem")
        ]
    )
    .contains("go together"));
    assert!(err("", &[("KIRI_OUTBOX_TTL", "soon")]).contains("outbox.ttl"));
    assert!(err("[outbox]\nhigh_priority = [\"a/#/b\"]\n", &[]).contains("high_priority"));
    assert!(err("", &[("KIRI_DASHBOARD_LISTEN", "0.0.0.0:8080")]).contains("dashboard.token"));
    assert!(err("", &[("KIRI_DASHBOARD_TOKEN", "short")]).contains("16"));
    let open = env(&[
        ("KIRI_DASHBOARD_LISTEN", "0.0.0.0:8080"),
        ("KIRI_DASHBOARD_TOKEN", "a-long-enough-token"),
    ]);
    assert!(Config::load_with_env(None, open).is_ok());
    assert!(err("", &[("KIRI_GATEWAY_ID", "a/b")]).contains("gateway.id"));
    assert!(err("", &[("KIRI_BROKER_QUEUE", "0")]).contains("broker.queue"));
    assert!(err("[broker]\nmode = \"cloud\"\n", &[]).contains("cloud"));
    assert!(
        Config::load_with_env(Some(Path::new("/nonexistent/k.toml")), env(&[]))
            .unwrap_err()
            .to_string()
            .contains("does not exist")
    );
}

#[test]
fn log_forwarding_levels_include_the_more_severe() {
    assert!(LogForwarding::Warn.passes("error") && LogForwarding::Warn.passes("warn"));
    assert!(!LogForwarding::Warn.passes("info") && !LogForwarding::Off.passes("error"));
    assert!(LogForwarding::Debug.passes("debug"));
}

#[test]
fn the_cloud_password_is_never_shown() {
    let c = Config::load_with_env(
        None,
        env(&[
            ("KIRI_CLOUD_USERNAME", "gw"),
            ("KIRI_CLOUD_PASSWORD", "hunter2-secret"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.cloud.password.as_ref().unwrap().expose(),
        "hunter2-secret"
    );
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn broker_users_are_checked_and_a_network_listener_needs_them() {
    let hash = "$argon2id$v=19$m=7168,t=5,p=1$7UvXlwYyI9yF7YmvmFmNFg$rHoHAPYlIUIF13FC6o98+IIp6OcoAH3AoSNCAAAhb3U";
    // `broker` keys, then one user `name` with `extra` keys.
    let with = |broker: &str, name: &str, extra: &str| {
        format!("[broker]\n{broker}\n[[broker.users]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n{extra}")
    };
    let network = "listen = \"0.0.0.0:1883\"";
    let (_dir, path) = file(&with(network, "s1", "subscribe = [\"commands/s1/#\"]"));
    let c = Config::load_with_env(Some(&path), env(&[])).unwrap();
    assert_eq!(c.broker.users[0].publish_filters(), ["sensors/s1/#"]);
    assert_eq!(c.broker.users[0].subscribe, ["commands/s1/#"]);

    let open = format!("[broker]\n{network}\n");
    assert!(
        err(&open, &[]).contains("broker.users"),
        "{}",
        err(&open, &[])
    );
    let (_dir, path) = file(&format!("{open}allow_anonymous = true\n"));
    assert!(Config::load_with_env(Some(&path), env(&[])).is_ok());
    let (_dir, path) = file("[broker]\nlisten = \"127.0.0.1:1883\"\n");
    assert!(Config::load_with_env(Some(&path), env(&[])).is_ok());

    for (text, expect) in [
        (with(network, "s1", "publish = [\"a/#/b\"]"), "filter"),
        (
            with(&format!("{network}\nallow_anonymous = true"), "s1", ""),
            "exclude",
        ),
        (
            with(network, "s1", "").replace(hash, "hunter2"),
            "password-hash",
        ),
        (with(network, "s:1", ""), "name"),
        (with("mode = \"external\"", "s1", ""), "embedded"),
        (
            format!(
                "{}[[broker.users]]\nname = \"s1\"\npassword_hash = \"{hash}\"\n",
                with(network, "s1", "")
            ),
            "twice",
        ),
    ] {
        let e = err(&text, &[]);
        assert!(e.contains(expect), "{text}\n-> {e}");
    }
}

#[test]
fn the_resolved_configuration_shows_as_toml_that_reads_back_without_its_secrets() {
    let (dir, path) = file(EXAMPLE);
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaGhhc2g";
    let vars = env(&[
        ("KIRI_DASHBOARD_TOKEN", "a-token-of-twenty-chars"),
        ("KIRI_CLOUD_USERNAME", "gw"),
        ("KIRI_CLOUD_PASSWORD", "pass-word-1"),
        (
            "KIRI_BROKER_USERS",
            &format!(
                "[{{ name = \"s1\", password_hash = \"{hash}\", publish = [\"sensors/s1/#\"] }}]"
            ),
        ),
    ]);
    let c = Config::load_with_env(Some(&path), vars).unwrap();
    let shown = c.to_toml_masked().unwrap();
    for secret in ["a-token-of-twenty-chars", "pass-word-1", hash] {
        assert!(!shown.contains(secret), "{secret} shown:\n{shown}");
    }
    assert!(shown.starts_with("[gateway]"), "the file's order:\n{shown}");
    assert_eq!(shown.matches("\"***\"").count(), 3, "{shown}");
    // With the secrets put back, it reads back as the same configuration.
    let unmasked = shown
        .replacen("\"***\"", &format!("\"{hash}\""), 1)
        .replace("token = \"***\"", "token = \"a-token-of-twenty-chars\"");
    let back = Config::from_toml_str(&unmasked, dir.path(), env(&[])).unwrap();
    assert_eq!(back.to_toml_masked().unwrap(), shown);
}
