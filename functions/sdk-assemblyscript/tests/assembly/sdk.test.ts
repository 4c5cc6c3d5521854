// Unit tests of the SDK, compiled to one module and run under Node.js by tests/sdk.test.mjs:
// each exported `test_*` function runs on a fresh instance, and fails by trapping (through
// the SDK's abort handler, which logs why). The module is also a function (its handler below),
// so the runner can test the ABI glue and the host wrappers through real events.

import {
  CborReader,
  CborWriter,
  config,
  configJson,
  httpRequest,
  httpResponse,
  configNumber,
  emit,
  field,
  handler,
  halfToF64,
  inputFormat,
  INDEFINITE,
  isValidUtf8,
  jsonNumber,
  jsonString,
  kvDelete,
  kvGet,
  kvList,
  kvPut,
  caller,
  log,
  LEVEL_INFO,
  nowMs,
  OK,
  parseNumber,
  publish,
  Reading,
  respond,
} from "../../assembly/index";
import { concat, eqBytes, eqF64, eqI64, eqStr, eqU64, hex, ok, toHex, utf8 } from "./helpers";

export * from "../../assembly/exports";

// CBOR text keys and values, by hand: the head byte (0x60 + length), then the UTF-8 bytes.
const SENSOR = "66 73656e736f72"; // "sensor"
const KIND = "64 6b696e64"; // "kind"
const VALUE = "65 76616c7565"; // "value"
const UNIT = "64 756e6974"; // "unit"
const TS = "62 7473"; // "ts"
const UPTIME = "69 757074696d655f6d73"; // "uptime_ms"
const SEQ = "63 736571"; // "seq"
const LIMIT = "65 6c696d6974"; // "limit"
const S1 = "62 7331"; // "s1"
const TEMPERATURE = "6b 74656d7065726174757265"; // "temperature"
const C = "61 43"; // "C"
const T = "61 74"; // "t"

// What the Rust SDK writes for {sensor: "s1", kind: "temperature", value: 21.5, unit: "C",
// ts: 1700000000000, seq: 7}: `kiri reading --sensor s1 --kind temperature --value 21.5
// --unit C --seq 7` prints the same bytes (with its own ts). minicbor writes the map's length,
// the keys in this order, `value` always as a 64-bit float (0xfb), and unsigned integers in
// their shortest form: ts = 0x18bcfe56800 takes 8 bytes (0x1b), seq = 7 fits the head.
function rustReading(): Uint8Array {
  return hex(
    "a6" + SENSOR + S1 + KIND + TEMPERATURE + VALUE + "fb 4035800000000000" + UNIT + C +
      TS + "1b 0000018bcfe56800" + SEQ + "07",
  );
}

// The Rust threshold example's alert for {s1, temperature, 31.5, C, uptime_ms: 1} at limit 30
// (its own unit test's reading): the reading's fields, then `limit` as a 64-bit float.
function rustAlert(): Uint8Array {
  return hex(
    "a6" + SENSOR + S1 + KIND + TEMPERATURE + VALUE + "fb 403f800000000000" + UNIT + C +
      UPTIME + "01" + LIMIT + "fb 403e000000000000",
  );
}

// A reading whose `value` is the given CBOR item (and kind "t").
function withValue(valueHex: string): Uint8Array {
  return hex("a4" + SENSOR + S1 + KIND + T + UNIT + C + VALUE + valueHex);
}

function decodeOk(bytes: Uint8Array, what: string): Reading {
  const r = Reading.decode(bytes);
  if (r === null) throw new Error(what + ": not decoded (" + Reading.lastError + "): " + toHex(bytes));
  return r;
}

function decodeFails(bytes: Uint8Array, why: string, what: string): void {
  const r = Reading.decode(bytes);
  ok(r === null, what + ": decoded, but should fail with " + why);
  eqStr(Reading.lastError, why, what + ": the reason");
}

export function test_decodes_the_rust_sdk_reading(): void {
  const r = decodeOk(rustReading(), "rust reading");
  eqStr(r.sensor, "s1", "sensor");
  eqStr(r.kind, "temperature", "kind");
  eqF64(r.value, 21.5, "value");
  eqStr(r.unit, "C", "unit");
  ok(r.hasTs, "has ts");
  eqU64(r.ts, 1700000000000, "ts");
  ok(!r.hasUptimeMs, "no uptime_ms");
  ok(r.hasSeq, "has seq");
  eqU64(r.seq, 7, "seq");
  eqStr(Reading.lastError, "", "lastError after a success");
}

