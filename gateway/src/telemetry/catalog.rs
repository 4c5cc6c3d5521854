//! Every metric the gateway exports, with its help text. At start each is described to the
//! exporter (so `/metrics` has `# HELP` and `# TYPE` for it) and the counters whose labels
//! are known in advance are registered at zero, so that a rate or an alert on them works
//! before their first event; the counters of a function are registered when it is loaded
//! ([`register_function`]). The operators' reference is the table in `docs/operating.md`; a
//! test keeps the two, and the names used in the code, in agreement.

use metrics::{describe_counter, describe_gauge, describe_histogram};

/// What kind of metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// A value now.
    Gauge,
    /// Observations in buckets.
    Histogram,
}

use Kind::{Counter, Gauge, Histogram};

/// Name, kind, help.
pub const METRICS: &[(&str, Kind, &str)] = &[
    // Ingest.
    ("kiri_ingest_messages_total", Counter, "Messages received from the site broker."),
    ("kiri_ingest_rejected_total", Counter, "Inputs rejected before any function ran, by reason (kept as dead letters)."),
    ("kiri_ingest_connected", Gauge, "1 when every session to the site broker (the control session and each function's) is connected."),
    ("kiri_ingest_subscribed", Gauge, "1 when every session to the site broker has its subscriptions."),
    ("kiri_ingest_connection_errors_total", Counter, "Errors on the sessions to the site broker."),
    ("kiri_sparkplug_aliases_dropped_total", Counter, "Sparkplug B metric aliases forgotten because a node declared more than the bound."),
    // Functions.
    ("kiri_invocations_total", Counter, "Function invocations, by function and outcome (ok, or the failure's reason)."),
    ("kiri_instances_started_total", Counter, "Instances started, by function."),
    ("kiri_function_starts_total", Counter, "Invocations by function and kind: cold (an instance had to be created) or warm."),
    ("kiri_fuel_consumed_total", Counter, "Fuel consumed, by function."),
    ("kiri_invocation_seconds", Histogram, "Wall time of an invocation, by function."),
    ("kiri_function_memory_peak_bytes", Gauge, "The largest linear memory an instance of the function reached."),
    ("kiri_output_denied_total", Counter, "Outputs refused because their topic is outside the function's emit or publish filters, by function and kind."),
    ("kiri_output_limit_hits_total", Counter, "Invocations that reached their output count or byte limit, by function."),
    ("kiri_caller_denied_total", Counter, "Topics or keys refused because they are outside the caller's prefixes, by function and kind."),
    ("kiri_function_log_dropped_total", Counter, "Function log lines dropped, by function and reason."),
    ("kiri_kv_bytes", Gauge, "Bytes of keys and values in the function's state."),
    ("kiri_kv_keys", Gauge, "Keys in the function's state."),
    ("kiri_kv_quota_refused_total", Counter, "State writes refused by a quota, by function and quota."),
    ("kiri_local_publish_dropped_total", Counter, "Messages functions published to the site broker that were dropped because its queue was full."),
    ("kiri_timer_ticks_skipped_total", Counter, "Timer ticks skipped because the previous one had not run yet, by function."),
    ("kiri_retries_total", Counter, "Automatic retries of failed invocations."),
    ("kiri_retries_exhausted_total", Counter, "Events left in the dead letters after their last retry, by function."),
    ("kiri_functions_not_loaded_total", Counter, "Configured functions whose module did not load."),
    ("kiri_module_reloads_total", Counter, "Module files reloaded by kiri run --watch, by outcome."),
    // Outbox.
    ("kiri_outbox_records", Gauge, "Results held for the cloud."),
    ("kiri_outbox_bytes", Gauge, "Bytes of results held for the cloud."),
    ("kiri_outbox_appended_total", Counter, "Results written to the outbox."),
    ("kiri_outbox_acked_total", Counter, "Results the cloud broker acknowledged (then deleted)."),
    ("kiri_outbox_full_waits_total", Counter, "Times inputs were held back because the outbox was full (when_full = block)."),
    ("kiri_outbox_disk_waits_total", Counter, "Times inputs were held back because free disk space was under outbox.min_free_bytes."),
    ("kiri_outbox_dropped_total", Counter, "Results deleted unsent, by reason: full, rejected, expired, corrupt."),
    ("kiri_outbox_oldest_age_seconds", Gauge, "Age of the oldest result held."),
    ("kiri_commits_total", Counter, "Group commits: flushes of the store that made a group's effects durable."),
    // Uplink.
    ("kiri_uplink_connected", Gauge, "1 while connected to the cloud broker."),
    ("kiri_uplink_connects_total", Counter, "Connections made to the cloud broker."),
    ("kiri_uplink_errors_total", Counter, "Errors on the connection to the cloud broker."),
    ("kiri_uplink_refused_total", Counter, "Results the cloud broker refused (MQTT 5 reason codes), by reason."),
    ("kiri_uplink_delivered_total", Counter, "Results delivered to the cloud broker."),
    ("kiri_result_delivery_seconds", Histogram, "Time from a result emitted to the cloud broker's acknowledgement, on the wall clock (time held through an outage included)."),
    ("kiri_uplink_messages_total", Counter, "MQTT messages published to the cloud broker (fewer than results with batching)."),
    ("kiri_uplink_bytes_total", Counter, "Payload bytes published to the cloud broker."),
    ("kiri_logs_forward_dropped_total", Counter, "Log lines not forwarded to the cloud because their queue was full."),
    // Dead letters.
    ("kiri_dead_letters", Gauge, "Dead letters held."),
    ("kiri_dead_letters_total", Counter, "Inputs kept as dead letters, by reason."),
    ("kiri_dead_letters_dropped_total", Counter, "Dead letters deleted by the bounds, by kind."),
    ("kiri_dead_letters_dropped_by_request_total", Counter, "Dead letters deleted on request."),
    ("kiri_dead_letters_replayed_total", Counter, "Dead letters replayed on request."),
    // Deployments.
    ("kiri_deployments_total", Counter, "Deployment commands handled, by outcome and reason."),
    ("kiri_deploy_replies_dropped_total", Counter, "Replies to deployment commands that could not be queued."),
    ("kiri_deploy_dropped_total", Counter, "Deployment commands dropped because their queue was full."),
    // Embedded broker.
    ("kiri_broker_refused_total", Counter, "Connections and packets the embedded broker refused, by reason."),
    // HTTP.
    ("kiri_http_unauthorized_total", Counter, "HTTP requests without a valid token or JWT."),
    ("kiri_http_forbidden_total", Counter, "HTTP requests with a JWT that lacks the scope."),
    ("kiri_http_locked_out_total", Counter, "HTTP requests refused because the address is locked out after failed logins."),
    ("kiri_http_rejected_busy_total", Counter, "HTTP requests refused because the server was busy."),
    ("kiri_http_host_refused_total", Counter, "HTTP requests refused for a Host header that is not the gateway's."),
    ("kiri_http_connections_refused_total", Counter, "HTTP connections refused because every connection was busy."),
    ("kiri_http_accept_errors_total", Counter, "Errors accepting HTTP connections."),
    ("kiri_http_tls_failures_total", Counter, "Failed TLS handshakes on the HTTP API."),
    // Process.
    ("kiri_open_files_limit", Gauge, "The open-file limit the connection limits were derived from."),
    ("kiri_clock_unset", Gauge, "1 while the system clock has not been set."),
    ("kiri_store_lost_entries", Gauge, "Entries of the store found missing at start against its ledger (damage since the last clean stop)."),
    ("kiri_store_unreadable_results", Gauge, "Results found unreadable (checksum) at start."),
    ("kiri_site_broker_dropped_total", Counter, "Messages an external site broker reports it dropped ($SYS/broker/publish/messages/dropped)."),
    ("kiri_build_info", Gauge, "Always 1; the labels name the version and the commit it was built from."),
];

