// A small JSON (RFC 8259) reader: the members of a top-level object, with string, number,
// boolean and null values read and anything else (nested objects, arrays) skipped. Enough for
// a sensor that publishes its reading as JSON. Bounds-checked like the CBOR reader: malformed
// or truncated input makes it fail (`ok` turns false), never trap.

import { isValidUtf8 } from "./utf8";

/** How deeply nested arrays and objects `skipValue` follows before it calls the input malformed. */
export const JSON_MAX_DEPTH: i32 = 64;

function isWs(c: i32): bool {
  return c == 0x20 || c == 0x09 || c == 0x0a || c == 0x0d;
}

function isDigit(c: i32): bool {
  return c >= 0x30 && c <= 0x39;
}

function hexValue(c: i32): i32 {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x61 + 10;
  if (c >= 0x41 && c <= 0x46) return c - 0x41 + 10;
  return -1;
}

/** Reads the members of one JSON object: `begin()`, then `nextKey()` and a value read, until null. */
export class JsonObjectReader {
  /** The input, UTF-8. */
  readonly bytes: Uint8Array;
  /** Offset of the next unread byte. */
  pos: i32 = 0;
  /** False once anything was malformed, truncated or not the type asked for. */
  ok: bool = true;
  /** Whether the last number read had neither a fraction nor an exponent. */
  lastNumberWasInteger: bool = false;
  private members: i32 = 0;
  private done: bool = false;

  constructor(bytes: Uint8Array) {
    this.bytes = bytes;
  }

  private fail(): bool {
    this.ok = false;
    return false;
  }

  private skipWs(): void {
    const bytes = this.bytes;
    while (this.pos < bytes.length && isWs(<i32>unchecked(bytes[this.pos]))) this.pos++;
  }

  private peek(): i32 {
    return this.byteAt(this.pos);
  }

  /** Enters the top-level object; fails if the input is not one. */
  begin(): bool {
    this.skipWs();
    if (this.peek() != 0x7b) return this.fail();
    this.pos++;
    return true;
  }

  /**
   * The next member's key (read its value next, or `skipValue()` it), or null after the last
   * member, when the object and the input have ended (only white space may follow), or on a
   * failure (check `ok`).
   */
  nextKey(): string | null {
    if (!this.ok || this.done) return null;
    this.skipWs();
    if (this.peek() == 0x7d) {
      this.pos++;
      this.skipWs();
      this.done = true;
      if (this.pos != this.bytes.length) this.fail();
      return null;
    }
    if (this.members > 0) {
      if (this.peek() != 0x2c) {
        this.fail();
        return null;
      }
      this.pos++;
      this.skipWs();
    }
    const key = this.readString();
    if (key === null) return null;
    this.skipWs();
    if (this.peek() != 0x3a) {
      this.fail();
      return null;
    }
    this.pos++;
    this.skipWs();
    this.members++;
    return key;
  }

  /** Whether the next value is a string (`"`). */
  peekString(): bool {
    return this.ok && this.peek() == 0x22;
  }

  /** Whether the next value is a number. */
  peekNumber(): bool {
    const c = this.peek();
    return this.ok && (c == 0x2d || isDigit(c));
  }

  /** A string value, unescaped; null (and the reader fails) for anything else. */
  readString(): string | null {
    if (!this.peekString()) {
      this.fail();
      return null;
    }
    const bytes = this.bytes;
    this.pos++;
    // Fast path: no escapes, the text between the quotes is the string.
    const start = this.pos;
    let i = start;
    while (i < bytes.length) {
      const c = <i32>unchecked(bytes[i]);
      if (c == 0x22 || c == 0x5c || c < 0x20) break;
      i++;
    }
    if (i >= bytes.length) {
      this.fail();
      return null;
    }
    if (unchecked(bytes[i]) == 0x22) {
      const len = i - start;
      if (!isValidUtf8(bytes.dataStart + <usize>start, len)) {
        this.fail();
        return null;
      }
      this.pos = i + 1;
      return String.UTF8.decodeUnsafe(bytes.dataStart + <usize>start, <usize>len);
    }
    return this.readEscapedString(start);
  }