export function test_decodes_the_reading_crates_own_vector(): void {
  // firmware/reading's test: {"sensor":"a","kind":"k","value":-3,"unit":"C","x":[1,2]}
  const r = decodeOk(
    hex("a5 66 73656e736f72 61 61 64 6b696e64 61 6b 65 76616c7565 22 64 756e6974 61 43 61 78 82 01 02"),
    "crate vector",
  );
  eqStr(r.sensor, "a", "sensor");
  eqStr(r.kind, "k", "kind");
  eqF64(r.value, -3, "value");
  eqStr(r.unit, "C", "unit");
}

export function test_value_floats_of_16_32_and_64_bits(): void {
  eqF64(decodeOk(withValue("f9 3e00"), "f16 1.5").value, 1.5, "f16 1.5");
  eqF64(decodeOk(withValue("f9 0001"), "f16 subnormal").value, 5.9604644775390625e-8, "f16 smallest subnormal");
  eqF64(decodeOk(withValue("f9 0400"), "f16 normal").value, 6.103515625e-5, "f16 smallest normal");
  eqF64(decodeOk(withValue("f9 7bff"), "f16 max").value, 65504, "f16 largest");
  eqF64(decodeOk(withValue("f9 c400"), "f16 -4").value, -4, "f16 -4");
  eqF64(decodeOk(withValue("f9 8000"), "f16 -0").value, -0.0, "f16 -0");
  eqF64(decodeOk(withValue("f9 fc00"), "f16 -inf").value, -Infinity, "f16 -infinity");
  eqF64(decodeOk(withValue("f9 7e00"), "f16 nan").value, NaN, "f16 NaN");
  eqF64(decodeOk(withValue("fa 41ac0000"), "f32 21.5").value, 21.5, "f32 21.5");
  eqF64(decodeOk(withValue("fa 3dcccccd"), "f32 0.1").value, <f64>(<f32>0.1), "f32 0.1 widened");
  eqF64(decodeOk(withValue("fa 7f800000"), "f32 inf").value, Infinity, "f32 infinity");
  eqF64(decodeOk(withValue("fb 3fb999999999999a"), "f64 0.1").value, 0.1, "f64 0.1");
  eqF64(decodeOk(withValue("fb c0c81cd70a3d70a4"), "f64").value, -12345.68, "f64 -12345.68");
  for (let i: u32 = 0; i < 0x10000; i++) {
    // Every half-precision value against the f32 widening of the same number.
    const h = halfToF64(i);
    const exp = (i >> 10) & 0x1f;
    const mant = i & 0x3ff;
    let f: f32;
    if (exp == 0) f = <f32>mant * <f32>5.9604644775390625e-8;
    else if (exp == 31) f = mant == 0 ? <f32>Infinity : <f32>NaN;
    else f = reinterpret<f32>(((exp - 15 + 127) << 23) | (mant << 13));
    if (i & 0x8000) f = -f;
    eqF64(h, <f64>f, "half 0x" + i.toString(16));
  }
}

export function test_value_integers_positive_and_negative(): void {
  eqF64(decodeOk(withValue("00"), "0").value, 0, "0");
  eqF64(decodeOk(withValue("17"), "23").value, 23, "23");
  eqF64(decodeOk(withValue("18 64"), "100").value, 100, "100");
  eqF64(decodeOk(withValue("19 03e8"), "1000").value, 1000, "1000");
  eqF64(decodeOk(withValue("1a 000f4240"), "1e6").value, 1000000, "1000000");
  eqF64(decodeOk(withValue("1b ffffffffffffffff"), "u64 max").value, 18446744073709551615.0, "u64 max");
  eqF64(decodeOk(withValue("20"), "-1").value, -1, "-1");
  eqF64(decodeOk(withValue("38 63"), "-100").value, -100, "-100");
  eqF64(decodeOk(withValue("39 03e7"), "-1000").value, -1000, "-1000");
  eqF64(decodeOk(withValue("3a 000f423f"), "-1e6").value, -1000000, "-1000000");
  eqF64(decodeOk(withValue("3b 7fffffffffffffff"), "i64 min").value, -9223372036854775808.0, "i64 min");
  // Below i64::MIN: the Rust decoder refuses it (i64::try_from), so does this one.
  decodeFails(withValue("3b 8000000000000000"), "Malformed", "below i64 min");
  // Not numbers.
  decodeFails(withValue("f5"), "Malformed", "value true");
  decodeFails(withValue("f6"), "Malformed", "value null");
  decodeFails(withValue("61 31"), "Malformed", "value as text");
  decodeFails(withValue("c1 fb 4035800000000000"), "Malformed", "tagged value");
}

