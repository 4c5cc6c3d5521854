//! `kiri invoke`: runs a module once on one event, locally, with no gateway: the outputs, log
//! lines, fuel, memory, state writes and, if it failed, why. The same runtime, limits and
//! checks as the gateway.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use kiri::config::FunctionLimits;
use kiri::formats::{self, Deliver, InputFormat};
use kiri::runtime::{Destination, Permissions, Runtime};

/// What to run, on what.
#[derive(Args)]
pub struct InvokeArgs {
    /// The module (`.wasm`).
    module: PathBuf,
    /// The topic the event arrives on.
    #[arg(long, default_value = "sensors/local/temperature")]
    topic: String,
    /// The payload, from a file (`-`: stdin); its format is `--format`.
    #[arg(long, conflicts_with_all = ["json", "text", "value"])]
    payload: Option<PathBuf>,
    /// The format of `--payload`, checked as a trigger with this format checks it.
    #[arg(long, value_enum, default_value = "cbor")]
    format: FormatArg,
    /// A JSON payload (format `json`).
    #[arg(long, conflicts_with_all = ["text", "value"])]
    json: Option<String>,
    /// A text payload (format `text`).
    #[arg(long, conflicts_with = "value")]
    text: Option<String>,
    /// A CBOR sensor reading with this value (and `--sensor`, `--kind`, `--unit`, `--seq`,
    /// as `kiri reading` makes it).
    #[arg(long, allow_hyphen_values = true)]
    value: Option<f64>,
    /// The reading's sensor.
    #[arg(long, default_value = "local")]
    sensor: String,
    /// The reading's kind.
    #[arg(long, default_value = "temperature")]
    kind: String,
    /// The reading's unit.
    #[arg(long, default_value = "C")]
    unit: String,
    /// The reading's sequence number.
    #[arg(long)]
    seq: Option<u64>,
    /// Convert the payload before the function gets it, as a trigger's `deliver` does.
    #[arg(long, value_enum, default_value = "as_received")]
    deliver: DeliverArg,
    /// A configuration value, `KEY=VALUE` (repeat for more); typed when VALUE reads as JSON
    /// (`limit=30`, `on=true`, `ids=[1,2]`), text otherwise.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    config: Vec<String>,
    /// Keep the function's key-value state in this directory, from one run to the next
    /// (default: a fresh, empty state each run).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Fuel per invocation (default: the gateway's default limit).
    #[arg(long)]
    fuel: Option<u64>,
    /// Print the report as one JSON object.
    #[arg(long = "report-json")]
    report_json: bool,
    /// A timer event: topic `$timer`, an empty payload, input format none.
    #[arg(long, conflicts_with_all = ["payload", "json", "text", "value", "http"])]
    timer: bool,
    /// An HTTP call, `METHOD /path?query` (topic `$http`; the body is `--payload`, `--json` or
    /// `--text`, else empty): the function reads it with `http_request`, and the report shows
    /// the status and headers it answers with.
    #[arg(long, value_name = "METHOD PATH")]
    http: Option<String>,
    /// A request header of `--http`, `NAME: VALUE` (repeat).
    #[arg(long = "header", value_name = "NAME: VALUE", requires = "http")]
    headers: Vec<String>,
}

/// The trigger formats, named as in the configuration.
#[derive(Clone, Copy, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
enum FormatArg {
    Cbor,
    Json,
    Text,
    Bytes,
    SparkplugB,
}

/// The `deliver` conversions, named as in the configuration.
#[derive(Clone, Copy, clap::ValueEnum)]
#[clap(rename_all = "snake_case")]
enum DeliverArg {
    AsReceived,
    Cbor,
    Json,
}

