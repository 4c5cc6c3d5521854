// Kiri's sensor reading (docs/data-formats.md): a CBOR map with text keys `sensor`, `kind`,
// `value`, `unit`, and optionally `ts`, `uptime_ms`, `seq`. Decoded and encoded exactly as the
// Rust SDK's `Reading` (the `kiri-reading` crate) does, and also read from JSON.

import { FORMAT_JSON, kiri_input_format } from "./abi";
import { CborReader, CborWriter, INDEFINITE } from "./cbor";
import { JsonObjectReader } from "./json";

/** A named number added to an encoded reading (`field("limit", 30)`). */
export class NumberField {
  constructor(
    public key: string,
    public value: f64,
  ) {}
}

/** A NumberField: `reading.encodeWith([field("limit", limit)])`. */
export function field(key: string, value: f64): NumberField {
  return new NumberField(key, value);
}

/** Why the last `Reading.decode*` returned null, in the Rust SDK's words: `Malformed`, `Missing("sensor")`, ... */
export const MALFORMED = "Malformed";

function missing(name: string): string {
  return 'Missing("' + name + '")';
}

/** One sensor reading. */
export class Reading {
  /** The sensor's id, unique on the site (`s1`, `greenhouse-3`). */
  sensor: string;
  /** What is measured (`temperature`, `humidity`, `pressure`, ...). */
  kind: string;
  /** The measured value. */
  value: f64;
  /** The unit of `value` (`C`, `F`, `K`, `%RH`, `Pa`, `hPa`, ...). */
  unit: string;
  /** Time of the measurement, ms since the Unix epoch; meaningful when `hasTs`. */
  ts: u64 = 0;
  hasTs: bool = false;
  /** Milliseconds since the node started; meaningful when `hasUptimeMs`. */
  uptimeMs: u64 = 0;
  hasUptimeMs: bool = false;
  /** The node's sequence number; meaningful when `hasSeq`. */
  seq: u64 = 0;
  hasSeq: bool = false;

  /** Why the last decode returned null (`Malformed`, `Missing("value")`), "" after a success. */
  static lastError: string = "";

  constructor(sensor: string, kind: string, value: f64, unit: string) {
    this.sensor = sensor;
    this.kind = kind;
    this.value = value;
    this.unit = unit;
  }

  /** Sets `ts`. */
  withTs(ts: u64): Reading {
    this.ts = ts;
    this.hasTs = true;
    return this;
  }

  /** Sets `uptime_ms`. */
  withUptimeMs(uptimeMs: u64): Reading {
    this.uptimeMs = uptimeMs;
    this.hasUptimeMs = true;
    return this;
  }

  /** Sets `seq`. */
  withSeq(seq: u64): Reading {
    this.seq = seq;
    this.hasSeq = true;
    return this;
  }

  /**
   * Decodes a CBOR reading: one map (definite or indefinite length) with text keys and nothing
   * after it. `value` may be any integer within i64 (or unsigned within u64) or a float of 16,
   * 32 or 64 bits; `ts`, `uptime_ms` and `seq` must be unsigned integers; other keys are
   * skipped, whatever their values. The last of duplicate keys wins. Null if it is not a
   * reading; `Reading.lastError` says why.
   */
  static decode(bytes: Uint8Array): Reading | null {
    const r = new CborReader(bytes);
    const pairs = r.readMapHeader();
    if (!r.ok) return fail(MALFORMED);
    let sensor: string | null = null;
    let kind: string | null = null;
    let unit: string | null = null;
    let value: f64 = 0;
    let hasValue = false;
    let ts: u64 = 0;
    let hasTs = false;
    let uptimeMs: u64 = 0;
    let hasUptimeMs = false;
    let seq: u64 = 0;
    let hasSeq = false;
    let i: i64 = 0;
    while (true) {
      if (pairs == INDEFINITE) {
        if (r.peekBreak()) {
          r.readBreak();
          break;
        }
      } else if (i >= pairs) {
        break;
      }
      i++;
      const key = r.readText();
      if (key === null) return fail(MALFORMED);
      if (key == "sensor") {
        sensor = r.readText();
      } else if (key == "kind") {
        kind = r.readText();
      } else if (key == "unit") {
        unit = r.readText();
      } else if (key == "value") {
        value = r.readNumber();
        hasValue = true;
      } else if (key == "ts") {
        ts = r.readUint();
        hasTs = true;
      } else if (key == "uptime_ms") {
        uptimeMs = r.readUint();
        hasUptimeMs = true;
      } else if (key == "seq") {
        seq = r.readUint();
        hasSeq = true;
      } else {
        r.skip();
      }
      if (!r.ok) return fail(MALFORMED);
    }
    if (!r.atEnd) return fail(MALFORMED);
    return finish(sensor, kind, hasValue, value, unit, hasTs, ts, hasUptimeMs, uptimeMs, hasSeq, seq);
  }

