//! `kiri keygen`, `kiri package`, `kiri deploy`, `kiri undeploy`, `kiri rollback`: making
//! signed packages and commands, and publishing them to gateways over MQTT.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use kiri::codec;
use kiri::config::{CloudConfig, FunctionConfig};
use kiri::crypto::keys;
use kiri::deploy::{DeployResult, Kind, Manifest, Package};
use kiri::net::parse_mqtt_url;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

/// `kiri package` options.
#[derive(Args)]
pub struct PackageArgs {
    /// The private key (`kiri keygen --out`).
    #[arg(long)]
    key: PathBuf,
    /// The function's name.
    #[arg(long)]
    name: String,
    /// The package version: above every version this name had on the target gateways.
    #[arg(long)]
    version: u64,
    /// The WebAssembly module.
    module: PathBuf,
    /// Sign the module without checking it (`kiri check`) first: for testing how gateways
    /// refuse a module that does not load.
    #[arg(long)]
    no_check: bool,
    /// Where to write the package (default `<name>-<version>.kiri`).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// A TOML file with the function's settings, as in a `[[functions]]` entry (without
    /// `name` and `module`); the options below override it.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// An MQTT topic filter that triggers the function (repeat for more).
    #[arg(long)]
    trigger: Vec<String>,
    /// Run on an interval (`10s`, `5m`).
    #[arg(long)]
    every: Option<String>,
    /// Run on a cron schedule (UTC).
    #[arg(long)]
    cron: Option<String>,
    /// Let `/invoke/<name>` run it (HTTP, any method).
    #[arg(long)]
    http: bool,
    /// A topic filter the function may emit to (repeat; default: any).
    #[arg(long)]
    emit: Vec<String>,
    /// A topic filter the function may publish to on the local broker (repeat).
    #[arg(long)]
    publish: Vec<String>,
    /// A `key=value` of the function's `config` table (repeat).
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// A `key=value` of the function's `limits` (fuel, memory_bytes, timeout_ms, ...; repeat).
    #[arg(long = "limit", value_name = "KEY=VALUE")]
    limits: Vec<String>,
    /// Refuse the package after this long (`7d`, `12h`).
    #[arg(long)]
    expires_in: Option<String>,
    /// A gateway (its `gateway.id`) that may accept it (repeat). A gateway refuses a package
    /// that names neither it nor one of its groups, wherever the package was sent.
    #[arg(long, required_unless_present = "group")]
    gateway: Vec<String>,
    /// A group whose gateways may accept it (repeat).
    #[arg(long)]
    group: Vec<String>,
}

/// Where to send a package or command, and how long to wait for the answers.
#[derive(Args)]
pub struct Target {
    /// The broker the gateways listen to: `mqtt://host:port` or `mqtts://host:port`.
    #[arg(
        long,
        default_value = "mqtt://127.0.0.1:1883",
        env = "KIRI_DEPLOY_BROKER"
    )]
    broker: String,
    /// The gateway to send to (`kiri/<id>/deploy/<name>`).
    #[arg(long, conflicts_with = "group", required_unless_present = "group")]
    gateway: Option<String>,
    /// The group to send to (`kiri/group/<group>/deploy/<name>`).
    #[arg(long)]
    group: Option<String>,
    /// Answers to wait for (for a group: how many gateways it has).
    #[arg(long, default_value_t = 1)]
    expect: usize,
    /// How long to wait for the answers.
    #[arg(long, default_value = "30s")]
    timeout: humantime::Duration,
    /// `mqtts://`: CA certificate(s) of the broker (default: the system's roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// `mqtts://`: client certificate (PEM), for mutual TLS.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// `mqtts://`: the client certificate's key (PEM).
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// MQTT user name (the password from `KIRI_DEPLOY_PASSWORD`).
    #[arg(long)]
    username: Option<String>,
}

/// `kiri keygen`.
pub fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = keys::generate();
    keys::write(&key, out)?;
    println!("{}", keys::public_text(&key.verifying_key()));
    eprintln!(
        "private key in {} (keep it secret); public key above and in {}: add it to the gateway's\n\
         [deploy] trusted_keys = [\"{}\"]\n\
         (to sign JWTs with it instead, `kiri token`, give the gateway {} in [dashboard.jwt] keys)",
        out.display(),
        out.with_extension("pub").display(),
        keys::public_text(&key.verifying_key()),
        out.with_extension("pub.pem").display(),
    );
    Ok(())
}

