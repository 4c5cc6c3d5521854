//! Where readings come from.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use embedded_hal::delay::DelayNs;
use kiri_drivers::bme280::{self, Bme280};
use kiri_drivers::sim::SimBme280;
use kiri_drivers::{sht3x, Measurement};
use kiri_node::frame::Deframer;
use kiri_node::{Node, Reading, MAX_READING};

use crate::{Args, Buffer, Message};

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Simulated BME280s.
    Simulate,
    /// A sensor on a Linux I2C bus.
    I2c(String),
    /// Framed readings on a serial port, at a baud rate.
    Serial(String, u32),
    /// Framed readings on a TCP socket.
    Tcp(String),
}

impl Source {
    /// Parses `--source` (and checks the options that go with it).
    pub fn parse(args: &Args) -> anyhow::Result<Source> {
        let s = args.source.as_str();
        let source = if s == "simulate" {
            Source::Simulate
        } else if let Some(path) = s.strip_prefix("i2c:") {
            if !matches!(args.sensor.as_str(), "bme280" | "sht3x") {
                anyhow::bail!("--sensor {:?}: bme280 or sht3x", args.sensor);
            }
            Source::I2c(path.to_string())
        } else if let Some(rest) = s.strip_prefix("serial:") {
            match rest.split_once('@') {
                Some((path, baud)) => Source::Serial(
                    path.to_string(),
                    baud.parse()
                        .with_context(|| format!("baud rate {baud:?}"))?,
                ),
                None => Source::Serial(rest.to_string(), 115_200),
            }
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            Source::Tcp(addr.to_string())
        } else {
            anyhow::bail!(
                "{s:?}: expected simulate, i2c:/dev/i2c-N, serial:/dev/ttyX[@baud] or tcp:HOST:PORT"
            );
        };
        if !(args.rate > 0.0 && args.rate <= 10_000.0) {
            anyhow::bail!("--rate must be above 0 and at most 10000 samples per second");
        }
        if args.nodes == 0 {
            anyhow::bail!("--nodes must be at least 1");
        }
        Ok(source)
    }

    /// Produces readings into `buffer` until `--count` readings were produced, or forever.
    pub fn run(self, args: &Args, buffer: &Buffer) -> anyhow::Result<()> {
        let mut sink = Sink {
            buffer,
            prefix: &args.prefix,
            left: args.count,
        };
        match self {
            Source::Simulate => simulate(args, &mut sink),
            Source::I2c(path) => i2c(&path, args, &mut sink),
            Source::Serial(path, baud) => loop {
                match serialport::new(&path, baud)
                    .timeout(Duration::from_secs(3600))
                    .open()
                {
                    Ok(port) => {
                        tracing::info!(path, baud, "reading framed readings");
                        if frames(port, &mut sink, false)? {
                            return Ok(());
                        }
                    }
                    Err(e) => tracing::warn!(path, "cannot open the serial port: {e}"),
                }
                std::thread::sleep(Duration::from_secs(1));
            },
            Source::Tcp(addr) => loop {
                match std::net::TcpStream::connect(&addr) {
                    Ok(stream) => {
                        tracing::info!(addr, "reading framed readings");
                        // A node that says nothing for this long is presumed gone (a half-open
                        // connection would otherwise wait for ever): reconnect.
                        stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
                        if frames(stream, &mut sink, true)? {
                            return Ok(());
                        }
                        tracing::warn!(addr, "the node closed the connection; reconnecting");
                    }
                    Err(e) => tracing::warn!(addr, "cannot connect: {e}"),
                }
                std::thread::sleep(Duration::from_secs(1));
            },
        }
    }
}

/// Where readings go: the buffer, counting down `--count`.
struct Sink<'a> {
    buffer: &'a Buffer,
    prefix: &'a str,
    left: Option<u64>,
}

