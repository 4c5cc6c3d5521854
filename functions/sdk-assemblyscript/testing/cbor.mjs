// A tiny CBOR codec for tests: readings encoded byte for byte as the Rust SDK encodes them, and
// a decoder for what a function emits. Not a general-purpose library.

/** A float to be written in 64 bits even when its value is an integer. */
export class F64 {
  constructor(value) {
    this.value = value;
  }
}

function head(out, major, arg) {
  const m = major << 5;
  const n = BigInt(arg);
  if (n < 24n) out.push(m | Number(n));
  else if (n <= 0xffn) out.push(m | 24, Number(n));
  else if (n <= 0xffffn) out.push(m | 25, Number(n >> 8n), Number(n & 0xffn));
  else if (n <= 0xffffffffn) {
    out.push(m | 26);
    for (let i = 3; i >= 0; i--) out.push(Number((n >> BigInt(i * 8)) & 0xffn));
  } else {
    out.push(m | 27);
    for (let i = 7; i >= 0; i--) out.push(Number((n >> BigInt(i * 8)) & 0xffn));
  }
}

function encodeInto(out, v) {
  if (v instanceof F64 || (typeof v === "number" && !Number.isInteger(v))) {
    const b = new DataView(new ArrayBuffer(8));
    b.setFloat64(0, v instanceof F64 ? v.value : v);
    out.push(0xfb, ...new Uint8Array(b.buffer));
  } else if (typeof v === "number" || typeof v === "bigint") {
    const n = BigInt(v);
    if (n >= 0n) head(out, 0, n);
    else head(out, 1, -1n - n);
  } else if (typeof v === "string") {
    const bytes = new TextEncoder().encode(v);
    head(out, 3, bytes.length);
    out.push(...bytes);
  } else if (v instanceof Uint8Array) {
    head(out, 2, v.length);
    out.push(...v);
  } else if (v === true || v === false) {
    out.push(v ? 0xf5 : 0xf4);
  } else if (v === null) {
    out.push(0xf6);
  } else if (Array.isArray(v)) {
    head(out, 4, v.length);
    for (const item of v) encodeInto(out, item);
  } else if (v instanceof Map || typeof v === "object") {
    const entries = v instanceof Map ? [...v.entries()] : Object.entries(v);
    head(out, 5, entries.length);
    for (const [k, item] of entries) {
      encodeInto(out, k);
      encodeInto(out, item);
    }
  } else {
    throw new Error(`cannot encode ${v}`);
  }
}

/** Encodes a value: maps keep their key order; non-integer numbers and F64 as 64-bit floats. */
export function encode(v) {
  const out = [];
  encodeInto(out, v);
  return Uint8Array.from(out);
}

/**
 * A reading as the Rust SDK's `Reading::encode_with` writes it: sensor, kind, value (f64),
 * unit, then ts, uptime_ms, seq when given, then the extra fields (f64).
 */
export function encodeReading(r, extra = {}) {
  const m = new Map([
    ["sensor", r.sensor],
    ["kind", r.kind],
    ["value", new F64(r.value)],
    ["unit", r.unit],
  ]);
  for (const k of ["ts", "uptime_ms", "seq"]) if (r[k] !== undefined) m.set(k, BigInt(r[k]));
  for (const [k, v] of Object.entries(extra)) m.set(k, new F64(v));
  return encode(m);
}

/** Decodes one CBOR item (maps become objects; integers beyond 2^53 become BigInt). */
export function decode(bytes) {
  let pos = 0;
  const need = (n) => {
    if (pos + n > bytes.length) throw new Error("truncated CBOR");
  };
  const arg = (info) => {
    if (info < 24) return BigInt(info);
    const n = { 24: 1, 25: 2, 26: 4, 27: 8 }[info];
    if (!n) throw new Error(`bad additional information ${info}`);
    need(n);
    let v = 0n;
    for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[pos + i]);
    pos += n;
    return v;
  };
  const small = (v) => (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const item = () => {
    need(1);
    const b = bytes[pos++];
    const major = b >> 5;
    const info = b & 0x1f;
    if (major === 7) {
      if (info === 20) return false;
      if (info === 21) return true;
      if (info === 22) return null;
      const n = { 25: 2, 26: 4, 27: 8 }[info];
      if (!n) throw new Error(`unsupported simple value ${info}`);
      need(n);
      const view = new DataView(bytes.buffer, bytes.byteOffset + pos, n);
      pos += n;
      if (n === 8) return view.getFloat64(0);
      if (n === 4) return view.getFloat32(0);
      const h = view.getUint16(0);
      const exp = (h >> 10) & 0x1f;
      const mant = h & 0x3ff;
      const v = exp === 0 ? mant * 2 ** -24 : exp === 31 ? (mant ? NaN : Infinity) : (1 + mant / 1024) * 2 ** (exp - 15);
      return h & 0x8000 ? -v : v;
    }
    const a = arg(info);
    switch (major) {
      case 0:
        return small(a);
      case 1:
        return small(-1n - a);
      case 2:
      case 3: {
        need(Number(a));
        const slice = bytes.slice(pos, pos + Number(a));
        pos += Number(a);
        return major === 2 ? slice : new TextDecoder("utf-8", { fatal: true }).decode(slice);
      }
      case 4:
        return Array.from({ length: Number(a) }, item);
      case 5: {
        const o = {};
        for (let i = 0; i < Number(a); i++) {
          const k = item();
          o[k] = item();
        }
        return o;
      }
      default:
        return item(); // a tag: the tagged item
    }
  };
  const v = item();
  if (pos !== bytes.length) throw new Error(`${bytes.length - pos} bytes after the CBOR item`);
  return v;
}

/** Bytes as lowercase hex. */
export function hex(bytes) {
  return Buffer.from(bytes).toString("hex");
}
