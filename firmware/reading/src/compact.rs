//! The reading's common shape, read and written in code shaped for the guest's fuel meter.
//!
//! wasmi charges fuel on entering a region of code (a function body, a loop body) for every
//! instruction in it, run or not, and LLVM lays wasm code out as `block`s, which do not start
//! regions. minicbor's decoding and encoding functions are type dispatches of hundreds of
//! instructions, called three or four times per map entry: a reading cost about 15,000 fuel
//! to decode and 4,000 to encode with them. Here the common path is a few dozen instructions
//! per entry and everything rare (long arguments, text that is not ASCII, unknown keys) is a
//! call of its own. The decoder answers `None` for anything outside the common shape, and
//! minicbor (`decode_general`) judges it; tests check both agree on every input and that the
//! encoder writes exactly minicbor's bytes.

use crate::{Reading, ReadingError};
use minicbor::Decoder;

/// The keys a reading has, in the order of the decoder's slots.
const SENSOR: usize = 0;
const KIND: usize = 1;
const UNIT: usize = 2;
const VALUE: usize = 3;
const TS: usize = 4;
const UPTIME_MS: usize = 5;
const SEQ: usize = 6;
const OTHER: usize = 7;
/// Not a text key: the payload is not of the common shape.
const NOT_A_KEY: usize = 8;

/// The keys by `(first byte + 2 * length) % 16`, which tells the seven apart: each as its
/// bytes packed into a `u128` (little-endian, zero-padded), its length and its slot.
const KEYS: [(u128, usize, usize); 16] = {
    let mut keys = [(0, 0, OTHER); 16];
    let named: [(&[u8], usize); 7] = [
        (b"sensor", SENSOR),
        (b"kind", KIND),
        (b"unit", UNIT),
        (b"value", VALUE),
        (b"ts", TS),
        (b"uptime_ms", UPTIME_MS),
        (b"seq", SEQ),
    ];
    let mut i = 0;
    while i < named.len() {
        let (name, slot) = named[i];
        let h = hash(name);
        assert!(keys[h].1 == 0, "two keys share a hash");
        let mut packed = [0u8; 16];
        let mut j = 0;
        while j < name.len() {
            packed[j] = name[j];
            j += 1;
        }
        keys[h] = (u128::from_le_bytes(packed), name.len(), slot);
        i += 1;
    }
    keys
};

const fn hash(key: &[u8]) -> usize {
    (key[0] as usize + 2 * key.len()) % 16
}

/// The slot of a map key: one table lookup and one comparison of two `u128`s (the keys are
/// short: a byte-wise comparison costs a call and a loop).
#[inline(always)]
fn slot(key: &[u8]) -> usize {
    if key.is_empty() || key.len() > 16 {
        return OTHER;
    }
    let mut packed = [0u8; 16];
    packed[..key.len()].copy_from_slice(key);
    let (name, len, slot) = KEYS[hash(key)];
    if u128::from_le_bytes(packed) == name && key.len() == len {
        slot
    } else {
        OTHER
    }
}

