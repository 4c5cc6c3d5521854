//! The `kiri` command: parse arguments, set up logging, call the library.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kiri::codec::{self, Envelope, Reading};
use kiri::Config;

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
    /// Decode a result envelope (as received from the cloud broker) from stdin and print it.
    Decode {
        /// Stdin is a bare CBOR value (a reading, an HTTP response), not an envelope.
        #[arg(long)]
        reading: bool,
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
