//! `kiri-sensor`: gets sensor readings onto the gateway's MQTT broker.
//!
//! Sources (`--source`):
//! - `simulate`: `--nodes` simulated BME280s (the real driver over a software chip), each
//!   sampled `--rate` times a second: for demos, and as the load generator of the benchmarks;
//! - `i2c:/dev/i2c-N`: a real BME280 (`--sensor bme280`) or SHT3x (`--sensor sht3x`) on a
//!   Linux I2C bus (a Raspberry Pi's pins), through `linux-embedded-hal`;
//! - `serial:/dev/ttyUSB0[@baud]`: framed readings from microcontroller nodes;
//! - `tcp:HOST:PORT`: the same over a socket (QEMU's UART, `make qemu-node`).
//!
//! Each reading is published with QoS 1 on `<prefix>/<node>/<kind>` (default
//! `sensors/<node>/<kind>`), its payload the CBOR reading. While the broker is away readings
//! wait in a bounded buffer (`--buffer`); when it is full the oldest is dropped, counted and
//! logged. The MQTT session is persistent, so what was sent but not yet acknowledged is sent
//! again after a reconnect.

mod sources;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::Notify;

#[derive(Parser, Debug, Clone)]
#[command(version, about = "Publish sensor readings to Kiri's local broker")]
pub struct Args {
    /// Where readings come from: `simulate`, `i2c:/dev/i2c-1`, `serial:/dev/ttyUSB0[@115200]`
    /// or `tcp:HOST:PORT`.
    #[arg(long, default_value = "simulate")]
    source: String,
    /// The broker's host.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The broker's port.
    #[arg(long, default_value_t = 1883)]
    port: u16,
    /// MQTT client id (a persistent session is kept under it).
    #[arg(long)]
    client_id: Option<String>,
    /// MQTT user name, for a broker with accounts (Kiri's `broker.users`).
    #[arg(long)]
    username: Option<String>,
    /// Its password (from the environment rather than the command line, which others see).
    #[arg(
        long,
        env = "KIRI_SENSOR_PASSWORD",
        hide_env_values = true,
        requires = "username"
    )]
    password: Option<String>,
    /// Topic prefix: readings go to `<prefix>/<node>/<kind>`.
    #[arg(long, default_value = "sensors")]
    prefix: String,
    /// Readings held while the broker is away; beyond, the oldest are dropped.
    #[arg(long, default_value_t = 10_000)]
    buffer: usize,
    /// Node id (i2c, simulate: the first node; simulated nodes are `<node>-<n>` with --nodes).
    #[arg(long, default_value = "sim")]
    node: String,
    /// i2c: the sensor, `bme280` or `sht3x`.
    #[arg(long, default_value = "bme280")]
    sensor: String,
    /// i2c: the sensor's address (default 0x76 for bme280, 0x44 for sht3x).
    #[arg(long, value_parser = parse_address)]
    address: Option<u8>,
    /// simulate: how many nodes.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// simulate, i2c: samples per second per node.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Stop after this many readings (all acknowledged by the broker); default: run on.
    #[arg(long)]
    count: Option<u64>,
    /// The first sequence number (simulate, i2c). Default: the wall clock in microseconds when
    /// it is set, so numbers keep rising across restarts; else 0.
    #[arg(long)]
    first_seq: Option<u64>,
}

fn parse_address(s: &str) -> Result<u8, String> {
    let s = s.trim();
    let parsed = match s.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    parsed.map_err(|e| format!("{s:?}: {e}"))
}

/// One reading to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `<prefix>/<node>/<kind>`.
    pub topic: String,
    /// The CBOR reading.
    pub payload: Vec<u8>,
}

/// Counters, printed every 10 s and at the end.
#[derive(Default)]
pub struct Stats {
    /// Readings produced by the source.
    pub produced: AtomicU64,
    /// Readings handed to the MQTT client.
    pub published: AtomicU64,
    /// Readings the broker acknowledged.
    pub acked: AtomicU64,
    /// Readings dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Frames or readings from nodes that could not be used.
    pub bad: AtomicU64,
}

/// The bounded buffer between the source (a thread) and the publisher: drop-oldest when full.
pub struct Buffer {
    queue: Mutex<VecDeque<Message>>,
    capacity: usize,
    ready: Notify,
    stats: Arc<Stats>,
}

impl Buffer {
    fn new(capacity: usize, stats: Arc<Stats>) -> Buffer {
        Buffer {
            queue: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            ready: Notify::new(),
            stats,
        }
    }

