//! Clients of a running gateway's HTTP API: `kiri status`, `kiri functions`, `kiri dlq`,
//! `kiri reload`.

use anyhow::{bail, Context};
use kiri::http::{FunctionView, Listed, Outcome, Selection};

use super::DlqCommand;

/// A GET to the gateway's API, with the token from `KIRI_DASHBOARD_TOKEN` when set (needed
/// when the gateway has `dashboard.auth_reads`).
fn read_request(url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    let req = ureq::get(url);
    match std::env::var("KIRI_DASHBOARD_TOKEN") {
        Ok(t) if !t.is_empty() => req.header("Authorization", &format!("Bearer {t}")),
        _ => req,
    }
}

/// `kiri status`: the uplink and the outbox at a glance.
pub fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let endpoint = format!("{}/api/v1/status", url.trim_end_matches('/'));
    let mut resp = read_request(&endpoint)
        .call()
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let body = resp.body_mut().read_to_string()?;
    if json {
        println!("{body}");
        return Ok(());
    }
    let s: serde_json::Value = serde_json::from_str(&body)?;
    let (up, ob) = (&s["uplink"], &s["outbox"]);
    let ago = |ms: &serde_json::Value| {
        ms.as_u64()
            .map(|t| {
                let secs = kiri::now_ms().saturating_sub(t) / 1000;
                format!(
                    "{} ago",
                    humantime::format_duration(std::time::Duration::from_secs(secs))
                )
            })
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "gateway   {} (kiri {}), up {}",
        s["gateway"].as_str().unwrap_or("?"),
        s["version"].as_str().unwrap_or("?"),
        humantime::format_duration(std::time::Duration::from_secs(
            s["uptime_ms"].as_u64().unwrap_or(0) / 1000
        ))
    );
    let state = if up["connected"] == true {
        "connected"
    } else {
        "DOWN"
    };
    println!(
        "uplink    {} {state} since {}, {} reconnects, {} results delivered",
        up["url"].as_str().unwrap_or("?"),
        ago(&up["since_ms"]),
        up["reconnects"],
        up["delivered"]
    );
    if let Some(e) = up["last_error"].as_str() {
        println!("          last error {}: {e}", ago(&up["last_error_ms"]));
    }
    let oldest = ob["oldest_age_ms"]
        .as_u64()
        .map(|ms| humantime::format_duration(std::time::Duration::from_secs(ms / 1000)).to_string())
        .unwrap_or_else(|| "-".into());
    println!(
        "outbox    {} results ({} high priority), {} bytes, oldest {oldest}; policy {} at {} records / {} bytes",
        ob["records"], ob["high_priority_records"], ob["bytes"],
        ob["policy"]["when_full"].as_str().unwrap_or("?"),
        ob["policy"]["max_records"], ob["policy"]["max_bytes"]
    );
    if let Some(held) = ob["functions"].as_object().filter(|m| !m.is_empty()) {
        let shares: Vec<String> = held
            .iter()
            .map(|(name, s)| format!("{name} {} results / {} bytes", s["records"], s["bytes"]))
            .collect();
        println!(
            "          per function (share {} records / {} bytes): {}",
            ob["function_share"]["records"],
            ob["function_share"]["bytes"],
            shares.join(", ")
        );
    }
    println!(
        "          since start: {} appended, {} acked, dropped {} (full), {} (rejected), {} (expired), {} (corrupt); waits {} (full), {} (disk)",
        ob["appended"], ob["acked"], ob["dropped_full"], ob["rejected"], ob["expired"],
        ob["corrupt"], ob["full_waits"], ob["disk_waits"]
    );
    Ok(())
}

/// `kiri functions`: each function with its metering, then the recent deployments.
pub fn functions_table(url: &str) -> anyhow::Result<()> {
    let endpoint = format!("{}/api/v1/functions", url.trim_end_matches('/'));
    let mut resp = read_request(&endpoint)
        .call()
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let views: Vec<FunctionView> = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
    println!(
        "{:<16} {:>9} {:>9} {:>7} {:>7} {:>5} {:>6} {:>6} {:>12} {:>8} {:>8} {:>8} {:>9}  trigger",
        "function",
        "calls",
        "ok",
        "errors",
        "retries",
        "dead",
        "cold",
        "warm",
        "fuel",
        "p50 us",
        "p99 us",
        "max us",
        "mem KiB"
    );
    for v in views {
        let s = &v.stats;
        let errors: u64 = s.errors.values().sum();
        let trigger = [
            v.info.triggers.join(" "),
            v.info
                .every
                .map(|e| format!("every {e}"))
                .unwrap_or_default(),
            v.info.cron.map(|c| format!("cron {c}")).unwrap_or_default(),
            if v.info.http {
                "http".to_string()
            } else {
                String::new()
            },
        ]
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(", ");
        println!(
            "{:<16} {:>9} {:>9} {:>7} {:>7} {:>5} {:>6} {:>6} {:>12} {:>8} {:>8} {:>8} {:>9}  {}",
            v.info.name,
            s.invocations,
            s.ok,
            errors,
            s.retries,
            s.dead_lettered,
            s.cold_starts,
            s.warm_starts,
            s.fuel,
            s.wall_us_p50,
            s.wall_us_p99,
            s.wall_us_max,
            s.memory_peak_bytes / 1024,
            trigger
        );
        if let Some(deployed) = v.info.deployed_version {
            println!(
                "{:<16} deployed version {deployed}, module {}",
                "", v.info.version
            );
        }
    }
    let endpoint = format!("{}/api/v1/status", url.trim_end_matches('/'));
    if let Ok(mut resp) = read_request(&endpoint).call() {
        let status: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        let unloaded: Vec<kiri::registry::Unloaded> =
            serde_json::from_value(status["unloaded_functions"].clone()).unwrap_or_default();
        for u in unloaded {
            println!(
                "{:<16} INACTIVE: its module ({}) does not load: {}",
                u.name, u.module, u.error
            );
        }
    }
    let endpoint = format!("{}/api/v1/deployments?limit=10", url.trim_end_matches('/'));
    if let Ok(mut resp) = read_request(&endpoint).call() {
        let history: Vec<kiri::deploy::HistoryEntry> =
            serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        if !history.is_empty() {
            println!("\nrecent deployments (newest first):");
        }
        for e in history {
            let when = chrono::DateTime::from_timestamp_millis(e.time_ms as i64)
                .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                .unwrap_or_default();
            let version = e
                .version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into());
            let outcome = if e.accepted { "accepted" } else { "REJECTED" };
            println!(
                "  {when} {:<16} {:<9} v{version:<6} {outcome} {} ({}) {}",
                e.name, e.kind, e.reason, e.source, e.detail
            );
        }
    }
    Ok(())
}

pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

pub(super) fn check(mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<String> {
    let status = resp.status();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if !status.is_success() {
        bail!("the gateway answered {status}: {body}");
    }
    Ok(body)
}

/// `kiri dlq`: list, replay or drop dead letters.
pub fn dlq(command: DlqCommand, url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let token = token.context("a token is needed: --token or KIRI_DASHBOARD_TOKEN")?;
    let auth = format!("Bearer {token}");
    let base = format!("{}/api/v1/dead-letters", url.trim_end_matches('/'));
    let send = |path: &str, sel: &Selection| -> anyhow::Result<Outcome> {
        let resp = agent()
            .post(format!("{base}/{path}"))
            .header("Authorization", &auth)
            .send_json(sel)
            .with_context(|| format!("cannot reach the gateway at {url}"))?;
        Ok(serde_json::from_str(&check(resp)?)?)
    };
    match command {
        DlqCommand::List { function, limit } => {
            let mut req = agent()
                .get(&base)
                .header("Authorization", &auth)
                .query("limit", limit.to_string());
            if let Some(f) = &function {
                req = req.query("function", f);
            }
            let resp = req
                .call()
                .with_context(|| format!("cannot reach the gateway at {url}"))?;
            let entries: Vec<Listed> = serde_json::from_str(&check(resp)?)?;
            println!(
                "{:>8}  {:<16} {:<16} {:<12} {:>8} {:>5}  {:<6} {:<28} error",
                "id", "function", "version", "reason", "bytes", "tries", "replay", "topic"
            );
            for listed in &entries {
                let e = &listed.entry;
                println!(
                    "{:>8}  {:<16} {:<16} {:<12} {:>8} {:>5}  {:<6} {:<28} {}",
                    listed.id,
                    e.function.as_deref().unwrap_or("-"),
                    e.version.as_deref().unwrap_or("-"),
                    e.reason,
                    e.payload_len,
                    e.attempts,
                    if listed.replayable { "yes" } else { "no" },
                    e.topic,
                    e.error
                );
                let cut = if listed.payload_cut { " (cut)" } else { "" };
                println!("{:>8}  payload {}{cut}", "", listed.payload);
            }
            println!("{} entries", entries.len());
        }
        DlqCommand::Replay { function, ids } => {
            let o = send(
                "replay",
                &Selection {
                    ids,
                    function,
                    all: false,
                },
            )?;
            println!("replaying {} entries", o.done.len());
            for (id, why) in o.skipped {
                println!("skipped {id}: {why}");
            }
        }
        DlqCommand::Drop { function, all, ids } => {
            let o = send("drop", &Selection { ids, function, all })?;
            println!("dropped {} entries", o.done.len());
            for (id, why) in o.skipped {
                println!("skipped {id}: {why}");
            }
        }
    }
    Ok(())
}

/// `kiri reload`: the running gateway reads its configuration again (as on SIGHUP); prints
/// what changed, or fails with why the new configuration was refused.
pub fn reload(url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let token = token.context(
        "a token is needed: --token or KIRI_DASHBOARD_TOKEN (`kiri dashboard --config FILE` prints it)",
    )?;
    let endpoint = format!("{}/api/v1/reload", url.trim_end_matches('/'));
    let mut resp = agent()
        .post(&endpoint)
        .header("Authorization", &format!("Bearer {token}"))
        .send_empty()
        .with_context(|| format!("cannot reach the gateway at {url}"))?;
    let status = resp.status();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if !status.is_success() {
        match v["error"].as_str() {
            Some(why) => bail!("reload refused, the running configuration stays: {why}"),
            None => bail!("the gateway answered {status}: {body}"),
        }
    }
    let list = |key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (keys, changed, removed) = (
        list("keys"),
        list("functions_changed"),
        list("functions_removed"),
    );
    if keys.is_empty() && changed.is_empty() && removed.is_empty() {
        println!("reloaded: nothing changed");
        return Ok(());
    }
    println!("reloaded");
    for (what, names) in [
        ("settings", keys),
        ("functions added or changed", changed),
        ("functions removed", removed),
    ] {
        if !names.is_empty() {
            println!("  {what}: {}", names.join(", "));
        }
    }
    Ok(())
}
