//! The CBOR sensor reading format (documented in `docs/data-formats.md`), without an allocator.
//!
//! A reading is a CBOR map with text keys: `sensor` (text), `kind` (text), `value` (number),
//! `unit` (text), and optionally `ts` (unsigned, ms since the Unix epoch), `uptime_ms`
//! (unsigned) and `seq` (unsigned, per-node sequence number). Other keys are ignored.
//!
//! Shared by the sensor nodes (`firmware/`), the guest SDK (`kiri_sdk::Reading`) and, through
//! the gateway's tests, checked against the gateway's own decoder.
#![no_std]
#![deny(missing_docs, unsafe_code)]

mod compact;

use minicbor::data::Type;
use minicbor::encode::write::EndOfSlice;
use minicbor::Decoder;

/// One sensor reading, borrowing its text from the decoded buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading<'a> {
    /// The sensor's id, unique on the site (`"s1"`, `"greenhouse-3"`).
    pub sensor: &'a str,
    /// What is measured (`"temperature"`, `"humidity"`, `"pressure"`, ...).
    pub kind: &'a str,
    /// The measured value.
    pub value: f64,
    /// The unit of `value` (`"C"`, `"F"`, `"K"`, `"%RH"`, `"Pa"`, `"hPa"`, ...).
    pub unit: &'a str,
    /// Wall-clock time of the measurement, ms since the Unix epoch, if the node has a clock.
    pub ts: Option<u64>,
    /// Milliseconds since the node started, for nodes without a clock.
    pub uptime_ms: Option<u64>,
    /// The node's sequence number for this reading, to spot loss and duplicates.
    pub seq: Option<u64>,
}

/// Why a payload is not a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadingError {
    /// Not well-formed CBOR, or a field has the wrong type.
    Malformed,
    /// A required field (`sensor`, `kind`, `value`, `unit`) is missing.
    Missing(&'static str),
    /// The output buffer is too small.
    BufferTooSmall,
}

impl From<minicbor::decode::Error> for ReadingError {
    fn from(_: minicbor::decode::Error) -> Self {
        ReadingError::Malformed
    }
}

impl From<minicbor::encode::Error<EndOfSlice>> for ReadingError {
    fn from(_: minicbor::encode::Error<EndOfSlice>) -> Self {
        ReadingError::BufferTooSmall
    }
}

fn number(d: &mut Decoder<'_>) -> Result<f64, ReadingError> {
    Ok(match d.datatype()? {
        Type::F16 | Type::F32 | Type::F64 => d.f64()?,
        Type::U8 | Type::U16 | Type::U32 | Type::U64 => d.u64()? as f64,
        Type::I8 | Type::I16 | Type::I32 | Type::I64 | Type::Int => {
            i64::try_from(d.int()?).map_err(|_| ReadingError::Malformed)? as f64
        }
        _ => return Err(ReadingError::Malformed),
    })
}

impl<'a> Reading<'a> {
    /// Decodes a reading from a CBOR payload.
    ///
    /// The common shape (a definite-length map of text keys, text, integer and `f32`/`f64`
    /// values) is read by a small decoder built for the guest's fuel meter (`compact.rs`);
    /// anything else (indefinite lengths, half floats, a payload that is not a reading) goes
    /// to minicbor, which has the last word: both give the same answer for every input.
    pub fn decode(bytes: &'a [u8]) -> Result<Reading<'a>, ReadingError> {
        match compact::decode(bytes) {
            Some(reading) => Ok(reading),
            None => decode_general(bytes),
        }
    }

    /// Encodes the reading into `buf`, returning the number of bytes written.
    pub fn encode(&self, buf: &mut [u8]) -> Result<usize, ReadingError> {
        self.encode_with(buf, &[])
    }

    /// Encodes the reading plus extra numeric fields (`("limit", 30.0)`) into `buf`.
    pub fn encode_with(
        &self,
        buf: &mut [u8],
        extra: &[(&str, f64)],
    ) -> Result<usize, ReadingError> {
        compact::encode(self, buf, extra)
    }
}

/// Decodes any well-formed reading, with minicbor.
#[cold]
#[inline(never)]
fn decode_general(bytes: &[u8]) -> Result<Reading<'_>, ReadingError> {
    let mut d = Decoder::new(bytes);
    let len = d.map()?;
    let (mut sensor, mut kind, mut value, mut unit) = (None, None, None, None);
    let (mut ts, mut uptime_ms, mut seq) = (None, None, None);
    let mut i = 0u64;
    loop {
        match len {
            Some(n) if i >= n => break,
            None if d.datatype()? == Type::Break => {
                d.skip()?;
                break;
            }
            _ => {}
        }
        i += 1;
        match d.str()? {
            "sensor" => sensor = Some(d.str()?),
            "kind" => kind = Some(d.str()?),
            "unit" => unit = Some(d.str()?),
            "value" => value = Some(number(&mut d)?),
            "ts" => ts = Some(d.u64()?),
            "uptime_ms" => uptime_ms = Some(d.u64()?),
            "seq" => seq = Some(d.u64()?),
            _ => d.skip()?,
        }
    }
    if d.position() != bytes.len() {
        return Err(ReadingError::Malformed);
    }
    Ok(Reading {
        sensor: sensor.ok_or(ReadingError::Missing("sensor"))?,
        kind: kind.ok_or(ReadingError::Missing("kind"))?,
        value: value.ok_or(ReadingError::Missing("value"))?,
        unit: unit.ok_or(ReadingError::Missing("unit"))?,
        ts,
        uptime_ms,
        seq,
    })
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Reading<'static> {
        Reading {
            sensor: "s1",
            kind: "temperature",
            value: 21.5,
            unit: "C",
            ts: Some(1_700_000_000_000),
            uptime_ms: None,
            seq: Some(7),
        }
    }

    #[test]
    fn a_reading_survives_encode_and_decode() {
        let mut buf = [0u8; 128];
        let n = sample().encode(&mut buf).unwrap();
        assert_eq!(Reading::decode(&buf[..n]).unwrap(), sample());
    }

    #[test]
    fn integer_values_and_unknown_keys_are_accepted() {
        // {"sensor":"a","kind":"k","value":-3,"unit":"C","x":[1,2]}
        let bytes = [
            0xa5, 0x66, b's', b'e', b'n', b's', b'o', b'r', 0x61, b'a', 0x64, b'k', b'i', b'n',
            b'd', 0x61, b'k', 0x65, b'v', b'a', b'l', b'u', b'e', 0x22, 0x64, b'u', b'n', b'i',
            b't', 0x61, b'C', 0x61, b'x', 0x82, 0x01, 0x02,
        ];
        let r = Reading::decode(&bytes).unwrap();
        assert_eq!((r.sensor, r.value, r.unit), ("a", -3.0, "C"));
    }

    #[test]
    fn garbage_and_missing_fields_are_errors() {
        assert_eq!(Reading::decode(b"hello"), Err(ReadingError::Malformed));
        assert_eq!(
            Reading::decode(&[0xa0]),
            Err(ReadingError::Missing("sensor"))
        );
        let mut buf = [0u8; 128];
        let n = sample().encode(&mut buf).unwrap();
        assert_eq!(Reading::decode(&buf[..n - 1]), Err(ReadingError::Malformed));
    }

    #[test]
    fn a_small_buffer_is_an_error_not_a_panic() {
        assert_eq!(
            sample().encode(&mut [0u8; 8]),
            Err(ReadingError::BufferTooSmall)
        );
    }
}