/// A `key=value` as a TOML-like scalar: numbers and booleans typed, the rest text.
fn scalar(kv: &str) -> anyhow::Result<(String, serde_json::Value)> {
    let (k, v) = kv
        .split_once('=')
        .with_context(|| format!("{kv:?}: expected KEY=VALUE"))?;
    let value = if let Ok(n) = v.parse::<i64>() {
        serde_json::json!(n)
    } else if let Ok(x) = v.parse::<f64>() {
        serde_json::json!(x)
    } else if let Ok(b) = v.parse::<bool>() {
        serde_json::json!(b)
    } else {
        serde_json::json!(v)
    };
    Ok((k.to_string(), value))
}

/// `kiri package`.
pub fn package(a: PackageArgs) -> anyhow::Result<()> {
    let key = keys::read(&a.key)?;
    let module = kiri::runtime::Runtime::read_module(&a.module)?;
    let mut over = serde_json::Map::new();
    over.insert("name".into(), a.name.clone().into());
    over.insert("module".into(), "".into());
    let lists = [
        ("triggers", &a.trigger),
        ("emit", &a.emit),
        ("publish", &a.publish),
    ];
    for (k, v) in lists {
        if !v.is_empty() {
            over.insert(k.into(), serde_json::json!(v));
        }
    }
    if let Some(e) = &a.every {
        over.insert("every".into(), e.clone().into());
    }
    if let Some(c) = &a.cron {
        over.insert("cron".into(), c.clone().into());
    }
    if a.http {
        over.insert("http".into(), true.into());
    }
    let mut figment = Figment::new();
    if let Some(m) = &a.manifest {
        figment = figment.merge(Toml::file_exact(m));
    }
    for (table, pairs) in [("config", &a.config), ("limits", &a.limits)] {
        for kv in pairs.iter() {
            let (k, v) = scalar(kv)?;
            figment = figment.merge(Serialized::default(&format!("{table}.{k}"), v));
        }
    }
    let function: FunctionConfig = figment
        .merge(Serialized::defaults(serde_json::Value::Object(over)))
        .extract()
        .context("the function's settings")?;
    function.validate().map_err(anyhow::Error::msg)?;
    if !a.no_check {
        kiri::runtime::check_module(&module, Some(&function))
            .with_context(|| format!("{} does not load (see `kiri check`)", a.module.display()))?;
    }
    let now = kiri::now_ms();
    let expires_ms = match &a.expires_in {
        Some(d) => Some(now + humantime::parse_duration(d)?.as_millis() as u64),
        None => None,
    };
    let manifest = Manifest {
        kind: Kind::Deploy,
        name: a.name.clone(),
        version: a.version,
        module_sha256: Some(kiri::deploy::sha256_hex(&module)),
        function: Some(function),
        rollback_to: None,
        expires_ms,
        gateways: a.gateway,
        groups: a.group,
        created_ms: now,
    };
    let package = Package::sign(&key, codec::to_cbor(&manifest), module);
    let out = a
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}-{}.kiri", a.name, a.version)));
    std::fs::write(&out, package.encode()).with_context(|| format!("write {}", out.display()))?;
    println!(
        "{}: {} version {}, module {} bytes (sha256 {}), signed by {}",
        out.display(),
        a.name,
        a.version,
        package.module.len(),
        manifest.module_sha256.as_deref().unwrap_or(""),
        keys::public_text(&key.verifying_key())
    );
    Ok(())
}

/// `kiri undeploy` / `kiri rollback`: a signed command.
pub fn command(
    key: &Path,
    name: &str,
    version: u64,
    rollback_to: Option<u64>,
    target: &Target,
) -> anyhow::Result<()> {
    let key = keys::read(key)?;
    let manifest = Manifest {
        kind: if rollback_to.is_some() {
            Kind::Rollback
        } else {
            Kind::Undeploy
        },
        name: name.to_string(),
        version,
        module_sha256: None,
        function: None,
        rollback_to,
        expires_ms: Some(kiri::now_ms() + 24 * 3600 * 1000),
        // Signed with its target, so it cannot be replayed to another gateway or group.
        gateways: target.gateway.iter().cloned().collect(),
        groups: target.group.iter().cloned().collect(),
        created_ms: kiri::now_ms(),
    };
    let package = Package::sign(&key, codec::to_cbor(&manifest), Vec::new());
    send(&package.encode(), target)
}

/// `kiri deploy`: publishes a package file.
pub fn deploy(file: &Path, target: &Target) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("read {}", file.display()))?;
    send(&bytes, target)
}