/// A reader of definite-length CBOR items over a byte slice.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The argument of the next item if its major type is `major` (definite lengths only).
    #[inline(always)]
    fn arg(&mut self, major: u8) -> Option<u64> {
        let first = *self.bytes.get(self.pos)?;
        if first >> 5 != major {
            return None;
        }
        self.pos += 1;
        let info = first & 0x1f;
        if info < 24 {
            Some(u64::from(info))
        } else {
            self.long_arg(info)
        }
    }

    /// An argument in the 1, 2, 4 or 8 bytes that follow (`info` 24 to 27).
    #[inline(never)]
    fn long_arg(&mut self, info: u8) -> Option<u64> {
        if info > 27 {
            return None;
        }
        let n = 1usize << (info - 24);
        let bytes = self.bytes.get(self.pos..self.pos + n)?;
        self.pos += n;
        // One copy, not a loop: the guest pays for a loop's body on every byte.
        let mut arg = [0u8; 8];
        arg[8 - n..].copy_from_slice(bytes);
        Some(u64::from_be_bytes(arg))
    }

    /// The bytes of a definite-length text string (not yet checked to be UTF-8).
    #[inline(always)]
    fn text_bytes(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.arg(3)?).ok()?;
        let end = self.pos.checked_add(len)?;
        let text = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(text)
    }

    /// The next text string, if ASCII or UTF-8.
    #[inline(always)]
    fn text(&mut self) -> Option<&'a str> {
        ascii_or_utf8(self.text_bytes()?)
    }

    /// The next key's slot, or `NOT_A_KEY`. A key of 1 to 16 bytes, as all of a reading's
    /// are, is compared here; any other goes to `long_key`. (A plain number, not an `Option`,
    /// which wasm returns through memory: this runs for every key.)
    #[inline(never)]
    fn key(&mut self) -> usize {
        let Some(&first) = self.bytes.get(self.pos) else {
            return NOT_A_KEY;
        };
        // Text strings of 1 to 16 bytes have the heads 0x61 to 0x70.
        let len = usize::from(first.wrapping_sub(0x61)) + 1;
        if len > 16 {
            return self.long_key();
        }
        let start = self.pos + 1;
        let Some(key) = self.bytes.get(start..start + len) else {
            return NOT_A_KEY;
        };
        self.pos = start + len;
        let slot = slot(key);
        if slot == OTHER && utf8(key).is_none() {
            // Checked as minicbor's `str` would; its value is skipped by `skip_other`.
            return NOT_A_KEY;
        }
        slot
    }

    /// A key that is empty, longer than 16 bytes or not text: never one a reading has.
    #[cold]
    #[inline(never)]
    fn long_key(&mut self) -> usize {
        match self.text_bytes().and_then(utf8) {
            Some(_) => OTHER,
            None => NOT_A_KEY,
        }
    }

    /// An `f64`, or another number (`other_number`).
    #[inline(always)]
    fn number(&mut self) -> Option<f64> {
        match self.bytes.get(self.pos..self.pos + 9) {
            Some(&[0xfb, a, b, c, d, e, f, g, h]) => {
                self.pos += 9;
                Some(f64::from_be_bytes([a, b, c, d, e, f, g, h]))
            }
            _ => self.other_number(),
        }
    }

    /// An unsigned, a negative that fits an `i64`, or an `f32`.
    #[inline(never)]
    fn other_number(&mut self) -> Option<f64> {
        let first = *self.bytes.get(self.pos)?;
        if first == 0xfa {
            let bytes = self.bytes.get(self.pos + 1..self.pos + 5)?;
            self.pos += 5;
            Some(f64::from(f32::from_be_bytes(bytes.try_into().ok()?)))
        } else if first >> 5 == 1 {
            Some((-1 - i64::try_from(self.arg(1)?).ok()?) as f64)
        } else {
            Some(self.arg(0)? as f64)
        }
    }
}

/// The fields decoded so far, by slot.
struct Fields<'a> {
    texts: [Option<&'a str>; 3],
    value: Option<f64>,
    unsigned: [Option<u64>; 3],
}

/// Reads the value of the key in `slot` into the fields; `None` if it is not what it should be.
type ReadValue = for<'a> fn(&mut Reader<'a>, &mut Fields<'a>, usize) -> Option<()>;

/// The value readers by slot: an indirect call, not a dispatch whose every arm the guest pays
/// for on every key.
const READ_VALUE: [ReadValue; 8] = [
    read_text,
    read_text,
    read_text,
    read_number,
    read_unsigned,
    read_unsigned,
    read_unsigned,
    skip_other,
];

/// A text value: one of fewer than 24 bytes is read here, any other by `long_text`.
#[inline(never)]
fn read_text<'a>(r: &mut Reader<'a>, f: &mut Fields<'a>, slot: usize) -> Option<()> {
    let first = *r.bytes.get(r.pos)?;
    let len = usize::from(first.wrapping_sub(0x60));
    let text = if len < 24 {
        let start = r.pos + 1;
        let text = r.bytes.get(start..start + len)?;
        r.pos = start + len;
        ascii_or_utf8(text)?
    } else {
        long_text(r)?
    };
    *f.texts.get_mut(slot)? = Some(text);
    Some(())
}

