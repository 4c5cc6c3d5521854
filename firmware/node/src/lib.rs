//! The sensor node core, shared by microcontroller nodes and the host agent: it turns a
//! sensor's [`Measurement`] into numbered readings in Kiri's CBOR reading format and frames
//! them for a byte stream (a UART, a serial port, a socket). `no_std`, no allocator: every
//! buffer is the caller's, of a size known at compile time.
//!
//! **Frame format** ([`frame`]): `COBS(payload ‖ CRC-32(payload))` followed by a `0x00`
//! delimiter. COBS leaves no zero byte inside a frame, so a receiver that starts mid-stream or
//! loses bytes resynchronises at the next `0x00`; the CRC-32 (ISO-HDLC, little-endian)
//! catches corrupted frames, which are counted and dropped, never delivered.
//!
//! **Numbering**: every reading a node produces gets the next value of its sequence number
//! (`seq`), across kinds, so the receiver can tell loss (a gap) from duplicates (a repeat).
#![no_std]
#![deny(missing_docs, unsafe_code)]

pub mod frame;

use kiri_drivers::Measurement;
pub use kiri_reading::{Reading, ReadingError};

/// Largest encoded reading a node sends, bytes (a reading with a 32-byte sensor id is ~90).
pub const MAX_READING: usize = 128;
/// Largest frame on the wire for a [`MAX_READING`] payload.
pub const MAX_FRAME: usize = frame::max_frame_len(MAX_READING);

/// A node: its id and its sequence counter.
pub struct Node<'a> {
    id: &'a str,
    seq: u64,
}

impl<'a> Node<'a> {
    /// A node named `id` (the `sensor` of its readings, and the `<node>` of their topics),
    /// numbering from `first_seq`.
    pub fn new(id: &'a str, first_seq: u64) -> Node<'a> {
        Node { id, seq: first_seq }
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.seq
    }

    /// The readings of one measurement (temperature, then humidity and pressure when the
    /// sensor has them), numbered, stamped with `uptime_ms` and, when the node knows the
    /// time, `ts`. Calls `each` with every one.
    pub fn readings<E>(
        &mut self,
        m: &Measurement,
        uptime_ms: u64,
        ts: Option<u64>,
        mut each: impl FnMut(&Reading<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        let quantities = [
            Some(("temperature", m.temperature_c, "C")),
            m.humidity_pct.map(|h| ("humidity", h, "%RH")),
            m.pressure_pa.map(|p| ("pressure", p, "Pa")),
        ];
        for (kind, value, unit) in quantities.into_iter().flatten() {
            let reading = Reading {
                sensor: self.id,
                kind,
                // Two decimals are all these sensors resolve; rounding keeps the CBOR short
                // and the value what the sensor said, not f32 noise.
                value: round2(value),
                unit,
                ts,
                uptime_ms: Some(uptime_ms),
                seq: Some(self.seq),
            };
            self.seq += 1;
            each(&reading)?;
        }
        Ok(())
    }
}

fn round2(v: f32) -> f64 {
    let scaled = f64::from(v) * 100.0;
    let r = if scaled >= 0.0 {
        (scaled + 0.5) as i64
    } else {
        (scaled - 0.5) as i64
    };
    r as f64 / 100.0
}

/// Encodes a reading and frames it into `out`; returns the frame's length.
pub fn encode_frame(reading: &Reading<'_>, out: &mut [u8]) -> Result<usize, ReadingError> {
    let mut payload = [0u8; MAX_READING];
    let n = reading.encode(&mut payload)?;
    frame::encode(&payload[..n], out).ok_or(ReadingError::BufferTooSmall)
}

/// When the next sample is due: every `period_ms`, without drift.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    period_ms: u64,
    next_ms: u64,
}

impl Schedule {
    /// A schedule whose first sample is due at `start_ms`.
    pub fn new(period_ms: u64, start_ms: u64) -> Schedule {
        Schedule {
            period_ms: period_ms.max(1),
            next_ms: start_ms,
        }
    }

    /// Whether a sample is due at `now_ms`; if so the next one is scheduled (samples missed
    /// while the node was busy are skipped, not bunched).
    pub fn due(&mut self, now_ms: u64) -> bool {
        if now_ms < self.next_ms {
            return false;
        }
        let behind = (now_ms - self.next_ms) / self.period_ms;
        self.next_ms += (behind + 1) * self.period_ms;
        true
    }

    /// When the next sample is due.
    pub fn next_ms(&self) -> u64 {
        self.next_ms
    }
}
