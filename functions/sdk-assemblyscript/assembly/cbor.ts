// A small CBOR (RFC 8949) reader and writer: enough for Kiri's reading map and similar flat
// maps with text keys. Every read is bounds-checked: malformed or truncated input makes the
// reader fail (its `ok` turns false, and every later read fails too), never trap.

import { isValidUtf8 } from "./utf8";

/** How deeply nested arrays, maps and tags `skip` follows before it calls the input malformed. */
export const MAX_DEPTH: i32 = 64;

/** CBOR major types. */
export const MAJOR_UINT: i32 = 0;
export const MAJOR_NINT: i32 = 1;
export const MAJOR_BYTES: i32 = 2;
export const MAJOR_TEXT: i32 = 3;
export const MAJOR_ARRAY: i32 = 4;
export const MAJOR_MAP: i32 = 5;
export const MAJOR_TAG: i32 = 6;
export const MAJOR_SIMPLE: i32 = 7;

/** What `readMapHeader` and `readArrayHeader` return for an indefinite-length map or array. */
export const INDEFINITE: i64 = -1;
/** What `readMapHeader` and `readArrayHeader` return when the next item is not one. */
export const NOT_THIS_TYPE: i64 = -2;

const TWO_POW_M24: f64 = 5.9604644775390625e-8;

/** A half-precision float (its 16 bits) as an f64, exactly. */
export function halfToF64(h: u32): f64 {
  const negative = (h & 0x8000) != 0;
  const exp = <i32>((h >> 10) & 0x1f);
  const mant = h & 0x3ff;
  let v: f64;
  if (exp == 0) {
    v = <f64>mant * TWO_POW_M24;
  } else if (exp == 31) {
    v = mant == 0 ? Infinity : NaN;
  } else {
    v = reinterpret<f64>((<u64>(exp - 15 + 1023) << 52) | (<u64>mant << 42));
  }
  return negative ? -v : v;
}

/** Reads CBOR items one after another from `bytes`. */
export class CborReader {
  /** The input. */
  readonly bytes: Uint8Array;
  /** Offset of the next unread byte. */
  pos: i32 = 0;
  /** False once anything was malformed, truncated or not the type asked for. */
  ok: bool = true;
  // The head of the item just read: major type, additional information, argument.
  private major: i32 = 0;
  private info: i32 = 0;
  private arg: u64 = 0;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  /** Whether every byte has been read. */
  get atEnd(): bool {
    return this.pos >= this.bytes.length;
  }

  private fail(): bool {
    this.ok = false;
    return false;
  }

  /** The major type of the next item (MAJOR_*), or -1 at the end of the input or after a failure. */
  peekMajor(): i32 {
    if (!this.ok || this.pos >= this.bytes.length) return -1;
    return <i32>unchecked(this.bytes[this.pos]) >> 5;
  }

  /** Whether the next byte is a "break", which ends an indefinite-length map or array. */
  peekBreak(): bool {
    return this.ok && this.pos < this.bytes.length && unchecked(this.bytes[this.pos]) == 0xff;
  }

  /** Consumes a "break"; fails if the next byte is not one. */
  readBreak(): bool {
    if (!this.peekBreak()) return this.fail();
    this.pos++;
    return true;
  }

  // Reads the next item's head; fails on truncation and on reserved values.
  private head(): bool {
    if (!this.ok) return false;
    const bytes = this.bytes;
    if (this.pos >= bytes.length) return this.fail();
    const b = <i32>unchecked(bytes[this.pos]);
    this.pos++;
    const major = b >> 5;
    const info = b & 0x1f;
    this.major = major;
    this.info = info;
    if (info < 24) {
      this.arg = <u64>info;
      return true;
    }
    if (info == 31) {
      // Indefinite length (byte and text strings, arrays, maps) or a break: no argument.
      this.arg = 0;
      if (major == MAJOR_UINT || major == MAJOR_NINT || major == MAJOR_TAG) return this.fail();
      return true;
    }
    if (info > 27) return this.fail();
    const n = 1 << (info - 24);
    if (bytes.length - this.pos < n) return this.fail();
    let v: u64 = 0;
    for (let i = 0; i < n; i++) v = (v << 8) | <u64>unchecked(bytes[this.pos + i]);
    this.pos += n;
    this.arg = v;
    return true;
  }