/// Runs it; fails (non-zero exit) when the module does not load or the invocation fails.
pub fn invoke(a: InvokeArgs) -> anyhow::Result<()> {
    let wasm = Runtime::read_module(&a.module)?;
    let request = a
        .http
        .as_deref()
        .map(|h| http_request(h, &a.headers))
        .transpose()?;
    let (payload, format) = if a.timer || (request.is_some() && no_body(&a)) {
        (Vec::new(), InputFormat::Bytes)
    } else {
        payload(&a)?
    };
    let format = formats::check(Some(format), &payload)
        .map_err(|r| anyhow::anyhow!("the payload is refused ({}): {}", r.reason, r.error))?;
    let deliver = match a.deliver {
        DeliverArg::AsReceived => Deliver::AsReceived,
        DeliverArg::Cbor => Deliver::Cbor,
        DeliverArg::Json => Deliver::Json,
    };
    let aliases = formats::Aliases::default();
    let (payload, format) = formats::deliver(format, deliver, &a.topic, &payload, &aliases)
        .map_err(|r| anyhow::anyhow!("the payload cannot be converted: {}", r.error))?;
    let mut config = BTreeMap::new();
    for kv in &a.config {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--config {kv}: write KEY=VALUE"))?;
        // Typed when it reads as JSON (`30`, `true`, `[1,2]`), text otherwise.
        let value = serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::from(v));
        config.insert(k.trim().to_string(), value);
    }
    let db = match &a.state {
        Some(dir) => sled::open(dir)
            .with_context(|| format!("cannot open the state directory {}", dir.display()))?,
        None => sled::Config::new().temporary(true).open()?,
    };
    let mut limits = FunctionLimits::default();
    if let Some(fuel) = a.fuel {
        limits.fuel = fuel;
    }
    let mut rt = Runtime::new(usize::MAX, db.clone());
    // Locally, the function may use any topic.
    let permissions = Permissions {
        publish: vec!["#".into()],
        emit: vec!["#".into()],
    };
    let name = a
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "function".into());
    let idx = rt
        .load_bytes(&name, &wasm, limits, config, permissions)
        .with_context(|| format!("{} does not load", a.module.display()))?;
    let (topic, code) = if a.timer {
        ("$timer".to_string(), kiri_abi::format::NONE)
    } else if request.is_some() {
        ("$http".to_string(), kiri_abi::format::BYTES)
    } else {
        (a.topic.clone(), format.code())
    };
    let request = request.map(std::sync::Arc::new);
    let result = rt.invoke_as(
        idx,
        &topic,
        &payload,
        kiri::now_ms(),
        code,
        request.as_ref(),
    );
    let stats = rt.meters().lock().expect("meters lock")[idx].snapshot();
    let mut report = serde_json::json!({
        "function": name,
        "topic": topic,
        "input_format": match code {
            kiri_abi::format::NONE => "none",
            kiri_abi::format::BYTES => "bytes",
            _ => format.name(),
        },
        "fuel": stats.fuel,
        "memory_bytes": stats.memory_peak_bytes,
        "wall_us": stats.wall_us_max,
    });
    let outcome = match result {
        Ok(inv) => {
            let outputs: Vec<serde_json::Value> = inv
                .outputs
                .iter()
                .map(|o| {
                    serde_json::json!({
                        "to": match o.destination { Destination::Cloud => "cloud", Destination::Local => "local" },
                        "topic": o.topic,
                        "payload": shown(&o.payload),
                    })
                })
                .collect();
            let writes: Vec<serde_json::Value> = inv
                .kv_writes
                .iter()
                .map(|(k, v)| {
                    serde_json::json!({
                        "key": String::from_utf8_lossy(k),
                        "value": v.as_deref().map(shown),
                    })
                })
                .collect();
            // Kept for the next run with --state, as the gateway commits a success.
            for (k, v) in &inv.kv_writes {
                match v {
                    Some(v) => inv.kv.insert(k.as_slice(), v.as_slice())?,
                    None => inv.kv.remove(k.as_slice())?,
                };
            }
            db.flush()?;
            report["outputs"] = outputs.into();
            report["kv_writes"] = writes.into();
            if request.is_some() {
                let r = &inv.response;
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().into()))
                    .collect();
                report["http"] = serde_json::json!({
                    "status": r.status.unwrap_or(200),
                    "headers": headers,
                    "body": shown(r.body.as_deref().unwrap_or_default()),
                });
            }
            report["ok"] = true.into();
            Ok(())
        }
        Err(e) => {
            report["ok"] = false.into();
            report["reason"] = e.reason().into();
            report["error"] = e.to_string().into();
            Err(anyhow::anyhow!(
                "the invocation failed ({}): {e}",
                e.reason()
            ))
        }
    };
    if a.report_json {
        println!("{report}");
    } else {
        print_report(&report);
    }
    outcome
}