/// The metrics that carry labels: not registered without them.
const LABELLED: [&str; 24] = [
    "kiri_broker_refused_total",
    "kiri_build_info",
    "kiri_caller_denied_total",
    "kiri_dead_letters_dropped_total",
    "kiri_dead_letters_total",
    "kiri_deployments_total",
    "kiri_fuel_consumed_total",
    "kiri_function_log_dropped_total",
    "kiri_function_memory_peak_bytes",
    "kiri_function_starts_total",
    "kiri_ingest_rejected_total",
    "kiri_instances_started_total",
    "kiri_invocation_seconds",
    "kiri_invocations_total",
    "kiri_kv_bytes",
    "kiri_kv_keys",
    "kiri_kv_quota_refused_total",
    "kiri_module_reloads_total",
    "kiri_outbox_dropped_total",
    "kiri_output_denied_total",
    "kiri_output_limit_hits_total",
    "kiri_retries_exhausted_total",
    "kiri_timer_ticks_skipped_total",
    "kiri_uplink_refused_total",
];

/// Label sets registered at zero at start, besides every counter without labels.
const LABELLED_ZEROS: &[(&str, &str, &[&str])] = &[
    (
        "kiri_outbox_dropped_total",
        "reason",
        &["full", "rejected", "expired", "corrupt"],
    ),
    (
        "kiri_dead_letters_dropped_total",
        "kind",
        &["rejected", "failed", "retry"],
    ),
];