#[cold]
#[inline(never)]
fn long_text<'a>(r: &mut Reader<'a>) -> Option<&'a str> {
    r.text()
}

#[inline(never)]
fn read_number<'a>(r: &mut Reader<'a>, f: &mut Fields<'a>, _: usize) -> Option<()> {
    f.value = Some(r.number()?);
    Some(())
}

#[inline(never)]
fn read_unsigned<'a>(r: &mut Reader<'a>, f: &mut Fields<'a>, slot: usize) -> Option<()> {
    *f.unsigned.get_mut(slot.wrapping_sub(TS))? = Some(r.arg(0)?);
    Some(())
}

/// Skips the value of a key a reading does not have (minicbor knows every shape).
#[cold]
#[inline(never)]
fn skip_other<'a>(r: &mut Reader<'a>, _: &mut Fields<'a>, _: usize) -> Option<()> {
    let mut d = Decoder::new(r.bytes);
    d.set_position(r.pos);
    d.skip().ok()?;
    r.pos = d.position();
    Some(())
}

/// `text` as a `str`: checked byte by byte when ASCII (a word at a time costs more code than
/// it saves on short texts), by `core::str::from_utf8` otherwise.
#[inline(always)]
#[allow(unsafe_code)]
fn ascii_or_utf8(text: &[u8]) -> Option<&str> {
    let mut high = 0;
    for b in text {
        high |= *b;
    }
    if high < 0x80 {
        // SAFETY: every byte is ASCII, and ASCII is valid UTF-8.
        Some(unsafe { core::str::from_utf8_unchecked(text) })
    } else {
        utf8(text)
    }
}

#[cold]
#[inline(never)]
fn utf8(text: &[u8]) -> Option<&str> {
    core::str::from_utf8(text).ok()
}

/// Decodes a reading of the common shape, or `None` for minicbor to judge.
pub(crate) fn decode(bytes: &[u8]) -> Option<Reading<'_>> {
    let mut r = Reader { bytes, pos: 0 };
    let len = r.arg(5)?;
    let mut f = Fields {
        texts: [None; 3],
        value: None,
        unsigned: [None; 3],
    };
    for _ in 0..len {
        let slot = r.key();
        READ_VALUE.get(slot)?(&mut r, &mut f, slot)?;
    }
    finish(&r, &f)
}

/// The reading, if the map was the whole payload and had every field: a call of its own, as
/// LLVM would otherwise lay these instructions inside the loop, where they cost on every key.
#[inline(never)]
fn finish<'a>(r: &Reader<'a>, f: &Fields<'a>) -> Option<Reading<'a>> {
    if r.pos != r.bytes.len() {
        return None;
    }
    Some(Reading {
        sensor: f.texts[SENSOR]?,
        kind: f.texts[KIND]?,
        value: f.value?,
        unit: f.texts[UNIT]?,
        ts: f.unsigned[0],
        uptime_ms: f.unsigned[UPTIME_MS - TS],
        seq: f.unsigned[SEQ - TS],
    })
}

/// A writer of CBOR items into a byte slice, in minicbor's encoding (shortest heads, `f64`
/// values in 9 bytes). Past the end of the slice it only counts (`full`), so that writing is
/// a straight line of calls with one check at the end.
struct Writer<'b> {
    buf: &'b mut [u8],
    pos: usize,
    full: bool,
}