  // Reads a head that must be of `major` type (with a definite length, unless `indefiniteOk`).
  private expect(major: i32, indefiniteOk: bool): bool {
    if (this.peekMajor() != major) return this.fail();
    if (!this.head()) return false;
    if (this.info == 31 && !indefiniteOk) return this.fail();
    return true;
  }

  /** Starts a map: its number of key/value pairs, INDEFINITE, or NOT_THIS_TYPE (and the reader fails). */
  readMapHeader(): i64 {
    if (!this.expect(MAJOR_MAP, true)) return NOT_THIS_TYPE;
    if (this.info == 31) return INDEFINITE;
    // Each pair takes at least two bytes: a longer count cannot be in the input.
    if (this.arg > <u64>(this.bytes.length - this.pos) / 2) {
      this.fail();
      return NOT_THIS_TYPE;
    }
    return <i64>this.arg;
  }

  /** Starts an array: its number of items, INDEFINITE, or NOT_THIS_TYPE (and the reader fails). */
  readArrayHeader(): i64 {
    if (!this.expect(MAJOR_ARRAY, true)) return NOT_THIS_TYPE;
    if (this.info == 31) return INDEFINITE;
    if (this.arg > <u64>(this.bytes.length - this.pos)) {
      this.fail();
      return NOT_THIS_TYPE;
    }
    return <i64>this.arg;
  }

  /** A text string of definite length, valid UTF-8; null (and the reader fails) otherwise. */
  readText(): string | null {
    if (!this.expect(MAJOR_TEXT, false)) return null;
    if (this.arg > <u64>(this.bytes.length - this.pos)) {
      this.fail();
      return null;
    }
    const len = <i32>this.arg;
    const start = this.bytes.dataStart + <usize>this.pos;
    if (!isValidUtf8(start, len)) {
      this.fail();
      return null;
    }
    this.pos += len;
    return String.UTF8.decodeUnsafe(start, <usize>len);
  }

  /** A byte string of definite length, as a view of the input; null (and the reader fails) otherwise. */
  readBytes(): Uint8Array | null {
    if (!this.expect(MAJOR_BYTES, false)) return null;
    if (this.arg > <u64>(this.bytes.length - this.pos)) {
      this.fail();
      return null;
    }
    const len = <i32>this.arg;
    const view = this.bytes.subarray(this.pos, this.pos + len);
    this.pos += len;
    return view;
  }

  /** An unsigned integer; 0 (and the reader fails) for anything else. */
  readUint(): u64 {
    if (!this.expect(MAJOR_UINT, false)) return 0;
    return this.arg;
  }

  /** An integer that fits in i64; 0 (and the reader fails) for anything else. */
  readInt(): i64 {
    const major = this.peekMajor();
    if (major != MAJOR_UINT && major != MAJOR_NINT) {
      this.fail();
      return 0;
    }
    this.head();
    if (!this.ok) return 0;
    if (this.arg > <u64>i64.MAX_VALUE) {
      this.fail();
      return 0;
    }
    return major == MAJOR_UINT ? <i64>this.arg : -1 - <i64>this.arg;
  }

  /**
   * A number: an integer (unsigned, or negative within i64) or a float of 16, 32 or 64 bits,
   * as an f64; NaN (and the reader fails) for anything else. The same numbers the Rust SDK's
   * reading decoder takes for `value`.
   */
  readNumber(): f64 {
    const major = this.peekMajor();
    if (major == MAJOR_UINT) return <f64>this.readUint();
    if (major == MAJOR_NINT) {
      const v = this.readInt();
      return this.ok ? <f64>v : NaN;
    }
    if (major != MAJOR_SIMPLE) {
      this.fail();
      return NaN;
    }
    const save = this.pos;
    if (!this.head()) return NaN;
    if (this.info == 25) return halfToF64(<u32>this.arg);
    if (this.info == 26) return <f64>reinterpret<f32>(<u32>this.arg);
    if (this.info == 27) return reinterpret<f64>(this.arg);
    this.pos = save;
    this.fail();
    return NaN;
  }

