//! `kiri state`: a function's key-value state on a running gateway, through
//! `/api/v1/functions/<name>/state`.

use anyhow::Context;
use clap::Subcommand;

use super::api::{agent, check};

#[derive(Subcommand)]
pub enum StateCommand {
    /// List the function's keys (with each value's size), in key order.
    List {
        /// The function.
        #[arg(long)]
        function: String,
        /// Only keys that start with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Print one key's value (as text when it is UTF-8, else hex).
    Get {
        /// The function.
        #[arg(long)]
        function: String,
        /// The key (text; `--hex` for a key given in hex).
        key: String,
        /// The key is given in hex.
        #[arg(long)]
        hex: bool,
    },
    /// Delete one key, or every key with `--all` (a function's whole state, say after
    /// undeploying it).
    Delete {
        /// The function.
        #[arg(long)]
        function: String,
        /// The key (text; `--hex` for a key given in hex).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        key: Option<String>,
        /// The key is given in hex.
        #[arg(long)]
        hex: bool,
        /// Every key.
        #[arg(long)]
        all: bool,
    },
}

/// Runs it.
pub fn run(command: StateCommand, url: &str, token: Option<&str>) -> anyhow::Result<()> {
    let token = token.context("a token is needed: --token or KIRI_DASHBOARD_TOKEN")?;
    let auth = format!("Bearer {token}");
    let base = |f: &str| format!("{}/api/v1/functions/{f}/state", url.trim_end_matches('/'));
    let reach = || format!("cannot reach the gateway at {url}");
    let key_param = |hex: bool| if hex { "key_hex" } else { "key" };
    match command {
        StateCommand::List {
            function,
            prefix,
            limit,
        } => {
            let resp = agent()
                .get(base(&function))
                .header("Authorization", &auth)
                .query("prefix", &prefix)
                .query("limit", limit.to_string())
                .call()
                .with_context(reach)?;
            let listing: serde_json::Value = serde_json::from_str(&check(resp)?)?;
            for k in listing["keys"].as_array().into_iter().flatten() {
                println!("{:>8}  {}", k["bytes"], shown(&k["key"]));
            }
            println!(
                "{} keys, {} bytes of keys and values",
                listing["total_keys"], listing["total_bytes"]
            );
        }
        StateCommand::Get { function, key, hex } => {
            let resp = agent()
                .get(base(&function))
                .header("Authorization", &auth)
                .query(key_param(hex), &key)
                .call()
                .with_context(reach)?;
            let value: serde_json::Value = serde_json::from_str(&check(resp)?)?;
            println!("{}", shown(&value["value"]));
        }
        StateCommand::Delete {
            function,
            key,
            hex,
            all,
        } => {
            let mut req = agent()
                .delete(base(&function))
                .header("Authorization", &auth);
            req = match key {
                Some(k) if !all => req.query(key_param(hex), &k),
                _ => req.query("all", "true"),
            };
            let resp = req.call().with_context(reach)?;
            let done: serde_json::Value = serde_json::from_str(&check(resp)?)?;
            println!("deleted {} keys ({} bytes)", done["deleted"], done["bytes"]);
        }
    }
    Ok(())
}

/// A value as the API shows it (`{"text": ...}` or `{"hex": ...}`), as a person reads it.
fn shown(v: &serde_json::Value) -> String {
    match (v.get("text"), v.get("hex")) {
        (Some(t), _) => t.as_str().unwrap_or("").to_string(),
        (_, Some(h)) => format!("hex:{}", h.as_str().unwrap_or("")),
        _ => v.to_string(),
    }
}