  private readEscapedString(start: i32): string | null {
    const bytes = this.bytes;
    // Unescaped text is never longer than the escaped text.
    const out = new Uint8Array(bytes.length - start);
    let n = 0;
    let i = start;
    while (true) {
      if (i >= bytes.length) {
        this.fail();
        return null;
      }
      const c = <i32>unchecked(bytes[i]);
      if (c == 0x22) break;
      if (c < 0x20) {
        this.fail();
        return null;
      }
      if (c != 0x5c) {
        unchecked((out[n++] = <u8>c));
        i++;
        continue;
      }
      if (i + 1 >= bytes.length) {
        this.fail();
        return null;
      }
      const e = <i32>unchecked(bytes[i + 1]);
      i += 2;
      let cp = -1;
      if (e == 0x22 || e == 0x5c || e == 0x2f) cp = e;
      else if (e == 0x62) cp = 0x08;
      else if (e == 0x66) cp = 0x0c;
      else if (e == 0x6e) cp = 0x0a;
      else if (e == 0x72) cp = 0x0d;
      else if (e == 0x74) cp = 0x09;
      else if (e == 0x75) {
        cp = this.hex4(i);
        i += 4;
        if (cp >= 0xd800 && cp < 0xdc00) {
          // A high surrogate must be followed by an escaped low one.
          if (i + 1 >= bytes.length || unchecked(bytes[i]) != 0x5c || unchecked(bytes[i + 1]) != 0x75) {
            this.fail();
            return null;
          }
          const lo = this.hex4(i + 2);
          if (lo < 0xdc00 || lo >= 0xe000) {
            this.fail();
            return null;
          }
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          i += 6;
        } else if (cp >= 0xdc00 && cp < 0xe000) {
          cp = -1;
        }
      }
      if (cp < 0) {
        this.fail();
        return null;
      }
      // At most 4 bytes out for at least 6 in (or 2 in for 1 out): `out` is large enough.
      if (cp < 0x80) {
        unchecked((out[n++] = <u8>cp));
      } else if (cp < 0x800) {
        unchecked((out[n++] = <u8>(0xc0 | (cp >> 6))));
        unchecked((out[n++] = <u8>(0x80 | (cp & 0x3f))));
      } else if (cp < 0x10000) {
        unchecked((out[n++] = <u8>(0xe0 | (cp >> 12))));
        unchecked((out[n++] = <u8>(0x80 | ((cp >> 6) & 0x3f))));
        unchecked((out[n++] = <u8>(0x80 | (cp & 0x3f))));
      } else {
        unchecked((out[n++] = <u8>(0xf0 | (cp >> 18))));
        unchecked((out[n++] = <u8>(0x80 | ((cp >> 12) & 0x3f))));
        unchecked((out[n++] = <u8>(0x80 | ((cp >> 6) & 0x3f))));
        unchecked((out[n++] = <u8>(0x80 | (cp & 0x3f))));
      }
    }
    if (!isValidUtf8(out.dataStart, n)) {
      this.fail();
      return null;
    }
    this.pos = i + 1;
    return String.UTF8.decodeUnsafe(out.dataStart, <usize>n);
  }

  // Four hex digits at `at` (-1 if they are not).
  private hex4(at: i32): i32 {
    if (at + 4 > this.bytes.length) return -1;
    let v = 0;
    for (let k = 0; k < 4; k++) {
      const h = hexValue(<i32>unchecked(this.bytes[at + k]));
      if (h < 0) return -1;
      v = (v << 4) | h;
    }
    return v;
  }

  // The byte at `at`, or -1 past the end.
  private byteAt(at: i32): i32 {
    return at < this.bytes.length ? <i32>unchecked(this.bytes[at]) : -1;
  }

  // The extent of the number at `pos` (JSON's grammar), or -1; sets lastNumberWasInteger.
  private numberEnd(): i32 {
    let i = this.pos;
    if (this.byteAt(i) == 0x2d) i++;
    if (this.byteAt(i) == 0x30) {
      i++;
    } else if (isDigit(this.byteAt(i))) {
      while (isDigit(this.byteAt(i))) i++;
    } else {
      return -1;
    }
    let integer = true;
    if (this.byteAt(i) == 0x2e) {
      i++;
      if (!isDigit(this.byteAt(i))) return -1;
      while (isDigit(this.byteAt(i))) i++;
      integer = false;
    }
    if (this.byteAt(i) == 0x65 || this.byteAt(i) == 0x45) {
      i++;
      if (this.byteAt(i) == 0x2b || this.byteAt(i) == 0x2d) i++;
      if (!isDigit(this.byteAt(i))) return -1;
      while (isDigit(this.byteAt(i))) i++;
      integer = false;
    }
    this.lastNumberWasInteger = integer;
    return i;
  }

  /** A number value; NaN (and the reader fails) for anything else. */
  readNumber(): f64 {
    if (!this.ok) return NaN;
    const end = this.numberEnd();
    if (end < 0) {
      this.fail();
      return NaN;
    }
    const text = String.UTF8.decodeUnsafe(this.bytes.dataStart + <usize>this.pos, <usize>(end - this.pos));
    this.pos = end;
    return parseFloat(text);
  }

