// Assertions for the SDK's unit tests. A failed one throws, which AssemblyScript turns into a
// call to `abort`: the SDK's handler logs the message through the host's `log` and traps, and
// the Node.js runner reports the line.

/** Bytes from hex digits; spaces and newlines between bytes are ignored. */
export function hex(s: string): Uint8Array {
  const digits = new Array<i32>();
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) digits.push(c - 0x30);
    else if (c >= 0x61 && c <= 0x66) digits.push(c - 0x61 + 10);
    else if (c >= 0x41 && c <= 0x46) digits.push(c - 0x41 + 10);
    else if (c != 0x20 && c != 0x0a) throw new Error("bad hex digit in test vector: " + s.charAt(i));
  }
  if (digits.length % 2 != 0) throw new Error("odd number of hex digits in test vector");
  const out = new Uint8Array(digits.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = <u8>((digits[2 * i] << 4) | digits[2 * i + 1]);
  return out;
}

/** UTF-8 bytes of a string. */
export function utf8(s: string): Uint8Array {
  return Uint8Array.wrap(String.UTF8.encode(s));
}

/** Bytes as hex, for messages. */
export function toHex(b: Uint8Array | null): string {
  if (b === null) return "null";
  let s = "";
  for (let i = 0; i < b.length; i++) {
    const v = <u32>b[i];
    s += (v < 16 ? "0" : "") + v.toString(16);
  }
  return s;
}

/** The concatenation of two byte arrays. */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

export function ok(cond: bool, what: string): void {
  if (!cond) throw new Error(what);
}

export function eqStr(actual: string | null, expected: string, what: string): void {
  if (actual === null) throw new Error(what + ': expected "' + expected + '", got null');
  if (actual != expected) throw new Error(what + ': expected "' + expected + '", got "' + actual + '"');
}

export function eqI64(actual: i64, expected: i64, what: string): void {
  if (actual != expected) throw new Error(what + ": expected " + expected.toString() + ", got " + actual.toString());
}

export function eqU64(actual: u64, expected: u64, what: string): void {
  if (actual != expected) throw new Error(what + ": expected " + expected.toString() + ", got " + actual.toString());
}

/** Same f64, bit for bit in sign (0 vs -0); NaN equals NaN. */
export function eqF64(actual: f64, expected: f64, what: string): void {
  const same = isNaN(expected)
    ? isNaN(actual)
    : actual == expected && (expected != 0 || 1 / actual == 1 / expected);
  if (!same) throw new Error(what + ": expected " + expected.toString() + ", got " + actual.toString());
}

export function eqBytes(actual: Uint8Array | null, expected: Uint8Array, what: string): void {
  const a = toHex(actual);
  const e = toHex(expected);
  if (actual === null || a != e) throw new Error(what + ":\n  expected " + e + "\n  got      " + a);
}