impl Sink<'_> {
    /// Queues an encoded reading; `false` once `--count` readings were queued.
    fn send(&mut self, node: &str, kind: &str, payload: Vec<u8>) -> bool {
        if self.left == Some(0) {
            return false;
        }
        match Buffer::topic(self.prefix, node, kind) {
            Some(topic) => {
                self.buffer.push(Message { topic, payload });
                if let Some(n) = &mut self.left {
                    *n -= 1;
                }
            }
            None => {
                self.buffer.stats.bad.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    node,
                    kind,
                    "reading with a node or kind unusable in a topic"
                );
            }
        }
        self.left != Some(0)
    }

    /// Queues the readings of one measurement; `false` once `--count` is reached.
    fn measurement(&mut self, node: &mut Node<'_>, m: &Measurement, uptime_ms: u64) -> bool {
        // No `ts` while the clock is unset: `uptime_ms` still orders the readings.
        let ts = wall_ms();
        let mut more = true;
        let _ = node.readings(m, uptime_ms, ts, |r| {
            let mut buf = [0u8; MAX_READING];
            let n = r.encode(&mut buf)?;
            more = more && self.send(r.sensor, r.kind, buf[..n].to_vec());
            Ok::<(), kiri_node::ReadingError>(())
        });
        more
    }
}

/// 2025-01-01: a wall clock before this has not been set (a board without RTC, before NTP).
const PLAUSIBLE_AFTER_MS: u64 = 1_735_689_600_000;

/// The wall clock, if it has been set.
fn wall_ms() -> Option<u64> {
    Some(now_ms()).filter(|&t| t >= PLAUSIBLE_AFTER_MS)
}

/// Where a node's numbering starts: `--first-seq`, else the wall clock in microseconds, so a
/// restarted agent continues above its earlier numbers (up to a million readings a second).
fn first_seq(args: &Args) -> u64 {
    args.first_seq
        .unwrap_or_else(|| wall_ms().map_or(0, |ms| ms * 1000))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The simulated chips measure at once: no waiting.
struct NoDelay;

impl DelayNs for NoDelay {
    fn delay_ns(&mut self, _ns: u32) {}
}

fn simulate(args: &Args, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    let ids: Vec<String> = if args.nodes == 1 {
        vec![args.node.clone()]
    } else {
        (1..=args.nodes)
            .map(|i| format!("{}-{i}", args.node))
            .collect()
    };
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let chip = SimBme280::with_clock(i as u32 + 1, now_ms);
        let dev = Bme280::new(
            chip,
            bme280::ADDRESS_PRIMARY,
            bme280::Config::default(),
            &mut NoDelay,
        )
        .map_err(|e| anyhow::anyhow!("simulated BME280: {e:?}"))?;
        nodes.push((dev, Node::new(id, first_seq(args))));
    }
    tracing::info!(
        nodes = ids.len(),
        rate = args.rate,
        "simulating BME280 nodes ({})",
        ids.join(", ")
    );
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    let mut next = start;
    loop {
        for (dev, node) in &mut nodes {
            let m = dev
                .measure(&mut NoDelay)
                .map_err(|e| anyhow::anyhow!("simulated BME280: {e:?}"))?;
            if !sink.measurement(node, &m, start.elapsed().as_millis() as u64) {
                return Ok(());
            }
        }
        next += period;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        } else {
            next = Instant::now();
        }
    }
}

#[cfg(target_os = "linux")]
fn i2c(path: &str, args: &Args, sink: &mut Sink<'_>) -> anyhow::Result<()> {
    use linux_embedded_hal::{Delay, I2cdev};
    let bus = I2cdev::new(path).with_context(|| format!("cannot open {path}"))?;
    let mut delay = Delay;
    let mut node = Node::new(&args.node, first_seq(args));
    let period = Duration::from_secs_f64(1.0 / args.rate);
    let start = Instant::now();
    enum Dev {
        Bme(Bme280<I2cdev>),
        Sht(sht3x::Sht3x<I2cdev>),
    }
    let mut dev = match args.sensor.as_str() {
        "sht3x" => Dev::Sht(sht3x::Sht3x::new(
            bus,
            args.address.unwrap_or(sht3x::ADDRESS_PRIMARY),
            sht3x::Repeatability::High,
        )),
        _ => {
            let address = args.address.unwrap_or(bme280::ADDRESS_PRIMARY);
            Dev::Bme(
                Bme280::new(bus, address, bme280::Config::default(), &mut delay)
                    .map_err(|e| anyhow::anyhow!("no BME280 at {address:#04x} on {path}: {e:?}"))?,
            )
        }
    };
    tracing::info!(path, sensor = args.sensor, node = args.node, "sampling");
    loop {
        let m = match &mut dev {
            Dev::Bme(d) => d.measure(&mut delay),
            Dev::Sht(d) => d.measure(&mut delay),
        };
        match m {
            Ok(m) => {
                if !sink.measurement(&mut node, &m, start.elapsed().as_millis() as u64) {
                    return Ok(());
                }
            }
            Err(e) => {
                sink.buffer.stats.bad.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("measurement failed: {e:?}");
            }
        }
        std::thread::sleep(period);
    }
}