/// Whether no body option was given (an HTTP call without a body).
fn no_body(a: &InvokeArgs) -> bool {
    a.payload.is_none() && a.json.is_none() && a.text.is_none() && a.value.is_none()
}

/// `--http "GET /items/7?x=1"` with its `--header`s, as the gateway's HTTP trigger passes it.
fn http_request(spec: &str, headers: &[String]) -> anyhow::Result<kiri::runtime::HttpRequest> {
    let (method, target) = spec.trim().split_once(' ').with_context(|| {
        format!("--http {spec:?}: write METHOD PATH, e.g. \"GET /items/7?x=1\"")
    })?;
    let target = target.trim();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    let headers = headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header {h:?}: write NAME: VALUE"))?;
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(kiri::runtime::HttpRequest::new(
        &method.to_ascii_uppercase(),
        &path,
        query,
        &headers,
    ))
}

/// The event's payload and its format, from the options.
fn payload(a: &InvokeArgs) -> anyhow::Result<(Vec<u8>, InputFormat)> {
    if let Some(json) = &a.json {
        return Ok((json.clone().into_bytes(), InputFormat::Json));
    }
    if let Some(text) = &a.text {
        return Ok((text.clone().into_bytes(), InputFormat::Text));
    }
    if let Some(value) = a.value {
        let reading = kiri_reading::Reading {
            sensor: &a.sensor,
            kind: &a.kind,
            value,
            unit: &a.unit,
            ts: Some(kiri::now_ms()),
            uptime_ms: None,
            seq: a.seq,
        };
        let mut buf = [0u8; 1024];
        let n = reading
            .encode(&mut buf)
            .map_err(|e| anyhow::anyhow!("the reading does not encode: {e:?}"))?;
        return Ok((buf[..n].to_vec(), InputFormat::Cbor));
    }
    let format = match a.format {
        FormatArg::Cbor => InputFormat::Cbor,
        FormatArg::Json => InputFormat::Json,
        FormatArg::Text => InputFormat::Text,
        FormatArg::Bytes => InputFormat::Bytes,
        FormatArg::SparkplugB => InputFormat::SparkplugB,
    };
    let mut bytes = Vec::new();
    match &a.payload {
        Some(p) if p.as_os_str() == "-" => {
            std::io::stdin().read_to_end(&mut bytes)?;
        }
        Some(p) => {
            bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
        }
        None => {
            anyhow::bail!("no payload: give --value (a reading), --json, --text or --payload FILE")
        }
    }
    Ok((bytes, format))
}

/// A payload as a reader sees it: JSON (CBOR converted), text, or hex.
fn shown(payload: &[u8]) -> serde_json::Value {
    match formats::view(payload) {
        formats::View::Json(v) => v,
        formats::View::Text(t) => t.into(),
        formats::View::Binary => {
            let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "hex": hex })
        }
    }
}

fn print_report(r: &serde_json::Value) {
    println!(
        "{} on {} ({}): {}",
        r["function"].as_str().unwrap_or(""),
        r["topic"].as_str().unwrap_or(""),
        r["input_format"].as_str().unwrap_or(""),
        if r["ok"] == true { "ok" } else { "FAILED" }
    );
    if let Some(reason) = r["reason"].as_str() {
        println!("  reason {reason}: {}", r["error"].as_str().unwrap_or(""));
    }
    for o in r["outputs"].as_array().into_iter().flatten() {
        println!(
            "  {} {} {}",
            if o["to"] == "cloud" {
                "emit   "
            } else {
                "publish"
            },
            o["topic"].as_str().unwrap_or(""),
            o["payload"]
        );
    }
    for w in r["kv_writes"].as_array().into_iter().flatten() {
        match &w["value"] {
            serde_json::Value::Null => println!("  kv delete {}", w["key"]),
            v => println!("  kv put    {} = {v}", w["key"]),
        }
    }
    if let Some(h) = r.get("http") {
        println!("  http {} {} {}", h["status"], h["headers"], h["body"]);
    }
    println!(
        "  fuel {}, memory {} KiB, {} us",
        r["fuel"],
        r["memory_bytes"].as_u64().unwrap_or(0) / 1024,
        r["wall_us"]
    );
}