  /**
   * A non-negative integer (no sign, fraction or exponent) within u64; 0 (and the reader fails)
   * for anything else. What a CBOR unsigned field becomes when the gateway converts JSON.
   */
  readUint(): u64 {
    if (!this.ok) return 0;
    const end = this.numberEnd();
    if (end < 0 || !this.lastNumberWasInteger || unchecked(this.bytes[this.pos]) == 0x2d) {
      this.fail();
      return 0;
    }
    let v: u64 = 0;
    for (let i = this.pos; i < end; i++) {
      const digit = <u64>(unchecked(this.bytes[i]) - 0x30);
      if (v > (u64.MAX_VALUE - digit) / 10) {
        this.fail();
        return 0;
      }
      v = v * 10 + digit;
    }
    this.pos = end;
    return v;
  }

  /** `true` or `false`; false (and the reader fails) for anything else. */
  readBool(): bool {
    if (this.literal("true")) return true;
    if (!this.literal("false")) this.fail();
    return false;
  }

  /** Consumes a `null`; fails if the next value is not one. */
  readNull(): bool {
    if (this.literal("null")) return true;
    return this.fail();
  }

  // Consumes `word` (ASCII) if it comes next.
  private literal(word: string): bool {
    if (!this.ok || this.pos + word.length > this.bytes.length) return false;
    for (let k = 0; k < word.length; k++) {
      if (<i32>unchecked(this.bytes[this.pos + k]) != word.charCodeAt(k)) return false;
    }
    this.pos += word.length;
    return true;
  }

  /** Skips one whole value (nested objects and arrays too, up to JSON_MAX_DEPTH deep). */
  skipValue(): bool {
    // open[d]: the bracket that closes nesting level d; first[d]: no item read yet at that level.
    const open = new StaticArray<i32>(JSON_MAX_DEPTH);
    const first = new StaticArray<bool>(JSON_MAX_DEPTH);
    let d = -1;
    while (true) {
      if (!this.ok) return false;
      this.skipWs();
      if (d >= 0) {
        const c = this.peek();
        if (c == unchecked(open[d])) {
          this.pos++;
          d--;
          if (d < 0) return true;
          continue;
        }
        if (!unchecked(first[d])) {
          if (c != 0x2c) return this.fail();
          this.pos++;
          this.skipWs();
        }
        unchecked((first[d] = false));
        if (unchecked(open[d]) == 0x7d) {
          // An object member: its key and colon, then the value below.
          if (this.readString() === null) return false;
          this.skipWs();
          if (this.peek() != 0x3a) return this.fail();
          this.pos++;
          this.skipWs();
        }
      }
      const c = this.peek();
      if (c == 0x7b || c == 0x5b) {
        if (d + 1 == JSON_MAX_DEPTH) return this.fail();
        d++;
        unchecked((open[d] = c == 0x7b ? 0x7d : 0x5d));
        unchecked((first[d] = true));
        this.pos++;
        continue;
      }
      if (c == 0x22) {
        if (this.readString() === null) return false;
      } else if (c == 0x2d || isDigit(c)) {
        const end = this.numberEnd();
        if (end < 0) return this.fail();
        this.pos = end;
      } else if (!this.literal("true") && !this.literal("false") && !this.literal("null")) {
        return this.fail();
      }
      if (d < 0) return true;
    }
  }
}

// Finds the last member `key` of the top-level object; leaves the reader at its value.
// Null if there is none, or the input is not a well-formed object.
function findMember(json: Uint8Array, key: string): JsonObjectReader | null {
  const r = new JsonObjectReader(json);
  if (!r.begin()) return null;
  let found = -1;
  while (true) {
    const k = r.nextKey();
    if (k === null) break;
    if (k == key) found = r.pos;
    if (!r.skipValue()) break;
  }
  if (!r.ok || found < 0) return null;
  const at = new JsonObjectReader(json);
  at.pos = found;
  return at;
}

/**
 * The number at `key` in the top-level JSON object, or NaN if the key is absent, its value is
 * not a number, or the input is not a well-formed object. The last of duplicate keys wins.
 */
export function jsonNumber(json: Uint8Array, key: string): f64 {
  const r = findMember(json, key);
  if (r === null || !r.peekNumber()) return NaN;
  return r.readNumber();
}

/**
 * The string at `key` in the top-level JSON object, or null if the key is absent, its value is
 * not a string, or the input is not a well-formed object. The last of duplicate keys wins.
 */
export function jsonString(json: Uint8Array, key: string): string | null {
  const r = findMember(json, key);
  if (r === null || !r.peekString()) return null;
  return r.readString();
}