  /**
   * Decodes a JSON reading, `{"sensor": "s1", "kind": "temperature", "value": 21.5, "unit":
   * "C", "seq": 7}`, as the gateway's JSON-to-CBOR conversion followed by `decode` would:
   * `ts`, `uptime_ms` and `seq` must be integers (no fraction or exponent) from 0 to 2^64-1;
   * other keys are skipped. Null if it is not a reading; `Reading.lastError` says why.
   */
  static decodeJson(bytes: Uint8Array): Reading | null {
    const r = new JsonObjectReader(bytes);
    if (!r.begin()) return fail(MALFORMED);
    let sensor: string | null = null;
    let kind: string | null = null;
    let unit: string | null = null;
    let value: f64 = 0;
    let hasValue = false;
    let ts: u64 = 0;
    let hasTs = false;
    let uptimeMs: u64 = 0;
    let hasUptimeMs = false;
    let seq: u64 = 0;
    let hasSeq = false;
    while (true) {
      const key = r.nextKey();
      if (key === null) break;
      if (key == "sensor") {
        sensor = r.readString();
      } else if (key == "kind") {
        kind = r.readString();
      } else if (key == "unit") {
        unit = r.readString();
      } else if (key == "value") {
        if (r.peekNumber()) value = r.readNumber();
        else r.ok = false;
        hasValue = true;
      } else if (key == "ts") {
        ts = r.readUint();
        hasTs = true;
      } else if (key == "uptime_ms") {
        uptimeMs = r.readUint();
        hasUptimeMs = true;
      } else if (key == "seq") {
        seq = r.readUint();
        hasSeq = true;
      } else {
        r.skipValue();
      }
      if (!r.ok) return fail(MALFORMED);
    }
    if (!r.ok) return fail(MALFORMED);
    return finish(sensor, kind, hasValue, value, unit, hasTs, ts, hasUptimeMs, uptimeMs, hasSeq, seq);
  }

  /**
   * Decodes an event's payload: as JSON when the gateway says the function received JSON (the
   * `input_format` host call), else as CBOR.
   */
  static decodePayload(payload: Uint8Array): Reading | null {
    if (kiri_input_format() == FORMAT_JSON) return Reading.decodeJson(payload);
    return Reading.decode(payload);
  }

  /** Encodes the reading as CBOR; null if it would take more than `limit` bytes. */
  encode(limit: i32 = i32.MAX_VALUE): Uint8Array | null {
    return this.encodeWith([], limit);
  }

  /**
   * Encodes the reading plus extra numeric fields (`[field("limit", 30)]`) as CBOR, byte for
   * byte as the Rust SDK's `encode_with`: `sensor`, `kind`, `value` (a 64-bit float), `unit`,
   * then `ts`, `uptime_ms`, `seq` when set, then the extra fields (64-bit floats). Null if it
   * would take more than `limit` bytes.
   */
  encodeWith(extra: Array<NumberField>, limit: i32 = i32.MAX_VALUE): Uint8Array | null {
    let pairs = 4 + extra.length;
    if (this.hasTs) pairs++;
    if (this.hasUptimeMs) pairs++;
    if (this.hasSeq) pairs++;
    const w = new CborWriter(limit, 128);
    w.mapHeader(<u64>pairs);
    w.text("sensor").text(this.sensor);
    w.text("kind").text(this.kind);
    w.text("value").float64(this.value);
    w.text("unit").text(this.unit);
    if (this.hasTs) w.text("ts").uint(this.ts);
    if (this.hasUptimeMs) w.text("uptime_ms").uint(this.uptimeMs);
    if (this.hasSeq) w.text("seq").uint(this.seq);
    for (let k = 0; k < extra.length; k++) {
      const f = unchecked(extra[k]);
      w.text(f.key).float64(f.value);
    }
    return w.finish();
  }
}

function fail(why: string): Reading | null {
  Reading.lastError = why;
  return null;
}

function finish(
  sensor: string | null,
  kind: string | null,
  hasValue: bool,
  value: f64,
  unit: string | null,
  hasTs: bool,
  ts: u64,
  hasUptimeMs: bool,
  uptimeMs: u64,
  hasSeq: bool,
  seq: u64,
): Reading | null {
  if (sensor === null) return fail(missing("sensor"));
  if (kind === null) return fail(missing("kind"));
  if (!hasValue) return fail(missing("value"));
  if (unit === null) return fail(missing("unit"));
  const reading = new Reading(sensor, kind, value, unit);
  if (hasTs) reading.withTs(ts);
  if (hasUptimeMs) reading.withUptimeMs(uptimeMs);
  if (hasSeq) reading.withSeq(seq);
  Reading.lastError = "";
  return reading;
}
