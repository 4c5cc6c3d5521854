//! The `kiri` command: parse arguments, set up logging, call the library.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiri::codec::{self, Envelope, Reading};
use kiri::Config;

mod deploy_cli;

/// Kiri: WebAssembly functions on your IoT gateway, results delivered to the cloud.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (built-in defaults without --config; KIRI_* variables override keys).
    Run {
        /// A TOML configuration file.
        #[arg(long, short, env = "KIRI_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Print the dashboard's address with its token (`.../#token=...`): from the configuration,
    /// or the one kept in the data directory (made now if the gateway has not made one yet);
    /// not while the gateway runs, which holds the data directory.
    Dashboard {
        /// A TOML configuration file.
        #[arg(long, short, env = "KIRI_CONFIG_FILE")]
        config: Option<PathBuf>,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write one CBOR sensor reading to stdout (pipe it to `mosquitto_pub -s`).
    Reading {
        /// Sensor id.
        #[arg(long)]
        sensor: String,
        /// What is measured.
        #[arg(long, default_value = "temperature")]
        kind: String,
        /// The value.
        #[arg(long, allow_hyphen_values = true)]
        value: f64,
        /// Its unit.
        #[arg(long, default_value = "C")]
        unit: String,
        /// Per-node sequence number.
        #[arg(long)]
        seq: Option<u64>,
    },
    /// Inspect, replay or drop dead letters of a running gateway (over its HTTP API).
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
        /// The gateway's HTTP address.
        #[arg(
            long,
            global = true,
            default_value = "http://127.0.0.1:8080",
            env = "KIRI_URL"
        )]
        url: String,
        /// The dashboard token.
        #[arg(
            long,
            global = true,
            env = "KIRI_DASHBOARD_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
    },
    /// Hash a password for an embedded-broker account (`[[broker.users]]` `password_hash`):
    /// reads the password from the first line of stdin, prints its Argon2id hash.
    PasswordHash,
    /// Make an ed25519 key pair for signing packages; prints the public key.
    Keygen {
        /// Where to write the private key (the public one goes to `<out>.pub`).
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a JWT for the HTTP API, for callers without an identity provider; prints it.
    Token {
        /// The issuer's private key (PEM, PKCS#8: Ed25519 from `kiri keygen`, or P-256).
        #[arg(long)]
        key: PathBuf,
        /// `iss`: as the gateway's `dashboard.jwt.issuer`.
        #[arg(long)]
        issuer: String,
        /// `aud`: as the gateway's `dashboard.jwt.audience`.
        #[arg(long, default_value = "kiri")]
        audience: String,
        /// `sub`: who the caller is (functions read it with `caller`).
        #[arg(long)]
        subject: String,
        /// Scopes (repeat or space-separate): read, dead-letters, invoke:<function>,
        /// invoke:*, prefix:<topic or key prefix>.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it is valid (`15m`, `1h`, `30d`).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// Make a signed function package from a WebAssembly module.
    Package(deploy_cli::PackageArgs),
    /// Publish a package to a gateway (or a group) over MQTT and wait for its answer.
    Deploy {
        /// The package (`kiri package`).
        package: PathBuf,
        #[command(flatten)]
        target: deploy_cli::Target,
    },
    /// Remove a deployed function (a signed command; its versions stay kept for rollback).
    Undeploy {
        /// The private key.
        #[arg(long)]
        key: PathBuf,
        /// The function.
        #[arg(long)]
        name: String,
        /// The command's version: above every version the function had.
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        target: deploy_cli::Target,
    },
    /// Make a kept version of a deployed function active again (a signed command).
    Rollback {
        /// The private key.
        #[arg(long)]
        key: PathBuf,
        /// The function.
        #[arg(long)]
        name: String,
        /// The version to go back to.
        #[arg(long)]
        to: u64,
        /// The command's version: above every version the function had.
        #[arg(long)]
        version: u64,
        #[command(flatten)]
        target: deploy_cli::Target,
    },
    /// Show a running gateway's uplink and outbox: connected or not, last error, backlog.
    Status {
        /// The gateway's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "KIRI_URL")]
        url: String,
        /// Print the JSON document of `GET /api/v1/status` as it is.
        #[arg(long)]
        json: bool,
    },
    /// Show a running gateway's functions and their metering.
    Functions {
        /// The gateway's HTTP address.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "KIRI_URL")]
        url: String,
    },
    /// Decode a result envelope (as received from the cloud broker) from stdin and print it.
    Decode {
        /// Stdin is a bare CBOR value (a reading, an HTTP response), not an envelope.
        #[arg(long)]
        reading: bool,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List dead letters, oldest first.
    List {
        /// Only this function's.
        #[arg(long)]
        function: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Run dead letters again (their function's current version); failures come back as new entries.
    Replay {
        /// Every replayable entry of this function.
        #[arg(long)]
        function: Option<String>,
        /// These entries.
        ids: Vec<u64>,
    },
    /// Delete dead letters.
    Drop {
        /// Every entry of this function.
        #[arg(long)]
        function: Option<String>,
        /// Every entry.
        #[arg(long)]
        all: bool,
        /// These entries.
        ids: Vec<u64>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print a commented example configuration.
    Example,
    /// Load and validate a configuration (file plus environment), then print it resolved.
    Check {
        /// A TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => {
            init_logging();
            let config = Config::load(config.as_deref())?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(kiri::run(config, shutdown_signal()))
        }
        Command::Dashboard { config } => dashboard_url(&Config::load(config.as_deref())?),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", kiri::config::EXAMPLE);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => {
            let config = Config::load(config.as_deref())?;
            // The JWT issuer's keys are files: read them too, as `kiri run` would.
            if let Some(jwt) = &config.dashboard.jwt {
                kiri::identity::Issuer::load(jwt)?;
            }
            println!("{config:#?}");
            Ok(())
        }
        Command::Reading {
            sensor,
            kind,
            value,
            unit,
            seq,
        } => {
            let r = Reading {
                sensor,
                kind,
                value,
                unit,
                ts: Some(kiri::now_ms()),
                seq,
            };
            std::io::stdout().write_all(&codec::encode_reading(&r))?;
            Ok(())
        }
        Command::Dlq {
            command,
            url,
            token,
        } => dlq::run(command, &url, token.as_deref()),
        Command::Functions { url } => functions_table(&url),
        Command::PasswordHash => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                anyhow::bail!(
                    "no password on stdin (e.g. `printf '%s' \"$PW\" | kiri password-hash`)"
                );
            }
            println!("{}", kiri::ingest::guard::hash_password(password)?);
            Ok(())
        }
        Command::Keygen { out } => deploy_cli::keygen(&out),
        Command::Token {
            key,
            issuer,
            audience,
            subject,
            scopes,
            ttl,
        } => {
            let pem =
                std::fs::read(&key).with_context(|| format!("cannot read {}", key.display()))?;
            let now = kiri::now_ms() / 1000;
            let claims = kiri::identity::MintClaims {
                iss: issuer,
                aud: audience,
                sub: subject,
                scope: scopes.join(" "),
                iat: now,
                nbf: now,
                exp: now.saturating_add(ttl.as_secs()),
            };
            println!("{}", kiri::identity::mint(&pem, &claims)?);
            Ok(())
        }
        Command::Package(args) => deploy_cli::package(args),
        Command::Deploy { package, target } => deploy_cli::deploy(&package, &target),
        Command::Undeploy {
            key,
            name,
            version,
            target,
        } => deploy_cli::command(&key, &name, version, None, &target),
        Command::Rollback {
            key,
            name,
            to,
            version,
            target,
        } => deploy_cli::command(&key, &name, version, Some(to), &target),
        Command::Status { url, json } => status(&url, json),
        Command::Decode { reading } => {
            let mut bytes = Vec::new();
            std::io::stdin().read_to_end(&mut bytes)?;
            if reading {
                let value: ciborium::Value =
                    ciborium::de::from_reader(&bytes[..]).context("stdin is not CBOR")?;
                println!("{}", serde_json::to_string(&value)?);
                return Ok(());
            }
            let e = Envelope::decode(&bytes).context("stdin is not a Kiri result envelope")?;
            let payload: ciborium::Value = ciborium::de::from_reader(&e.payload[..])
                .unwrap_or_else(|_| ciborium::Value::Bytes(e.payload.clone()));
            println!(
                "id={} gateway={} function={} topic={} ts={} payload={}",
                e.id,
                e.gateway,
                e.function,
                e.topic,
                e.ts,
                serde_json::to_string(&payload)?
            );
            Ok(())
        }
    }
}

/// Prints where the dashboard is, with the token in the fragment when there is one yet.
fn dashboard_url(config: &Config) -> anyhow::Result<()> {
    let g = &config.gateway;
    let token =
        match &config.dashboard.token {
            Some(t) => t.clone(),
            // The one the gateway generated, or made now for it to find (never logged).
            None => kiri::store::Store::open(&g.data_dir, g.cache_bytes, 0)
                .context(
                    "cannot read the token (is the gateway running? it holds the data directory)",
                )?
                .dashboard_token()?
                .0,
        };
    println!(
        "Dashboard: {}",
        kiri::dashboard::page::url(config, Some(&token))
    );
    Ok(())
}

/// A GET to the gateway's API, with the token from `KIRI_DASHBOARD_TOKEN` when set (needed
/// when the gateway has `dashboard.auth_reads`).
fn read_request(url: &str) -> ureq::RequestBuilder<ureq::typestate::WithoutBody> {
    let req = ureq::get(url);
    match std::env::var("KIRI_DASHBOARD_TOKEN") {
        Ok(t) if !t.is_empty() => req.header("Authorization", &format!("Bearer {t}")),
        _ => req,
    }
}

fn status(url: &str, json: bool) -> anyhow::Result<()> {
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
    println!(
        "          since start: {} appended, {} acked, dropped {} (full), {} (rejected), {} (expired), {} (corrupt); waits {} (full), {} (disk)",
        ob["appended"], ob["acked"], ob["dropped_full"], ob["rejected"], ob["expired"],
        ob["corrupt"], ob["full_waits"], ob["disk_waits"]
    );
    Ok(())
}

fn functions_table(url: &str) -> anyhow::Result<()> {
    use kiri::dashboard::functions::FunctionView;
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

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KIRI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

mod dlq {
    //! `kiri dlq`: a client of the gateway's `/api/v1/dead-letters` routes.

    use anyhow::{bail, Context};
    use kiri::dashboard::dead_letters::{Listed, Outcome, Selection};

    use super::DlqCommand;

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    fn check(mut resp: ureq::http::Response<ureq::Body>) -> anyhow::Result<String> {
        let status = resp.status();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        if !status.is_success() {
            bail!("the gateway answered {status}: {body}");
        }
        Ok(body)
    }

    pub fn run(command: DlqCommand, url: &str, token: Option<&str>) -> anyhow::Result<()> {
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
                for e in &entries {
                    println!(
                        "{:>8}  {:<16} {:<16} {:<12} {:>8} {:>5}  {:<6} {:<28} {}",
                        e.id,
                        e.function.as_deref().unwrap_or("-"),
                        e.version.as_deref().unwrap_or("-"),
                        e.reason,
                        e.payload_len,
                        e.attempts,
                        if e.replayable { "yes" } else { "no" },
                        e.topic,
                        e.error
                    );
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
}
