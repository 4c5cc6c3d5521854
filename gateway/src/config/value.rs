//! Values as the configuration takes them: text that may have been written as a number
//! (`KIRI_GATEWAY_ID=42`), scalars of a function's `config` table, and secrets that never show.

use serde::{Deserialize, Serialize};

/// A scalar from a function's `config` table, handed to the function as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

impl std::fmt::Display for ConfigValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigValue::Bool(v) => write!(f, "{v}"),
            ConfigValue::Int(v) => write!(f, "{v}"),
            ConfigValue::Float(v) => write!(f, "{v}"),
            ConfigValue::Text(v) => f.write_str(v),
        }
    }
}

/// Text that may have been written as a number or boolean (`KIRI_GATEWAY_ID=42`).
pub(super) fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(ConfigValue::deserialize(d)?.to_string())
}

/// Like [`text`], for an optional key.
pub(super) fn opt_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<ConfigValue>::deserialize(d)?.map(|v| v.to_string()))
}

/// A secret string: deserialised like text, shown as `***` by `Debug` and when serialised.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ConfigValue")]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<ConfigValue> for Secret {
    fn from(v: ConfigValue) -> Secret {
        Secret(v.to_string())
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}