fn mqtt_options(target: &Target, client_id: &str) -> anyhow::Result<MqttOptions> {
    let url = parse_mqtt_url(&target.broker).map_err(anyhow::Error::msg)?;
    let mut opts = MqttOptions::new(client_id, url.host.clone(), url.port);
    opts.set_max_packet_size(64 << 20, 64 << 20)
        .set_keep_alive(Duration::from_secs(30));
    if url.tls {
        let cloud = CloudConfig {
            url: target.broker.clone(),
            ca_file: target.ca_file.clone(),
            client_cert: target.client_cert.clone(),
            client_key: target.client_key.clone(),
            ..CloudConfig::default()
        };
        let tls = kiri::net::tls::client_config(cloud.tls_files())?;
        opts.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    }
    if let Some(user) = &target.username {
        let password = std::env::var("KIRI_DEPLOY_PASSWORD").unwrap_or_default();
        opts.set_credentials(user.clone(), password);
    }
    Ok(opts)
}

/// Publishes a package or command and prints the answers; an error unless every expected
/// gateway accepted it in time.
fn send(bytes: &[u8], target: &Target) -> anyhow::Result<()> {
    let package = Package::decode(bytes).context("not a Kiri package")?;
    let manifest: Manifest = codec::from_cbor(&package.manifest).context("bad manifest")?;
    let (topic, answers) = match (&target.gateway, &target.group) {
        (Some(gw), _) => (
            format!("kiri/{gw}/deploy/{}", manifest.name),
            format!("kiri/{gw}/deploy/{}/result", manifest.name),
        ),
        (None, Some(g)) => (
            format!("kiri/group/{g}/deploy/{}", manifest.name),
            format!("kiri/+/deploy/{}/result", manifest.name),
        ),
        (None, None) => bail!("give --gateway or --group"),
    };
    let covered = match (&target.gateway, &target.group) {
        (Some(gw), _) => manifest.gateways.contains(gw),
        (None, Some(g)) => manifest.groups.contains(g),
        _ => false,
    };
    if !covered {
        bail!(
            "the package is addressed to gateways {:?} and groups {:?}: the target would refuse it \
             (make it with `kiri package --gateway ID` or `--group G`)",
            manifest.gateways,
            manifest.groups
        );
    }
    let client_id = format!("kiri-deploy-{:08x}", fastrand::u32(..));
    let (client, mut connection) = Client::new(mqtt_options(target, &client_id)?, 16);
    client.subscribe(answers.as_str(), QoS::AtLeastOnce)?;
    let deadline = Instant::now() + *target.timeout;
    let mut published = false;
    let mut answered = 0;
    let mut rejected = 0;
    while answered < target.expect {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "{} of {} gateway(s) answered within {} (no answer: a wrong --gateway or --group, a gateway with deployment off (empty deploy.trusted_keys), or another broker than the gateway's: --broker)",
                answered,
                target.expect,
                target.timeout
            );
        }
        let event = match connection.recv_timeout(left) {
            Ok(event) => event,
            Err(_) => continue,
        };
        match event.with_context(|| format!("broker {}", target.broker))? {
            Event::Incoming(Packet::SubAck(_)) if !published => {
                client.publish(topic.as_str(), QoS::AtLeastOnce, false, bytes.to_vec())?;
                published = true;
                eprintln!(
                    "published {} {} version {} to {topic}; waiting for the answer",
                    manifest.kind.name(),
                    manifest.name,
                    manifest.version
                );
            }
            Event::Incoming(Packet::Publish(p)) => {
                let Ok(r) = codec::from_cbor::<DeployResult>(&p.payload) else {
                    continue;
                };
                if r.entry.version != Some(manifest.version) {
                    continue; // an answer to something else
                }
                answered += 1;
                let e = &r.entry;
                if e.accepted {
                    println!(
                        "{}: accepted: {} {} version {} ({}{})",
                        r.gateway,
                        e.kind,
                        e.name,
                        manifest.version,
                        e.reason,
                        e.module_version
                            .as_deref()
                            .map(|v| format!(", module {v}"))
                            .unwrap_or_default()
                    );
                } else {
                    rejected += 1;
                    println!("{}: rejected: {}: {}", r.gateway, e.reason, e.detail);
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect();
    if rejected > 0 {
        bail!("{rejected} of {answered} gateway(s) rejected it");
    }
    Ok(())
}