impl Writer<'_> {
    #[inline(never)]
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            Some(out) => out.copy_from_slice(bytes),
            None => self.full = true,
        }
        self.pos += bytes.len();
    }

    /// An item's head: `major` and `arg` in the fewest bytes.
    #[inline(always)]
    fn head(&mut self, major: u8, arg: u64) {
        if arg < 24 {
            self.put(&[major << 5 | arg as u8]);
        } else {
            self.long_head(major, arg);
        }
    }

    #[inline(never)]
    fn long_head(&mut self, major: u8, arg: u64) {
        let (info, n) = if arg <= 0xff {
            (24, 1)
        } else if arg <= 0xffff {
            (25, 2)
        } else if arg <= 0xffff_ffff {
            (26, 4)
        } else {
            (27, 8)
        };
        let mut head = [0u8; 9];
        head[0] = major << 5 | info;
        head[1..].copy_from_slice(&arg.to_be_bytes());
        head.copy_within(9 - n.., 1);
        self.put(&head[..1 + n]);
    }

    /// A text string.
    #[inline(never)]
    fn text(&mut self, text: &str) {
        self.head(3, text.len() as u64);
        self.put(text.as_bytes());
    }

    #[inline(never)]
    fn unsigned(&mut self, value: u64) {
        self.head(0, value);
    }

    #[inline(never)]
    fn float(&mut self, value: f64) {
        let mut item = [0xfb; 9];
        item[1..].copy_from_slice(&value.to_be_bytes());
        self.put(&item);
    }
}