    /// Adds a reading; when full, drops (and counts) the oldest.
    pub fn push(&self, m: Message) {
        let mut q = self.queue.lock().expect("buffer lock");
        if q.len() >= self.capacity {
            q.pop_front();
            let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n,
                    "buffer full (broker away?): oldest readings dropped"
                );
            }
        }
        q.push_back(m);
        self.stats.produced.fetch_add(1, Ordering::Relaxed);
        drop(q);
        self.ready.notify_one();
    }

    /// Puts back, ahead of everything, readings the MQTT client had taken but the broker never
    /// acknowledged (a reconnect without the session would drop them); beyond the bound the
    /// oldest are dropped, as for new readings.
    fn requeue(&self, messages: Vec<Message>) {
        let mut q = self.queue.lock().expect("buffer lock");
        for m in messages.into_iter().rev() {
            q.push_front(m);
        }
        while q.len() > self.capacity {
            q.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(q);
        self.ready.notify_one();
    }

    fn pop(&self) -> Option<Message> {
        self.queue.lock().expect("buffer lock").pop_front()
    }

    fn is_empty(&self) -> bool {
        self.queue.lock().expect("buffer lock").is_empty()
    }

    /// The topic of a reading, if its node and kind are usable as topic levels.
    pub fn topic(prefix: &str, node: &str, kind: &str) -> Option<String> {
        let level = |s: &str| !s.is_empty() && !s.contains(['/', '+', '#', '\0']);
        (level(node) && level(kind)).then(|| format!("{prefix}/{node}/{kind}"))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The manual page (roff), for the packages: only in a build with the `man` feature.
    #[cfg(feature = "man")]
    if std::env::args().nth(1).as_deref() == Some("--man") {
        use clap::CommandFactory;
        clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout())?;
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let args = Args::parse();
    let source = sources::Source::parse(&args).context("--source")?;
    let stats = Arc::new(Stats::default());
    let buffer = Arc::new(Buffer::new(args.buffer, stats.clone()));

    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("kiri-sensor-{}", args.node));
    let mut options = MqttOptions::new(client_id, &args.host, args.port);
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(100);
    if let Some(user) = &args.username {
        options.set_credentials(user, args.password.as_deref().unwrap_or_default());
    }
    // A rendezvous channel: readings wait in `buffer` (bounded, drop-oldest), not in the client.
    let (client, mut eventloop) = AsyncClient::new(options, 0);

    // The source runs on its own thread: I2C and serial reads block.
    let producer = {
        let (buffer, args) = (buffer.clone(), args.clone());
        std::thread::Builder::new()
            .name("source".into())
            .spawn(move || source.run(&args, &buffer))?
    };

    let stats_events = stats.clone();
    let buffer_events = buffer.clone();
    let events = tokio::spawn(async move {
        let mut connected = false;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    tracing::info!("connected to the broker");
                }
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    stats_events.acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!("broker connection lost: {e}; reconnecting");
                    }
                    connected = false;
                    // What was sent but not acknowledged: rumqttc would resend it only if the
                    // broker kept the session, and drop it otherwise. Take it back instead:
                    // it is published again (a duplicate at worst, never a loss).
                    let unacked: Vec<Message> = std::mem::take(&mut eventloop.pending)
                        .into_iter()
                        .filter_map(|r| match r {
                            rumqttc::Request::Publish(p) => Some(Message {
                                topic: p.topic,
                                payload: p.payload.to_vec(),
                            }),
                            _ => None,
                        })
                        .collect();
                    if !unacked.is_empty() {
                        stats_events
                            .published
                            .fetch_sub(unacked.len() as u64, Ordering::Relaxed);
                        buffer_events.requeue(unacked);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    });

    let report = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                log_stats(&stats);
            }
        })
    };

    let count = args.count;
    loop {
        match buffer.pop() {
            Some(m) => {
                client
                    .publish(m.topic, QoS::AtLeastOnce, false, m.payload)
                    .await
                    .context("MQTT client stopped")?;
                stats.published.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                // Done once the source has stopped (--count reached, or it failed) and every
                // reading is acknowledged (readings taken back after a disconnect are in the
                // buffer again, so this waits for them too).
                let acked_all =
                    stats.acked.load(Ordering::Relaxed) >= stats.published.load(Ordering::Relaxed);
                if producer.is_finished() && buffer.is_empty() && acked_all {
                    break;
                }
                // Wake on a new reading, or check again shortly.
                let _ =
                    tokio::time::timeout(Duration::from_millis(200), buffer.ready.notified()).await;
            }
        }
    }
    report.abort();
    events.abort();
    log_stats(&stats);
    match producer.join() {
        Ok(Ok(())) => {
            if let Some(n) = count {
                tracing::info!(count = n, "done");
            }
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => anyhow::bail!("the source thread panicked"),
    }
}

fn log_stats(s: &Stats) {
    tracing::info!(
        produced = s.produced.load(Ordering::Relaxed),
        published = s.published.load(Ordering::Relaxed),
        acked = s.acked.load(Ordering::Relaxed),
        dropped = s.dropped.load(Ordering::Relaxed),
        bad = s.bad.load(Ordering::Relaxed),
        "readings"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_it() {
        let stats = Arc::new(Stats::default());
        let b = Buffer::new(2, stats.clone());
        for i in 0..5u8 {
            b.push(Message {
                topic: "t".into(),
                payload: vec![i],
            });
        }
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(b.pop().unwrap().payload, vec![3]);
        assert_eq!(b.pop().unwrap().payload, vec![4]);
        assert!(b.pop().is_none());
    }

    #[test]
    fn unacknowledged_readings_go_back_first_within_the_bound() {
        let stats = Arc::new(Stats::default());
        let b = Buffer::new(3, stats.clone());
        let m = |i: u8| Message {
            topic: "t".into(),
            payload: vec![i],
        };
        b.push(m(3));
        b.push(m(4));
        b.requeue(vec![m(1), m(2)]);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 1, "the oldest goes");
        let order: Vec<u8> = std::iter::from_fn(|| b.pop())
            .map(|m| m.payload[0])
            .collect();
        assert_eq!(order, vec![2, 3, 4]);
    }

    #[test]
    fn node_and_kind_must_be_topic_levels() {
        assert_eq!(
            Buffer::topic("sensors", "n1", "temperature").as_deref(),
            Some("sensors/n1/temperature")
        );
        for (node, kind) in [("a/b", "t"), ("n", "#"), ("", "t"), ("n", "+")] {
            assert_eq!(Buffer::topic("sensors", node, kind), None);
        }
    }

    #[test]
    fn addresses_parse_in_hex_or_decimal() {
        assert_eq!(parse_address("0x76"), Ok(0x76));
        assert_eq!(parse_address("68"), Ok(68));
        assert!(parse_address("0xZZ").is_err());
    }
}