  /** `true` or `false`; false (and the reader fails) for anything else. */
  readBool(): bool {
    if (this.peekMajor() != MAJOR_SIMPLE) return this.fail();
    const b = unchecked(this.bytes[this.pos]);
    if (b != 0xf4 && b != 0xf5) return this.fail();
    this.pos++;
    return b == 0xf5;
  }

  /** Whether the next item is `null`. */
  peekNull(): bool {
    return this.ok && this.pos < this.bytes.length && unchecked(this.bytes[this.pos]) == 0xf6;
  }

  /** Consumes a `null`; fails if the next item is not one. */
  readNull(): bool {
    if (!this.peekNull()) return this.fail();
    this.pos++;
    return true;
  }

  /**
   * Skips one whole item, whatever it is: nested arrays and maps (also of indefinite length),
   * tags, strings, numbers, simple values. Fails on malformed or truncated input, and on
   * nesting deeper than MAX_DEPTH.
   */
  skip(): bool {
    // left[d]: items still to skip at nesting level d (-1: indefinite, until a break).
    const left = new StaticArray<i64>(MAX_DEPTH + 1);
    let d = 0;
    left[0] = 1;
    while (d >= 0) {
      if (!this.ok) return false;
      const n = unchecked(left[d]);
      if (n == 0) {
        d--;
        continue;
      }
      if (n < 0) {
        if (this.peekBreak()) {
          this.pos++;
          d--;
          continue;
        }
      } else {
        unchecked((left[d] = n - 1));
      }
      if (!this.head()) return false;
      const major = this.major;
      let push: i64 = 0;
      if (major == MAJOR_BYTES || major == MAJOR_TEXT) {
        if (this.info == 31) {
          // Indefinite length: definite chunks of the same type up to a break.
          while (!this.peekBreak()) {
            if (this.peekMajor() != major || !this.head() || this.info == 31) return this.fail();
            if (!this.advance(this.arg)) return false;
          }
          this.pos++;
        } else if (!this.advance(this.arg)) {
          return false;
        }
        continue;
      } else if (major == MAJOR_ARRAY || major == MAJOR_MAP) {
        if (this.info == 31) {
          push = -1;
        } else {
          const perItem: u64 = major == MAJOR_MAP ? 2 : 1;
          if (this.arg > <u64>(this.bytes.length - this.pos) / perItem) return this.fail();
          push = <i64>(this.arg * perItem);
        }
      } else if (major == MAJOR_TAG) {
        push = 1;
      } else if (major == MAJOR_SIMPLE) {
        // A break outside an indefinite-length item, or a two-byte simple value under 32.
        if (this.info == 31) return this.fail();
        if (this.info == 24 && this.arg < 32) return this.fail();
        continue;
      } else {
        continue; // an integer: its head was all of it
      }
      if (d == MAX_DEPTH) return this.fail();
      d++;
      unchecked((left[d] = push));
    }
    return true;
  }

  private advance(n: u64): bool {
    if (n > <u64>(this.bytes.length - this.pos)) return this.fail();
    this.pos += <i32>n;
    return true;
  }
}

/**
 * Writes CBOR items one after another into a buffer that grows, up to `limit` bytes: past it
 * the writer fails (`ok` turns false) and `finish` returns null. Numbers are written as the
 * Rust SDK writes them: integers in their shortest form, floats always in 64 bits.
 */
export class CborWriter {
  private buf: Uint8Array;
  private len: i32 = 0;
  /** The most bytes the output may take. */
  readonly limit: i32;
  /** False once the output would have exceeded `limit`. */
  ok: bool = true;

  constructor(limit: i32 = i32.MAX_VALUE, initial: i32 = 64) {
    this.limit = limit;
    this.buf = new Uint8Array(min(max(initial, 16), max(limit, 0)));
  }

