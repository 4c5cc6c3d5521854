//! What tests of the registry and of its users share: a [`Scheduler`] that records what it is
//! asked (no timer fires: tests queue ticks themselves), and a function's spec from TOML.

use std::sync::{Arc, Mutex};

use super::Scheduler;
use crate::config::FunctionConfig;

/// Records `set <idx> <every or ->` and `clear <idx>`, in order.
#[derive(Clone, Default)]
pub(crate) struct RecordingTimers(pub(crate) Arc<Mutex<Vec<String>>>);

impl Scheduler for RecordingTimers {
    fn set(&mut self, idx: usize, spec: &FunctionConfig) {
        let every = spec.every.as_deref().unwrap_or("-");
        self.0.lock().unwrap().push(format!("set {idx} {every}"));
    }

    fn clear(&mut self, idx: usize) {
        self.0.lock().unwrap().push(format!("clear {idx}"));
    }
}

/// A function's settings from TOML, as in a `[[functions]]` table.
pub(crate) fn spec(toml: &str) -> FunctionConfig {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(toml))
        .extract()
        .unwrap()
}