#[cfg(not(target_os = "linux"))]
fn i2c(_path: &str, _args: &Args, _sink: &mut Sink<'_>) -> anyhow::Result<()> {
    anyhow::bail!("I2C sources need Linux (i2c-dev)")
}

/// How long a TCP node may stay silent before the agent reconnects.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads framed readings from a byte stream until it ends (or, with `idle_ends`, goes quiet);
/// `true` once `--count` is reached.
fn frames(mut input: impl Read, sink: &mut Sink<'_>, idle_ends: bool) -> anyhow::Result<bool> {
    let mut deframer = Deframer::<512>::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                ) =>
            {
                if idle_ends {
                    tracing::warn!("no data for {IDLE_TIMEOUT:?}; reconnecting");
                    return Ok(false);
                }
                continue;
            }
            Err(e) => {
                tracing::warn!("read failed: {e}");
                return Ok(false);
            }
        };
        for &byte in &buf[..n] {
            match deframer.push(byte) {
                None => {}
                Some(Ok(payload)) => match Reading::decode(payload) {
                    Ok(r) => {
                        let (node, kind) = (r.sensor.to_string(), r.kind.to_string());
                        if !sink.send(&node, &kind, payload.to_vec()) {
                            return Ok(true);
                        }
                    }
                    Err(e) => {
                        sink.buffer.stats.bad.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!("a frame that is not a reading: {e:?}");
                    }
                },
                Some(Err(e)) => {
                    sink.buffer.stats.bad.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(bad_frames = deframer.counts().bad, "dropped a frame: {e:?}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn framed_readings_become_messages_and_bad_frames_are_counted() {
        let stats = Arc::new(crate::Stats::default());
        let buffer = Buffer::new(100, stats.clone());
        let mut sink = Sink {
            buffer: &buffer,
            prefix: "sensors",
            left: Some(3),
        };
        let mut stream = Vec::new();
        let r = Reading {
            sensor: "n1",
            kind: "temperature",
            value: 20.5,
            unit: "C",
            ts: None,
            uptime_ms: Some(5),
            seq: Some(0),
        };
        let mut frame = [0u8; kiri_node::MAX_FRAME];
        let n = kiri_node::encode_frame(&r, &mut frame).unwrap();
        stream.extend_from_slice(&frame[..n]);
        let mut corrupted = frame[..n].to_vec();
        corrupted[5] ^= 0xFF;
        stream.extend_from_slice(&corrupted);
        stream.extend_from_slice(&frame[..n]);
        assert!(
            !frames(&stream[..], &mut sink, false).unwrap(),
            "stream ended first"
        );
        assert_eq!(stats.bad.load(Ordering::Relaxed), 1);
        let m = buffer.pop().unwrap();
        assert_eq!(m.topic, "sensors/n1/temperature");
        assert_eq!(Reading::decode(&m.payload).unwrap(), r);
        assert!(buffer.pop().is_some() && buffer.pop().is_none());
    }

    #[test]
    fn the_simulation_stops_after_count() {
        let stats = Arc::new(crate::Stats::default());
        let buffer = Buffer::new(100, stats.clone());
        let args = <Args as clap::Parser>::parse_from([
            "kiri-sensor",
            "--nodes",
            "2",
            "--rate",
            "1000",
            "--count",
            "7",
            "--first-seq",
            "100",
        ]);
        Source::parse(&args).unwrap().run(&args, &buffer).unwrap();
        assert_eq!(stats.produced.load(Ordering::Relaxed), 7);
        let topics: Vec<String> = std::iter::from_fn(|| buffer.pop())
            .map(|m| m.topic)
            .collect();
        assert_eq!(topics[0], "sensors/sim-1/temperature");
        assert_eq!(topics[3], "sensors/sim-2/temperature");
    }
}