export function test_unknown_keys_with_nested_values_are_skipped(): void {
  // {"meta": {"a": [1, {"b": h'0102'}, 1(1.5)], "c": [_ "x", null, true], "d": (_ "ab" "c")},
  //  "sensor": "s1", "kind": "t", "value": 1.5 (f16), "unit": "C", "z": 24(h'01'), "n": simple(32)}
  const bytes = hex(
    "a7 64 6d657461 a3" +
      " 61 61 83 01 a1 61 62 42 0102 c1 f9 3e00" +
      " 61 63 9f 61 78 f6 f5 ff" +
      " 61 64 7f 62 6162 61 63 ff" +
      SENSOR + S1 + KIND + T + VALUE + "f9 3e00" + UNIT + C +
      " 61 7a d8 18 41 01" +
      " 61 6e f8 20",
  );
  const r = decodeOk(bytes, "nested unknown keys");
  eqStr(r.sensor, "s1", "sensor");
  eqF64(r.value, 1.5, "value");
  ok(!r.hasTs && !r.hasSeq && !r.hasUptimeMs, "no optional fields");
}

export function test_an_indefinite_length_map_and_duplicate_keys(): void {
  const r = decodeOk(
    hex("bf" + SENSOR + "61 61" + KIND + T + VALUE + "01" + UNIT + C + SENSOR + "61 62" + SEQ + "18 2a ff"),
    "indefinite map",
  );
  eqStr(r.sensor, "b", "the last sensor wins");
  eqF64(r.value, 1, "value");
  eqU64(r.seq, 42, "seq");
  decodeFails(hex("bf" + SENSOR + S1), "Malformed", "indefinite map without its break");
}

export function test_missing_fields_are_named_in_rust_order(): void {
  decodeFails(hex("a0"), 'Missing("sensor")', "empty map");
  decodeFails(hex("a1" + SENSOR + S1), 'Missing("kind")', "sensor only");
  decodeFails(hex("a2" + SENSOR + S1 + KIND + T), 'Missing("value")', "no value");
  decodeFails(hex("a3" + SENSOR + S1 + KIND + T + VALUE + "01"), 'Missing("unit")', "no unit");
  decodeFails(hex("a3" + UNIT + C + KIND + T + VALUE + "01"), 'Missing("sensor")', "no sensor");
}

export function test_malformed_input_is_rejected(): void {
  decodeFails(new Uint8Array(0), "Malformed", "empty input");
  decodeFails(utf8("hello"), "Malformed", "text, not a map");
  decodeFails(hex("80"), "Malformed", "an array");
  decodeFails(concat(rustReading(), hex("00")), "Malformed", "a byte after the map");
  decodeFails(hex("a1 01 02"), "Malformed", "an integer key");
  decodeFails(hex("a4" + SENSOR + "42 7331" + KIND + T + VALUE + "01" + UNIT + C), "Malformed", "sensor as bytes");
  decodeFails(hex("a4" + SENSOR + "62 c328" + KIND + T + VALUE + "01" + UNIT + C), "Malformed", "sensor not UTF-8");
  decodeFails(hex("a4" + SENSOR + "62 c0af" + KIND + T + VALUE + "01" + UNIT + C), "Malformed", "overlong UTF-8");
  decodeFails(hex("a4" + SENSOR + "7f 61 73 ff" + KIND + T + VALUE + "01" + UNIT + C), "Malformed", "indefinite sensor text");
  decodeFails(hex("a5" + SENSOR + S1 + KIND + T + VALUE + "01" + UNIT + C + TS + "20"), "Malformed", "negative ts");
  decodeFails(hex("a5" + SENSOR + S1 + KIND + T + VALUE + "01" + UNIT + C + SEQ + "f9 3c00"), "Malformed", "float seq");
  decodeFails(hex("a5" + SENSOR + S1 + KIND + T + VALUE + "01" + UNIT + C + UPTIME + "f6"), "Malformed", "null uptime_ms");
  decodeFails(hex("bb ffffffffffffffff"), "Malformed", "a map claiming 2^64-1 pairs");
  decodeFails(hex("a1 61 78 7b 00000000ffffffff"), "Malformed", "a text claiming 4 GiB");
  decodeFails(hex("a1 61 78 9b 00000000ffffffff"), "Malformed", "an array claiming 4G items");
  decodeFails(hex("a1 61 78 1c"), "Malformed", "reserved additional information");
  decodeFails(hex("a1 61 78 ff"), "Malformed", "a break outside an indefinite item");
  decodeFails(hex("a1 61 78 f8 10"), "Malformed", "a two-byte simple value under 32");
  decodeFails(hex("a1 61 78 5f 61 78 ff"), "Malformed", "a text chunk in an indefinite byte string");
}