/// Encodes `reading` and `extra` numeric fields into `buf`; the number of bytes written.
pub(crate) fn encode(
    reading: &Reading<'_>,
    buf: &mut [u8],
    extra: &[(&str, f64)],
) -> Result<usize, ReadingError> {
    let n = 4
        + extra.len() as u64
        + u64::from(reading.ts.is_some())
        + u64::from(reading.uptime_ms.is_some())
        + u64::from(reading.seq.is_some());
    let mut w = Writer {
        buf,
        pos: 0,
        full: false,
    };
    w.head(5, n);
    // Keys with their heads, as minicbor writes them.
    w.put(b"\x66sensor");
    w.text(reading.sensor);
    w.put(b"\x64kind");
    w.text(reading.kind);
    w.put(b"\x65value");
    w.float(reading.value);
    w.put(b"\x64unit");
    w.text(reading.unit);
    if let Some(ts) = reading.ts {
        w.put(b"\x62ts");
        w.unsigned(ts);
    }
    if let Some(uptime_ms) = reading.uptime_ms {
        w.put(b"\x69uptime_ms");
        w.unsigned(uptime_ms);
    }
    if let Some(seq) = reading.seq {
        w.put(b"\x63seq");
        w.unsigned(seq);
    }
    for (k, v) in extra {
        w.text(k);
        w.float(*v);
    }
    if w.full {
        Err(ReadingError::BufferTooSmall)
    } else {
        Ok(w.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use minicbor::encode::write::Cursor;
    use minicbor::Encoder;
    use proptest::prelude::*;
    use std::{vec, vec::Vec};

    /// One map entry of a generated payload: a key (known, unknown or not text) and a value of
    /// any of the shapes a device might send, in any width.
    fn entry() -> impl Strategy<Value = (u8, u8, u64, f64)> {
        (0u8..10, 0u8..16, any::<u64>(), any::<f64>())
    }

    const KEYS: [&str; 8] = [
        "sensor",
        "kind",
        "value",
        "unit",
        "ts",
        "uptime_ms",
        "seq",
        "x",
    ];

    fn payload(indefinite: bool, entries: &[(u8, u8, u64, f64)], buf: &mut [u8]) -> usize {
        let mut e = Encoder::new(Cursor::new(buf));
        let _ = if indefinite {
            e.begin_map()
        } else {
            e.map(entries.len() as u64)
        };
        for &(key, value, n, x) in entries {
            // Unknown keys of every length the decoder treats apart: empty, 1 to 16 bytes,
            // 17 to 23, and 24 or more (a head with a length byte).
            let unknown = ["x", "", "seventeen_bytes_k", "a key of twenty-six bytes"];
            let _ = match KEYS.get(usize::from(key)) {
                Some(&"x") => e.str(unknown[(n % 4) as usize]),
                Some(k) => e.str(k),
                None => e.u8(key),
            };
            let texts = [
                "s1",
                "temperature",
                "C",
                "\u{e9}t\u{e9}",
                "",
                "a text of 23 characters",
            ];
            let long = "a text of twenty-four ch";
            let _ = match value {
                0 if n % 7 == 6 => e.str(long),
                0 => e.str(texts[(n % 7) as usize]),
                1 => e.u8(n as u8),
                2 => e.u16(n as u16),
                3 => e.u32(n as u32),
                4 => e.u64(n),
                5 => e.i64(-(n as i64 & i64::MAX) - 1),
                6 => e.int(minicbor::data::Int::try_from(-(n as i128) - 1).unwrap()),
                7 => e.f16(x as f32),
                8 => e.f32(x as f32),
                9 => e.f64(x),
                10 => e.bool(n % 2 == 0),
                11 => e.null(),
                12 => e.array(2).and_then(|e| e.u8(1)).and_then(|e| e.str("a")),
                13 => e.tag(minicbor::data::Tag::new(1)).and_then(|e| e.u64(n)),
                14 => e.begin_str().and_then(|e| e.str("s")).and_then(|e| e.end()),
                _ => e.bytes(&n.to_be_bytes()),
            };
        }
        if indefinite {
            let _ = e.end();
        }
        e.writer().position()
    }

    /// The entries of a reading: its four fields (a number of any kind and width for
    /// `value`), the optional ones in any width, and a few others, in any order.
    fn reading_entries() -> impl Strategy<Value = Vec<(u8, u8, u64, f64)>> {
        let text = || (0u8..1, any::<u64>());
        (
            [text(), text(), text()],
            (1u8..10, any::<u64>(), any::<f64>()),
            proptest::collection::vec((4u8..7, 1u8..5, any::<u64>()), 0..3),
            proptest::collection::vec(entry(), 0..3),
        )
            .prop_flat_map(|(texts, number, optional, others)| {
                let mut entries = vec![
                    (0, texts[0].0, texts[0].1, 0.0),
                    (1, texts[1].0, texts[1].1, 0.0),
                    (3, texts[2].0, texts[2].1, 0.0),
                    (2, number.0, number.1, number.2),
                ];
                entries.extend(optional.into_iter().map(|(k, v, n)| (k, v, n, 0.0)));
                entries.extend(others);
                Just(entries).prop_shuffle()
            })
    }

    /// A decoding result with the value as its bits, so that NaN equals NaN.
    type Exact<'a> = Result<(Reading<'a>, u64), ReadingError>;

    fn exact<'a>(r: &Result<Reading<'a>, ReadingError>) -> Exact<'a> {
        r.map(|r| (Reading { value: 0.0, ..r }, r.value.to_bits()))
    }

    proptest! {
        /// The small decoder answers exactly as minicbor does, for readings of every shape
        /// and for their truncations and corruptions.
        #[test]
        fn the_common_decoder_agrees_with_minicbor(
            indefinite in any::<bool>(),
            entries in prop_oneof![reading_entries(), proptest::collection::vec(entry(), 0..10)],
            cut in any::<usize>(),
            flip in any::<(usize, u8)>(),
        ) {
            let mut buf = [0u8; 1024];
            let n = payload(indefinite, &entries, &mut buf);
            let whole = &buf[..n];
            let mut flipped = [0u8; 1024];
            flipped[..n].copy_from_slice(whole);
            if n > 0 {
                flipped[flip.0 % n] ^= flip.1;
            }
            if !indefinite && entries.iter().all(|&(k, v, ..)| k < 8 && v < 10 && v != 7) {
                // Definite lengths, text keys, scalars but half floats: the common path's shape.
                prop_assert!(decode(whole).is_some() || crate::decode_general(whole).is_err());
            }
            let mut trailing = [0u8; 1025];
            trailing[..n].copy_from_slice(whole);
            trailing[n] = flip.1;
            for bytes in [whole, &whole[..cut % (n + 1)], &flipped[..n], &trailing[..n + 1]] {
                let general = crate::decode_general(bytes);
                if let Some(common) = decode(bytes) {
                    prop_assert_eq!(exact(&Ok(common)), exact(&general));
                }
                prop_assert_eq!(exact(&crate::Reading::decode(bytes)), exact(&general));
            }
        }

        #[test]
        fn arbitrary_bytes_decode_alike(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(
                exact(&crate::Reading::decode(&bytes)),
                exact(&crate::decode_general(&bytes))
            );
        }
    }

    #[test]
    fn the_readings_devices_send_take_the_common_path() {
        let mut buf = [0u8; 128];
        let n = crate::tests::sample().encode(&mut buf).unwrap();
        assert_eq!(decode(&buf[..n]), Some(crate::tests::sample()));
        let extra = crate::tests::sample()
            .encode_with(&mut buf, &[("limit", 30.0)])
            .unwrap();
        assert_eq!(decode(&buf[..extra]), Some(crate::tests::sample()));
    }

    #[test]
    fn a_key_that_packs_like_a_known_one_is_not_taken_for_it() {
        // "ts" and eight NULs hash and pack as "ts" does: only the length tells them apart.
        let mut buf = [0u8; 128];
        let mut e = Encoder::new(Cursor::new(&mut buf[..]));
        e.map(5).unwrap();
        for (k, v) in [("sensor", "s"), ("kind", "k"), ("unit", "C")] {
            e.str(k).unwrap().str(v).unwrap();
        }
        e.str("value").unwrap().f64(1.0).unwrap();
        e.str("ts\0\0\0\0\0\0\0\0").unwrap().u64(5).unwrap();
        let n = e.writer().position();
        assert_eq!(decode(&buf[..n]).map(|r| r.ts), Some(None));
        assert_eq!(slot(b"ts\0\0\0\0\0\0\0\0"), OTHER);
        assert_eq!(slot(b"ts"), TS);
    }

    /// minicbor's encoding of a reading: what `encode` must write, byte for byte.
    fn reference(r: &Reading<'_>, extra: &[(&str, f64)], buf: &mut [u8]) -> Option<usize> {
        let optional = [("ts", r.ts), ("uptime_ms", r.uptime_ms), ("seq", r.seq)];
        let n = 4 + optional.iter().filter(|(_, v)| v.is_some()).count() + extra.len();
        let mut e = Encoder::new(Cursor::new(buf));
        e.map(n as u64).ok()?;
        e.str("sensor").ok()?.str(r.sensor).ok()?;
        e.str("kind").ok()?.str(r.kind).ok()?;
        e.str("value").ok()?.f64(r.value).ok()?;
        e.str("unit").ok()?.str(r.unit).ok()?;
        for (k, v) in optional {
            if let Some(v) = v {
                e.str(k).ok()?.u64(v).ok()?;
            }
        }
        for (k, v) in extra {
            e.str(k).ok()?.f64(*v).ok()?;
        }
        Some(e.writer().position())
    }

    /// Any `u64`, often one at the edge of a CBOR head's width.
    fn edgy() -> impl Strategy<Value = u64> {
        let edges = vec![
            23,
            24,
            0xff,
            0x100,
            0xffff,
            0x1_0000,
            0xffff_ffff,
            0x1_0000_0000,
        ];
        prop_oneof![any::<u64>(), proptest::sample::select(edges)]
    }

    proptest! {
        /// The encoder writes minicbor's bytes, or fails where minicbor runs out of room.
        #[test]
        fn the_encoder_writes_what_minicbor_writes(
            sensor in ".{0,30}",
            kind in "[a-z]{0,300}",
            value in any::<f64>(),
            unit in ".{0,3}",
            optional in proptest::array::uniform3(proptest::option::of(edgy())),
            extra in proptest::collection::vec(("[a-z]{1,8}", any::<f64>()), 0..4),
            room in 0usize..400,
        ) {
            let r = Reading {
                sensor: &sensor,
                kind: &kind,
                value,
                unit: &unit,
                ts: optional[0],
                uptime_ms: optional[1],
                seq: optional[2],
            };
            let extra: Vec<(&str, f64)> = extra.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let (mut ours, mut theirs) = ([0u8; 512], [0u8; 512]);
            let written = encode(&r, &mut ours[..room], &extra);
            match reference(&r, &extra, &mut theirs[..room]) {
                Some(n) => {
                    prop_assert_eq!(written, Ok(n));
                    prop_assert_eq!(&ours[..n], &theirs[..n]);
                }
                None => prop_assert_eq!(written, Err(ReadingError::BufferTooSmall)),
            }
        }
    }
}