  /** Bytes written so far. */
  get length(): i32 {
    return this.len;
  }

  private reserve(n: i32): bool {
    if (!this.ok) return false;
    if (n > this.limit - this.len) {
      this.ok = false;
      return false;
    }
    const need = this.len + n;
    if (need > this.buf.length) {
      let cap = max(this.buf.length, 16);
      while (cap < need) cap = cap > this.limit / 2 ? this.limit : cap * 2;
      const grown = new Uint8Array(cap);
      memory.copy(grown.dataStart, this.buf.dataStart, <usize>this.len);
      this.buf = grown;
    }
    return true;
  }

  private put(b: i32): void {
    unchecked((this.buf[this.len] = <u8>b));
    this.len++;
  }

  private head(major: i32, arg: u64): void {
    const m = major << 5;
    if (arg < 24) {
      if (this.reserve(1)) this.put(m | <i32>arg);
    } else if (arg <= 0xff) {
      if (this.reserve(2)) {
        this.put(m | 24);
        this.put(<i32>arg);
      }
    } else if (arg <= 0xffff) {
      if (this.reserve(3)) {
        this.put(m | 25);
        this.putBE(arg, 2);
      }
    } else if (arg <= 0xffffffff) {
      if (this.reserve(5)) {
        this.put(m | 26);
        this.putBE(arg, 4);
      }
    } else if (this.reserve(9)) {
      this.put(m | 27);
      this.putBE(arg, 8);
    }
  }

  private putBE(v: u64, n: i32): void {
    for (let i = n - 1; i >= 0; i--) this.put(<i32>((v >> (<u64>i * 8)) & 0xff));
  }

  /** Starts a map of `pairs` key/value pairs (write them next). */
  mapHeader(pairs: u64): CborWriter {
    this.head(MAJOR_MAP, pairs);
    return this;
  }

  /** Starts an array of `items` items (write them next). */
  arrayHeader(items: u64): CborWriter {
    this.head(MAJOR_ARRAY, items);
    return this;
  }

  /** A text string. */
  text(s: string): CborWriter {
    const utf8 = String.UTF8.encode(s);
    const n = utf8.byteLength;
    this.head(MAJOR_TEXT, <u64>n);
    if (this.reserve(n)) {
      memory.copy(this.buf.dataStart + <usize>this.len, changetype<usize>(utf8), <usize>n);
      this.len += n;
    }
    return this;
  }

  /** A byte string. */
  bytes(b: Uint8Array): CborWriter {
    const n = b.length;
    this.head(MAJOR_BYTES, <u64>n);
    if (this.reserve(n)) {
      memory.copy(this.buf.dataStart + <usize>this.len, b.dataStart, <usize>n);
      this.len += n;
    }
    return this;
  }

  /** An unsigned integer. */
  uint(v: u64): CborWriter {
    this.head(MAJOR_UINT, v);
    return this;
  }

  /** A signed integer. */
  int(v: i64): CborWriter {
    if (v >= 0) this.head(MAJOR_UINT, <u64>v);
    else this.head(MAJOR_NINT, <u64>(-1 - v));
    return this;
  }

  /** A float, in 64 bits. */
  float64(v: f64): CborWriter {
    if (this.reserve(9)) {
      this.put(0xfb);
      this.putBE(reinterpret<u64>(v), 8);
    }
    return this;
  }

  /** A float, in 32 bits. */
  float32(v: f32): CborWriter {
    if (this.reserve(5)) {
      this.put(0xfa);
      this.putBE(<u64>reinterpret<u32>(v), 4);
    }
    return this;
  }

  /** `true` or `false`. */
  bool(v: bool): CborWriter {
    if (this.reserve(1)) this.put(v ? 0xf5 : 0xf4);
    return this;
  }

  /** `null`. */
  nullValue(): CborWriter {
    if (this.reserve(1)) this.put(0xf6);
    return this;
  }

  /** The bytes written (a copy), or null if they would have exceeded `limit`. */
  finish(): Uint8Array | null {
    if (!this.ok) return null;
    return this.buf.slice(0, this.len);
  }
}