function nested(depth: i32): Uint8Array {
  // {"x": [[[...0...]]]} with `depth` arrays
  const out = new Uint8Array(3 + depth + 1);
  out[0] = 0xa1;
  out[1] = 0x61;
  out[2] = 0x78;
  for (let i = 0; i < depth; i++) out[3 + i] = 0x81;
  out[3 + depth] = 0x00;
  return out;
}

export function test_deep_nesting_is_bounded(): void {
  // Skipped fine (then the reading lacks its fields), up to the SDK's depth limit...
  decodeFails(nested(63), 'Missing("sensor")', "63 nested arrays");
  // ...and refused beyond it, without recursion: no stack overflow, no trap.
  decodeFails(nested(65), "Malformed", "65 nested arrays");
  decodeFails(nested(5000), "Malformed", "5000 nested arrays");
}

export function test_truncated_input_is_rejected_without_trapping(): void {
  const vectors = [rustReading(), rustAlert(), withValue("f9 3e00"), withValue("1b ffffffffffffffff")];
  for (let v = 0; v < vectors.length; v++) {
    const full = vectors[v];
    decodeOk(full, "vector " + v.toString());
    for (let n = 0; n < full.length; n++) {
      decodeFails(full.subarray(0, n), "Malformed", "vector " + v.toString() + " cut to " + n.toString() + " bytes");
    }
  }
}

