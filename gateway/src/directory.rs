//! The directory of functions: which run, under which index, and how they are configured.
//! The processor writes it (at start, and when a deployment activates or removes a function);
//! the HTTP API, the retry task and dead-letter replays read it. Indices never change: a
//! replaced function keeps its index, a removed one stays, inactive.

use std::sync::{Arc, RwLock};

use crate::dashboard::functions::FunctionInfo;

/// Shared, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<RwLock<Vec<FunctionInfo>>>);

impl Directory {
    /// Sets the entry of function `idx` (appending when it is the next index).
    pub fn set(&self, idx: usize, info: FunctionInfo) {
        let mut all = self.0.write().expect("directory lock");
        if idx == all.len() {
            all.push(info);
        } else {
            all[idx] = info;
        }
    }

    /// Marks function `idx` as no longer running.
    pub fn deactivate(&self, idx: usize) {
        if let Some(f) = self.0.write().expect("directory lock").get_mut(idx) {
            f.active = false;
        }
    }

    /// The running function called `name`: its index and entry.
    pub fn find(&self, name: &str) -> Option<(usize, FunctionInfo)> {
        let all = self.0.read().expect("directory lock");
        all.iter()
            .position(|f| f.active && f.name == name)
            .map(|i| (i, all[i].clone()))
    }

    /// Every entry, by index (inactive ones included).
    pub fn all(&self) -> Vec<FunctionInfo> {
        self.0.read().expect("directory lock").clone()
    }
}
