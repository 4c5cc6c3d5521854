//! `config`: the TOML configuration loader with `KIRI_*` environment overrides.

use std::path::Path;

use figment::providers::Serialized;
use figment::Figment;

use crate::config::{Config, MIN_EVERY};
use crate::net::parse_mqtt_url;
use crate::net::topic;

/// Where the harness pretends the file is (relative paths are made relative to it).
const DIR: &str = "/etc/kiri";

/// The input is text (invalid UTF-8 replaced): the configuration file, then, after a NUL, one
/// environment variable per line as `NAME=value`, with `KIRI_` put in front of each name. What
/// loads must be what the gateway can start from: every value it derives without another
/// check is valid, and the configuration as loaded loads again to the same.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (file, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (format!("KIRI_{k}"), v.to_string()))
        .collect();
    let Ok(c) = Config::from_toml_str(file, Path::new(DIR), env) else {
        return;
    };
    assert!(!c.cloud.enabled() || parse_mqtt_url(&c.cloud.url).is_ok());
    assert!(topic::validate_name(&c.topic_prefix()).is_ok());
    let _ = (c.outbox.ttl(), c.uplink_max_packet());
    for k in &c.deploy.trusted_keys {
        assert!(crate::crypto::keys::parse_public(k).is_ok());
    }
    for f in &c.functions {
        assert!(f.validate().is_ok());
        assert!(f.module.is_absolute(), "{}", f.module.display());
        if let Some(every) = &f.every {
            let period = humantime::parse_duration(every).expect("validated");
            assert!(period >= MIN_EVERY);
            // The timer's first tick (`timers::every`) is one period from now.
            assert!(tokio::time::Instant::now().checked_add(period).is_some());
        }
        if let Some(cron) = &f.cron {
            assert!(cron.parse::<croner::Cron>().is_ok());
        }
    }
    let again: Config = Figment::from(Serialized::defaults(&c))
        .extract()
        .expect("a loaded configuration extracts again");
    assert!(
        again.validate().is_ok(),
        "a loaded configuration validates again"
    );
    assert_eq!(
        serde_json::to_value(&again).expect("serialisable"),
        serde_json::to_value(&c).expect("serialisable")
    );
}
