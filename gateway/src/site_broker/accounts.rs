//! The embedded broker's accounts (`broker.users`): each user's password hash and topic rules,
//! and what a reload that changes them does to a session (see `guard.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use super::packets::{refusal, Refusal};
use crate::config::BrokerUser;
use crate::net::topic;

/// What one user may do.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Rules {
    /// May the user publish to (or name as its will) the topic `name`?
    pub fn may_publish(&self, name: &str) -> bool {
        topic::validate_name(name).is_ok() && self.publish.iter().any(|f| topic::matches(f, name))
    }

    /// May the user subscribe with `filter`? Only within one of its filters.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        topic::validate_filter(filter).is_ok()
            && self.subscribe.iter().any(|f| topic::covers(f, filter))
    }
}

#[derive(PartialEq)]
pub(super) struct Account {
    pub(super) hash: String,
    pub(super) rules: Rules,
}

/// The accounts by user name.
pub(super) type Accounts = HashMap<String, Account>;

pub(super) fn accounts(users: &[BrokerUser]) -> Accounts {
    users
        .iter()
        .map(|u| {
            let rules = Rules {
                publish: u.publish_filters(),
                subscribe: u.subscribe.clone(),
            };
            let account = Account {
                hash: u.password_hash.clone(),
                rules,
            };
            (u.name.clone(), account)
        })
        .collect()
}

/// Resolves when a reload of the accounts ends a session: logged in as `account` (user, the
/// hash it logged in with, its rules) when that user is gone or changed; without logging in
/// (`None`) when there are accounts now.
pub(super) async fn revoked(
    reloads: &mut tokio::sync::watch::Receiver<Arc<Accounts>>,
    account: Option<(&str, String, &Rules)>,
) -> Refusal {
    loop {
        if reloads.changed().await.is_err() {
            return std::future::pending().await;
        }
        let accounts = reloads.borrow_and_update().clone();
        let still = match &account {
            None => accounts.is_empty(),
            Some((user, hash, rules)) => accounts
                .get(*user)
                .is_some_and(|a| &a.hash == hash && &a.rules == *rules),
        };
        if !still {
            let detail = match account {
                None => "disconnected by a reload: clients must now log in".to_string(),
                Some((user, ..)) => format!(
                    "user {user:?} disconnected by a reload that removed or changed its account"
                ),
            };
            return refusal("reload", detail);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(publish: &[&str], subscribe: &[&str]) -> Rules {
        Rules {
            publish: publish.iter().map(|s| s.to_string()).collect(),
            subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn rules_keep_a_sensor_in_its_own_topics() {
        let r = rules(&["sensors/s1/#"], &["commands/s1/+"]);
        assert!(r.may_publish("sensors/s1/temperature"));
        assert!(r.may_publish("sensors/s1"));
        assert!(!r.may_publish("sensors/s2/temperature"));
        assert!(
            !r.may_publish("sensors/s1/+"),
            "a wildcard is no topic name"
        );
        assert!(!r.may_publish("kiri/deploy/gw"));
        assert!(r.may_subscribe("commands/s1/reset"));
        assert!(r.may_subscribe("commands/s1/+"));
        assert!(!r.may_subscribe("commands/+/reset"));
        assert!(!r.may_subscribe("#"));
        assert!(!r.may_subscribe("commands/s1/#"));
        assert!(!r.may_subscribe("a/#/b"), "not a valid filter");
    }
}