/// Describes every metric, registers the counters known in advance at zero, and sets
/// `kiri_build_info`.
pub fn register() {
    for &(name, kind, help) in METRICS {
        match kind {
            Counter => describe_counter!(name, help),
            Gauge => describe_gauge!(name, help),
            Histogram => describe_histogram!(name, help),
        }
    }
    for &(name, kind, _) in METRICS {
        if kind == Counter && !LABELLED.contains(&name) {
            metrics::counter!(name).absolute(0);
        }
    }
    for &(name, label, values) in LABELLED_ZEROS {
        for &value in values {
            metrics::counter!(name, label => value).absolute(0);
        }
    }
    metrics::gauge!(
        "kiri_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "git_sha" => env!("KIRI_GIT_SHA"),
    )
    .set(1.0);
}

/// Registers a function's counters at zero: its successful invocations, cold and warm starts,
/// fuel, and events left after their retries.
pub fn register_function(name: &str) {
    let f = || ("function", name.to_string());
    // A handle registers its series; dropping the handle keeps it.
    let _ = metrics::counter!(
        "kiri_invocations_total",
        &[f(), ("outcome", "ok".to_string())]
    );
    let _ = metrics::counter!("kiri_retries_exhausted_total", &[f()]);
    let _ = metrics::counter!("kiri_instances_started_total", &[f()]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every metric named in the code: name, and whether it is ever given labels.
    fn in_the_code() -> Vec<(String, bool)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for macro_name in ["counter!(", "gauge!(", "histogram!("] {
                    for (at, _) in text.match_indices(macro_name) {
                        let rest = text[at + macro_name.len()..].trim_start();
                        let Some(rest) = rest.strip_prefix('"') else {
                            continue;
                        };
                        let Some(end) = rest.find('"') else { continue };
                        if !rest.starts_with("kiri_") {
                            continue;
                        }
                        let after = rest[end + 1..].trim_start();
                        found.push((rest[..end].to_string(), after.starts_with(',')));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_catalog_names_every_metric_in_the_code_and_the_docs() {
        let code = in_the_code();
        let named: BTreeSet<&str> = code.iter().map(|(n, _)| n.as_str()).collect();
        let catalog: BTreeSet<&str> = METRICS.iter().map(|(n, _, _)| *n).collect();
        assert_eq!(named, catalog, "metrics in the code against the catalog");
        let labelled: BTreeSet<&str> = code
            .iter()
            .filter(|(_, l)| *l)
            .map(|(n, _)| n.as_str())
            .collect();
        assert_eq!(labelled, LABELLED.into_iter().collect(), "labelled metrics");
        let docs = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/operating.md"),
        )
        .unwrap();
        for name in catalog {
            assert!(
                docs.contains(&format!("`{name}")),
                "docs/operating.md lists {name}"
            );
        }
        for (name, _, values) in LABELLED_ZEROS {
            assert!(LABELLED.contains(name));
            assert!(!values.is_empty());
        }
    }
}
