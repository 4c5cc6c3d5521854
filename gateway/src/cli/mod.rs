//! The `kiri` command line: the subcommands (clap) and what each calls. The gateway itself is
//! the library (`kiri run` calls [`kiri::run`]); the rest are tools: configuration helpers,
//! clients of a running gateway's HTTP API (`api.rs`), deployment tools (`deploy.rs`), and
//! small converters and key tools (`tools.rs`).

mod api;
mod deploy;
mod invoke;
mod logging;
mod state;
mod tools;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use kiri::Config;

/// Kiri: WebAssembly functions on your IoT gateway, results delivered to the cloud.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
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
        /// Reload a configured function's module when its file changes (for development).
        #[arg(long)]
        watch: bool,
        /// The log's format (default: `[log] format` in the configuration, else text).
        #[arg(long, value_enum)]
        log_format: Option<kiri::config::LogFormat>,
    },
    /// Print the dashboard's address with its token (`.../#token=...`): from the configuration,
    /// or the one kept in the data directory's `dashboard-token` (made now if the gateway has
    /// not made one yet). The gateway may be running.
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
        #[command(flatten)]
        remote: Remote,
    },
    /// Read or delete a function's key-value state on a running gateway (over its HTTP API;
    /// needs the token). The state of an undeployed function stays until deleted here.
    State {
        #[command(subcommand)]
        command: state::StateCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a running gateway read its configuration again, as `systemctl reload kiri` (SIGHUP)
    /// does (over its HTTP API; needs the token): functions, [cloud], [outbox] and the
    /// embedded broker's users change in place; a configuration that does not load, or that
    /// changes a key only a restart changes, is refused and the running one stays.
    Reload {
        #[command(flatten)]
        remote: Remote,
    },
    /// Hash a password for an embedded-broker account (`[[broker.users]]` `password_hash`):
    /// reads the password from the first line of stdin, prints its Argon2id hash.
    PasswordHash,
    /// Print the manual page (roff, for man(1)): built with the `man` feature, for the packages.
    #[cfg(feature = "man")]
    #[command(hide = true)]
    Man,
    /// Make an ed25519 key pair for signing packages; prints the public key.
    Keygen {
        /// Where to write the private key. The public key goes beside it with its extension
        /// replaced: `.pub` (for deploy.trusted_keys) and `.pub.pem` (for dashboard.jwt.keys);
        /// `--out operator.key` writes operator.pub and operator.pub.pem.
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
        /// Scopes (repeat or space-separate): read, dead-letters, state, reload,
        /// invoke:<function>, invoke:*, prefix:<topic or key prefix>.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it is valid (`15m`, `1h`, `30d`).
        #[arg(long, default_value = "1h")]
        ttl: humantime::Duration,
    },
    /// Check a WebAssembly module as the gateway would load it (imports and exports with their
    /// types, the ABI version, WASI use, its start within the default limits), offline.
    Check {
        /// The module (`.wasm`).
        module: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a module once on one event, locally (no gateway): prints its outputs, log lines,
    /// state writes, fuel and memory, or why it failed (non-zero exit).
    Invoke(invoke::InvokeArgs),
    /// Make a signed function package from a WebAssembly module (checked first, as `kiri check`).
    Package(deploy::PackageArgs),
    /// Publish a package to a gateway (or a group) over MQTT and wait for its answer.
    Deploy {
        /// The package (`kiri package`).
        package: PathBuf,
        #[command(flatten)]
        target: deploy::Target,
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
        target: deploy::Target,
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
        target: deploy::Target,
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
    /// Decode result envelopes and batch messages (as received from the cloud broker, back
    /// to back or one per line) from stdin and print one line per result.
    Decode {
        /// Stdin holds bare CBOR values (readings, HTTP responses), not envelopes.
        #[arg(long)]
        reading: bool,
        /// One JSON object per result, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// Where a running gateway's HTTP API is, and the token for it.
#[derive(clap::Args)]
struct Remote {
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
}

#[derive(Subcommand)]
pub enum DlqCommand {
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
    /// Load and validate a configuration (file plus environment), print it resolved, and check
    /// every function's module as the gateway would load it (fails on any that does not).
    Check {
        /// A TOML configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

impl Cli {
    /// Whether it runs the gateway (rather than a tool).
    pub fn is_gateway(&self) -> bool {
        matches!(self.command, Command::Run { .. })
    }
}

/// Runs what the command line asks for.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run {
            config,
            watch,
            log_format,
        } => {
            let mut config = Config::load(config.as_deref())?;
            logging::init(log_format.unwrap_or(config.log.format));
            config.watch = watch;
            for line in &config.ignored_env {
                tracing::warn!("{line}");
            }
            // Blocking work (store scans, HTTP calls into functions) on at most 64 threads:
            // bounded, as the unit's TasksMax expects.
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(config.gateway.worker_threads)
                .max_blocking_threads(64)
                .enable_all()
                .build()?;
            rt.block_on(kiri::run(config, shutdown_signal()))
        }
        Command::Dashboard { config } => tools::dashboard_url(&Config::load(config.as_deref())?),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", kiri::config::EXAMPLE);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check { config },
        } => tools::config_check(config.as_deref()),
        Command::Reading {
            sensor,
            kind,
            value,
            unit,
            seq,
        } => tools::reading(&sensor, &kind, value, &unit, seq),
        Command::Dlq { command, remote } => api::dlq(command, &remote.url, remote.token.as_deref()),
        Command::Functions { url } => api::functions_table(&url),
        Command::State { command, remote } => {
            state::run(command, &remote.url, remote.token.as_deref())
        }
        Command::Reload { remote } => api::reload(&remote.url, remote.token.as_deref()),
        Command::PasswordHash => tools::password_hash(),
        #[cfg(feature = "man")]
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Keygen { out } => deploy::keygen(&out),
        Command::Token {
            key,
            issuer,
            audience,
            subject,
            scopes,
            ttl,
        } => tools::token(&key, issuer, audience, subject, &scopes, ttl),
        Command::Check { module, json } => tools::check(&module, json),
        Command::Invoke(args) => {
            // The function's log lines, on stderr as they come.
            let filter =
                tracing_subscriber::EnvFilter::try_from_env("KIRI_LOG").unwrap_or_else(|_| {
                    tracing_subscriber::EnvFilter::new("warn,kiri::function=debug")
                });
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .without_time()
                .with_writer(std::io::stderr)
                .init();
            invoke::invoke(args)
        }
        Command::Package(args) => deploy::package(args),
        Command::Deploy { package, target } => deploy::deploy(&package, &target),
        Command::Undeploy {
            key,
            name,
            version,
            target,
        } => deploy::command(&key, &name, version, None, &target),
        Command::Rollback {
            key,
            name,
            to,
            version,
            target,
        } => deploy::command(&key, &name, version, Some(to), &target),
        Command::Status { url, json } => api::status(&url, json),
        Command::Decode { reading, json } => tools::decode(reading, json),
    }
}

/// Resolves at Ctrl-C or SIGTERM.
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
