//! `KIRI_*` environment variables over the configuration file.
//!
//! `KIRI_<SECTION>_<KEY>` sets `section.key` (`KIRI_CLOUD_URL` sets `cloud.url`,
//! `KIRI_GATEWAY_DATA_DIR` sets `gateway.data_dir`); a double underscore goes one table
//! deeper (`KIRI_DASHBOARD_JWT__ISSUER` sets `dashboard.jwt.issuer`). A variable whose name
//! maps to no key is not taken: it is reported (the gateway logs it as a warning with the
//! key it would have set and the closest variable that names one) and the gateway starts.
//! The commands' own variables are not keys and are passed over silently.

use figment::error::Kind;
use figment::providers::Serialized;
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use super::{errors, Config, ENV_PREFIX as PREFIX, SECTIONS};

/// Variables the commands read that are not configuration keys: the log filter, the
/// configuration file, the HTTP API's address (`kiri dlq`), the deploy broker and its
/// password (`kiri deploy`) and the sensor's broker password (`kiri sensor`).
pub const COMMAND_VARIABLES: [&str; 6] = [
    "KIRI_LOG",
    "KIRI_CONFIG_FILE",
    "KIRI_URL",
    "KIRI_DEPLOY_BROKER",
    "KIRI_DEPLOY_PASSWORD",
    "KIRI_SENSOR_PASSWORD",
];

/// One variable's value, as a provider that names the variable (errors say where a value
/// came from).
pub(super) struct Variable {
    name: String,
    dict: Dict,
}

impl Provider for Variable {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable {}", self.name))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.dict.clone()))
    }
}

/// The variables that name keys, and for each one that does not, a line saying so.
pub(super) fn overrides(
    env: impl IntoIterator<Item = (String, String)>,
) -> (Vec<Variable>, Vec<String>) {
    let (mut taken, mut ignored) = (Vec::new(), Vec::new());
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        if COMMAND_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        let path = path_of(&rest.to_ascii_lowercase());
        let Some(dict) = nest(&path, parse(&value)) else {
            ignored.push(format!(
                "environment variable {name} is not taken: it names no configuration key"
            ));
            continue;
        };
        match not_a_key(&dict) {
            None => taken.push(Variable { name, dict }),
            Some(hint) => ignored.push(format!(
                "environment variable {name} is not taken: it names no configuration key (`{}`){hint}",
                path.join(".")
            )),
        }
    }
    (taken, ignored)
}

/// The value as TOML would read it (`10`, `true`, `["a"]`), else as text.
fn parse(value: &str) -> Value {
    // figment's value parser (0.10.19) slices a string at a char index as if it were a byte
    // index, and panics on a backslash after a non-ASCII character (found by the `config`
    // fuzz target): such a value is taken as text, unparsed.
    if value.contains('\\') && !value.is_ascii() {
        return Value::from(value.to_string());
    }
    value
        .parse()
        .unwrap_or_else(|_| Value::from(value.to_string()))
}

/// `cloud_url` → `cloud.url`, `dead_letters_max_records` → `dead_letters.max_records`,
/// `dashboard_jwt__issuer` → `dashboard.jwt.issuer`. Section names may contain `_`: they are
/// matched by name, longest first.
fn path_of(lower: &str) -> Vec<String> {
    let split = SECTIONS
        .iter()
        .filter_map(|s| Some((*s, lower.strip_prefix(s)?.strip_prefix('_')?)))
        .max_by_key(|(s, _)| s.len());
    match split {
        Some((section, key)) => std::iter::once(section)
            .chain(key.split("__"))
            .map(str::to_string)
            .collect(),
        None => vec![lower.to_string()],
    }
}

/// `value` at `path`, as nested tables; `None` for an empty segment.
fn nest(path: &[String], value: Value) -> Option<Dict> {
    if path.iter().any(String::is_empty) {
        return None;
    }
    let (last, tables) = path.split_last()?;
    let mut dict = Dict::new();
    dict.insert(last.clone(), value);
    for table in tables.iter().rev() {
        let mut outer = Dict::new();
        outer.insert(table.clone(), Value::from(dict));
        dict = outer;
    }
    Some(dict)
}

/// `None` if `dict` sets a key (whatever its value); else a hint (`; did you mean
/// KIRI_CLOUD_URL?`, or nothing).
fn not_a_key(dict: &Dict) -> Option<String> {
    let figment = Figment::from(Serialized::defaults(Config::default()))
        .merge(Serialized::defaults(dict.clone()));
    let error = figment.extract::<Config>().err()?;
    error.into_iter().find_map(|e| match &e.kind {
        Kind::UnknownField(found, expected) => Some(
            errors::closest(found, expected)
                .map(|k| {
                    // The error's path ends with the unknown key.
                    let mut path = e.path.clone();
                    path.pop();
                    path.push(k.to_string());
                    format!("; did you mean {}?", variable_for(&path))
                })
                .unwrap_or_default(),
        ),
        _ => None,
    })
}

/// The variable that sets the key at `path`.
pub fn variable_for(path: &[String]) -> String {
    let mut name = PREFIX.to_string();
    for (i, segment) in path.iter().enumerate() {
        name += match i {
            0 => "",
            1 => "_",
            _ => "__",
        };
        name += &segment.to_ascii_uppercase();
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_keys_and_back() {
        for (var, key) in [
            ("CLOUD_URL", "cloud.url"),
            ("GATEWAY_DATA_DIR", "gateway.data_dir"),
            ("DEAD_LETTERS_MAX_RECORDS", "dead_letters.max_records"),
            ("DASHBOARD_JWT__ISSUER", "dashboard.jwt.issuer"),
            ("URL", "url"),
        ] {
            let path = path_of(&var.to_ascii_lowercase());
            assert_eq!(path.join("."), key);
            assert_eq!(variable_for(&path), format!("KIRI_{var}"));
        }
    }
}