// xorshift32: a fixed sequence, so a failure can be replayed.
let rng: u32 = 0x9e3779b9;
function random(): u32 {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

export function test_random_and_mutated_input_never_traps(): void {
  let accepted = 0;
  for (let i = 0; i < 4000; i++) {
    const b = new Uint8Array(<i32>(random() % 48));
    for (let k = 0; k < b.length; k++) b[k] = <u8>random();
    if (random() % 2 == 0 && b.length > 0) b[0] = 0xa0 | <u8>(random() % 8); // a map head
    if (Reading.decode(b) !== null) accepted++;
  }
  const base = rustReading();
  for (let i = 0; i < 4000; i++) {
    const b = base.slice();
    const flips = 1 + <i32>(random() % 3);
    for (let f = 0; f < flips; f++) b[<i32>(random() % <u32>b.length)] = <u8>random();
    if (Reading.decode(b) !== null) accepted++;
    const r = new CborReader(b);
    r.skip(); // any result, but no trap
  }
  ok(accepted < 8000, "some mutations must be refused");
}

export function test_encode_matches_the_rust_sdk_byte_for_byte(): void {
  const r = new Reading("s1", "temperature", 21.5, "C").withTs(1700000000000).withSeq(7);
  eqBytes(r.encode(), rustReading(), "reading");
  const alert = new Reading("s1", "temperature", 31.5, "C").withUptimeMs(1).encodeWith([field("limit", 30)]);
  eqBytes(alert, rustAlert(), "threshold alert");
  // An integer value is still a 64-bit float, as minicbor's f64().
  eqBytes(
    new Reading("a", "k", -3, "C").encode(),
    hex("a4" + SENSOR + "61 61" + KIND + "61 6b" + VALUE + "fb c008000000000000" + UNIT + C),
    "integer value",
  );
}

export function test_encode_respects_its_limit(): void {
  const full = rustAlert();
  const r = new Reading("s1", "temperature", 31.5, "C").withUptimeMs(1);
  eqBytes(r.encodeWith([field("limit", 30)], full.length), full, "exactly at the limit");
  ok(r.encodeWith([field("limit", 30)], full.length - 1) === null, "one byte over the limit gives null");
  ok(r.encode(0) === null, "limit 0");
}

export function test_encode_decode_round_trip(): void {
  const readings = [
    new Reading("s1", "temperature", 21.5, "C"),
    new Reading("Küche-☃-𝄞", "humidity", -0.000123, "%RH").withTs(0).withUptimeMs(u64.MAX_VALUE).withSeq(24),
    new Reading("", "", Infinity, "").withSeq(255),
    new Reading("x".repeat(300), "pressure", 101325.5, "Pa").withTs(<u64>1 << 32),
  ];
  for (let i = 0; i < readings.length; i++) {
    const a = readings[i];
    const bytes = a.encodeWith([field("limit", 30.25), field("z", -1)]);
    ok(bytes !== null, "encoded");
    const b = decodeOk(bytes!, "round trip " + i.toString());
    eqStr(b.sensor, a.sensor, "sensor");
    eqStr(b.kind, a.kind, "kind");
    eqF64(b.value, a.value, "value");
    eqStr(b.unit, a.unit, "unit");
    ok(b.hasTs == a.hasTs && b.ts == a.ts, "ts");
    ok(b.hasUptimeMs == a.hasUptimeMs && b.uptimeMs == a.uptimeMs, "uptime_ms");
    ok(b.hasSeq == a.hasSeq && b.seq == a.seq, "seq");
  }
  const nan = decodeOk(new Reading("s", "k", NaN, "u").encode()!, "NaN");
  eqF64(nan.value, NaN, "NaN value");
}

export function test_cbor_writer_heads_and_reader_values(): void {
  const w = new CborWriter();
  w.uint(0).uint(23).uint(24).uint(255).uint(256).uint(65535).uint(65536).uint(0xffffffff).uint(0x100000000);
  w.int(-1).int(-24).int(-25).int(i64.MIN_VALUE).int(5);
  w.text("").text("é").bytes(hex("0102")).bool(true).bool(false).nullValue();
  w.float32(21.5).float64(-0.0).arrayHeader(2).mapHeader(24);
  for (let i = 0; i < 48; i++) w.uint(0); // the map's 24 pairs
  const out = w.finish();
  eqBytes(
    out,
    hex(
      "00 17 1818 18ff 190100 19ffff 1a00010000 1affffffff 1b0000000100000000" +
        " 20 37 3818 3b7fffffffffffffff 05" +
        " 60 62c3a9 420102 f5 f4 f6" +
        " fa41ac0000 fb8000000000000000 82 b818" +
        "00".repeat(48),
    ),
    "writer output",
  );
  const r = new CborReader(out!);
  eqU64(r.readUint(), 0, "uint 0");
  eqU64(r.readUint(), 23, "uint 23");
  eqU64(r.readUint(), 24, "uint 24");
  eqU64(r.readUint(), 255, "uint 255");
  eqI64(r.readInt(), 256, "int 256");
  eqF64(r.readNumber(), 65535, "number 65535");
  eqU64(r.readUint(), 65536, "uint 65536");
  eqU64(r.readUint(), 0xffffffff, "uint 2^32-1");
  eqU64(r.readUint(), 0x100000000, "uint 2^32");
  eqI64(r.readInt(), -1, "-1");
  eqI64(r.readInt(), -24, "-24");
  eqI64(r.readInt(), -25, "-25");
  eqI64(r.readInt(), i64.MIN_VALUE, "i64 min");
  eqI64(r.readInt(), 5, "5");
  eqStr(r.readText(), "", "empty text");
  eqStr(r.readText(), "é", "text é");
  eqBytes(r.readBytes(), hex("0102"), "bytes");
  ok(r.readBool(), "true");
  ok(!r.readBool() && r.ok, "false");
  ok(r.peekNull() && r.readNull(), "null");
  eqF64(r.readNumber(), 21.5, "f32");
  eqF64(r.readNumber(), -0.0, "f64 -0");
  eqI64(r.readArrayHeader(), 2, "array header");
  eqI64(r.readMapHeader(), 24, "map header");
  for (let i = 0; i < 48; i++) r.skip();
  ok(r.ok && r.atEnd, "read everything");
  // A count the rest of the input cannot hold is refused before any item is read.
  const short = new CborReader(hex("b818 0000"));
  ok(short.readMapHeader() < 0 && !short.ok, "24 pairs in 2 bytes");
  // A wrong type fails the reader, and it stays failed.
  const bad = new CborReader(hex("61 78 01"));
  ok(bad.readUint() == 0 && !bad.ok, "text read as uint fails");
  ok(bad.readText() === null, "a failed reader reads nothing more");
  const indefinite = new CborReader(hex("9f ff"));
  eqI64(indefinite.readArrayHeader(), INDEFINITE, "indefinite array");
  ok(indefinite.readBreak() && indefinite.atEnd, "break");
  // The writer's limit.
  const small = new CborWriter(3);
  small.text("abc");
  ok(!small.ok && small.finish() === null, "4 bytes do not fit a limit of 3");
}

export function test_utf8_validation(): void {
  const valid = ["", "abc", "é", "☃", "𝄞", "\u{10ffff}"];
  for (let i = 0; i < valid.length; i++) {
    const b = utf8(valid[i]);
    ok(isValidUtf8(b.dataStart, b.length), "valid: " + valid[i]);
  }
  const invalid = ["80", "c3", "c328", "c0af", "e08080", "eda080", "f4908080", "f8888080", "e282", "ff"];
  for (let i = 0; i < invalid.length; i++) {
    const b = hex(invalid[i]);
    ok(!isValidUtf8(b.dataStart, b.length), "invalid: " + invalid[i]);
  }
}

const JSON_READING = '{"sensor":"s1","kind":"temperature","value":21.5,"unit":"C","seq":7}';

function jsonOk(text: string, what: string): Reading {
  const r = Reading.decodeJson(utf8(text));
  if (r === null) throw new Error(what + ": not decoded (" + Reading.lastError + "): " + text);
  return r;
}

function jsonFails(text: string, why: string, what: string): void {
  ok(Reading.decodeJson(utf8(text)) === null, what + ": decoded, but should fail: " + text);
  eqStr(Reading.lastError, why, what + ": the reason");
}

export function test_json_readings(): void {
  const r = jsonOk(JSON_READING, "compact");
  eqStr(r.sensor, "s1", "sensor");
  eqStr(r.kind, "temperature", "kind");
  eqF64(r.value, 21.5, "value");
  eqStr(r.unit, "C", "unit");
  ok(r.hasSeq && r.seq == 7 && !r.hasTs, "seq");
  const spaced = jsonOk(
    ' \n{ "ts" : 1700000000000 ,\t"sensor" : "s1", "kind":"k", "value" : -3 , "unit":"C", "uptime_ms": 0 }\r\n',
    "white space",
  );
  eqU64(spaced.ts, 1700000000000, "ts");
  ok(spaced.hasUptimeMs && spaced.uptimeMs == 0, "uptime_ms 0");
  eqF64(spaced.value, -3, "integer value");
  eqF64(jsonOk('{"sensor":"s","kind":"k","value":1E3,"unit":"u"}', "exponent").value, 1000, "1E3");
  eqF64(jsonOk('{"sensor":"s","kind":"k","value":-0.0,"unit":"u"}', "-0.0").value, -0.0, "-0.0");
  eqF64(jsonOk('{"sensor":"s","kind":"k","value":2.5e-3,"unit":"u"}', "2.5e-3").value, 0.0025, "2.5e-3");
  const escaped = jsonOk(
    '{"sensor":"K\\u00fcche \\"1\\"\\\\\\/\\n\\t","kind":"\\ud834\\udd1e","value":1,"unit":"Küche"}',
    "escapes",
  );
  eqStr(escaped.sensor, 'Küche "1"\\/\n\t', "escaped sensor");
  eqStr(escaped.kind, "𝄞", "surrogate pair");
  eqStr(escaped.unit, "Küche", "raw UTF-8");
  const meta = jsonOk(
    '{"meta":{"a":[1,{"b":[true,false,null]}],"c":"x}]"},"sensor":"s1","kind":"k","value":1,"unit":"C","list":[],"o":{}}',
    "nested unknown keys",
  );
  eqStr(meta.sensor, "s1", "sensor after nested values");
  eqStr(jsonOk('{"sensor":"a","kind":"k","value":1,"unit":"C","sensor":"b"}', "duplicates").sensor, "b", "last wins");
  eqU64(jsonOk('{"sensor":"s","kind":"k","value":1,"unit":"u","seq":18446744073709551615}', "u64 max").seq, u64.MAX_VALUE, "seq u64 max");
}

export function test_json_readings_refused(): void {
  jsonFails('{"sensor":"s1","kind":"k","value":1}', 'Missing("unit")', "no unit");
  jsonFails('{"kind":"k","value":1,"unit":"C"}', 'Missing("sensor")', "no sensor");
  jsonFails("{}", 'Missing("sensor")', "empty object");
  jsonFails('{"sensor":"s","kind":"k","value":"21.5","unit":"u"}', "Malformed", "value as a string");
  jsonFails('{"sensor":"s","kind":"k","value":null,"unit":"u"}', "Malformed", "value null");
  jsonFails('{"sensor":1,"kind":"k","value":1,"unit":"u"}', "Malformed", "sensor as a number");
  jsonFails('{"sensor":"s","kind":"k","value":1,"unit":"u","seq":7.0}', "Malformed", "seq with a fraction");
  jsonFails('{"sensor":"s","kind":"k","value":1,"unit":"u","seq":-1}', "Malformed", "negative seq");
  jsonFails('{"sensor":"s","kind":"k","value":1,"unit":"u","ts":1e3}', "Malformed", "ts with an exponent");
  jsonFails('{"sensor":"s","kind":"k","value":1,"unit":"u","seq":18446744073709551616}', "Malformed", "seq over u64");
  jsonFails('{"sensor":"s","kind":"k","value":01,"unit":"u"}', "Malformed", "a leading zero");
  jsonFails('{"sensor":"s","kind":"k","value":1.,"unit":"u"}', "Malformed", "a bare decimal point");
  jsonFails('{"sensor":"\\ud834","kind":"k","value":1,"unit":"u"}', "Malformed", "a lone surrogate");
  jsonFails('{"sensor":"a\tb","kind":"k","value":1,"unit":"u"}', "Malformed", "a raw tab in a string");
  jsonFails('{"sensor":"a\\x","kind":"k","value":1,"unit":"u"}', "Malformed", "an unknown escape");
  jsonFails("[1]", "Malformed", "an array");
  jsonFails('"s"', "Malformed", "a string");
  jsonFails("", "Malformed", "nothing");
  jsonFails(JSON_READING + " x", "Malformed", "text after the object");
  jsonFails('{"sensor":"s","kind":"k","value":1,"unit":"u",}', "Malformed", "a trailing comma");
  jsonFails('{"sensor" "s"}', "Malformed", "no colon");
  jsonFails('{"x":[1,]}', "Malformed", "a trailing comma in an array");
  jsonFails('{"x":tru}', "Malformed", "a bad literal");
  jsonFails('{"x":' + "[".repeat(100) + "]".repeat(100) + "}", "Malformed", "100 nested arrays");
  jsonFails('{"x":' + "[".repeat(60) + "]".repeat(60) + "}", 'Missing("sensor")', "60 nested arrays");
  const full = utf8(JSON_READING);
  for (let n = 0; n < full.length; n++) {
    ok(Reading.decodeJson(full.subarray(0, n)) === null, "JSON cut to " + n.toString() + " bytes decoded");
  }
}

export function test_json_lookup_by_key(): void {
  const doc = utf8('{"limit": 30.5, "name": "Küche", "nested": {"limit": 1, "x": "y"}, "flag": true, "dup": 1, "dup": 2}');
  eqF64(jsonNumber(doc, "limit"), 30.5, "top-level number");
  eqStr(jsonString(doc, "name"), "Küche", "top-level string");
  eqF64(jsonNumber(doc, "dup"), 2, "the last duplicate wins");
  eqF64(jsonNumber(doc, "absent"), NaN, "absent number");
  ok(jsonString(doc, "absent") === null, "absent string");
  eqF64(jsonNumber(doc, "name"), NaN, "a string is not a number");
  ok(jsonString(doc, "limit") === null, "a number is not a string");
  eqF64(jsonNumber(doc, "x"), NaN, "nested keys are not top-level");
  eqF64(jsonNumber(doc, "flag"), NaN, "a boolean is not a number");
  eqF64(jsonNumber(utf8('{"limit": 30.5'), "limit"), NaN, "truncated object");
  eqF64(jsonNumber(utf8('[{"limit": 1}]'), "limit"), NaN, "not an object");
}

export function test_parse_number_like_rust(): void {
  eqF64(parseNumber("30"), 30, "30");
  eqF64(parseNumber(" 30.5\n"), 30.5, "trimmed");
  eqF64(parseNumber("-2.5"), -2.5, "-2.5");
  eqF64(parseNumber("+2"), 2, "+2");
  eqF64(parseNumber("1e3"), 1000, "1e3");
  eqF64(parseNumber("1E-3"), 0.001, "1E-3");
  eqF64(parseNumber(".5"), 0.5, ".5");
  eqF64(parseNumber("5."), 5, "5.");
  eqF64(parseNumber("007"), 7, "leading zeros");
  eqF64(parseNumber("inf"), Infinity, "inf");
  eqF64(parseNumber("-Infinity"), -Infinity, "-Infinity");
  eqF64(parseNumber("0.1"), 0.1, "0.1");
  eqF64(parseNumber("1e400"), Infinity, "overflow");
  eqF64(parseNumber("-0"), -0.0, "-0");
  const bad = ["", " ", ".", "abc", "30abc", "1e", "1e+", "--1", "+-1", "1.2.3", "0x10", "nan", "1 2", "∞"];
  for (let i = 0; i < bad.length; i++) eqF64(parseNumber(bad[i]), NaN, 'not a number: "' + bad[i] + '"');
}

// The handler: one operation per topic, so the runner can drive the glue and the host calls.
function onEvent(topic: string, payload: Uint8Array, receivedAtMs: i64): i32 {
  if (topic == "echo") {
    return emit("echo/" + receivedAtMs.toString(), payload) < 0 ? 10 : OK;
  }
  if (topic == "reading") {
    // Decode (CBOR or JSON, as input_format says) and emit the value's 8 bytes.
    const r = Reading.decodePayload(payload);
    if (r === null) {
      log(LEVEL_INFO, Reading.lastError);
      return 11;
    }
    return emit("value", f64Bytes(r.value));
  }
  if (topic == "json-number") return emit("value", f64Bytes(jsonNumber(payload, "v")));
  if (topic == "parse-number") {
    return emit("value", f64Bytes(parseNumber(String.UTF8.decodeUnsafe(payload.dataStart, payload.length))));
  }
  if (topic == "config") {
    const s = config("text");
    emit("text", utf8(s !== null ? s : "(null)"));
    const table = configJson("table");
    emit("table", utf8(table !== null ? table : "(null)"));
    // A member of a JSON table, read with the SDK's JSON helpers.
    emit("table.warn", f64Bytes(table !== null ? jsonNumber(utf8(table), "warn") : NaN));
    const all = configJson("");
    emit("all", utf8(all !== null ? all : "(null)"));
    return emit("number", f64Bytes(configNumber("number")));
  }
  if (topic == "kv") {
    const old = kvGet("count");
    const n: u32 = old !== null && old.length == 4 ? load<u32>(old.dataStart) + 1 : 1;
    const v = new Uint8Array(4);
    store<u32>(v.dataStart, n);
    kvPut("count", v);
    kvPut("c2", v);
    kvPut("other", v);
    kvDelete("other");
    const keys = kvList("c");
    emit("keys", utf8(keys !== null ? keys.join(",") : "(null)"));
    return emit("count", utf8(n.toString()));
  }
  if (topic == "host") {
    const who = caller();
    emit("caller", utf8(who !== null ? who : "(none)"));
    emit("format", utf8(inputFormat().toString()));
    emit("now", utf8(nowMs().toString()));
    const code = publish("local/x", payload);
    emit("publish-code", utf8(code.toString()));
    respond(utf8("answer"));
    return OK;
  }
  if (topic == "$http") {
    const req = httpRequest();
    if (req === null) return 12;
    const path = jsonString(utf8(req), "path");
    respond(utf8(path !== null ? path : "(none)"));
    return httpResponse(201, '{"content-type":"text/plain"}');
  }
  if (topic == "fail") {
    emit("never", payload);
    return 7;
  }
  if (topic == "abort") {
    assert(payload.length == 0, "boom: payload of " + payload.length.toString() + " bytes");
    return OK;
  }
  if (topic == "throw") throw new Error("thrown");
  if (topic == "trace") {
    trace("hello", 2, 1.5, 2);
    return OK;
  }
  if (topic == "random") return emit("value", f64Bytes(Math.random()));
  if (topic == "garbage") {
    // ~100 KiB of objects that nothing keeps: the collector must free them after the event.
    let total = 0;
    for (let i = 0; i < 100; i++) {
      const a = new Uint8Array(1000);
      const s = "x".repeat(10) + i.toString();
      total += a.length + s.length;
    }
    return total > 0 ? OK : 1;
  }
  if (topic == "keep") {
    kept.push(payload.slice());
    return emit("kept", utf8(kept.length.toString()));
  }
  return 99;
}

// What an instance keeps across events (the SDK frees everything else after each one).
const kept = new Array<Uint8Array>();

function f64Bytes(v: f64): Uint8Array {
  const b = new Uint8Array(8);
  store<f64>(b.dataStart, v);
  return b;
}

handler(onEvent);
